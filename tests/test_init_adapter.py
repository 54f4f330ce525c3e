"""--init-adapter: a run that starts from a peft adapter evaluates at step 0 exactly as eval.py
scores that adapter (same problems, same seed), and adapters that do not fit are refused in one line."""
from __future__ import annotations

import json
import os
import sys

import pytest
import torch

from attnrl_mini.tools import evaluate

from attnrl_mini.models import policy
from attnrl_mini.config import make_config
from attnrl_mini.run.driver import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_EVAL = 8
TOY = dict(steps=0, one_step_stale=False, eval_problems=N_EVAL, threads=1, generator="hf")


def toy_lora(rank=16, targets="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"):
    model_dir = policy.resolve_model("toy")
    return policy.add_lora(policy.load_model(model_dir), rank, 32, targets), model_dir


@pytest.fixture(scope="module")
def shifted_adapter(tmp_path_factory) -> str:
    """Someone's peft adapter whose B matrices are not zero, so it changes what the model samples."""
    model, _ = toy_lora()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    path = str(tmp_path_factory.mktemp("someone") / "adapter")
    model.save_pretrained(path)
    return path


def test_step0_accuracy_equals_eval_py_on_the_same_problems_and_seed(tmp_path, monkeypatch, shifted_adapter):
    sys.path.insert(0, ROOT)
    import eval as eval_cli

    seen = []   # the trainer's step-0 held-out evaluation, with its samples

    def spy(*args, **kwargs):
        result = real(*args, **kwargs)
        seen.append(result)
        return result
    real = evaluate.evaluate_problems
    monkeypatch.setattr(evaluate, "evaluate_problems", spy)
    history = train(make_config("toy", **TOY, out=str(tmp_path / "run"), init_adapter=shifted_adapter))
    monkeypatch.undo()
    assert history == [] and len(seen) == 1

    # eval.py with the same adapter, problems (the first N toy test problems) and seed (the trainer's seed + 12345)
    report = eval_cli.main(["--adapter", shifted_adapter, "--benchmarks", "toy", "--limit", str(N_EVAL),
                            "--seed", "12345", "--generator", "hf", "--out-dir", str(tmp_path / "eval")])
    with open(tmp_path / "eval" / "generations.jsonl") as f:
        eval_texts = [json.loads(line)["text"] for line in f]
    assert [r.text for r in seen[0].records] == eval_texts
    assert seen[0].avg_at_k == report["benchmarks"]["toy"]["avg_at_k"]

    # ... and the adapter mattered: the base model samples other texts with the same seed
    with open(tmp_path / "run" / "metrics.jsonl") as f:
        assert json.loads(f.readline())["eval_accuracy"] == seen[0].avg_at_k
    base = policy.load_model(policy.resolve_model("toy")).eval()
    tok = policy.load_tokenizer(policy.resolve_model("toy"))
    from attnrl_mini.generation import make_generator
    from attnrl_mini.worlds.toy import test_problems
    base_res = evaluate.evaluate_problems(make_generator("hf", tokenizer=tok, model_dir="", model=base), tok,
                                          test_problems(N_EVAL), max_new_tokens=96, seed=12345)
    assert [r.text for r in base_res.records] != eval_texts


@pytest.mark.parametrize("rank, targets, fits_shape, message", [
    (8, "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", True, "its r is 16 but this run's --lora-rank is 8; pass --lora-rank 16"),
    (16, "q_proj,v_proj", True, "--lora-target-modules is q_proj,v_proj; pass --lora-target-modules down_proj,gate_proj"),
    (16, "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", False, "do not fit this model's shapes"),
])
def test_adapters_that_do_not_fit_are_refused(shifted_adapter, rank, targets, fits_shape, message):
    if fits_shape:
        model, model_dir = toy_lora(rank, targets)
    else:  # another base model: a Qwen2 of other widths with the same module names
        from transformers import Qwen2Config, Qwen2ForCausalLM
        other = Qwen2ForCausalLM(Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                             num_attention_heads=2, num_key_value_heads=1))
        model, model_dir = policy.add_lora(other, rank, 32, targets), "other-model"
    with pytest.raises(policy.AdapterError) as err:
        policy.init_from_adapter(model, shifted_adapter, rank, 32, targets, model_dir)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_cli_gives_a_one_line_error_for_a_missing_or_mismatched_adapter(tmp_path, shifted_adapter, capsys):
    sys.path.insert(0, ROOT)
    import train as train_cli

    for path, extra, message in ((str(tmp_path / "nothing"), [], "no such directory"),
                                 (shifted_adapter, ["--lora-alpha", "8"], "pass --lora-alpha 32")):
        with pytest.raises(SystemExit) as err:
            train_cli.main(["--init-adapter", path, "--out", str(tmp_path / "run"), "--steps", "1", *extra])
        assert str(err.value).startswith("error: --init-adapter") and message in str(err.value)
        assert "\n" not in str(err.value)
    assert not os.path.exists(tmp_path / "run" / "metrics.jsonl")
