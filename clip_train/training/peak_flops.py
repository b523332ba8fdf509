"""The peak FLOP/s that MFU divides by: the vendor's dense bf16 figure on a GPU, a measured rate on a CPU.

On CUDA the figure comes from Lightning's table of datasheet numbers by device name
(`lightning.fabric.utilities.throughput.get_available_flops`: A100 312, H100 SXM 989, H100 PCIe
756 TFLOP/s dense bf16, and more), always for bf16, the precision a GPU run is meant to train in,
so an fp32 run's MFU shows how far it is from what the hardware offers. A CPU has no such figure;
its peak is the fp32 matmul rate measured once at start with all of torch's threads, the most
a model made of matmuls could reach on this machine.
"""

import time

import torch
from lightning.fabric.utilities.throughput import get_available_flops

CPU_MATMUL_SIZE = 1024
CPU_MATMUL_REPEATS = 8


def measured_cpu_matmul_flops(size: int = CPU_MATMUL_SIZE, repeats: int = CPU_MATMUL_REPEATS) -> float:
    """FLOP/s of a (size × size) @ (size × size) fp32 matmul on the CPU, after one warm-up product."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def device_peak_flops(device: torch.device) -> tuple[float | None, str]:
    """(peak FLOP/s of one device or None when unknown, where the figure comes from)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return get_available_flops(device, torch.bfloat16), f"{name} dense bf16 (vendor datasheet)"
    if device.type == "cpu":
        return measured_cpu_matmul_flops(), "CPU fp32 matmul rate measured at start"
    return None, f"no peak known for {device.type}"
