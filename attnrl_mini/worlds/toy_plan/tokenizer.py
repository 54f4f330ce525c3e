"""The toy-plan world's tokenizer: the first world's construction (a real byte-level Qwen2Tokenizer,
see toy/tokenizer.py for why) with this world's words as whole tokens."""
from __future__ import annotations

from attnrl_mini.worlds.toy.tokenizer import build_tokenizer

WORDS = [
    "\n\n", ".\n",                                    # step separator first: ".\n\n" -> "." + "\n\n"
    "Let", " x", " be", " the", " larger", " of", " and", " Add", " to", " Multiply", " by",
    "What", " is", " sum", " results", "Compare", "We", " compare", "Look", " at", "So",
    "(a", "(b", "\\boxed", "user", "assistant", "system",
]


def build_plan_tokenizer():
    return build_tokenizer(WORDS)
