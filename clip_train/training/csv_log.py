"""A CSV logger whose `metrics.csv` survives a resume: the rows logged before the kill stay, the new rows follow.

Lightning's CSVLogger deletes an existing `<log dir>/metrics.csv` when its writer is created (Lightning PR #19446:
appending to another run's file broke on changed columns), so a run resumed in its own folder kept only the rows
logged after the resume. `ResumableCSVLogger` decides at the first save, once it knows whether the run resumes:

- a resumed run (`trainer.fit(..., ckpt_path=...)` with a checkpoint) keeps every old row whose step is below the
  first step the resumed run logs, and appends the new rows under one header (old and new columns). The rows the
  killed run logged after its last checkpoint are logged again by the resumed run (it repeats those steps), so they
  are replaced, not doubled;
- a run that does not resume deletes a stale `metrics.csv` of an earlier run in the folder, as Lightning does.

It is a Callback as well as a logger (Lightning hands a logger no trainer): pass it in `callbacks` too, as
`clip_train.train` and `clip_train.vlm.stages` do. It also writes its rows to disk when a checkpoint has been saved
(at the next batch's start, when the checkpoint step's row is logged), so a run killed with `kill -9` has on disk
every row up to its last checkpoint; Lightning alone writes every `flush_logs_every_n_steps` (100) steps.
Only rank 0 writes (Lightning's `rank_zero_experiment`).
"""

import csv

import lightning as L
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


def _step(row: dict, path: str, line: int) -> int:
    try:
        return int(row["step"])
    except (TypeError, ValueError):
        raise ValueError(f"{path} line {line}: step {row['step']!r} is not an integer; the resumed run's log "
                         "cannot be joined to it: move the file away to start a new one") from None  # fmt: skip


class _ResumingWriter(ExperimentWriter):
    """Lightning's writer, except that an existing metrics.csv is kept or deleted at the first save (`resumes`)."""

    def __init__(self, log_dir: str):
        self.resumes = False  # set by the logger once the trainer knows its checkpoint
        self._joined = False
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        """Lightning deletes metrics.csv here; the decision waits for the first save."""

    def save(self) -> None:
        if self.metrics and not self._joined:
            self._join_earlier_rows(first_new_step=min(row["step"] for row in self.metrics))
            self._joined = True
        super().save()

    def _join_earlier_rows(self, first_new_step: int) -> None:
        """Keeps the rows of the existing file logged before `first_new_step` (resumed) or deletes the file."""
        path = self.metrics_file_path
        if not self._fs.isfile(path):
            return
        if not self.resumes:
            self._fs.rm_file(path)
            return
        with self._fs.open(path, "r", newline="") as file:
            reader = csv.DictReader(file)
            header = list(reader.fieldnames or [])
            rows = list(reader)
        if "step" not in header:
            raise ValueError(f"{path}: no 'step' column (header {header}); the resumed run's log cannot be joined to it: "
                             "move the file away to start a new one")  # fmt: skip
        kept = [row for line, row in enumerate(rows, start=2) if _step(row, path, line) < first_new_step]
        partial = f"{path}.partial"  # written whole, then renamed: a kill mid-write leaves the old file
        with self._fs.open(partial, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=header)
            writer.writeheader()
            writer.writerows(kept)
        self._fs.mv(partial, path)
        self.metrics_keys = header  # new columns extend it, and Lightning's writer rewrites the header


class ResumableCSVLogger(CSVLogger, L.Callback):
    """Lightning's CSVLogger (same arguments, same `<save_dir>/<name>/<version>/metrics.csv`) that keeps the rows
    of a resumed run (see the module docstring). Pass it as `logger` and in `callbacks`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._checkpoint_saved = False

    @property
    @rank_zero_experiment
    def experiment(self) -> _ResumingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ResumingWriter(log_dir=self.log_dir)
        return self._experiment

    def on_fit_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self.experiment.resumes = trainer.ckpt_path is not None

    def after_save_checkpoint(self, checkpoint_callback) -> None:
        self._checkpoint_saved = True

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self._checkpoint_saved:  # the checkpoint step's row was logged after the save: write both to disk
            self.save()
            self._checkpoint_saved = False
