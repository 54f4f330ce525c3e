"""inspect --trees: the rollout-tree picture's layout on a hand-built tree, and the command end to end."""
from __future__ import annotations

import json

import pytest

from attnrl_mini.tools import inspect as inspect_cli
from attnrl_mini.tools.tree_picture import layout


def leaf(text, reward, cont):
    return {"text": text, "is_continuation": cont, "reward": reward, "value": reward, "n_leaves": 1, "advantage": 0.5}


# Two initial responses: #1 unbranched (steps at tokens 0-3, 3-5); #2 branched once at token 4, its
# first segment holding steps [0,4), its second [4,6) and [6,8), one continuation from the branch point.
RECORD = {
    "step": 7, "problem": "Start with 2.\n(a) Add 3.", "answer": "5",
    "responses": [{"fci": [0.1, 0.0], "steps": [[0, 3], [3, 5]], "branch_points": [], "reward": 1.0},
                  {"fci": [0.2, 0.3, 0.0], "steps": [[0, 4], [4, 6], [6, 8]], "branch_points": [4], "reward": 0.0}],
    "tree": {"text": "", "is_continuation": False, "reward": None, "value": 0.67, "n_leaves": 3, "advantage": 0.0,
             "children": [leaf("(a) 2+3=5\n\n\\boxed{5}", 1.0, False),
                          {"text": "(a) 2+3=6\n\n", "is_continuation": False, "reward": None, "value": 0.5,
                           "n_leaves": 2, "advantage": -0.2,
                           "children": [leaf("(b) done\n\n\\boxed{6}", 0.0, False),
                                        leaf("(a) 2+3=5\n\n\\boxed{5}", 1.0, True)]}]},
}


def test_layout_rows_columns_and_step_fci_on_a_hand_built_tree():
    boxes = layout(json.loads(json.dumps(RECORD)))
    grid = [(b.col, b.row, b.kind, b.reward) for b in boxes]
    assert grid == [(0, 0, "prompt", None), (1, 0, "initial", 1.0),           # response 1, one box
                    (1, 1, "initial", None), (2, 1, "initial", 0.0),          # response 2: two segments on one row
                    (2, 2, "continuation", 1.0)]                              # its continuation, one row below
    assert boxes[1].lines == ["FCI 0.100 │ (a) 2+3=5", "FCI 0.000 │ \\boxed{5}"]
    assert boxes[2].lines == ["FCI 0.200 │ (a) 2+3=6"]                       # step [0,4) is before the branch point
    assert boxes[3].lines == ["FCI 0.300 │ (b) done", "FCI 0.000 │ \\boxed{6}"]
    assert boxes[4].lines == ["(a) 2+3=5", "\\boxed{5}"]                      # continuations have no FCI
    assert boxes[4].parent is boxes[2] and boxes[3].parent is boxes[2]
    assert "resp. 2, seg. 2" in boxes[3].header and "Â -0.200" in boxes[2].header


def test_inspect_trees_writes_a_png_and_refuses_a_missing_step(tmp_path):
    (tmp_path / "trees.jsonl").write_text(json.dumps(RECORD) + "\n")
    png = tmp_path / "tree.png"
    inspect_cli.main(["--trees", str(tmp_path), "--step", "7", "--png", str(png)])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit, match="step 3 has 0 tree"):
        inspect_cli.main(["--trees", str(tmp_path), "--step", "3", "--png", str(png)])
