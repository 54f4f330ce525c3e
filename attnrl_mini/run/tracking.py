"""Experiment trackers (`--report-to tensorboard,wandb,trackio`): a copy of metrics.jsonl for the
dashboards people already watch. metrics.jsonl stays the source of truth.

Each tracker's package is imported only when asked for. Every numeric field of a metrics record is
logged as a scalar at its step (nested dicts flattened: branch_stats/n); None and strings are left
out; the step's one-line summary is logged as text (TensorBoard, W&B). Credentials come only from the
environment (WANDB_API_KEY, HF_TOKEN, ...): nothing here takes or writes one. Offline: TensorBoard
writes event files to OUT/tensorboard; W&B runs in offline mode (files in OUT/wandb) unless
WANDB_API_KEY or WANDB_MODE is set; trackio writes its local SQLite database (PROJECT.db in
$TRACKIO_DIR, default $HF_HOME/trackio) unless TRACKIO_SPACE_ID or TRACKIO_SERVER_URL is set; its
run is named after OUT.
A resumed run continues the same W&B run (its id is kept in OUT/wandb/attnrl_run_id) and the same trackio
run (OUT/trackio_run_name marks that this run directory started one), and the steps it redoes after the
checkpoint are not sent again (RunLog.tracked_through): each step reaches a tracker once.
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


def _kept_run_id(path: str, new_id: str) -> tuple[str, bool]:
    """A tracker's run id for this run directory: `new_id`, written to `path` at the first start; on
    --resume the one read back. Returns (id, whether it was read back)."""
    if os.path.exists(path):
        with open(path) as f:
            return f.read().strip(), True
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(new_id)
    return new_id, False


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
                run_id, _ = _kept_run_id(os.path.join(out_dir, "wandb", "attnrl_run_id"),
                                         secrets.token_hex(4))   # W&B's ids are 8 lowercase alphanumerics
                run = wandb.init(project=os.environ.get("WANDB_PROJECT", "attnrl-mini"), name=run_name,
                                 dir=out_dir, config=config, mode="offline" if offline else None,
                                 id=run_id, resume="allow")
                self.runs.append(("wandb", run))
            elif name == "trackio":
                import trackio
                # trackio resumes by name (the latest run of it): only when this directory started one,
                # so a new run directory that shares a name with an older run gets a run of its own
                trackio_name, resumed = _kept_run_id(os.path.join(out_dir, "trackio_run_name"), run_name)
                trackio.init(project=os.environ.get("TRACKIO_PROJECT", "attnrl-mini"), name=trackio_name,
                             config=config, resume="allow" if resumed else "never")
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
            else:   # trackio: "step" is a reserved key (it would be renamed to "__step")
                run.log({k: v for k, v in values.items() if k != "step"}, step=step)

    def close(self) -> None:
        for kind, run in self.runs:
            if kind == "tensorboard":
                run.close()
            else:
                run.finish()
        self.runs = []
