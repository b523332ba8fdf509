"""A CSV logger whose `metrics.csv` survives a resume: the rows logged before the kill stay, the new rows follow.

Lightning's CSVLogger deletes an existing `<log dir>/metrics.csv` when its writer is created (Lightning PR #19446:
appending to another run's file broke on changed columns), so a run resumed in its own folder kept only the rows
logged after the resume. `ResumableCSVLogger` learns when fitting starts whether the run resumes (then it reads and
checks the old rows) and writes at its first save, when it knows the first step the resumed run logs:

- a resumed run (`trainer.fit(..., ckpt_path=...)` with a checkpoint) keeps every old row whose step is below the
  first step the resumed run logs, and appends the new rows under one header (old and new columns). The rows the
  killed run logged after its last checkpoint are logged again by the resumed run (it repeats those steps), so they
  are replaced, not doubled;
- a run that does not resume deletes a stale `metrics.csv` of an earlier run in the folder, as Lightning does.

It is a Callback as well as a logger (Lightning hands a logger no trainer): pass it in `callbacks` too, as
`clip_train.train` and `clip_train.vlm.stages` do. Lightning's Trainer writes each row to disk as it logs it, so
a run killed with `kill -9` leaves every row it logged. Only rank 0 writes (Lightning's `rank_zero_experiment`).
"""

import csv

import lightning as L
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


def _read_rows(path: str, fs) -> tuple[list[str], list[tuple[int, dict]]]:
    """(header, [(step, row)]) of a metrics.csv; a file without a `step` column or with a step that is not an integer
    is refused, naming the file and line, since the resumed run's rows could not be placed after its rows."""
    fix = "move the file away to start a new log"
    with fs.open(path, "r", newline="") as file:
        reader = csv.DictReader(file)
        header = list(reader.fieldnames or [])
        rows = list(reader)
    if "step" not in header:
        raise ValueError(f"{path}: no 'step' column (header {header}); {fix}")
    stepped = []
    for line, row in enumerate(rows, start=2):
        try:
            stepped.append((int(row["step"]), row))
        except (TypeError, ValueError):
            raise ValueError(f"{path} line {line}: step {row['step']!r} is not an integer; {fix}") from None
    return header, stepped


class _ResumingWriter(ExperimentWriter):
    """Lightning's writer, except that an existing metrics.csv is not deleted when the writer is created: a resumed
    run (`resume`) keeps its earlier rows, cut at the first step it logs (the first save); otherwise the first save
    deletes it."""

    def __init__(self, log_dir: str):
        self._earlier: tuple[list[str], list[tuple[int, dict]]] | None = None  # (header, [(step, row)]) once resumed
        self._joined = False
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        """Lightning deletes metrics.csv here; the logger decides when fitting starts (`resume`)."""

    def resume(self) -> None:
        """Reads (and checks) the earlier rows now, before the first training step."""
        if self._fs.isfile(self.metrics_file_path):
            self._earlier = _read_rows(self.metrics_file_path, self._fs)

    def save(self) -> None:
        if self.metrics and not self._joined:
            self._join_earlier_rows(first_new_step=min(row["step"] for row in self.metrics))
            self._joined = True
        super().save()

    def _join_earlier_rows(self, first_new_step: int) -> None:
        """Writes the earlier rows logged before `first_new_step` (resumed), or deletes a stale file (not resumed)."""
        path = self.metrics_file_path
        if self._earlier is None:
            if self._fs.isfile(path):
                self._fs.rm_file(path)
            return
        header, rows = self._earlier
        partial = f"{path}.partial"  # written whole, then renamed: a kill mid-write leaves the old file
        with self._fs.open(partial, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=header)
            writer.writeheader()
            writer.writerows(row for step, row in rows if step < first_new_step)
        self._fs.mv(partial, path)
        self.metrics_keys = header  # new columns extend it, and Lightning's writer rewrites the header


class ResumableCSVLogger(CSVLogger, L.Callback):
    """Lightning's CSVLogger (same arguments, same `<save_dir>/<name>/<version>/metrics.csv`) that keeps the rows
    of a resumed run (see the module docstring). Pass it as `logger` and in `callbacks`."""

    @property
    @rank_zero_experiment
    def experiment(self) -> _ResumingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ResumingWriter(log_dir=self.log_dir)
        return self._experiment

    def on_fit_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero and trainer.ckpt_path is not None:
            self.experiment.resume()
