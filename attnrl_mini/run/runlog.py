"""What a run writes for people to read: metrics.jsonl, PNG curves, a dump of a few rollout trees,
and a copy of the metrics to the experiment trackers of --report-to (tracking.py). A failed write (a full
disk) is one WriteError naming the file and the free space (writes.py)."""
from __future__ import annotations

import json
import os

from attnrl_mini.run.writes import writing


class RunLog:
    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.trackers = None   # tracking.Trackers, set by the trainer once the run directory is its own
        self.tracked_through = -1   # on resume: the last step an earlier session sent (its redone steps are not resent)
        with writing(out_dir):
            os.makedirs(out_dir, exist_ok=True)
        self.metrics_path = os.path.join(out_dir, "metrics.jsonl")
        self.trees_path = os.path.join(out_dir, "trees.jsonl")

    def truncate_after(self, step: int, warn=print) -> None:
        """On resume: drop the records of steps after the checkpoint (they will be redone).

        A partial last line (a kill mid-write) is dropped with a warning; a broken line elsewhere is an
        error naming the file and line, since it is not what an interrupted append leaves."""
        for path in (self.metrics_path, self.trees_path):
            if not os.path.exists(path):
                continue
            is_metrics = path == self.metrics_path
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = f.readlines()
            keep = []
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    record_step = record["step"]
                except (ValueError, KeyError, TypeError) as e:
                    if number == len(lines) and not line.endswith("\n"):
                        warn(f"[attnrl] warning: {path}: dropped the partial last line {number} (a run killed mid-write)")
                        continue
                    raise ValueError(f"{path}: line {number} is not a step record ({type(e).__name__}: {e})") from None
                if is_metrics:   # every record written was also sent to the trackers
                    self.tracked_through = max(self.tracked_through, record_step)
                if record_step <= step:
                    keep.append(line if line.endswith("\n") else line + "\n")
            tmp = path + ".tmp"
            with writing(path, cleanup=tmp):
                with open(tmp, "w", encoding="utf-8") as f:
                    f.writelines(keep)
                os.replace(tmp, path)

    def has_records(self) -> bool:
        return os.path.exists(self.metrics_path) and os.path.getsize(self.metrics_path) > 0

    def write_metrics(self, record: dict, summary: str = "") -> None:
        with writing(self.metrics_path), open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.trackers is not None and record["step"] > self.tracked_through:
            self.trackers.log(record, summary)   # a redone step (exact resume) was sent by the earlier session

    def close(self) -> None:
        if self.trackers is not None:
            self.trackers.close()

    def write_trees(self, step: int, trees: list[dict]) -> None:
        with writing(self.trees_path), open(self.trees_path, "a") as f:
            for tree in trees:
                f.write(json.dumps({"step": step, **tree}) + "\n")

    def read_metrics(self) -> list[dict]:
        if not os.path.exists(self.metrics_path):
            return []
        with open(self.metrics_path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def plot(self) -> str:
        """curves.png: accuracy against steps and generated tokens, the valid ratio, the clip fraction (each its own
        panel and scale); refreshed as the run goes."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = self.read_metrics()
        if not rows:
            return ""
        fig, axes = plt.subplots(1, 4, figsize=(19, 4))
        ev = [(r["step"], r["cumulative_generated_tokens"], r["eval_accuracy"]) for r in rows if "eval_accuracy" in r]
        trained = [r for r in rows if "train_accuracy" in r]   # step 0 is the evaluation alone
        axes[0].plot([r["step"] for r in trained], [r["train_accuracy"] for r in trained],
                     label="train accuracy (initial samples)", alpha=0.6)
        if ev:
            axes[0].plot([e[0] for e in ev], [e[2] for e in ev], "o-", label="held-out accuracy")
            axes[1].plot([e[1] for e in ev], [e[2] for e in ev], "o-")
        axes[0].set_title("accuracy per step"); axes[0].set_xlabel("step"); axes[0].set_ylabel("accuracy")
        axes[0].legend()
        axes[1].set_title("held-out accuracy per generated token"); axes[1].set_xlabel("generated tokens")
        axes[1].set_ylabel("held-out accuracy")
        axes[2].plot([r["step"] for r in trained], [r.get("valid_ratio") for r in trained])
        axes[2].set_title("valid-sample ratio (prompts with mixed rewards)"); axes[2].set_xlabel("step")
        axes[2].set_ylim(0, 1.05)
        axes[3].plot([r["step"] for r in trained], [r.get("clip_frac", 0.0) for r in trained], color="tab:red")
        axes[3].set_title("PPO clip fraction (tokens whose ratio was clipped)"); axes[3].set_xlabel("step")
        for ax in axes:
            ax.grid(alpha=0.3)
        fig.tight_layout()
        path = os.path.join(self.out_dir, "curves.png")
        try:
            with writing(path, cleanup=path):   # a half-written PNG is removed
                fig.savefig(path, dpi=90)
        finally:
            plt.close(fig)
        return path
