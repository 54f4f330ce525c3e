"""A problem of any world: the bare text, its ground truth, where it came from (its own module, so
that every world's generator can import it without importing the data loader)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Problem:
    id: str
    problem: str                    # the bare problem text (no instruction)
    answer: str | list[str]         # ground truth; a list = several acceptable answers
    source: str                     # benchmark / data set name ("toy" for the toy world)
    level: int | None = None        # difficulty, when known (toy: number of operations)
