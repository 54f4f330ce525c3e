"""Which floating-point format the trainer computes in, chosen from the GPU it finds (`--dtype auto`).

    CUDA, compute capability >= 8.0 (A100, RTX 30xx/40xx, L4, H100): bfloat16
    CUDA, compute capability <  8.0 (T4, V100, RTX 20xx, P100):       float16   (no bf16 units)
    CPU:                                                              float32

bf16 keeps fp32's exponent range, so it needs no loss scaling; fp16 (5 exponent bits) underflows
small gradients and overflows large ones. The fp16 path therefore keeps what is trained in fp32
(peft casts the LoRA matrices up, so AdamW's state is fp32 too; `add_lora` checks it) and scales the
loss (torch.amp.GradScaler: the backward pass runs on S·loss, gradients are divided by S before the
clip; a step whose gradient is not finite is skipped, counted in `nonfinite_skipped`, and S halves).

The FCI two-pass kernel (algorithm/fci_triton.py) takes the log-sum-exp from PyTorch's flash
attention, which runs on compute capability >= 8.0 only; below, `--fci-kernel auto` uses the chunked
PyTorch FCI (same result) and `--fci-kernel triton` is refused here, before any work.
"""
from __future__ import annotations

import torch

BF16_MIN_CAPABILITY = (8, 0)   # Ampere: the first generation with bf16 tensor cores (and flash attention)


class PrecisionError(RuntimeError):
    """The GPU cannot run the chosen dtype / kernel (a user error: one line naming the flag)."""


def gpu_capability(device: torch.device) -> tuple[str, tuple[int, int]]:
    """(name, compute capability) of a CUDA device; separate so tests can mock it."""
    props = torch.cuda.get_device_properties(device)
    return props.name, (props.major, props.minor)


def resolve_dtype(dtype: str, device: torch.device, gpu: tuple[str, tuple[int, int]] | None = None) -> str:
    """The dtype the run uses: `auto` chosen per device (module docstring); an explicit one checked.

    `gpu`: (name, capability) of the CUDA device, read from torch when None.
    """
    if device.type != "cuda":
        return "float32" if dtype == "auto" else dtype   # bf16/fp16 run on a CPU too, slowly (docs/scaling.md)
    name, cap = gpu or gpu_capability(device)
    has_bf16 = tuple(cap) >= BF16_MIN_CAPABILITY
    if dtype == "auto":
        return "bfloat16" if has_bf16 else "float16"
    if dtype == "bfloat16" and not has_bf16:
        raise PrecisionError(f"--dtype bfloat16: this GPU ({name}, compute capability {cap[0]}.{cap[1]}) has no bf16 "
                             "support (it needs 8.0 or newer); pass --dtype auto or --dtype float16 "
                             "(or --preset t4-16gb)")
    return dtype


def check_fci_kernel(kernel: str, device: torch.device, gpu: tuple[str, tuple[int, int]] | None = None) -> None:
    """Refuse `--fci-kernel triton` on a GPU whose flash attention the two-pass kernel cannot use."""
    if kernel != "triton" or device.type != "cuda":
        return   # auto chooses per layer (algorithm/fci.py two_pass_kernel); on a CPU triton needs TRITON_INTERPRET=1
    name, cap = gpu or gpu_capability(device)
    if tuple(cap) < BF16_MIN_CAPABILITY:
        raise PrecisionError(f"--fci-kernel triton: this GPU ({name}, compute capability {cap[0]}.{cap[1]}) has no "
                             "flash attention, which the two-pass FCI needs (8.0 or newer); pass --fci-kernel auto "
                             "or --fci-kernel torch (the same FCI, chunked)")


def computes_in_fp16(model: torch.nn.Module) -> bool:
    """Does the model run in fp16 (its frozen weights, or a 4-bit base's compute dtype)? Then the loss is scaled."""
    return any(p.dtype == torch.float16 for p in model.parameters())


def grad_scaler(model: torch.nn.Module, device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling for an fp16 model; for fp32/bf16 a disabled scaler, whose calls pass straight through
    (scale(loss) is loss, step() is optimizer.step(), unscale_ and update do nothing)."""
    return torch.amp.GradScaler(device.type, enabled=computes_in_fp16(model))
