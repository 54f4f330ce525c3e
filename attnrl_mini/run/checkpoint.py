"""Checkpoints that resume a run exactly: adapter, optimiser, RNGs, data position, ADS state,
the pipeline's pending batch (with its chosen branch prefixes) and the step counter.

A checkpoint is written to `step_N.tmp/`, its files' SHA-256 sums go to `checksums.json` last, and
only then is the folder renamed to `step_N/`. So a kill or a full disk mid-save leaves only a `.tmp`
folder (never chosen, removed at the next start), and flipped bytes are caught on load.

Bytes are not enough: a checkpoint is also checked for what it means. On load every adapter tensor
must be finite and of the model's shape, every optimiser tensor finite (Adam's second moments >= 0);
a failure is handled like a checksum mismatch (named, set aside as `.bad`, the previous checkpoint
loaded). A save refuses to write a non-finite tensor. A checkpoint without checksums.json (older
runs) gets the same checks, and a warning that its bytes cannot be verified.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil

import torch

from attnrl_mini.run.writes import writing

STATE_FILE = "trainer_state.pt"
CHECKSUM_FILE = "checksums.json"
_FINISHED = re.compile(r"step_\d+")   # step_N.tmp (unfinished) and step_N.bad (failed to load) never match


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or loaded; the message names the file and why."""


def checkpoint_dir(out_dir: str, step: int) -> str:
    return os.path.join(out_dir, "checkpoints", f"step_{step:06d}")


def finished_checkpoints(out_dir: str) -> list[str]:
    """Finished checkpoints of a run, newest first."""
    root = os.path.join(out_dir, "checkpoints")
    if not os.path.isdir(root):
        return []
    done = [d for d in os.listdir(root) if _FINISHED.fullmatch(d) and os.path.isfile(os.path.join(root, d, STATE_FILE))]
    return [os.path.join(root, d) for d in sorted(done, reverse=True)]


def latest_checkpoint(out_dir: str) -> str | None:
    done = finished_checkpoints(out_dir)
    return done[0] if done else None


def remove_unfinished(out_dir: str) -> list[str]:
    """Delete `step_N.tmp` folders left by a run killed mid-save (call while holding the run's lock)."""
    root = os.path.join(out_dir, "checkpoints")
    stale = [os.path.join(root, d) for d in os.listdir(root) if d.endswith(".tmp")] if os.path.isdir(root) else []
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(folder: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, n), folder) for d, _, names in os.walk(folder) for n in names
                  if n != CHECKSUM_FILE)


def verify_checkpoint(path: str) -> bool:
    """Raise CheckpointError naming the first file whose bytes differ from when it was saved.
    Returns False for a checkpoint written before checksums existed (no checksums.json): its bytes
    cannot be verified, only what they mean (`read_checkpoint`)."""
    manifest = os.path.join(path, CHECKSUM_FILE)
    if not os.path.exists(manifest):
        return False
    try:
        with open(manifest) as f:
            expected = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{manifest}: unreadable ({e})") from None
    if not isinstance(expected, dict):
        raise CheckpointError(f"{manifest}: not a mapping of file names to SHA-256 sums")
    for name, digest in expected.items():
        file = os.path.join(path, name)
        if not os.path.isfile(file):
            raise CheckpointError(f"{file}: missing")
        if _sha256(file) != digest:
            raise CheckpointError(f"{file}: checksum mismatch (the file changed after it was saved)")
    return True


_STATE_KEYS = ("step", "batches_sampled", "prompt_batch_size", "pending", "cumulative_tokens", "nonfinite_skipped",
               "stream", "running_fci", "batch_ctl", "optimizer", "python_rng", "global_python_rng", "torch_rng")


def nonfinite_tensors(named: dict) -> list[str]:
    """Names of the floating-point tensors in `named` holding a NaN or an infinity."""
    return [name for name, t in named.items()
            if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all())]


