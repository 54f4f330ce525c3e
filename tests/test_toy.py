"""The toy world: generator arithmetic, the train/test split, the tokenizer and the shipped model."""
import ast
import operator
import random
import re

import pytest
import torch

from attnrl_mini.worlds import toy
from attnrl_mini.worlds.data import Problem
from attnrl_mini.worlds.reward import is_correct
from attnrl_mini.worlds.toy import problems as toy_problems
from attnrl_mini.worlds.toy.tokenizer import WORDS, build_tokenizer

torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------
# An independent checker: turn the problem text into one Python expression and evaluate it with a
# tiny AST walker (no code shared with the generator).

_WORDS = {"Add": "+", "Subtract": "-", "Multiply by": "*"}
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


def _eval_expression(node):
    if isinstance(node, ast.Expression):
        return _eval_expression(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return _BINOPS[type(node.op)](_eval_expression(node.left), _eval_expression(node.right))
    raise ValueError(f"unexpected syntax {ast.dump(node)}")


def independent_answer(text: str) -> int:
    """'Start with 7.\n(a) Add 5.\n(b) Multiply by 2. ...' -> '((7) + 5) * 2' -> 24."""
    expression = re.match(r"Start with (\d+)\.", text).group(1)
    for word, number in re.findall(r"(Add|Subtract|Multiply by) (\d+)\.", text):
        expression = f"({expression}) {_WORDS[word]} {number}"
    return _eval_expression(ast.parse(expression, mode="eval"))


def test_independent_checker_on_a_hand_computed_example():
    text = "Start with 7.\n(a) Add 5.\n(b) Multiply by 2.\n(c) Subtract 9.\nWhat is the result?"
    assert independent_answer(text) == (7 + 5) * 2 - 9 == 15


def test_gold_solution_hand_computed():
    p = Problem(id="x", problem="Start with 7.\n(a) Add 5.\n(b) Multiply by 2.\n(c) Subtract 9.\nWhat is the result?",
                answer="15", source="toy", level=3)
    assert toy.gold_solution(p) == "(a) 7+5=12\n\n(b) 12*2=24\n\n(c) 24-9=15\n\n\\boxed{15}"


# ---------------------------------------------------------------------------------------------
# Generator


@pytest.mark.parametrize("level", toy_problems.LEVELS)
def test_generated_answers_are_right(level):
    rng = random.Random(level)
    for _ in range(200):
        p = toy.make_problem(rng, level)
        assert p.source == "toy" and p.level == level
        assert len(re.findall(r"\) (Add|Subtract|Multiply by) \d\.", p.problem)) == level  # single-digit operands
        assert int(p.answer) == independent_answer(p.problem)
        steps = toy.gold_solution(p).split("\n\n")
        assert len(steps) == level + 1 and steps[-1] == f"\\boxed{{{p.answer}}}"
        for label, step in zip("abcde", steps[:-1]):              # every step is a true equation in range
            assert step.startswith(f"({label}) ")
            left, right = step[len("(a) "):].split("=")
            assert _eval_expression(ast.parse(left, mode="eval")) == int(right)
            assert 0 <= int(right) <= toy_problems.MAX_VALUE


def test_make_problem_rejects_unknown_level():
    with pytest.raises(ValueError, match="level"):
        toy.make_problem(random.Random(0), 9)


def test_parse_problem_rejects_foreign_text():
    with pytest.raises(ValueError, match="not a toy problem"):
        toy.gold_solution("What is 2 + 2?")
    with pytest.raises(ValueError, match="not a toy problem"):              # labels out of order
        toy.gold_solution("Start with 7.\n(b) Add 5.\n(a) Add 1.\nWhat is the result?")


def test_test_set_is_fixed_distinct_and_balanced():
    a, b = toy.test_problems(500), toy.test_problems(500)
    assert a == b                                                   # deterministic
    assert toy.test_problems(40) == a[:40]                          # smaller sets are prefixes
    assert len({p.problem for p in a}) == 500                       # no repeats
    assert [sum(p.level == lv for p in a) for lv in toy_problems.LEVELS] == [125] * 4
    assert all(toy_problems.is_test_problem(p.problem) for p in a)


def test_train_and_test_are_disjoint():
    test_texts = {p.problem for p in toy.test_problems(500)}
    train = toy.train_problems(5000, seed=3)
    assert not any(p.problem in test_texts for p in train)
    assert not any(toy_problems.is_test_problem(p.problem) for p in train)
    assert toy.train_problems(50, seed=3) == train[:50]             # deterministic per seed
    assert toy.train_problems(50, seed=4) != train[:50]
    assert set(p.level for p in train) == set(toy_problems.LEVELS)


def test_gold_solutions_graded_correct_by_the_reward():
    problems = toy.test_problems(500) + toy.train_problems(500, seed=0)
    assert all(is_correct(toy.gold_solution(p), p.answer) for p in problems)
    p = problems[0]
    assert not is_correct(toy.gold_solution(p).replace(f"{{{p.answer}}}", f"{{{int(p.answer) + 1}}}"), p.answer)


def test_slipped_training_solutions():
    from attnrl_mini.worlds.toy.pretrain import slipped_solution

    rng = random.Random(0)
    problems = toy.train_problems(300, seed=5)
    assert all(slipped_solution(p, rng, 0.0) == toy.gold_solution(p) for p in problems[:20])
    n_steps = n_slips = 0
    for p in problems:
        steps = slipped_solution(p, rng, 0.3).split("\n\n")
        value = int(re.match(r"Start with (\d+)", p.problem).group(1))
        for step in steps[:-1]:
            left, right = step[len("(a) "):].split("=")
            assert int(re.match(r"\d+", left).group()) == value          # carries on from the written value
            error = int(right) - _eval_expression(ast.parse(left, mode="eval"))
            assert error in (-2, -1, 0, 1, 2)
            n_steps, n_slips, value = n_steps + 1, n_slips + (error != 0), int(right)
            assert 0 <= value <= toy_problems.MAX_VALUE
        assert steps[-1] == f"\\boxed{{{value}}}"
    assert 0.25 < n_slips / n_steps < 0.35


# ---------------------------------------------------------------------------------------------
# Tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(toy.TOY_MODEL_DIR)


def test_shipped_tokenizer_equals_a_fresh_build(tokenizer):
    # AutoTokenizer loads every qwen2 checkpoint as a Qwen2Tokenizer; ours must survive that
    assert type(tokenizer).__name__ == "Qwen2Tokenizer"
    fresh = build_tokenizer()
    assert tokenizer.get_vocab() == fresh.get_vocab()
    assert tokenizer.padding_side == "left"
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"


def test_tokenizer_round_trips(tokenizer):
    for p in toy.test_problems(20) + toy.train_problems(20, seed=1):
        for text in (p.problem, toy.gold_solution(p)):
            ids = tokenizer.encode(text, add_special_tokens=False)
            assert tokenizer.decode(ids) == text
    text = "<|im_start|>user\nHi, x = {1, 2}!<|im_end|>\n"
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.convert_ids_to_tokens(tokenizer.encode("<|im_end|>")) == ["<|im_end|>"]


def test_digits_are_single_tokens_and_step_separator_is_one_token(tokenizer):
    ids = tokenizer.encode("(b) 12*3=36\n\n\\boxed{36}")
    assert [tokenizer.decode([i]) for i in ids] == \
        ["(b", ")", " ", "1", "2", "*", "3", "=", "3", "6", "\n\n", "\\boxed", "{", "3", "6", "}"]
    separators = [i for i in range(len(tokenizer)) if "\n\n" in tokenizer.decode([i])]
    assert separators == tokenizer.encode("\n\n")                  # exactly one token holds "\n\n"


def test_toy_words_are_single_tokens(tokenizer):
    for word in WORDS:
        assert len(tokenizer.encode(word)) == 1, word
    assert len(tokenizer) == 3 + 256 + sum(len(w.encode()) - 1 for w in WORDS)   # specials, bytes, merges


def test_chat_template_prompt(tokenizer):
    p = toy.test_problems(1)[0]
    ids = toy.toy_prompt_ids(tokenizer, p)
    assert tokenizer.decode(ids) == f"<|im_start|>user\n{p.problem}<|im_end|>\n<|im_start|>assistant\n"
    assert ids[-3:] == tokenizer.encode("<|im_start|>assistant\n")


# ---------------------------------------------------------------------------------------------
# The shipped model


@pytest.fixture(scope="module")
def model():
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(toy.TOY_MODEL_DIR, dtype=torch.float32).eval()


def test_shipped_model_shape(model):
    c = model.config
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert c.hidden_size // c.num_attention_heads >= 32                # vLLM's CPU backend needs head size >= 32
    assert c.tie_word_embeddings and model.dtype == torch.float32
    assert sum(p.numel() for p in model.parameters()) < 5_000_000


def test_shipped_model_solves_a_problem_greedily(model, tokenizer):
    # The model is imperfect at temperature 1, but its greedy answer to easy problems is mostly right.
    problems = [p for p in toy.test_problems(40) if p.level == 2][:6]
    prompts = [toy.toy_prompt_ids(tokenizer, p) for p in problems]
    T = max(map(len, prompts))
    input_ids = torch.tensor([[tokenizer.pad_token_id] * (T - len(x)) + x for x in prompts])
    mask = (torch.arange(T)[None, :] >= torch.tensor([T - len(x) for x in prompts])[:, None]).long()
    with torch.no_grad():
        out = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=40, do_sample=False)
    texts = [tokenizer.decode(row[T:], skip_special_tokens=True) for row in out]
    assert all("\n\n" in t and "\\boxed{" in t for t in texts)              # the step format was learnt
    assert sum(is_correct(t, p.answer) for t, p in zip(texts, problems)) >= 3


