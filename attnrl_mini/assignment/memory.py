"""The largest tensor an operation creates while a block runs: how graded tests check a memory rule.

C10 must never build an [H, T, T] tensor. `LargestAllocation` is a TorchDispatchMode: it sees the
output of every torch operation run inside its block and keeps the largest storage size in bytes
(a view shares its base's storage, so slicing a big buffer counts once, at the buffer's creation).
Under tamper-proof grading the student's code runs in another process; the recorded size of each
call is then `report`ed to the trackers open in the grading process (see assignment/sandbox.py).
"""
from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class LargestAllocation(TorchDispatchMode):
    _open: list["LargestAllocation"] = []     # trackers whose block is running (for report)

    def __init__(self):
        super().__init__()
        self.nbytes = 0

    def __enter__(self):
        LargestAllocation._open.append(self)
        return super().__enter__()

    def __exit__(self, *exc):
        LargestAllocation._open.remove(self)
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.nbytes = max(self.nbytes, t.untyped_storage().nbytes())
        return out

    @classmethod
    def report(cls, nbytes: int) -> None:
        """A call that ran elsewhere created a tensor of `nbytes`: every open tracker sees it."""
        for m in cls._open:
            m.nbytes = max(m.nbytes, nbytes)
