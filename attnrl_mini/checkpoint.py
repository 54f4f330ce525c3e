"""Checkpoints that resume a run exactly: adapter, optimiser, RNGs, data position, ADS state,
the pipeline's pending batch (with its chosen branch prefixes) and the step counter."""
from __future__ import annotations

import os
import random
import shutil

import torch

STATE_FILE = "trainer_state.pt"


def checkpoint_dir(out_dir: str, step: int) -> str:
    return os.path.join(out_dir, "checkpoints", f"step_{step:06d}")


def latest_checkpoint(out_dir: str) -> str | None:
    root = os.path.join(out_dir, "checkpoints")
    if not os.path.isdir(root):
        return None
    done = sorted(d for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, STATE_FILE)))
    return os.path.join(root, done[-1]) if done else None


def resolve_adapter(path: str, flag: str) -> str:
    """The LoRA adapter directory that `path` names: itself (holding adapter_config.json), a
    checkpoint's adapter/, or a run directory's latest checkpoint's adapter/. `flag` names the
    command-line option in the error."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{flag} {path!r}: no such directory")
    if os.path.isfile(os.path.join(path, "adapter_config.json")):
        return path
    if os.path.isfile(os.path.join(path, "adapter", "adapter_config.json")):
        return os.path.join(path, "adapter")
    latest = latest_checkpoint(path)
    if latest and os.path.isfile(os.path.join(latest, "adapter", "adapter_config.json")):
        return os.path.join(latest, "adapter")
    raise FileNotFoundError(
        f"{flag} {path!r} is neither a LoRA adapter directory (with adapter_config.json), a checkpoint "
        "(with adapter/), nor a training run directory with a finished checkpoint in checkpoints/")


def save_checkpoint(trainer, out_dir: str, keep: int = 3) -> str:
    path = checkpoint_dir(out_dir, trainer.step)
    tmp = path + ".tmp"  # write then rename: a run killed mid-save leaves the previous checkpoint intact
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    trainer.model.save_pretrained(os.path.join(tmp, "adapter"))
    state = {
        "step": trainer.step,
        "batches_sampled": trainer.batches_sampled,
        "prompt_batch_size": trainer.prompt_batch_size,
        "pending": trainer.pending,
        "cumulative_tokens": trainer.cumulative_tokens,
        "nonfinite_skipped": trainer.nonfinite_skipped,
        "stream": trainer.stream.state_dict(),
        "running_fci": trainer.running_fci.state_dict(),
        "batch_ctl": trainer.batch_ctl.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "python_rng": trainer.rng.getstate(),
        "global_python_rng": random.getstate(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    torch.save(state, os.path.join(tmp, STATE_FILE))
    shutil.rmtree(path, ignore_errors=True)
    os.rename(tmp, path)
    root = os.path.dirname(path)
    old = sorted(d for d in os.listdir(root) if d.startswith("step_") and not d.endswith(".tmp"))
    for d in old[:-keep]:
        shutil.rmtree(os.path.join(root, d), ignore_errors=True)
    return path


def load_checkpoint(trainer, path: str) -> None:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = load_file(os.path.join(path, "adapter", "adapter_model.safetensors"))
    set_peft_model_state_dict(trainer.model, weights)
    state = torch.load(os.path.join(path, STATE_FILE), weights_only=False, map_location="cpu")
    trainer.step = state["step"]
    trainer.batches_sampled = state["batches_sampled"]
    trainer.prompt_batch_size = state["prompt_batch_size"]
    trainer.pending = state["pending"]
    trainer.cumulative_tokens = state["cumulative_tokens"]
    trainer.nonfinite_skipped = state["nonfinite_skipped"]
    trainer.stream.load_state_dict(state["stream"])
    trainer.running_fci.load_state_dict(state["running_fci"])
    trainer.batch_ctl.load_state_dict(state["batch_ctl"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.rng.setstate(state["python_rng"])
    random.setstate(state["global_python_rng"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
