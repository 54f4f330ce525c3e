"""Problem files, the bundled benchmarks, and the prompt template.

Run: OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m pytest -q tests/test_data.py
"""
from __future__ import annotations

import gzip
import importlib.util
import json
import warnings

import pytest

from attnrl_mini.worlds import data
from attnrl_mini.worlds.data import (BENCHMARKS, DEFAULT_K, Problem, encode_prompt, load_problems, math_prompt,
                              problem_from_verl_row)

# ------------------------------------------------------------------------------------------------
# The bundled files (attnrl_mini/data/README.md)

EXPECTED_SIZES = {"math500": 500, "aime24": 30, "aime25": 30, "amc23": 40, "minerva": 272, "olympiad": 674}


@pytest.mark.parametrize("name", sorted(EXPECTED_SIZES))
def test_bundled_benchmarks_load(name):
    problems = data.load_benchmark(name)
    assert len(problems) == EXPECTED_SIZES[name]
    assert len({p.id for p in problems}) == len(problems)              # ids are unique
    assert all(p.source == name and p.problem.strip() for p in problems)
    assert all(not p.problem.endswith(data.INSTRUCTION) for p in problems)  # bare problem text


def test_paper_k_per_benchmark():
    assert set(DEFAULT_K) == set(BENCHMARKS) == set(EXPECTED_SIZES)
    assert {name for name, k in DEFAULT_K.items() if k == 32} == {"aime24", "aime25", "amc23"}
    assert {name for name, k in DEFAULT_K.items() if k == 4} == {"math500", "minerva", "olympiad"}


def test_minerva_has_lists_of_acceptable_answers():
    problems = data.load_benchmark("minerva")
    lists = [p.answer for p in problems if isinstance(p.answer, list)]
    assert len(lists) == 75 and all(len(a) >= 2 for a in lists)


def test_training_set_loads_and_skips_the_two_empty_answers():
    with pytest.warns(UserWarning, match=r"skipped 2 problem\(s\) whose answer is empty \(lines 22740, 22742\)"):
        problems = load_problems(data.TRAIN_FILE)
    assert len(problems) == 24898 - 2
    assert {p.source for p in problems} == {"dapo_math", "xDAN2099/lighteval-MATH"}


# ------------------------------------------------------------------------------------------------
# Loading user files: good rows, and errors naming file, line and problem


def _write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_load_jsonl_defaults_and_types(tmp_path):
    path = _write_jsonl(tmp_path / "mine.jsonl", [
        {"problem": "1+1?", "answer": "2"},
        {"id": "q7", "source": "s", "problem": "Pick one.", "answer": ["a", "b"], "level": 3},
        {"problem": "3*3?", "answer": 9},   # a bare number is accepted as its string
    ])
    p0, p1, p2 = load_problems(path)
    assert p0 == Problem(id="mine-0", problem="1+1?", answer="2", source="mine", level=None)
    assert p1 == Problem(id="q7", problem="Pick one.", answer=["a", "b"], source="s", level=3)
    assert p2.answer == "9" and p2.id == "mine-2"


def test_load_jsonl_gz(tmp_path):
    path = tmp_path / "gz.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write(json.dumps({"id": "a", "problem": "x?", "answer": "1", "source": "t"}) + "\n\n")  # blank line ok
    assert load_problems(path) == [Problem("a", "x?", "1", "t")]


@pytest.mark.parametrize("bad_line, message", [
    ('{"problem": "x", "answer": "1"', "line 2: not valid JSON"),
    ('["problem", "answer"]', "line 2: expected a JSON object"),
    ('{"answer": "1"}', "line 2: field 'problem' must be a non-empty string"),
    ('{"problem": "x"}', "line 2: field 'answer' must be a non-empty string"),
    ('{"problem": "x", "answer": {"v": 1}}', "line 2: field 'answer' must be"),
    ('{"problem": "x", "answer": ["1", 2]}', "line 2: field 'answer' is a list"),
    ('{"problem": "x", "answer": "1", "level": "hard"}', "line 2: field 'level' must be an integer"),
])
def test_malformed_row_names_file_and_line(tmp_path, bad_line, message):
    path = _write_jsonl(tmp_path / "broken.jsonl", [{"problem": "ok", "answer": "1"}, bad_line])
    with pytest.raises(ValueError) as error:
        load_problems(path)
    assert "broken.jsonl" in str(error.value) and message in str(error.value)


def test_load_errors_for_missing_unknown_and_empty_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no problem file"):
        load_problems(tmp_path / "nope.jsonl")
    (tmp_path / "p.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="unknown problem file type"):
        load_problems(tmp_path / "p.csv")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="no problems"):
        load_problems(tmp_path / "empty.jsonl")
    with pytest.raises(ValueError, match="unknown benchmark 'gsm8k'"):
        data.load_benchmark("gsm8k")


# ------------------------------------------------------------------------------------------------
# verl-style parquet rows (the official release's format)

VERL_ROW = {
    "data_source": "math500",
    "prompt": [{"role": "user", "content": "What is $1+1$? " + data.INSTRUCTION}],
    "ability": "math",
    "reward_model": {"style": "rule", "ground_truth": "2"},
    "extra_info": {"split": "test", "index": 17},
}


def test_verl_row_strips_the_instruction():
    problem = problem_from_verl_row(VERL_ROW, "f.parquet: row 0", default_id="f-0")
    assert problem == Problem(id="math500-17", problem="What is $1+1$?", answer="2", source="math500")
    # without the instruction suffix the text is kept as it is; without an index the row number is the id
    row = dict(VERL_ROW, prompt=[{"role": "user", "content": "Bare."}], extra_info={})
    assert problem_from_verl_row(row, "w", default_id="f-3") == Problem("f-3", "Bare.", "2", "math500")


@pytest.mark.parametrize("change, message", [
    ({"prompt": "What is 1+1?"}, "'prompt' must be a list with one message"),
    ({"prompt": [{"role": "system", "content": "a"}, {"role": "user", "content": "b"}]}, "one message"),
    ({"reward_model": {"style": "rule"}}, "ground_truth' is missing"),
])
def test_verl_row_errors(change, message):
    with pytest.raises(ValueError, match=message) as error:
        problem_from_verl_row(dict(VERL_ROW, **change), "f.parquet: row 4", default_id="f-4")
    assert "f.parquet: row 4" in str(error.value)


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is None,
                    reason="pyarrow is not installed (not a dependency: parquet loading is optional)")
def test_load_verl_parquet_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [VERL_ROW, dict(VERL_ROW, prompt=[{"role": "user", "content": "Q2 " + data.INSTRUCTION}],
                           reward_model={"style": "rule", "ground_truth": "5"}, extra_info={"split": "test", "index": 18})]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "v.parquet")
    assert load_problems(tmp_path / "v.parquet") == [Problem("math500-17", "What is $1+1$?", "2", "math500"),
                                                      Problem("math500-18", "Q2", "5", "math500")]


# ------------------------------------------------------------------------------------------------
# The prompt


def test_math_prompt_is_the_papers():
    assert math_prompt("What is $1+1$?") == \
        "What is $1+1$? Let's think step by step and output the final answer within \\boxed{}."


def _char_tokenizer(chat_template: str | None):
    """A tiny character-level fast tokenizer (no download), optionally with a chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 $+?.'\\{}|<>_:\n"))
    vocab = {"<unk>": 0, "<|im_start|>": 1, "<|im_end|>": 2, **{c: i + 3 for i, c in enumerate(chars)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>",
                                  additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    tok.chat_template = chat_template
    return tok


CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_encode_prompt_uses_the_chat_template_with_the_assistant_turn_open():
    tok = _char_tokenizer(CHAT_TEMPLATE)
    problem = Problem("p", "What is 1+1?", "2", "math500")
    ids = encode_prompt(tok, problem)
    assert all(isinstance(t, int) for t in ids)
    text = "<|im_start|>user\n" + math_prompt(problem.problem) + "<|im_end|>\n<|im_start|>assistant\n"
    assert ids == tok(text, add_special_tokens=False)["input_ids"]
    assert ids[:1] == [1] and ids[-11:] == tok("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]


def test_encode_prompt_without_chat_template_uses_raw_text_and_warns_once(monkeypatch):
    monkeypatch.setattr(data, "_warned_no_chat_template", False)
    tok = _char_tokenizer(None)
    problem = Problem("p", "What is 1+1?", "2", "math500")
    with pytest.warns(UserWarning, match="no chat template"):
        ids = encode_prompt(tok, problem)
    assert ids == tok(math_prompt(problem.problem))["input_ids"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # the second call must not warn again
        assert encode_prompt(tok, problem) == ids


def test_encode_prompt_sends_toy_problems_to_the_toy_template():
    toy = pytest.importorskip("attnrl_mini.worlds.toy", reason="the toy world (attnrl_mini.worlds.toy) is not written yet")
    if not (hasattr(toy, "toy_prompt_ids") and hasattr(toy, "test_problems")):
        pytest.skip("attnrl_mini.worlds.toy does not export toy_prompt_ids / test_problems yet")
    from attnrl_mini.worlds.toy.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    problem = toy.test_problems(1)[0]
    assert problem.source == "toy"
    assert encode_prompt(tokenizer, problem) == list(toy.toy_prompt_ids(tokenizer, problem))
    # ... which is not the math template: no "Let's think step by step" instruction in it
    assert "step by step" not in tokenizer.decode(encode_prompt(tokenizer, problem))


def test_prompts_that_fit_by_hand(monkeypatch):
    """Character-level tokenizer: a prompt has as many tokens as its rendered text has characters, but for
    the chat markers; without a chat template, as many as the raw text "{problem} {INSTRUCTION}"."""
    tok = _char_tokenizer(CHAT_TEMPLATE)
    short, long = Problem("a", "1+1?", "2", "math500"), Problem("b", "What is 12+30?", "42", "math500")
    rendered = lambda p: "<|im_start|>user\n" + math_prompt(p.problem) + "<|im_end|>\n<|im_start|>assistant\n"
    # one token per character, except the two <|im_start|> (12 characters) and one <|im_end|> (10): one token each
    n_short = len(encode_prompt(tok, short))
    assert n_short == len(rendered(short)) - 2 * 11 - 9
    assert len(encode_prompt(tok, long)) == n_short + 10                  # "What is 12+30?" is 10 characters longer
    assert data.prompts_that_fit(tok, [long, short], n_short) == [short]
    assert data.prompts_that_fit(tok, [long, short], n_short + 10) == [long, short]   # order kept
    assert data.prompts_that_fit(tok, [long, short], n_short - 1) == []
    monkeypatch.setattr(data, "_warned_no_chat_template", False)
    raw = _char_tokenizer(None)
    with pytest.warns(UserWarning, match="no chat template"):
        fit = data.prompts_that_fit(raw, [long, short], len(math_prompt(short.problem)))
    assert fit == [short]


@pytest.mark.parametrize("world", ["toy", "toy-plan", "late"])
def test_prompts_that_fit_equals_tokenising_each_prompt(world):
    """Against the naive filter on each built-in world's tokenizer: at every prompt length that occurs
    (toy's prompts have 14 different lengths; toy-plan's and late's one each) and one below the
    shortest; and at a limit where some prompts fit by their bytes alone."""
    from attnrl_mini.models import policy
    from attnrl_mini.worlds import get_world
    tok = policy.load_tokenizer(policy.resolve_model(world))
    problems = get_world(world).train_problems(300, 1)
    lengths = sorted(len(encode_prompt(tok, p)) for p in problems)
    for max_tokens in [lengths[0] - 1] + sorted(set(lengths)):              # all tokenised
        naive = [p for p in problems if len(encode_prompt(tok, p)) <= max_tokens]
        assert data.prompts_that_fit(tok, problems, max_tokens) == naive
    assert data.prompts_that_fit(tok, problems, lengths[0] - 1) == []
    n_bytes = sorted(len(data._render_prompt(tok, p).encode()) for p in problems)
    assert lengths[-1] < n_bytes[-1]
    # at the median byte length, half the prompts fit by their bytes alone, the rest after tokenising
    assert data.prompts_that_fit(tok, problems, n_bytes[len(n_bytes) // 2]) == problems
