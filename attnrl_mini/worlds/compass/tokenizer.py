"""The early/late worlds' tokenizer (one for both): the first world's construction (a real byte-level
Qwen2Tokenizer, see toy/tokenizer.py for why) with these worlds' words as whole tokens."""
from __future__ import annotations

from attnrl_mini.worlds.toy.tokenizer import build_tokenizer

WORDS = [
    "\n\n", ".\n",                                    # step separator first: ".\n\n" -> "." + "\n\n"
    "Let", " x", " y", " be", " the", " larger", " of", " and", " Add", " to", " Multiply", " by",
    "What", " is", " sum", " results", "Solve", "Compare", "We", " compare", "Look", " at",
    "(a", "(b", "(c", "\\boxed", "user", "assistant", "system",
]


def build_compass_tokenizer():
    return build_tokenizer(WORDS)