def test_sampled_accuracy_counts_per_level():
    from attnrl_mini.worlds.toy.pretrain import sampled_accuracy

    class Oracle(torch.nn.Module):
        """Stands in for a model: 'generates' the gold solution for every other problem."""
        device = torch.device("cpu")
        training = False

        def generate(self, input_ids, attention_mask, max_new_tokens, **_):
            rows = []
            for i in range(len(input_ids)):
                k = self.offset + i
                text = toy.gold_solution(self.problems[k]) if k % 2 == 0 else "\\boxed{-1}"
                rows.append(self.tok.encode(text) + [self.tok.eos_token_id])
            self.offset += len(input_ids)
            width = max(map(len, rows))
            rows = [r + [self.tok.pad_token_id] * (width - len(r)) for r in rows]
            return torch.cat([input_ids, torch.tensor(rows)], dim=1)

    tok = build_tokenizer()
    problems = toy.test_problems(8)
    oracle = Oracle()
    oracle.problems, oracle.tok, oracle.offset = problems, tok, 0
    result = sampled_accuracy(oracle, tok, problems, batch_size=3)
    # levels interleave 2,3,4,5,2,3,4,5: even positions (levels 2 and 4) are right
    assert result["overall"] == 0.5
    assert result["per_level"] == {2: 1.0, 3: 0.0, 4: 1.0, 5: 0.0}
    assert result["n"] == {2: 2, 3: 2, 4: 2, 5: 2}
