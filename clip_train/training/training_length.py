"""How many optimizer steps a run takes: the length the learning-rate schedule decays over.

The training stream is an `IterableDataset` without a length, so Lightning cannot count the
steps of an epoch (its `estimated_stepping_batches` falls back to `max_steps`, which is -1 when
training by epochs: the cosine then ends at step 0 and the rate is 0 after warm-up). The data
module knows its epoch exactly (`batches_per_epoch`: the same on every rank), so the length is:

    trainer.max_steps only            -> max_steps
    trainer.max_epochs only           -> max_epochs × steps per epoch
    both                              -> the smaller, as Lightning stops at whichever comes first
    neither (-1 or null)              -> refused: an endless run has no schedule to decay over

One training batch is one optimizer step (`optim.accumulate` splits a batch, it does not add
batches); `trainer.limit_train_batches` shortens an epoch as Lightning applies it. A step skipped
for a non-finite loss (`clip_train.training.numerics`) does not advance the schedule, so a run with
skipped steps ends just short of the schedule's end; the shortfall is `train/skipped_steps`.
"""


def _is_set(limit: int | None) -> bool:
    return limit is not None and limit >= 0


def check_training_length(max_steps: int | None, max_epochs: int | None) -> None:
    """Refuse a run that would never stop (and so has no learning-rate schedule)."""
    if not _is_set(max_steps) and not _is_set(max_epochs):
        raise ValueError(
            "the run has no end: trainer.max_steps and trainer.max_epochs are both unset (-1 or null), so the "
            "learning-rate schedule has no length. Set trainer.max_steps=N, trainer.max_epochs=N, or both"
        )


def steps_per_epoch(batches_per_epoch: int, limit_train_batches: int | float | None) -> int:
    """Optimizer steps in one epoch of `batches_per_epoch` batches, after Lightning's `limit_train_batches`
    (an int caps the batches, a float keeps that fraction of them)."""
    if limit_train_batches is None:
        return batches_per_epoch
    if isinstance(limit_train_batches, int):
        return min(batches_per_epoch, limit_train_batches)
    return int(batches_per_epoch * limit_train_batches)


def total_optimizer_steps(
    max_steps: int | None, max_epochs: int | None, batches_per_epoch: int | None, limit_train_batches=None
) -> int:
    """The schedule's length (see the module docstring); `batches_per_epoch` is needed only with `max_epochs`."""
    check_training_length(max_steps, max_epochs)
    lengths = [max_steps] if _is_set(max_steps) else []
    if _is_set(max_epochs):
        if batches_per_epoch is None:
            raise ValueError("trainer.max_epochs is set but the training data has no known epoch length: set trainer.max_steps")
        lengths.append(max_epochs * steps_per_epoch(batches_per_epoch, limit_train_batches))
    total = min(lengths)
    if total < 1:
        raise ValueError(f"the run takes {total} optimizer steps: set trainer.max_steps or trainer.max_epochs above 0")
    return total
