"""Data: the loading machinery (sources, shard streaming, exact positions, decoding, transforms, tokenizers) and,
in `world/`, the embedded world the defaults train and evaluate on."""

from clip_train.data.datamodule import ShardDataModule
from clip_train.data.world.synthetic import SyntheticShards

__all__ = ["ShardDataModule", "SyntheticShards"]
