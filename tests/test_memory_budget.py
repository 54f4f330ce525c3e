"""bench/memory_budget.py: the tiny CPU smoke run, its output structure, and the budget arithmetic.

The benchmark's real numbers come from a GPU (docs/performance.md); here it runs at a tiny shape on
the CPU so that it never rots: every phase runs through the real trainer-side functions
(score_responses, response_logprobs, ppo_loss, AdamW) and reports sane numbers.
"""
import importlib.util
import json
import math
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_bench():
    spec = importlib.util.spec_from_file_location("memory_budget", os.path.join(ROOT, "bench", "memory_budget.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules["memory_budget"] = mod        # dataclasses look their module up while the file runs
    spec.loader.exec_module(mod)
    return mod


mb = _load_bench()


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("mb") / "result.json"
    md = out.with_suffix(".md")
    result = mb.main(["--quick", "--out", str(out), "--markdown", str(md)])
    return result, out, md


def test_rows_per_micro_batch_follow_the_trainers_packing_rule():
    # rows × longest row <= micro_batch_tokens, at least one row
    assert mb.micro_batch_size(8192, 512 + 3072) == 2      # 2 × 3584 = 7168 <= 8192 < 3 × 3584
    assert mb.micro_batch_size(8192, 512 + 1024) == 5      # 5 × 1536 = 7680
    assert mb.micro_batch_size(8192, 512 + 2048) == 3      # 3 × 2560 = 7680
    assert mb.micro_batch_size(1000, 4000) == 1            # a too-long sequence still goes alone


def test_real_shape_has_qwen25_15b_parameter_count():
    # The public Qwen2.5-(Math-)1.5B: 1,543,714,304 parameters with tied embeddings. Counted on the
    # meta device (no memory), and by hand: embeddings + 28 × (attention with q/k/v biases + MLP + 2 norms) + final norm.
    from transformers import AutoModelForCausalLM
    cfg, name = mb.model_config("qwen2.5-math-1.5b", None)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    h, i, L, V, kv = 1536, 8960, 28, 151936, 2 * 128
    per_layer = (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * i + 2 * h
    assert V * h + L * per_layer + h == 1_543_714_304
    assert sum(p.numel() for p in model.parameters()) == 1_543_714_304
    assert name == "qwen2.5-math-1.5b" and cfg.tie_word_embeddings


def test_config_json_and_unknown_shape(tmp_path):
    p = tmp_path / "config.json"
    p.write_text(json.dumps({"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 96,
                             "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
                             "vocab_size": 100}))
    cfg, name = mb.model_config(None, str(p))
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size, name) == (64, 1, 100, "config.json")
    with pytest.raises(ValueError, match="unknown --shape"):
        mb.model_config("no-such-shape", None)


def test_budget_arithmetic_by_hand():
    ok = {"peak_gib": 9.0, "reserved_gib": 10.0, "seconds": 1.0}
    runs = [
        dict(precision="bf16", response_tokens=1024, phases={"a": ok, "b": dict(ok, reserved_gib=9.5)}),
        dict(precision="bf16", response_tokens=3072, phases={"a": dict(ok, peak_gib=14.0, reserved_gib=15.0)}),
        dict(precision="4bit", response_tokens=3072, phases={"a": ok, "b": {"error": "out of memory"}}),
    ]
    b = mb.budget(runs, context_gib=0.5, card_gib=24.0, utilization=0.3, headroom_gib=22.0)
    assert b["sidecar_gib"] == pytest.approx(7.2)                      # 0.3 × 24
    r0, r1, r2 = b["runs"]
    assert r0["trainer_reserved_gib"] == 10.0 and r0["with_sidecar_gib"] == pytest.approx(17.7)   # 10 + 0.5 + 7.2
    assert r0["fits_card"] and r0["fits_headroom"]
    assert r1["with_sidecar_gib"] == pytest.approx(22.7)                                         # 15 + 0.5 + 7.2
    assert r1["fits_card"] and not r1["fits_headroom"]
    assert not r2["fits_card"] and not r2["fits_headroom"]                                       # an OOM never fits


def test_quick_run_has_every_phase_with_sane_numbers(quick):
    result, _, _ = quick
    precisions = ["bf16", "4bit"]
    try:
        import bitsandbytes  # noqa: F401
    except Exception:
        precisions = ["bf16"]
        assert any(s.startswith("4bit") for s in result["skipped"])   # the reason is reported, not hidden
    lengths = [24, 48]
    assert [(r["precision"], r["response_tokens"]) for r in result["runs"]] == \
        [(p, R) for p in precisions for R in lengths]
    knobs = result["knobs"]
    for r in result["runs"]:
        assert set(r["phases"]) == set(mb.PHASES)
        L = r["prompt_tokens"] + r["response_tokens"]                  # 8 + 24 or 8 + 48
        assert r["micro_rows"] == knobs["micro_batch_tokens"] // L     # 112 // 32 = 3, 112 // 56 = 2
        expected_tokens = {"fci_forward": r["score_rows"] * L, "plain_forward": r["score_rows"] * L,   # 1 batch
                           "ref_logprobs": 2 * r["micro_rows"] * L, "ppo_update": 2 * r["micro_rows"] * L}
        for name, p in r["phases"].items():
            assert "error" not in p, (name, p)
            assert p["tokens"] == expected_tokens[name]
            assert p["seconds"] > 0 and p["peak_gib"] > 0 and p["reserved_gib"] >= p["peak_gib"] - 1e-9
            assert p["tokens_per_s"] == pytest.approx(p["tokens"] / p["seconds"])
        assert r["fci_time_ratio"] == pytest.approx(r["phases"]["fci_forward"]["seconds"]
                                                    / r["phases"]["plain_forward"]["seconds"])


def test_quick_run_budget_and_outputs(quick):
    result, out, md = quick
    b = result["budget"]
    assert b["sidecar_gib"] == pytest.approx(0.3 * 24) and b["cuda_context_gib"] == 0.0   # CPU: no context
    assert len(b["runs"]) == len(result["runs"])
    for r, br in zip(result["runs"], b["runs"]):
        peak = max(p["reserved_gib"] for p in r["phases"].values())
        assert br["trainer_reserved_gib"] == pytest.approx(peak)
        assert br["with_sidecar_gib"] == pytest.approx(peak + b["sidecar_gib"])
        assert br["fits_card"] == (br["with_sidecar_gib"] <= 24.0)
        assert br["fits_headroom"] == (br["with_sidecar_gib"] <= 22.0)
        assert math.isfinite(br["trainer_peak_gib"]) and br["trainer_peak_gib"] > 0
    saved = json.loads(out.read_text())
    assert saved["runs"] == json.loads(json.dumps(result["runs"]))
    assert saved["device"] == "cpu" and saved["shape"] == "tiny"
    table = md.read_text()
    for name in mb.PHASES:
        assert table.count(f"| {name} |") == len(result["runs"])
    assert "Sidecar: 0.3 x 24 GiB = 7.20 GiB" in table


def test_summarise_takes_median_time_and_largest_peak():
    samples = [dict(peak_gib=2.0, reserved_gib=3.0, before_gib=1.0, seconds=3.0, tokens=60),
               dict(peak_gib=2.5, reserved_gib=3.0, before_gib=1.0, seconds=1.0, tokens=60),
               dict(peak_gib=2.2, reserved_gib=3.5, before_gib=1.0, seconds=2.0, tokens=60)]
    p = mb._summarise(samples)
    assert (p["seconds"], p["peak_gib"], p["reserved_gib"], p["tokens_per_s"]) == (2.0, 2.5, 3.5, 30.0)
    assert mb._summarise(samples[:2])["seconds"] == 2.0                    # even count: mean of the middle two
    assert "error" in mb._summarise([samples[0], {"error": "out of memory"}])


def test_phase_subset_and_repeats():
    result = mb.main(["--quick", "--precisions", "bf16", "--response-lengths", "24",
                      "--phases", "fci_forward,plain_forward", "--repeats", "3"])
    (run,) = result["runs"]
    assert set(run["phases"]) == {"fci_forward", "plain_forward"}
    for p in run["phases"].values():
        assert len(p["all_seconds"]) == 3 and p["seconds"] == sorted(p["all_seconds"])[1]
    assert run["fci_time_ratio"] > 0
    with pytest.raises(ValueError, match="--phases"):
        mb.main(["--quick", "--phases", "fci_forward,backward"])
