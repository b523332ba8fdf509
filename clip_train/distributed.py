"""The few collectives the contrastive loss, evaluation and the data module's shard sizes need, written once.

Every function is the identity on a single process, so the same code runs unchanged on a
laptop, under gloo on CPUs and under NCCL on GPUs. Model files never talk across ranks.
"""

import os

import torch
import torch.distributed as dist

# torch 2.14 renamed the single-tensor collectives; older releases only have the old names.
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter_single = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


LAUNCHER_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID")  # torchrun, Lightning's own DDP launcher, srun


def launcher_rank() -> int:
    """This process's rank as its launcher put it in the environment, readable before the process group exists
    (Lightning starts it inside `Trainer.fit`); 0 when no launcher set one. Lightning's DDP launcher sets
    LOCAL_RANK in the processes it starts (the starting process is rank 0), and under several nodes the
    first node-local rank of each may read 0 here: callers must treat 0 as "may be rank 0", never as unique."""
    for name in LAUNCHER_RANK_VARIABLES:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def broadcast_from_rank_0(value):
    """Rank 0's `value` on every rank (a picklable object); `value` itself on a single process. A collective."""
    if rank_and_world()[1] == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward sends each rank the summed gradient of its slice.

    Every rank's loss depends on every rank's features, so the gradient of the summed loss
    with respect to a rank's local features is the sum over ranks of the gradients of the
    gathered copy: a reduce-scatter with SUM. DDP then averages parameter gradients, which
    makes them equal to the gradient of the mean loss over ranks.
    """

    @staticmethod
    def forward(ctx, local: torch.Tensor) -> torch.Tensor:
        world = dist.get_world_size()
        gathered = local.new_empty((world * local.shape[0], *local.shape[1:]))
        _all_gather_single(gathered, local.contiguous())
        return gathered

    @staticmethod
    def backward(ctx, grad_gathered: torch.Tensor) -> torch.Tensor:
        world = dist.get_world_size()
        grad_local = grad_gathered.new_empty((grad_gathered.shape[0] // world, *grad_gathered.shape[1:]))
        _reduce_scatter_single(grad_local, grad_gathered.contiguous(), op=dist.ReduceOp.SUM)
        return grad_local


def gather_with_grad(local: torch.Tensor) -> torch.Tensor:
    """(B, ...) on each rank -> (world·B, ...), rank-major, differentiable. Needs equal B on all ranks."""
    if rank_and_world()[1] == 1:
        return local
    return _GatherWithGrad.apply(local)


@torch.no_grad()
def gather_uneven(local: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(B_r, ...) on rank r -> ((ΣB_r, ...) rank-major, index of this rank's first row); no gradient.

    B_r may differ between ranks, as it does for validation sets that do not split evenly.
    """
    rank, world = rank_and_world()
    if world == 1:
        return local, 0
    size = torch.tensor([local.shape[0]], device=local.device)
    sizes = size.new_empty(world)
    _all_gather_single(sizes, size)
    padded = local.new_zeros((int(sizes.max()), *local.shape[1:]))
    padded[: local.shape[0]] = local
    gathered = padded.new_empty((world * padded.shape[0], *padded.shape[1:]))
    _all_gather_single(gathered, padded.contiguous())
    chunks = gathered.split(padded.shape[0])
    return torch.cat([chunk[: int(n)] for chunk, n in zip(chunks, sizes)]), int(sizes[:rank].sum())


@torch.no_grad()
def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """A reduced copy of `value`, summed over ranks."""
    if rank_and_world()[1] == 1:
        return value
    total = value.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def _exchange(tensor: torch.Tensor, send_to: int, receive_from: int) -> torch.Tensor:
    """Send `tensor` to rank `send_to` and receive a tensor of the same shape from `receive_from`."""
    received = torch.empty_like(tensor)
    operations = [dist.P2POp(dist.isend, tensor.contiguous(), send_to), dist.P2POp(dist.irecv, received, receive_from)]
    for request in dist.batch_isend_irecv(operations):
        request.wait()
    return received


class _NeighbourExchange(torch.autograd.Function):
    """One hop round the ring: forward sends to `send_to` and receives from `receive_from`.

    The received tensor belongs to `receive_from`, so its gradient travels back there, and the
    gradient of the tensor this rank sent comes back from `send_to`: backward is the same hop
    with the directions swapped. Chained hops therefore return every gradient to its owner.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, send_to: int, receive_from: int) -> torch.Tensor:
        ctx.send_to, ctx.receive_from = send_to, receive_from
        return _exchange(tensor, send_to, receive_from)

    @staticmethod
    def backward(ctx, grad_received: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return _exchange(grad_received, ctx.receive_from, ctx.send_to), None, None


def pass_to_next_rank(tensor: torch.Tensor) -> torch.Tensor:
    """Rank r sends `tensor` to rank r+1 and returns what rank r-1 sent (mod world), differentiably.

    After h calls a rank holds the tensor of rank r-h. Every rank must call it, with equal shapes.
    """
    rank, world = rank_and_world()
    if world == 1:
        return tensor
    return _NeighbourExchange.apply(tensor, (rank + 1) % world, (rank - 1) % world)
