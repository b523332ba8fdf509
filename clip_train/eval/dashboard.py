"""Put a PIL figure on every configured dashboard: wandb and TensorBoard natively, others as PNG files."""

import os

import numpy as np
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from PIL import Image


def log_figure(trainer, key: str, figure: Image.Image) -> None:
    """Log `figure` under `key` at the trainer's global step, on the global-zero process.

    Loggers without images (CSV) get `<log dir>/figures/<key>_step<N>.png`.
    """
    if not trainer.is_global_zero:
        return
    step = trainer.global_step
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[figure], step=step)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, np.asarray(figure), step, dataformats="HWC")
        else:
            folder = os.path.join(logger.log_dir or trainer.default_root_dir, "figures")
            os.makedirs(folder, exist_ok=True)
            figure.save(os.path.join(folder, f"{key.replace('/', '_')}_step{step:08d}.png"))