def _optimizer_problem(optimizer_state) -> str | None:
    """What is wrong with an AdamW state_dict, or None: non-finite moments or a negative second moment
    (flipped bytes that pass no checksum can still show here: a flipped sign bit makes one negative)."""
    try:
        per_param = optimizer_state["state"]
        for index, entry in per_param.items():
            for key, t in entry.items():
                if not isinstance(t, torch.Tensor):
                    continue
                if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                    return f"optimiser state {key} of parameter {index} is not finite"
                if key == "exp_avg_sq" and bool((t < 0).any()):
                    return f"optimiser state exp_avg_sq of parameter {index} is negative (a second moment cannot be)"
    except (KeyError, TypeError, AttributeError) as e:
        return f"optimiser state malformed ({type(e).__name__}: {e})"
    return None


def read_checkpoint(path: str, warn=None) -> tuple[dict, dict]:
    """(adapter weights, trainer state) of a checkpoint, checked for bytes and meaning; CheckpointError
    naming the file and why otherwise. `warn` is told when the checkpoint has no checksums."""
    from safetensors.torch import load_file

    if not verify_checkpoint(path) and warn is not None:
        warn(f"[attnrl] warning: checkpoint {path} has no {CHECKSUM_FILE} (an older run): its bytes cannot be "
             "verified, only checked for finite values of the right shapes")
    adapter_file = os.path.join(path, "adapter", "adapter_model.safetensors")
    state_file = os.path.join(path, STATE_FILE)
    try:
        weights = load_file(adapter_file)
    except Exception as e:
        raise CheckpointError(f"{adapter_file}: cannot be read ({type(e).__name__}: {e})") from e
    bad = nonfinite_tensors(weights)
    if bad:
        raise CheckpointError(f"{adapter_file}: {len(bad)} LoRA tensor(s) hold NaN or infinity (e.g. {bad[0]})")
    try:
        state = torch.load(state_file, weights_only=False, map_location="cpu")
    except Exception as e:
        raise CheckpointError(f"{state_file}: cannot be read ({type(e).__name__}: {e})") from e
    missing = [k for k in _STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"{state_file}: not a trainer state (missing {', '.join(missing[:4])})")
    problem = _optimizer_problem(state["optimizer"])
    if problem:
        raise CheckpointError(f"{state_file}: {problem}")
    return weights, state


