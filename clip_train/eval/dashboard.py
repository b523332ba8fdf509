"""Put a PIL figure or a small text table on every configured dashboard: wandb and TensorBoard natively,
others as PNG files and JSON lines."""

import json
import os

import numpy as np
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
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


def log_table(trainer, key: str, columns: list[str], rows: list[list[str]]) -> None:
    """Log a table of strings under `key` at the trainer's global step, on the global-zero process: a wandb
    table, a TensorBoard markdown text, and for a CSV logger a line {"step", "examples"} of `<log dir>/<name>.jsonl`
    (`val/captions` -> captions.jsonl)."""
    if not trainer.is_global_zero:
        return
    step = trainer.global_step
    for logger in trainer.loggers:
        name = type(logger).__name__
        if name == "WandbLogger":
            logger.log_text(key=key, columns=columns, data=rows, step=step)
        elif name == "TensorBoardLogger":
            lines = [f"| {' | '.join(columns)} |", "|" + "---|" * len(columns), *(f"| {' | '.join(row)} |" for row in rows)]
            logger.experiment.add_text(key, "\n".join(lines), step)
        elif isinstance(logger, CSVLogger):  # clip_train's ResumableCSVLogger too
            os.makedirs(logger.log_dir, exist_ok=True)
            with open(os.path.join(logger.log_dir, f"{key.rsplit('/', 1)[-1]}.jsonl"), "a") as f:
                f.write(json.dumps({"step": step, "examples": rows}) + "\n")
