"""Fully sharded data parallel for towers too large for DDP: FSDP2 (torch's `fully_shard`).

Parameters, gradients and optimizer state are sharded over the ranks, each wrapped layer gathered
only while it runs. FSDP2 rather than FSDP1 (Lightning's `FSDPStrategy`) because it shards each
parameter on its own (a DTensor), so frozen and trainable parameters mix freely in one unit (LiT
locking, a frozen pooler); its full state dict has DDP's keys; it composes with `torch.compile`;
and it runs on gloo CPU processes, so the sharded path is tested like every other. OpenCLIP's
trainer moved to it too.

Lightning's `ModelParallelStrategy` runs it, but leaves the sharding to the module's `configure_model`
and splits the devices into a data-parallel and a tensor-parallel mesh dimension.
`FullyShardedStrategy` keeps the sharding plan in the config (`wrap`) and uses one data-parallel
dimension over all ranks; `ClipModule.configure_model` calls its `shard`.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from hydra.utils import get_class
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn
from torch.distributed.fsdp import FSDPModule, fully_shard, register_fsdp_forward_method
from torch.distributed.tensor import DTensor


class FullyShardedStrategy(ModelParallelStrategy):
    """FSDP2 over every rank, sharding each module whose class is named in `wrap` as one unit.

    wrap: dotted class paths (`timm.models.vision_transformer.Block`); each such module is gathered
        for its own forward and backward only. The model's remaining parameters (embeddings,
        projections, the temperature) form the root unit.
    reshard_after_forward: free each unit's gathered parameters after its forward (ZeRO-3) and gather
        them again for backward; False keeps them until backward (ZeRO-2: faster, more memory).
    state_dict_type: `full` writes one checkpoint file with DDP's keys, gathered on rank 0 and readable
        anywhere; `sharded` writes a folder with one file per rank (torch.distributed.checkpoint), faster
        for large models.
    """

    def __init__(
        self,
        wrap: list[str],
        reshard_after_forward: bool = True,
        state_dict_type: str = "full",
        **options,
    ):
        if state_dict_type not in ("full", "sharded"):
            raise ValueError(f"trainer.strategy.state_dict_type must be full or sharded, not {state_dict_type!r}")
        super().__init__(tensor_parallel_size=1, save_distributed_checkpoint=state_dict_type == "sharded", **options)
        self.wrap_classes = tuple(get_class(path) for path in wrap)
        self.reshard_after_forward = reshard_after_forward

    def setup_environment(self) -> None:
        self._data_parallel_size = self.num_nodes * self.num_processes  # one data-parallel dimension: every rank
        super().setup_environment()

    def shard(self, model: nn.Module) -> None:
        """Shard `model` in place over the data-parallel ranks: each `wrap` module, then the rest as the root."""
        if isinstance(model, FSDPModule):  # configure_model runs again for each trainer call
            return
        mesh = self.device_mesh["data_parallel"]
        units = [module for module in model.modules() if isinstance(module, self.wrap_classes)]
        if not units:
            names = ", ".join(cls.__qualname__ for cls in self.wrap_classes)
            raise ValueError(f"trainer.strategy.wrap names no module of this model ({names}); name its layer classes")
        for unit in units:
            fully_shard(unit, mesh=mesh, reshard_after_forward=self.reshard_after_forward)
        fully_shard(model, mesh=mesh)
        register_fsdp_forward_method(model, "training_forward")  # the training step's entry, besides `forward`

    @contextmanager
    def block_backward_sync(self) -> Iterator[None]:
        """Backward passes inside accumulate sharded gradients locally; the last one outside reduce-scatters them."""
        model = self.lightning_module.model
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)

    @contextmanager
    def gathered(self) -> Iterator[None]:
        """Every parameter whole on every rank for the duration, and no collective in the model's forwards:
        evaluation runs as many forwards on each rank as its share of the data needs (unequal counts would
        hang FSDP's per-forward all-gathers), and rank 0 alone draws the figures. Costs the unsharded
        model's memory while open."""
        model = self.lightning_module.model
        units = [module for module in model.modules() if isinstance(module, FSDPModule)]
        inner = [unit for unit in units if unit is not model]  # the root never reshards after forward
        for unit in inner:
            unit.set_reshard_after_forward(False, recurse=False)
        for unit in units:
            unit.unshard()
        try:
            yield
        finally:
            for unit in units:
                unit.reshard()
            for unit in inner:
                unit.set_reshard_after_forward(self.reshard_after_forward, recurse=False)


def whole(tensor: torch.Tensor) -> torch.Tensor:
    """The full value of a (possibly sharded) parameter: a collective under FSDP, so every rank calls it."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor
