"""Record and replay: the student's functions run in their own process, the grade is decided in ours.

A graded test calls exercise functions and checks what they return. To grade a submission that we
do not trust, every test runs twice:

  1. `record` (a subprocess, in a copy of the package holding the student's regions): each call of an
     exercise function is run for real and logged: the return value, the state of the objects it was
     handed after the call (TreeNode, FCIContext, BatchSizeController, ...), its exception if it raised,
     the largest tensor it created (assignment/memory.py) and, when its tensor inputs require grad,
     the Jacobian of its outputs. The log holds only tensors, numbers, strings, lists and dicts, and is
     read back with torch.load(weights_only=True): it cannot carry code into the grading process.
  2. `replay` (the grading process, trusted package and trusted tests): the same test runs again with
     each exercise function replaced by its logged calls, in order: the logged value is returned, the
     logged state is written back into the arguments, the logged exception is raised. The test's own
     assertions then decide, here. Gradients flow through a replayed output as
     v + J·(x − x.detach()): the logged value, with the logged Jacobian.

So nothing the submission runs can reach the assertions, the scoring or the report; it can only
choose what its functions return, which is what the tests check. The recording process is an
ordinary subprocess (same user, same machine): it is isolated from the grading process, not
sandboxed from the machine.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import random
import sys
import traceback
import types
import warnings
from contextlib import contextmanager

import torch
from torch import nn

from .memory import LargestAllocation
from .regions import function_object
from .registry import BY_ID, Exercise

HOOK = "__assignment_hook__"     # the global an exercise function's swapped code calls
MAX_JACOBIAN = 4096              # outputs x inputs elements up to which a Jacobian is logged
TRUSTED_CLASSES = "attnrl_mini.algorithm."   # objects in a log must be of classes from these modules


# ---- the log's format: plain data only ----------------------------------------------------------------

def encode(value, depth: int = 0):
    """A value as tensors, numbers, strings, lists and dicts ({"__object__": "module:Class", "state": ...})."""
    if depth > 50:
        raise ValueError("value nested more than 50 deep")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):
        return value.detach().clone().cpu()
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v, depth + 1) for v in value]}
    if isinstance(value, list):
        return [encode(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {"__dict__": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    if isinstance(value, (set, frozenset)):
        return {"__set__": [encode(v, depth + 1) for v in sorted(value, key=repr)]}
    if hasattr(value, "__dict__") and not isinstance(value, (nn.Module, types.ModuleType, random.Random, type)) \
            and not callable(value):
        cls = type(value)
        state = {k: encode(v, depth + 1) for k, v in vars(value).items() if not k.startswith("_")}
        return {"__object__": f"{cls.__module__}:{cls.__qualname__}", "state": state}
    return {"__opaque__": type(value).__name__}


def _trusted_class(path: str) -> type:
    module, _, qualname = path.partition(":")
    if not module.startswith(TRUSTED_CLASSES):
        raise ValueError(f"the log holds an object of {path}, not a class of the package's algorithm/")
    obj = importlib.import_module(module)
    for name in qualname.split("."):
        obj = getattr(obj, name)
    if not isinstance(obj, type):
        raise ValueError(f"{path} is not a class")
    return obj


def decode(data):
    if isinstance(data, list):
        return [decode(v) for v in data]
    if not isinstance(data, dict):
        return data
    if "__tuple__" in data:
        return tuple(decode(v) for v in data["__tuple__"])
    if "__dict__" in data:
        return {decode(k): decode(v) for k, v in data["__dict__"]}
    if "__set__" in data:
        return {decode(v) for v in data["__set__"]}
    if "__object__" in data:
        obj = object.__new__(_trusted_class(data["__object__"]))
        obj.__dict__.update({k: decode(v) for k, v in data["state"].items()})
        return obj
    if "__opaque__" in data:
        return None
    raise ValueError(f"unknown entry in the log: {sorted(data)[:3]}")


def restore(live, data) -> None:
    """Write a logged state back into the live object or list (in place: the test's references stay valid)."""
    if isinstance(data, dict) and "__object__" in data and hasattr(live, "__dict__"):
        for k, v in data["state"].items():
            cur = live.__dict__.get(k)
            if isinstance(v, (list, dict)) and _mutable(cur) and _shape_matches(cur, v):
                restore(cur, v)
            else:
                live.__dict__[k] = decode(v)
    elif isinstance(data, list) and isinstance(live, list):
        if len(live) != len(data):
            live[:] = decode(data)
            return
        for i, v in enumerate(data):
            if _mutable(live[i]) and _shape_matches(live[i], v):
                restore(live[i], v)
            else:
                live[i] = decode(v)


def _mutable(x) -> bool:
    return isinstance(x, list) or (hasattr(x, "__dict__") and not isinstance(x, (nn.Module, torch.Tensor, type)))


def _shape_matches(live, data) -> bool:
    if isinstance(live, list):
        return isinstance(data, list)
    return isinstance(data, dict) and "__object__" in data


# ---- swapping an exercise function for a hook ---------------------------------------------------------

def _hook_code(name: str, xid: str) -> types.CodeType:
    src = f"def {name}(*args, **kwargs):\n    return {HOOK}({xid!r}, args, kwargs)\n"
    namespace: dict = {}
    exec(compile(src, f"<assignment hook {xid}>", "exec"), namespace)
    return namespace[name].__code__


@contextmanager
def hooked(exercises: list[Exercise], hook):
    """Within the block every listed exercise function calls hook(xid, original, signature, args, kwargs).

    The function objects keep their identity (only __code__ changes), so `from m import f` sees it too.
    """
    originals, saved = {}, []
    for ex in exercises:
        func = function_object(ex)
        if func.__closure__:
            raise ValueError(f"{ex.module}.{ex.function} is a closure; it cannot be hooked")
        original = types.FunctionType(func.__code__, func.__globals__, func.__name__, func.__defaults__)
        original.__kwdefaults__ = func.__kwdefaults__
        originals[ex.id] = (original, inspect.signature(original))
        saved.append((func, func.__code__))

    def call(xid, args, kwargs):
        original, signature = originals[xid]
        return hook(xid, original, signature, args, kwargs)

    for ex, (func, _) in zip(exercises, saved):
        func.__globals__[HOOK] = call
        func.__code__ = _hook_code(func.__name__, ex.id)
    try:
        yield
    finally:
        for func, code in saved:
            func.__code__ = code
            func.__globals__.pop(HOOK, None)


@contextmanager
def no_checkpointing():
    """Activation checkpointing off (logprobs.py): the same values and gradients, but no recomputation
    in the backward pass, so that each exercise call happens once and in the same order in both runs."""
    from attnrl_mini.algorithm import logprobs
    saved = logprobs.checkpoint
    logprobs.checkpoint = lambda fn, *args, use_reentrant=False: fn(*args)
    try:
        yield
    finally:
        logprobs.checkpoint = saved


def _mutable_arguments(signature, args, kwargs) -> dict:
    bound = signature.bind(*args, **kwargs)
    return {k: v for k, v in bound.arguments.items() if _mutable(v)}


def _grad_inputs(signature, args, kwargs) -> list[tuple[str, torch.Tensor]]:
    bound = signature.bind(*args, **kwargs)
    return [(k, v) for k, v in bound.arguments.items() if isinstance(v, torch.Tensor) and v.requires_grad]


def _output_tensors(out) -> list[torch.Tensor]:
    items = out if isinstance(out, (tuple, list)) else [out]
    return [t for t in items if isinstance(t, torch.Tensor)]


# ---- 1. record (runs the submission) -------------------------------------------------------------------

class Recorder:
    def __init__(self):
        self.calls: list[dict] = []
        self.depth = 0

    def __call__(self, xid, original, signature, args, kwargs):
        if self.depth:                       # an exercise called by another: part of the outer call
            return original(*args, **kwargs)
        self.depth += 1
        entry = {"exercise": xid}
        try:
            with LargestAllocation() as peak:
                out = original(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - logged, then raised as in an ordinary run
            entry["error"] = f"{type(err).__name__}: {err}"
            self.calls.append(entry)
            raise
        finally:
            self.depth -= 1
        entry["peak_bytes"] = peak.nbytes
        entry["value"] = encode(out)
        entry["state"] = {k: encode(v) for k, v in _mutable_arguments(signature, args, kwargs).items()}
        entry["jacobians"] = self._jacobians(original, signature, args, kwargs, out)
        self.calls.append(entry)
        return out

    def _jacobians(self, original, signature, args, kwargs, out) -> list:
        """[[output index, argument name, J [*out.shape, *arg.shape]]] when inputs require grad."""
        inputs = _grad_inputs(signature, args, kwargs)
        if not inputs or not torch.is_grad_enabled():
            return []
        result = []
        outputs = _output_tensors(out)
        for name, x in inputs:
            for i, y in enumerate(outputs):
                if not y.is_floating_point() or y.numel() * x.numel() > MAX_JACOBIAN:
                    continue
                x0 = x.detach().clone()

                def f(xv, i=i, name=name):
                    bound = signature.bind(*args, **kwargs)
                    bound.arguments[name] = xv
                    self.depth += 1
                    try:
                        return _output_tensors(original(*bound.args, **bound.kwargs))[i]
                    finally:
                        self.depth -= 1
                # identity saved-tensor hooks: an outer torch.utils.checkpoint does not see this computation
                with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t), torch.enable_grad():
                    J = torch.autograd.functional.jacobian(f, x0)
                result.append([i, name, J.detach().clone()])
        return result


def load_test_function(path: str, name: str, cache: dict):
    if path not in cache:
        spec = importlib.util.spec_from_file_location("graded_" + os.path.basename(path)[:-3], path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        cache[path] = module
    return getattr(cache[path], name)


def record(node_ids: list[str], exercise_ids: list[str], out_dir: str) -> None:
    """Run each test (path::name, relative to the cwd) with the exercises logged; one log file per test."""
    os.makedirs(out_dir, exist_ok=True)
    cache: dict = {}
    recorder = Recorder()
    with no_checkpointing(), hooked([BY_ID[x] for x in exercise_ids], recorder):
        for k, node in enumerate(node_ids):
            recorder.calls = []
            path, name = node.split("::")
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    load_test_function(path, name, cache)()
                ran = "passed here"
            except BaseException as err:  # noqa: BLE001 - the grading process decides; this is a note
                ran = f"{type(err).__name__}: {err}"[:500]
                if isinstance(err, KeyboardInterrupt):
                    raise
            torch.save({"node": node, "calls": recorder.calls, "ran": ran}, os.path.join(out_dir, f"{k:04d}.pt"))


# ---- 2. replay (the grading process) -------------------------------------------------------------------

class ReplayError(AssertionError):
    pass


class Replayer:
    def __init__(self):
        self.calls: list[dict] = []
        self.next = 0

    def __call__(self, xid, original, signature, args, kwargs):
        if self.next >= len(self.calls):
            raise ReplayError(f"exercise {xid}: the submission's process made no such call (it stopped earlier)")
        entry = self.calls[self.next]
        self.next += 1
        if entry["exercise"] != xid:
            raise ReplayError(f"the submission called exercise {entry['exercise']} where the test calls {xid}")
        if "error" in entry:
            raise ReplayError(f"exercise {xid} raised in the submission's process: {entry['error']}")
        LargestAllocation.report(int(entry["peak_bytes"]))
        live = _mutable_arguments(signature, args, kwargs)
        for name, state in entry["state"].items():
            if name in live:
                restore(live[name], state)
        out = decode(entry["value"])
        return self._with_gradients(out, entry["jacobians"], signature, args, kwargs)

    @staticmethod
    def _with_gradients(out, jacobians, signature, args, kwargs):
        if not jacobians or not torch.is_grad_enabled():
            return out
        inputs = dict(_grad_inputs(signature, args, kwargs))
        items = list(out) if isinstance(out, (tuple, list)) else [out]
        tensor_positions = [j for j, t in enumerate(items) if isinstance(t, torch.Tensor)]
        for i, name, J in jacobians:
            if name not in inputs or i >= len(tensor_positions):
                continue
            x = inputs[name]
            j = tensor_positions[i]
            y = items[j]
            dx = (x - x.detach()).reshape(-1)                          # zero, with x's gradient path
            items[j] = y + (J.reshape(y.numel(), x.numel()).to(dx.dtype) @ dx).reshape(y.shape)
        if isinstance(out, tuple):
            return tuple(items)
        return items if isinstance(out, list) else items[0]


def replay(logs: dict[str, dict], node_ids: list[tuple[str, str]], exercise_ids: list[str]) -> dict[str, tuple[bool, str]]:
    """Run each trusted test (node id, file path) against its log: {node id: (passed, failure text)}."""
    cache: dict = {}
    replayer = Replayer()
    results = {}
    with no_checkpointing(), hooked([BY_ID[x] for x in exercise_ids], replayer):
        for node, path in node_ids:
            log = logs.get(node)
            if log is None:
                results[node] = (False, "no result from the submission's process (it crashed or timed out here)")
                continue
            replayer.calls, replayer.next = log["calls"], 0
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    load_test_function(path, node.split("::")[1], cache)()
                results[node] = (True, "")
            except Exception as err:  # noqa: BLE001 - any failure of a test is a failed test
                text = f"{type(err).__name__}: {err}"
                if not isinstance(err, ReplayError):
                    tb = traceback.extract_tb(err.__traceback__)
                    text += f" (at {os.path.basename(tb[-1].filename)}:{tb[-1].lineno})" if tb else ""
                results[node] = (False, text)
    return results


def read_logs(folder: str) -> dict[str, dict]:
    logs = {}
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if name.endswith(".pt"):
            try:
                log = torch.load(os.path.join(folder, name), weights_only=True)
                logs[str(log["node"])] = log
            except Exception:  # noqa: BLE001 - a damaged log is a missing one
                continue
    return logs


if __name__ == "__main__":      # python -m attnrl_mini.assignment.sandbox OUT_DIR EXERCISES NODE...
    out_dir, exercise_ids, *nodes = sys.argv[1:]
    record(nodes, exercise_ids.split(","), out_dir)