def resolve_adapter(path: str, flag: str) -> str:
    """The LoRA adapter directory that `path` names: itself (holding adapter_config.json), a
    checkpoint's adapter/, or a run directory's newest finished checkpoint's adapter/. A checkpoint's
    files are checked against its checksums first. `flag` names the command-line option in the error."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{flag} {path!r}: no such directory")
    if os.path.isfile(os.path.join(path, "adapter_config.json")):
        return path
    ckpt = path if os.path.isfile(os.path.join(path, "adapter", "adapter_config.json")) else latest_checkpoint(path)
    if ckpt and os.path.isfile(os.path.join(ckpt, "adapter", "adapter_config.json")):
        verify_checkpoint(ckpt)
        return os.path.join(ckpt, "adapter")
    raise FileNotFoundError(
        f"{flag} {path!r} is neither a LoRA adapter directory (with adapter_config.json), a checkpoint "
        "(with adapter/), nor a training run directory with a finished checkpoint in checkpoints/")


def save_checkpoint(trainer, out_dir: str, keep: int = 3) -> str:
    path = checkpoint_dir(out_dir, trainer.step)
    tmp = path + ".tmp"  # write then rename: a run killed mid-save leaves the previous checkpoint intact
    bad = nonfinite_tensors({n: p for n, p in trainer.model.named_parameters() if p.requires_grad})
    problem = (f"{len(bad)} LoRA tensor(s) hold NaN or infinity (e.g. {bad[0]})" if bad
               else _optimizer_problem(trainer.optimizer.state_dict()))
    if problem:
        raise CheckpointError(f"not saving checkpoint {path}: {problem}; the previous checkpoints are intact "
                              "(--resume continues from the newest; a lower --lr may avoid this)")
    # a full disk, a read-only folder: one line naming the file, and nothing half-written stays behind
    with writing(tmp, cleanup=tmp):
        _write(trainer, tmp)
        shutil.rmtree(path, ignore_errors=True)
        os.rename(tmp, path)
    root = os.path.dirname(path)
    old = sorted(d for d in os.listdir(root) if _FINISHED.fullmatch(d))
    for d in old[:-keep]:
        shutil.rmtree(os.path.join(root, d), ignore_errors=True)
    return path


def _write(trainer, tmp: str) -> None:
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
        "grad_scaler": trainer.scaler.state_dict(),   # fp16's loss scale ({} when the scaler is off)
        "python_rng": trainer.rng.getstate(),
        "global_python_rng": random.getstate(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    torch.save(state, os.path.join(tmp, STATE_FILE))
    with open(os.path.join(tmp, CHECKSUM_FILE), "w") as f:   # last: its presence means every file is complete
        json.dump({name: _sha256(os.path.join(tmp, name)) for name in _files(tmp)}, f, indent=1)


def load_checkpoint(trainer, path: str, warn=None) -> None:
    """Restore everything, or raise CheckpointError naming the file and why (before changing anything)."""
    from peft import set_peft_model_state_dict

    weights, state = read_checkpoint(path, warn)
    adapter_file = os.path.join(path, "adapter", "adapter_model.safetensors")
    ours = {n.replace(".default", ""): p for n, p in trainer.model.named_parameters() if p.requires_grad}
    for name, t in weights.items():
        mine = ours.get(name)
        if mine is not None and tuple(mine.shape) != tuple(t.shape):
            raise CheckpointError(f"{adapter_file}: {name} has shape {tuple(t.shape)}, the model's is {tuple(mine.shape)}")
    try:
        trainer.optimizer.load_state_dict(state["optimizer"])   # first: it checks the parameters' count and sizes
    except Exception as e:
        raise CheckpointError(f"{os.path.join(path, STATE_FILE)}: optimiser state does not fit "
                              f"({type(e).__name__}: {str(e)[:200]})") from e
    try:
        set_peft_model_state_dict(trainer.model, weights)
    except Exception as e:  # e.g. a different LoRA shape
        raise CheckpointError(f"{adapter_file}: does not fit the model ({type(e).__name__}: {str(e)[:200]})") from e
    trainer.step = state["step"]
    trainer.batches_sampled = state["batches_sampled"]
    trainer.prompt_batch_size = state["prompt_batch_size"]
    trainer.pending = state["pending"]
    trainer.cumulative_tokens = state["cumulative_tokens"]
    trainer.nonfinite_skipped = state["nonfinite_skipped"]
    trainer.stream.load_state_dict(state["stream"])
    trainer.running_fci.load_state_dict(state["running_fci"])
    trainer.batch_ctl.load_state_dict(state["batch_ctl"])
    if state.get("grad_scaler"):   # checkpoints before the fp16 path have none
        trainer.scaler.load_state_dict(state["grad_scaler"])
    for group in trainer.optimizer.param_groups:   # an lr changed on --resume takes effect (run_dir)
        group["lr"] = trainer.cfg.lr
    trainer.rng.setstate(state["python_rng"])
    random.setstate(state["global_python_rng"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])


def check_any_verifies(out_dir: str) -> None:
    """Before any work on --resume: CheckpointError unless no checkpoint exists or one passes its checksums."""
    reasons = []
    for path in finished_checkpoints(out_dir):
        try:
            read_checkpoint(path)
            return
        except CheckpointError as e:
            reasons.append(str(e))
    if reasons:
        raise _none_loads(out_dir, reasons[0])


def load_latest_checkpoint(trainer, out_dir: str, warn=print) -> str | None:
    """Load the newest checkpoint that loads; each one that does not is named in a warning with the
    reason and, once an older one loaded, set aside as `step_N.bad` (its steps are redone)."""
    failed = []
    for path in finished_checkpoints(out_dir):
        try:
            load_checkpoint(trainer, path, warn)
        except CheckpointError as e:
            warn(f"[attnrl] warning: checkpoint {path} cannot be loaded: {e}; trying the previous one")
            failed.append((path, str(e)))
            continue
        for bad, _ in failed:
            shutil.rmtree(bad + ".bad", ignore_errors=True)
            os.replace(bad, bad + ".bad")
        return path
    if failed:
        raise _none_loads(out_dir, failed[0][1])
    return None


def _none_loads(out_dir: str, newest_reason: str) -> CheckpointError:
    return CheckpointError(f"no checkpoint of {out_dir} can be loaded; the newest: {newest_reason}")
