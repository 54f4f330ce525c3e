"""Experiment trackers (`--report-to tensorboard,wandb,trackio`): a copy of metrics.jsonl for the
dashboards people already watch. metrics.jsonl stays the source of truth.

Each tracker's package is imported only when asked for. Every numeric field of a metrics record is
logged as a scalar at its step (nested dicts flattened: branch_stats/n); None and strings are left
out; the step's one-line summary is logged as text. Credentials come only from the environment
(WANDB_API_KEY, HF_TOKEN, ...): nothing here takes or writes one. Offline: TensorBoard writes event
files to OUT/tensorboard; W&B runs in offline mode (files in OUT/wandb) unless WANDB_API_KEY or
WANDB_MODE is set; trackio keeps its local database unless TRACKIO_SPACE_ID is set.
A resumed run continues the same W&B run (its id is kept in OUT/wandb/attnrl_run_id), and the steps it
redoes after the checkpoint are not sent again (RunLog.tracked_through): each step reaches a tracker once.
"""
from __future__ import annotations

import importlib
import os
import secrets

TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}   # name -> pip package


class TrackerError(RuntimeError):
    pass


def parse_report_to(value: str) -> list[str]:
    """'none' / '' -> []; 'tensorboard,wandb' -> ['tensorboard', 'wandb']; checks names and packages."""
    names = [n.strip() for n in value.split(",") if n.strip() and n.strip() != "none"]
    for name in names:
        if name not in TRACKERS:
            raise TrackerError(f"--report-to: unknown tracker {name!r}; choose from none, {', '.join(TRACKERS)}")
        try:
            importlib.import_module(name)
        except ImportError:
            raise TrackerError(f"--report-to {name}: the package {TRACKERS[name]!r} is not installed; "
                               f"pip install {TRACKERS[name]} (or drop it from --report-to)") from None
    return names


def scalars(record: dict, prefix: str = "") -> dict[str, float]:
    """The numeric fields of a metrics record, nested dicts flattened with '/'."""
    out = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out.update(scalars(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)):   # bools too, as 0/1
            out[prefix + key] = float(value)
    return out


def _wandb_run_id(out_dir: str) -> str:
    """The run directory's W&B run id: made at the first start, read back on --resume."""
    path = os.path.join(out_dir, "wandb", "attnrl_run_id")
    if os.path.exists(path):
        with open(path) as f:
            return f.read().strip()
    run_id = secrets.token_hex(4)   # W&B's ids are 8 lowercase alphanumerics
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(run_id)
    return run_id


class Trackers:
    """The trackers of one run; `log` is called by RunLog.write_metrics with every record."""

    def __init__(self, names: list[str], out_dir: str, config: dict):
        self.runs = []
        run_name = os.path.basename(os.path.normpath(out_dir))
        for name in names:
            if name == "tensorboard":
                from torch.utils.tensorboard import SummaryWriter
                self.runs.append(("tensorboard", SummaryWriter(os.path.join(out_dir, "tensorboard"))))
            elif name == "wandb":
                import wandb
                offline = not (os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE"))
                run = wandb.init(project=os.environ.get("WANDB_PROJECT", "attnrl-mini"), name=run_name,
                                 dir=out_dir, config=config, mode="offline" if offline else None,
                                 id=_wandb_run_id(out_dir), resume="allow")
                self.runs.append(("wandb", run))
            elif name == "trackio":
                import trackio
                trackio.init(project=os.environ.get("TRACKIO_PROJECT", "attnrl-mini"), name=run_name, config=config)
                self.runs.append(("trackio", trackio))

    def log(self, record: dict, summary: str = "") -> None:
        step, values = int(record["step"]), scalars(record)
        for kind, run in self.runs:
            if kind == "tensorboard":
                for key, value in values.items():
                    run.add_scalar(key, value, step)
                if summary:
                    run.add_text("step_summary", summary, step)
                run.flush()
            elif kind == "wandb":
                run.log(values, step=step)
                if summary:
                    run.summary["step_summary"] = summary
            else:
                run.log(values, step=step)

    def close(self) -> None:
        for kind, run in self.runs:
            if kind == "tensorboard":
                run.close()
            else:
                run.finish()
        self.runs = []
