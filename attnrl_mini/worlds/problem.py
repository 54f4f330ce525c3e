"""A problem of any world (the bare text, its ground truth, where it came from) and the shuffled stream
of training problems a run draws its batches from. Its own module, so that every world's generator can
import it without importing the data loader."""
from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass
class Problem:
    id: str
    problem: str                    # the bare problem text (no instruction)
    answer: str | list[str]         # ground truth; a list = several acceptable answers
    source: str                     # benchmark / data set name ("toy" for the toy world)
    level: int | None = None        # difficulty, when known (toy: number of operations)


class ProblemStream:
    """Shuffled epochs over the training problems; its position is part of the checkpoint."""

    def __init__(self, problems: list[Problem], seed: int):
        self.problems, self.seed, self.epoch, self.pos = problems, seed, 0, 0
        self._order = self._permutation()

    def _permutation(self) -> list[int]:
        order = list(range(len(self.problems)))
        random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        return order

    def take(self, n: int) -> list[Problem]:
        out = []
        while len(out) < n:
            if self.pos == len(self._order):
                self.epoch, self.pos = self.epoch + 1, 0
                self._order = self._permutation()
            out.append(self.problems[self._order[self.pos]])
            self.pos += 1
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, s: dict) -> None:
        self.epoch, self.pos = s["epoch"], s["pos"]
        self._order = self._permutation()
