"""Data: shard streaming, transforms, tokenizers and the embedded synthetic dataset."""

from clip_train.data.datamodule import ShardDataModule
from clip_train.data.synthetic import SyntheticShards

__all__ = ["ShardDataModule", "SyntheticShards"]
