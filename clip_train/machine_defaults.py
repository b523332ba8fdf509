"""Settings that follow the machine a run starts on, as OmegaConf resolvers the configs use.

    ${loader_workers:${trainer.devices}}     DataLoader workers per training process, from its share of the CPUs
    ${precision_for:${trainer.accelerator}}  Lightning precision for the accelerator

They are resolved when the config is read (in each training process, on the node it runs on), so a
command pasted on a login node and run by srun on a GPU node gets the GPU node's values.

Workers: a training process's CPUs are SLURM's per-task share when it runs one task per device (srun
with `--ntasks-per-node` at least the devices and `--cpus-per-task`, as scripts/slurm/train.sbatch
asks: SLURM binds each task to its own CPUs), else the CPUs it may run on (`os.sched_getaffinity`),
shared by the node's `devices` processes (torchrun and Lightning's own launcher start one per device,
each seeing every CPU). One of them stays with the training loop, which feeds the device; the rest are
workers, at least 1. On 8 GPUs and 64 cores: 7 workers per process.

Precision: bf16 mixed on a GPU that has bf16 (NVIDIA Ampere and later, and the AMD GPUs torch supports
with it), fp16 mixed with a loss scaler on one that has not (V100, T4), fp32 on the CPU, where
mixed precision is slow on most processors. A GPU that cannot be asked (a config read where none is
visible) gets bf16.
"""

import os
from collections.abc import Sequence

from omegaconf import OmegaConf

GPU_ACCELERATORS = ("gpu", "cuda")


def local_processes(devices) -> int:
    """Training processes per node for Lightning's `trainer.devices`: a count, a list of device ids, or
    "auto"/-1 (every visible GPU, at least 1)."""
    if isinstance(devices, Sequence) and not isinstance(devices, str):
        return max(1, len(devices))
    if str(devices).isdigit() and int(devices) > 0:
        return int(devices)
    import torch

    return max(1, torch.cuda.device_count())


def process_cpus(devices) -> int:
    """CPUs one training process can count on (see the module docstring)."""
    processes = local_processes(devices)
    slurm_cpus, slurm_tasks = os.environ.get("SLURM_CPUS_PER_TASK", ""), os.environ.get("SLURM_NTASKS_PER_NODE", "")
    if slurm_cpus.isdigit() and slurm_tasks.isdigit() and int(slurm_tasks) >= processes:
        return int(slurm_cpus)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return usable // processes


def loader_workers(devices) -> int:
    """DataLoader workers per training process: its CPUs less the one of its training loop, at least 1."""
    return max(1, process_cpus(devices) - 1)


def precision_for(accelerator: str) -> str:
    """Lightning's `precision` for `trainer.accelerator` (see the module docstring)."""
    name = str(accelerator).lower()
    if name not in (*GPU_ACCELERATORS, "auto"):
        return "32-true"
    import torch

    if not torch.cuda.is_available():
        return "bf16-mixed" if name in GPU_ACCELERATORS else "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


def register_resolvers() -> None:
    """Make `loader_workers` and `precision_for` known to OmegaConf (again is harmless)."""
    OmegaConf.register_new_resolver("loader_workers", loader_workers, replace=True)
    OmegaConf.register_new_resolver("precision_for", precision_for, replace=True)
