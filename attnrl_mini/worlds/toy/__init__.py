"""The built-in toy reasoning world: arithmetic problems, a tiny tokenizer and a small shipped model.

    from attnrl_mini.worlds.toy import TOY_MODEL_DIR, train_problems, test_problems, gold_solution, toy_prompt_ids

`TOY_MODEL_DIR` holds a Qwen2ForCausalLM pre-trained by `python -m attnrl_mini.worlds.toy.pretrain`
(deliberately imperfect, so RL has room to improve) together with its tokenizer.
"""
import os

from attnrl_mini.worlds.toy.problems import LEVELS, gold_solution, make_problem, test_problems, train_problems
from attnrl_mini.worlds.toy.tokenizer import toy_prompt_ids

TOY_MODEL_DIR: str = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model")

__all__ = ["TOY_MODEL_DIR", "LEVELS", "make_problem", "train_problems", "test_problems", "gold_solution",
           "toy_prompt_ids"]
