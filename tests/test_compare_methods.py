"""bench/compare_methods.py in its smoke mode: two real (tiny) training runs, the table and plots."""
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import compare_methods  # noqa: E402


def test_tokens_to_reach_reads_the_curve():
    curve = [(0, 0.40), (1000, 0.50), (2000, 0.65)]
    assert compare_methods.tokens_to_reach(curve, 0.5) == 1000
    assert compare_methods.tokens_to_reach(curve, 0.6) == 2000
    assert compare_methods.tokens_to_reach(curve, 0.7) is None


def test_every_ladder_method_is_a_valid_train_py_command_line():
    sys.path.insert(0, ROOT)
    import train
    for name, flags in compare_methods.METHODS.items():
        cfg, _ = train.parse_args(["--preset", "toy", *flags])
        assert cfg.algo in ("grpo", "treerl", "attnrl"), name
    cfg, _ = train.parse_args(["--preset", "toy", *compare_methods.METHODS["atb_ads_no_expansion"]])
    assert (cfg.branch_selector, cfg.branch_count_rule, cfg.attention_filter, cfg.one_step_stale) == \
        ("fci", "uniform", True, False)
    cfg, _ = train.parse_args(["--preset", "toy", *compare_methods.METHODS["treerl_stale"]])
    assert (cfg.branch_selector, cfg.one_step_stale) == ("entropy", True)


def test_smoke_run_writes_the_table_and_plots(tmp_path, capsys):
    compare_methods.main(["--smoke", "--out", str(tmp_path)])
    table = (tmp_path / "table.md").read_text()
    assert "| grpo |" in table and "| attnrl |" in table
    summary = json.loads((tmp_path / "summary.json").read_text())
    for method in ("grpo", "attnrl"):
        (run,) = summary[method]
        assert run["steps"] >= 1 and run["generated_tokens"] > 0
        assert 0.0 <= run["final_eval"] <= 1.0
        tokens = [t for t, _ in run["curve_tokens"]]     # the budget is bracketed by two evaluations
        assert tokens[-1] >= 1000 > tokens[-2]
    assert summary["attnrl"][0]["branch_at_step_start"] is not None   # AttnRL branches at step starts
    assert summary["grpo"][0]["branch_at_step_start"] is None          # GRPO never branches
    assert 0.0 <= summary["attnrl"][0]["branch_mixed_outcome"] <= 1.0
    assert summary["attnrl"][0]["trained_valid_ratio"] == 1.0         # the zero-advantage filter is on
    assert (tmp_path / "accuracy_vs_tokens.png").stat().st_size > 0
    assert (tmp_path / "accuracy_vs_seconds.png").stat().st_size > 0

    # --earlier: an earlier invocation's methods join the table (here a "treerl" made of attnrl's
    # record with 0.1 less accuracy everywhere); this invocation's runs are re-used, not run again
    earlier = {"treerl": [{**summary["attnrl"][0], "final_eval": summary["attnrl"][0]["final_eval"] - 0.1,
                           "curve_tokens": [[t, a - 0.1] for t, a in summary["attnrl"][0]["curve_tokens"]]}]}
    (tmp_path / "earlier.json").write_text(json.dumps(earlier))
    compare_methods.main(["--smoke", "--out", str(tmp_path), "--earlier", str(tmp_path / "earlier.json")])
    assert "re-used" in capsys.readouterr().out
    table = (tmp_path / "table.md").read_text()
    assert "| treerl |" in table and "- attnrl − treerl: +10.0 (one seed, no SE) over 1 seeds" in table
    (tmp_path / "two_seeds.json").write_text(json.dumps({"treerl": earlier["treerl"] * 2}))
    with pytest.raises(SystemExit):      # two seeds' records against this invocation's one seed
        compare_methods.main(["--smoke", "--out", str(tmp_path), "--earlier", str(tmp_path / "two_seeds.json")])
    with pytest.raises(SystemExit):      # no such file: refused before any run
        compare_methods.main(["--smoke", "--out", str(tmp_path / "new"), "--earlier", str(tmp_path / "missing.json")])
    assert not (tmp_path / "new").exists()


def test_accuracy_at_exactly_the_budget_interpolates_between_evaluations():
    curve = [(0, 0.40), (1000, 0.50), (3000, 0.70)]
    assert compare_methods.accuracy_at_budget(curve, 1000) == 0.50                     # on an evaluation
    assert compare_methods.accuracy_at_budget(curve, 2000) == pytest.approx(0.60)       # halfway: (0.5 + 0.7) / 2
    assert compare_methods.accuracy_at_budget(curve, 2500) == pytest.approx(0.65)
    assert compare_methods.accuracy_at_budget(curve, 3000) == 0.70
    assert compare_methods.accuracy_at_budget(curve, 3001) is None                      # never reached
    assert compare_methods.accuracy_at_budget([(0, 0.3), (500, 0.3), (500, 0.5)], 500) == 0.3


def test_paired_difference_by_seed():
    # per-seed differences .02, .04, .00 -> mean .02, std .02, SE .02 / sqrt(3)
    mean, se, n = compare_methods.paired_difference([0.72, 0.74, 0.70], [0.70, 0.70, 0.70])
    assert (mean, n) == (pytest.approx(0.02), 3) and se == pytest.approx(0.02 / 3 ** 0.5)
    assert compare_methods.paired_difference([0.5, None], [0.4, 0.3]) == (pytest.approx(0.1), None, 1)
    assert compare_methods.paired_difference([None], [0.4]) is None


def test_the_step_before_the_budget_is_crossed_is_evaluated_too():
    """Budget 1000 tokens; this step generated 300. At 500 spent, 500 + 1.5*300 = 950 < 1000: not yet.
    At 600, 600 + 450 = 1050 >= 1000: the next step probably crosses, so evaluate now. At 1000 the
    budget is spent (that step is evaluated by the budget rule itself). No budget: never."""
    from types import SimpleNamespace
    from attnrl_mini.run.driver import _budget_near
    cfg = SimpleNamespace(max_generated_tokens=1000)
    step = {"generated_tokens": 300}
    assert not _budget_near(cfg, SimpleNamespace(cumulative_tokens=500), step)
    assert _budget_near(cfg, SimpleNamespace(cumulative_tokens=600), step)
    assert not _budget_near(cfg, SimpleNamespace(cumulative_tokens=1000), step)
    assert not _budget_near(SimpleNamespace(max_generated_tokens=0), SimpleNamespace(cumulative_tokens=600), step)
