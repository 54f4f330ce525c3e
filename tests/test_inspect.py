"""`python -m attnrl_mini.tools.inspect` on the shipped toy model: JSON contents, FCI, branch points, PNG."""
import json

import torch

from attnrl_mini.algorithm.branching import fci_branch_points
from attnrl_mini.config import make_config
from attnrl_mini.algorithm.fci import naive_fci
from attnrl_mini.tools.inspect import main
from attnrl_mini.models.policy import load_model, load_tokenizer
from attnrl_mini.worlds.toy import TOY_MODEL_DIR, gold_solution, toy_prompt_ids
from attnrl_mini.worlds.toy import test_problems as held_out_problems


def test_inspect_writes_steps_fci_and_branch_points(tmp_path):
    problem = held_out_problems(1)[0]
    response_text = gold_solution(problem)
    json_path, png_path = tmp_path / "out.json", tmp_path / "out.png"
    main(["--model", "toy", "--prompt", problem.problem, "--response", response_text,
          "--json", str(json_path), "--png", str(png_path)])

    out = json.loads(json_path.read_text())
    assert set(out) == {"model", "preset", "fci_delta", "prompt_ids", "response_ids", "steps", "branch_points"}
    assert out["model"] == TOY_MODEL_DIR
    assert (out["preset"], out["fci_delta"]) == ("toy", make_config("toy").fci_delta)
    tokenizer = load_tokenizer(TOY_MODEL_DIR)
    assert out["prompt_ids"] == toy_prompt_ids(tokenizer, problem.problem)
    assert tokenizer.decode(out["response_ids"]) == response_text

    # steps tile the response, end at "\n\n" (one step per line of the gold solution), carry their text
    steps = out["steps"]
    assert steps[0]["start"] == 0 and steps[-1]["end"] == len(out["response_ids"])
    assert all(a["end"] == b["start"] for a, b in zip(steps, steps[1:]))
    assert len(steps) == response_text.count("\n\n") + 1
    assert "".join(s["text"] for s in steps) == response_text
    for s in steps:
        assert s["text"] == tokenizer.decode(out["response_ids"][s["start"]:s["end"]])

    # the FCI printed is the model's (checked against the naive eager reference) ...
    cfg = make_config("toy")
    model = load_model(TOY_MODEL_DIR)
    spans = [(s["start"], s["end"]) for s in steps]
    ref = naive_fci(model, [out["prompt_ids"]], [out["response_ids"]], [spans], [-1], delta=cfg.fci_delta)[0]
    got = torch.tensor([s["fci"] for s in steps])
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    assert got.max() > 0
    # ... and the branch points are ATB's on it, at step starts
    assert out["branch_points"] == fci_branch_points(ref, spans, len(out["prompt_ids"]), n=cfg.n_branch_points,
                                                     quantile=cfg.fci_quantile, min_gap=cfg.min_branch_gap,
                                                     min_start=cfg.min_branch_start)
    assert len(out["branch_points"]) == cfg.n_branch_points
    assert set(out["branch_points"]) <= {s["start"] for s in steps[1:]}

    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_inspect_samples_a_response_reproducibly(tmp_path):
    problem = held_out_problems(2)[1]
    args = ["--model", "toy", "--prompt", problem.problem, "--seed", "7", "--max-new-tokens", "24"]
    first = main(args)
    second = main(args)
    assert first["response_ids"] == second["response_ids"]
    assert 0 < len(first["response_ids"]) <= 24
    assert first["steps"][-1]["end"] == len(first["response_ids"])
