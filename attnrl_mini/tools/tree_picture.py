"""Draw one prompt's rollout tree from a run's trees.jsonl (what `inspect --trees` calls).

    python -m attnrl_mini.tools.inspect --trees runs/toy --step 10 --png tree.png [--tree-index 1]

Reading the picture, left to right (docs/algorithm.md §c–§d): the prompt; then one row per initial
response, cut into segments at its branch points (◆, chosen by ATB at high-FCI steps, Eq. 7); below
it, one row per continuation sampled from a branch point (prefix to its left + the box = one more
response). Every segment shows V (Eq. 2: share of correct leaves below it) and its advantage Â
(Eq. 3, given to each of its tokens); each step of an initial response shows its FCI y_k (Eq. 6);
each leaf its reward.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

COL_W, GAP, LINE, CHARS = 3.3, 0.45, 0.145, 50     # inches per column / between columns / per text line; chars per line
MAX_LINES = 9                                        # long segments: first and last lines, "…" between


@dataclass
class Box:
    """One drawn segment: grid column and row, the lines inside, how to colour it."""
    col: int
    row: int
    lines: list[str]
    kind: str                  # "prompt" | "initial" | "continuation"
    header: str = ""
    advantage: float = 0.0
    reward: float | None = None
    parent: "Box | None" = None


def load_tree(path: str, step: int | None, index: int = 0) -> dict:
    """Record `index` of step `step` (None: the last step) from a run directory's trees.jsonl (or the file)."""
    file = os.path.join(path, "trees.jsonl") if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise FileNotFoundError(f"--trees {path}: no trees.jsonl there (a run directory of train.py holds one)")
    with open(file) as f:
        records = [json.loads(line) for line in f if line.strip()]
    if step is None and records:
        step = records[-1]["step"]
    at_step = [r for r in records if r["step"] == step]
    if index >= len(at_step):
        steps = sorted({r["step"] for r in records})
        raise ValueError(f"--trees {file}: step {step} has {len(at_step)} tree(s), asked for index {index}; "
                         f"steps with trees: {steps[0]}..{steps[-1]}" if steps else f"--trees {file} is empty")
    return at_step[index]


def _wrap(lines: list[str]) -> list[str]:
    out = []
    for line in (part for text in lines for part in text.split("\n")):
        out += [line[i:i + CHARS] for i in range(0, max(1, len(line)), CHARS)]
    return out if len(out) <= MAX_LINES else out[:MAX_LINES - 2] + ["…"] + out[-1:]


def _step_lines(text: str, fci: list[float] | None) -> list[str]:
    """A segment's text, one line per step ("\\n\\n"-separated), each initial-response step with its FCI."""
    steps = [s for s in re.split(r"(?<=\n\n)", text) if s]
    shown = [s.strip().replace("\n", "⏎") or "⏎" for s in steps]
    if fci is not None and len(fci) == len(shown):
        return [f"FCI {y:.3f} │ {s}" for y, s in zip(fci, shown)]
    return shown + ([f"FCI of its steps: {', '.join(f'{y:.3f}' for y in fci)}"] if fci else [])


def _attach_spans(node: dict, bounds: list[int], k: int = 0) -> None:
    """Token span [start, end) of each segment along an initial response's chain (continuations have none)."""
    node["span"] = (bounds[k], bounds[k + 1])
    for child in node.get("children", []):
        if not child["is_continuation"]:
            _attach_spans(child, bounds, k + 1)


def layout(record: dict) -> list[Box]:
    """Boxes on a grid: column = depth in the tree; a node's original next segment stays on its row,
    each continuation takes a new row below."""
    tree = record["tree"]
    prompt = Box(0, 0, _wrap([record["problem"], f"gold answer: {record['answer']}"]), "prompt",
                 header=f"prompt · V(R) {tree['value']:.2f} over {tree['n_leaves']} leaves")
    boxes = [prompt]

    def place(node: dict, col: int, row: int, parent: Box, response: dict, name: str) -> int:
        """Draws node's subtree from (col, row); returns the last row it used."""
        fci = None
        if not node["is_continuation"]:   # the FCI of the response's steps that start inside this segment
            a, b = node["span"]
            fci = [y for (s, _), y in zip(response["steps"], response["fci"]) if a <= s < b]
        leaf = "children" not in node
        n = node["n_leaves"]
        header = (f"{name} · V {node['value']:.2f} "
                  f"({n} lea{'ves' if n != 1 else 'f'}) · Â {node['advantage']:+.3f}")
        box = Box(col, row, _wrap(_step_lines(node["text"], fci)),
                  "continuation" if node["is_continuation"] else "initial",
                  header=header, advantage=node["advantage"], reward=node["reward"] if leaf else None, parent=parent)
        boxes.append(box)
        last = row
        for child in sorted(node.get("children", []), key=lambda c: c["is_continuation"]):
            cont = child["is_continuation"]
            last = place(child, col + 1, last + 1 if cont else row, box, response,
                         "continuation" if cont else f"{name.split(',')[0]}, seg. {col + 1}")
        return last

    last = -1
    for i, (child, response) in enumerate(zip(tree["children"], record["responses"])):
        end = response["steps"][-1][1] if response["steps"] else 0
        _attach_spans(child, [0] + sorted(set(response["branch_points"])) + [end])
        name = f"resp. {i + 1}, " + ("seg. 1" if response["branch_points"] else "unbranched")
        last = place(child, 1, last + 1, prompt, response, name)
    return boxes


