"""The training machinery: the LightningModule and its step (exact accumulation, non-finite steps, gradient
clipping), the optimizer groups and schedule, the run's length, checkpoints, preemption, per-rank random
states, FSDP, and the throughput and MFU callback. `clip_train.train` assembles a run from these."""
