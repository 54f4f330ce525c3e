"""End-to-end check of one part: the toy run of that part's algorithm, fixed seed, must raise held-out
accuracy by a set threshold; it also reports the first step at which its metrics leave the
reference run's (recorded in e2e_reference.json by `python -m attnrl_mini.assignment e2e --record`).

    part A -> --algo grpo,   part B -> --algo treerl,   part C -> --algo attnrl   (toy preset)

Two lengths: "ci" (short, what `assignment check` runs) and "full" (the handout's run, minutes).
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass

from .registry import PARTS

REFERENCE_FILE = os.path.join(os.path.dirname(__file__), "e2e_reference.json")
# Per-step metrics compared with the reference run, and how far they may drift (sampling outcomes
# are counts, so once the log-probs differ the samples do too and these jump).
COMPARED = {"reward": 1e-9, "train_accuracy": 1e-9, "sequences_trained": 0, "pg_loss": 1e-4, "eval_accuracy": 1e-9}


@dataclass(frozen=True)
class E2EConfig:
    steps: int
    eval_problems: int
    min_gain: float          # held-out accuracy (a fraction) the run must gain, step 0 -> last step


# min_gain was set after the reference runs recorded in e2e_reference.json, at about half their gain.
# GRPO gains nothing measurable in CI's few steps (+0.0 points after 10 steps; -1.0 after 5, the CI length
# since issue #26: the same identity check against the reference in half the time), so its CI threshold
# only catches a collapse: -5 points (10 of the 200 problems), set after that 5-step run.
LENGTHS: dict[str, dict[str, E2EConfig]] = {
    "ci": {
        "A": E2EConfig(steps=5, eval_problems=200, min_gain=-0.05),
        "B": E2EConfig(steps=5, eval_problems=200, min_gain=0.015),
        "C": E2EConfig(steps=5, eval_problems=200, min_gain=0.015),
    },
    "full": {
        "A": E2EConfig(steps=20, eval_problems=500, min_gain=0.045),
        "B": E2EConfig(steps=8, eval_problems=500, min_gain=0.07),
        "C": E2EConfig(steps=8, eval_problems=500, min_gain=0.07),
    },
}


@dataclass
class E2EResult:
    part: str
    length: str
    accuracy_start: float
    accuracy_end: float
    min_gain: float
    seconds: float
    metrics: list[dict]               # per step: the COMPARED fields
    diverged_at: int | None = None    # first step that leaves the reference run (None: never / no reference)
    divergence: str = ""

    @property
    def gain(self) -> float:
        return self.accuracy_end - self.accuracy_start

    @property
    def passed(self) -> bool:
        return self.gain >= self.min_gain

    def summary(self) -> str:
        ref = ("no reference recorded" if self.diverged_at is None and not self.divergence else
               f"leaves the reference run at step {self.diverged_at} ({self.divergence})" if self.diverged_at is not None
               else "identical to the reference run at every step")
        return (f"part {self.part} ({PARTS[self.part].algo}, {self.length}): held-out accuracy "
                f"{100 * self.accuracy_start:.1f}% -> {100 * self.accuracy_end:.1f}% "
                f"(gain {100 * self.gain:+.1f} points, needs >= {100 * self.min_gain:+.1f}) in {self.seconds:.0f} s; "
                f"{ref} -> {'PASS' if self.passed else 'FAIL'}")


def run_part(part: str, length: str = "ci") -> E2EResult:
    """Train the toy model with part `part`'s algorithm and compare with the recorded reference."""
    from attnrl_mini.config import algo_overrides, make_config
    from attnrl_mini.run.driver import train

    spec = LENGTHS[length][part]
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix=f"e2e_{part}_") as out:
        cfg = make_config("toy", **algo_overrides(PARTS[part].algo), algo=PARTS[part].algo,
                          steps=spec.steps, eval_every=spec.steps, eval_problems=spec.eval_problems,
                          save_every=10 ** 6, dump_trees=0, out=out)
        train(cfg)
        with open(os.path.join(out, "metrics.jsonl")) as f:
            records = [json.loads(line) for line in f if line.strip()]
    metrics = [{k: r.get(k) for k in ("step", *COMPARED)} for r in records]
    result = E2EResult(part, length, records[0]["eval_accuracy"], records[-1]["eval_accuracy"], spec.min_gain,
                       time.time() - t0, metrics)
    reference = load_reference().get(length, {}).get(part)
    if reference is not None:
        result.diverged_at, result.divergence = first_divergence(metrics, reference["metrics"])
        if result.diverged_at is None:
            result.divergence = "identical"
    return result


def first_divergence(metrics: list[dict], reference: list[dict]) -> tuple[int | None, str]:
    """The first step whose compared metrics differ from the reference's beyond COMPARED's tolerances."""
    for mine, ref in zip(metrics, reference):
        for key, tol in COMPARED.items():
            a, b = mine.get(key), ref.get(key)
            if (a is None) != (b is None) or (a is not None and abs(a - b) > tol):
                return mine["step"], f"{key}: {a} vs reference {b}"
    if len(metrics) != len(reference):
        return min(len(metrics), len(reference)), f"{len(metrics)} steps vs reference {len(reference)}"
    return None, ""


def load_reference() -> dict:
    if not os.path.exists(REFERENCE_FILE):
        return {}
    with open(REFERENCE_FILE) as f:
        return json.load(f)


def record_reference(result: E2EResult) -> None:
    """Store a reference run's per-step metrics (run on the unmodified reference code)."""
    ref = load_reference()
    ref.setdefault(result.length, {})[result.part] = {
        "gain": round(result.gain, 4), "seconds": round(result.seconds, 1), "metrics": result.metrics}
    with open(REFERENCE_FILE, "w") as f:
        json.dump(ref, f, indent=1)
        f.write("\n")