def draw(record: dict, path: str, title: str = "") -> None:
    """The tree as a PNG (or any format matplotlib writes, by the file's extension)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    boxes = layout(record)
    n_rows = max(b.row for b in boxes) + 1
    height = [0] * n_rows                       # lines per row: the tallest box in it, + header + reward line
    for b in boxes[1:]:                         # the prompt (alone in column 0) may overlap rows below
        height[b.row] = max(height[b.row], len(b.lines) + 2)
    top = [0.0]
    for h in height:
        top.append(top[-1] + h * LINE + 0.18)
    legend = 0.95
    W = 0.3 + (max(b.col for b in boxes) + 1) * (COL_W + GAP)
    H = legend + top[-1] + 0.2
    fig = plt.figure(figsize=(W, H))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, W)
    ax.set_ylim(H, 0)
    ax.axis("off")
    fill = {"prompt": "#eeeeee", "initial": "#dbe9f6", "continuation": "#fde3c8"}
    x0 = lambda b: 0.15 + b.col * (COL_W + GAP)                       # noqa: E731
    y0 = lambda b: legend + top[b.row]                                # noqa: E731
    for b in boxes:
        h = (len(b.lines) + 1 + (b.reward is not None)) * LINE + 0.06
        edge = "#2e7d32" if b.reward == 1.0 else "#c62828" if b.reward is not None else "#555555"
        ax.add_patch(FancyBboxPatch((x0(b), y0(b)), COL_W, h, boxstyle="round,pad=0.02",
                                    fc=fill[b.kind], ec=edge, lw=1.6 if b.reward is not None else 0.8))
        tone = "#2e7d32" if b.advantage > 1e-9 else "#c62828" if b.advantage < -1e-9 else "#333333"
        ax.text(x0(b) + 0.05, y0(b) + 0.03, b.header, va="top", fontsize=7.5, weight="bold",
                color=tone if b.kind != "prompt" else "#333333", family="DejaVu Sans")
        ax.text(x0(b) + 0.05, y0(b) + 0.03 + LINE, "\n".join(b.lines), va="top", fontsize=7,
                family="DejaVu Sans Mono", linespacing=1.25)
        if b.reward is not None:
            ok = b.reward == 1.0
            ax.text(x0(b) + 0.05, y0(b) + 0.03 + (len(b.lines) + 1) * LINE, f"leaf reward {b.reward:g} {'✓' if ok else '✗'}",
                    va="top", fontsize=7.5, weight="bold", color=edge, family="DejaVu Sans")
        if b.parent is not None:   # from the parent's right edge (for a continuation: its branch point ◆)
            px, py = x0(b.parent) + COL_W + 0.02, y0(b.parent) + 0.1
            style = dict(color="#e07b00", ls="--") if b.kind == "continuation" else dict(color="#1f5f9f", ls="-")
            ax.plot([px, px + GAP / 2, px + GAP / 2, x0(b) - 0.02], [py, py, y0(b) + 0.1, y0(b) + 0.1], lw=1, **style)
            if b.kind == "continuation":
                ax.plot([px], [py], marker="D", color="#c62828", ms=6, zorder=5)
    ax.text(0.15, 0.12, title or "rollout tree", va="top", fontsize=10, weight="bold")
    ax.text(0.15, 0.38, "Left to right, each row is a path from the prompt to a leaf. Blue: an initial response, cut into segments "
            "at its branch points ◆ (chosen by ATB at high-FCI steps, Eq. 7). Orange, dashed: a continuation sampled from "
            "that branch point (the\nsegments to its left + the box = one more response). FCI: a step's forward context "
            "influence (Eq. 6), shown for initial responses. V: share of correct leaves below a segment (Eq. 2). Â: the "
            "segment's tree advantage\n(Eq. 3), given to each of its tokens (green > 0, red < 0). A leaf's frame shows its "
            "reward (green 1 = correct, red 0). Unbranched responses count in V(R); with --train-unbranched false (the "
            "release's default) they are not trained. ⏎: a newline inside a step.", va="top", fontsize=7.5, color="#333333")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(run: str, step: int | None, index: int, png: str) -> dict:
    record = load_tree(run, step, index)
    draw(record, png, title=f"{run}: step {record['step']}, tree {index} · problem: {record['problem'].splitlines()[0]} …")
    print(f"wrote {png}: the rollout tree of step {record['step']}, tree {index}, "
          f"{record['tree']['n_leaves']} leaves, V(R) = {record['tree']['value']:.2f}")
    return record
