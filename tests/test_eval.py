"""Avg@K / Pass@K, evaluate_problems with a scripted generator, and eval.py end to end.

Run: OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m pytest -q tests/test_eval.py
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from attnrl_mini.worlds.data import Problem
from attnrl_mini.tools.evaluate import EvalResult, avg_and_pass_at_k, evaluate_problems
from attnrl_mini.generation import Completion
from attnrl_mini.worlds.reward import Grader

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import eval as eval_cli  # noqa: E402  (the CLI script at the repository root)

# ------------------------------------------------------------------------------------------------
# The metrics, by hand


def test_avg_and_pass_at_k_by_hand():
    # 3 problems x 4 samples: avg = (2/4 + 0/4 + 4/4) / 3 = 0.5 ; pass = (1 + 0 + 1) / 3 = 2/3
    table = [[True, False, False, True], [False] * 4, [True] * 4]
    avg, pass_ = avg_and_pass_at_k(table)
    assert avg == pytest.approx(0.5) and pass_ == pytest.approx(2 / 3)
    assert avg_and_pass_at_k([[True]]) == (1.0, 1.0)
    with pytest.raises(ValueError):
        avg_and_pass_at_k([])


# ------------------------------------------------------------------------------------------------
# evaluate_problems with a scripted generator (no model)


class CharTokenizer:
    """ids are Unicode code points; id 0 is a special EOS token that decode skips."""
    eos_token_id = 0

    def decode(self, ids, skip_special_tokens=False):
        return "".join("" if (i == 0 and skip_special_tokens) else ("<eos>" if i == 0 else chr(i)) for i in ids)


class ScriptedGenerator:
    """Answers problem i, sample j with script[problem text][j]; records every call."""
    name = "scripted"

    def __init__(self, script: dict[str, list[str]]):
        self.script, self.calls = script, []

    def generate(self, requests, temperature=1.0, seed=None):
        self.calls.append((len(requests), [r.n for r in requests], temperature, seed, [r.max_new_tokens for r in requests]))
        out = []
        for r in requests:
            texts = self.script["".join(map(chr, r.prompt_ids))][: r.n]
            out.append([Completion(token_ids=[ord(c) for c in t] + [0], logprobs=[0.0] * (len(t) + 1),
                                   finish_reason="stop") for t in texts])
        return out

    def close(self):
        pass


def test_evaluate_problems_counts_records_levels_and_batches():
    problems = [Problem("a", "A?", "2", "toy", level=2), Problem("b", "B?", "\\frac{1}{2}", "toy", level=2),
                Problem("c", "C?", "7", "toy", level=3)]
    script = {
        "A?": ["2+0 = 2\n\n\\boxed{2}", "\\boxed{3}", "\\boxed{2}"],          # 2 of 3 correct
        "B?": ["\\boxed{0.5}", "no answer", "\\boxed{1/2}"],                 # 2 of 3 (0.5 and 1/2 equal 1/2)
        "C?": ["\\boxed{8}", "\\boxed{6", "\\boxed{9}"],                     # 0 of 3 (one truncated)
    }
    generator, done = ScriptedGenerator(script), []
    with Grader(workers=1) as grader:
        result = evaluate_problems(generator, CharTokenizer(), problems, k=3, temperature=0.6, max_new_tokens=50,
                                   grader=grader, seed=10, batch_size=6, encode=lambda p: [ord(c) for c in p.problem],
                                   progress=done.append)
    assert isinstance(result, EvalResult) and result.n == 3 and result.k == 3
    assert result.avg_at_k == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert result.pass_at_k == pytest.approx(2 / 3)
    assert result.per_level == {2: pytest.approx(4 / 6), 3: 0.0}
    # batch_size 6 samples = 2 problems of k=3 per call: calls of 2 and 1 requests, seeds 10 and 11
    assert [(c[0], c[1], c[2], c[3], c[4]) for c in generator.calls] == [(2, [3, 3], 0.6, 10, [50, 50]),
                                                                         (1, [3], 0.6, 11, [50])]
    assert done == [6, 3]
    records = result.records
    assert [(r.problem_id, r.sample) for r in records] == [(p, j) for p in "abc" for j in range(3)]
    assert [r.correct for r in records] == [True, False, True, True, False, True, False, False, False]
    assert records[0].text == "2+0 = 2\n\n\\boxed{2}"            # EOS skipped when decoding
    assert records[4].extracted is None and records[7].extracted is None
    assert records[3].extracted == "0.5" and records[3].gold == "\\frac{1}{2}" and records[3].level == 2
    assert records[0].n_tokens == len("2+0 = 2\n\n\\boxed{2}") + 1 and records[0].finish_reason == "stop"
    assert result.summary() == {"avg_at_k": result.avg_at_k, "pass_at_k": result.pass_at_k, "n": 3, "k": 3,
                                "per_level": {"2": pytest.approx(4 / 6), "3": 0.0}}


def test_evaluate_problems_rejects_a_generator_that_returns_too_few_samples():
    class Short(ScriptedGenerator):
        def generate(self, requests, temperature=1.0, seed=None):
            return [cs[:1] for cs in super().generate(requests, temperature, seed)]

    with pytest.raises(RuntimeError, match="returned \\[1\\] completions for 1 requests of n=2"):
        evaluate_problems(Short({"A?": ["\\boxed{1}", "\\boxed{2}"]}), CharTokenizer(), [Problem("a", "A?", "1", "t")],
                          k=2, encode=lambda p: [ord(c) for c in p.problem], grader=Grader(workers=1))


# ------------------------------------------------------------------------------------------------
# eval.py pieces


def _make_adapter(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"r": 8}))
    return path


def test_resolve_adapter_accepts_adapter_checkpoint_and_run_dirs(tmp_path):
    adapter = _make_adapter(tmp_path / "lora")
    assert eval_cli.resolve_adapter(str(adapter)) == str(adapter)
    run = tmp_path / "run"
    for step in (10, 20, 30):
        _make_adapter(run / "checkpoints" / f"step_{step:06d}" / "adapter")
    for step in (10, 20):   # step 30 has no trainer state: an unfinished save, never picked
        (run / "checkpoints" / f"step_{step:06d}" / "trainer_state.pt").write_text("")
    latest = run / "checkpoints" / "step_000020"
    assert eval_cli.resolve_adapter(str(run)) == str(latest / "adapter")
    assert eval_cli.resolve_adapter(str(latest)) == str(latest / "adapter")
    with pytest.raises(FileNotFoundError, match="neither a LoRA adapter"):
        eval_cli.resolve_adapter(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no such directory"):
        eval_cli.resolve_adapter(str(tmp_path / "missing"))


def test_output_paths_and_table():
    args = eval_cli.parse_args(["--json", "res/q.json"])
    assert eval_cli.output_paths(args) == ("res/q.json", "res/q_generations.jsonl")
    args = eval_cli.parse_args(["--out-dir", "out"])
    assert eval_cli.output_paths(args) == (os.path.join("out", "eval.json"), os.path.join("out", "generations.jsonl"))
    assert eval_cli.output_paths(eval_cli.parse_args([])) == (None, None)
    table = eval_cli.format_table({"aime24": {"avg_at_k": 0.25, "pass_at_k": 0.5, "n": 30, "k": 32},
                                   "amc23": {"avg_at_k": 0.75, "pass_at_k": 1.0, "n": 40, "k": 32}},
                                  {"avg_at_k": 0.5, "pass_at_k": 0.75})
    assert "aime24        30  32   25.0%   50.0%" in table and "overall" in table and "50.0%   75.0%" in table


def test_default_max_new_tokens_follows_the_context_window(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 4096}))
    assert eval_cli.default_max_new_tokens(str(tmp_path), is_toy=False) == 3072     # Qwen2.5-Math: 4k context
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 131072}))
    assert eval_cli.default_max_new_tokens(str(tmp_path), is_toy=False) == 32768    # the paper's budget


def test_cli_rejects_bad_numbers():
    with pytest.raises(SystemExit):
        eval_cli.parse_args(["--k", "0"])


# ------------------------------------------------------------------------------------------------
# eval.py end to end, on a tiny random model (no toy world needed), HF generator


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A random 2-layer Qwen2 with a character tokenizer and a chat template, saved like a hub model."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    vocab = {"<unk>": 0, "<|endoftext|>": 1, "<|im_start|>": 2, "<|im_end|>": 3, **{c: i + 4 for i, c in enumerate(chars)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>", additional_special_tokens=["<|im_start|>"])
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                         "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                         eos_token_id=3, pad_token_id=1, bos_token_id=2, tie_word_embeddings=True)
    path = tmp_path_factory.mktemp("tiny_model")
    Qwen2ForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def test_eval_cli_end_to_end_on_a_tiny_model(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    report = eval_cli.main(["--model", tiny_model_dir, "--benchmarks", "amc23,aime24", "--limit", "2", "--k", "2",
                            "--max-new-tokens", "6", "--generator", "hf", "--device", "cpu", "--grader-workers", "1",
                            "--out-dir", str(out), "--batch-size", "2"])
    printed = capsys.readouterr().out
    assert "amc23" in printed and "aime24" in printed and "overall" in printed
    written = json.loads((out / "eval.json").read_text())
    assert written["benchmarks"].keys() == {"amc23", "aime24"}
    for name in ("amc23", "aime24"):
        s = written["benchmarks"][name]
        assert s["n"] == 2 and s["k"] == 2 and 0.0 <= s["avg_at_k"] <= s["pass_at_k"] <= 1.0
    assert written["overall"]["avg_at_k"] == pytest.approx(
        (written["benchmarks"]["amc23"]["avg_at_k"] + written["benchmarks"]["aime24"]["avg_at_k"]) / 2)
    assert written["config"]["temperature"] == 0.6 and written["config"]["generator"] == "hf"
    lines = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert len(lines) == 2 * 2 * 2
    assert {(l["benchmark"], l["problem_id"], l["sample"]) for l in lines} == \
        {(b, f"{b}-{i}", j) for b in ("amc23", "aime24") for i in range(2) for j in range(2)}
    assert all(l["n_tokens"] <= 6 and set(l) >= {"text", "extracted", "gold", "correct"} for l in lines)
    # the JSON's numbers are those of the graded generations
    amc = [l["correct"] for l in lines if l["benchmark"] == "amc23"]
    assert written["benchmarks"]["amc23"]["avg_at_k"] == pytest.approx(sum(amc) / len(amc))
    assert report["benchmarks"] == written["benchmarks"]


def test_eval_cli_refuses_math_benchmarks_for_the_toy_model(monkeypatch):
    import attnrl_mini.models.policy as policy
    monkeypatch.setattr(policy, "resolve_model", lambda name: "/nonexistent/toy")
    with pytest.raises(SystemExit, match="the toy model only knows the toy world"):
        eval_cli.main(["--model", "toy", "--benchmarks", "math500"])


def test_eval_cli_on_the_toy_world(tmp_path, capsys):
    json_path = tmp_path / "toy.json"
    report = eval_cli.main(["--limit", "8", "--generator", "hf", "--device", "cpu", "--grader-workers", "1",
                            "--json", str(json_path)])
    assert report["benchmarks"].keys() == {"toy"}
    toy = report["benchmarks"]["toy"]
    assert toy["n"] == 8 and toy["k"] == 1 and set(toy["per_level"]) == {"2", "3", "4", "5"}
    assert report["config"]["temperature"] == 1.0
    lines = (tmp_path / "toy_generations.jsonl").read_text().splitlines()
    assert len(lines) == 8
    assert toy["avg_at_k"] == pytest.approx(sum(json.loads(l)["correct"] for l in lines) / 8)
    assert "toy" in capsys.readouterr().out
