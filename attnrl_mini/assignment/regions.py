"""Solution regions in the source: find them, stub them, and swap a changed function body in place.

A region is the lines between `# BEGIN SOLUTION <id>` and `# END SOLUTION <id>` inside a function.
"""
from __future__ import annotations

import __future__
import ast
import importlib
import re
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .registry import EXERCISES, Exercise

MARKER = re.compile(r"^(\s*)# (BEGIN|END) SOLUTION (\w+)\s*$")
# Code outside the regions that computes exercises' results another way (a naive reference):
# `# BEGIN REFERENCE C3,C10` ... `# END REFERENCE C3,C10`, replaced in a student copy that stubs any of them.
REFERENCE = re.compile(r"^(\s*)# (BEGIN|END) REFERENCE ([\w,]+)\s*$")


def find_regions(source: str, where: str = "<source>") -> dict[str, tuple[int, int, str]]:
    """{id: (begin line index, end line index, indent)} of every region (0-based marker lines)."""
    regions, open_at = {}, {}
    for i, line in enumerate(source.splitlines()):
        m = MARKER.match(line)
        if not m:
            continue
        indent, kind, xid = m.groups()
        if kind == "BEGIN":
            if xid in open_at or xid in regions:
                raise ValueError(f"{where}:{i + 1}: a second BEGIN SOLUTION {xid}")
            open_at[xid] = (i, indent)
        else:
            if xid not in open_at:
                raise ValueError(f"{where}:{i + 1}: END SOLUTION {xid} without its BEGIN")
            begin, begin_indent = open_at.pop(xid)
            regions[xid] = (begin, i, begin_indent)
    if open_at:
        xid, (i, _) = next(iter(open_at.items()))
        raise ValueError(f"{where}:{i + 1}: BEGIN SOLUTION {xid} without its END")
    return regions


def stub_source(source: str, stubs: dict[str, str], where: str = "<source>") -> str:
    """Replace the inside of the regions named in `stubs` ({id: message}) by a
    `raise NotImplementedError(message)` (their marker lines stay: a student writes between them, and
    grading takes only what is between them); drop the marker lines of every other region (their code stays)."""
    lines = source.splitlines(keepends=True)
    regions = find_regions(source, where)
    for xid, (begin, end, indent) in sorted(regions.items(), key=lambda kv: -kv[1][0]):  # bottom-up
        if xid in stubs:
            lines[begin + 1:end] = [f"{indent}raise NotImplementedError({stubs[xid]!r})\n"]
        else:
            del lines[end]
            del lines[begin]
    return "".join(lines)


def outside_regions(source: str, where: str = "<source>") -> str:
    """The source with every region's inside removed (its marker lines stay): what a submission must not change."""
    lines = source.splitlines(keepends=True)
    for begin, end, _ in sorted(find_regions(source, where).values(), key=lambda r: -r[0]):
        del lines[begin + 1:end]
    return "".join(lines)


def stub_references(source: str, stubbed: set[str], where: str = "<source>") -> str:
    """Replace each REFERENCE block whose exercises include a stubbed one by a raise saying why."""
    out, open_at = [], None
    for i, line in enumerate(source.splitlines(keepends=True)):
        m = REFERENCE.match(line)
        if m and m.group(2) == "BEGIN":
            if open_at is not None:
                raise ValueError(f"{where}:{i + 1}: a REFERENCE block inside another")
            open_at = (m.group(1), m.group(3).split(","))
            block = []
            continue
        if m and m.group(2) == "END":
            if open_at is None:
                raise ValueError(f"{where}:{i + 1}: END REFERENCE without its BEGIN")
            indent, ids = open_at
            if set(ids) & stubbed:
                msg = (f"not in the student copy: this computes exercise(s) {', '.join(ids)} another way "
                       "(the instructor's copy has it)")
                out.append(f"{indent}raise NotImplementedError({msg!r})\n")
            else:
                out += block
            open_at = None
            continue
        (block if open_at is not None else out).append(line)
    if open_at is not None:
        raise ValueError(f"{where}: BEGIN REFERENCE without its END")
    return "".join(out)


def module_file(module: str) -> str:
    return importlib.import_module(module).__file__


def region_text(ex: Exercise) -> str:
    """The reference code inside exercise `ex`'s region."""
    with open(module_file(ex.module)) as f:
        source = f.read()
    begin, end, _ = find_regions(source, ex.module)[ex.id]
    return "".join(source.splitlines(keepends=True)[begin + 1:end])


def function_object(ex: Exercise):
    obj = importlib.import_module(ex.module)
    for name in ex.function.split("."):
        obj = obj.__dict__[name] if isinstance(obj, type) else getattr(obj, name)
    return obj


def _compile_function(source: str, ex: Exercise, filename: str):
    """The code object of `ex.function` as defined in the (changed) module `source`."""
    tree = ast.parse(source, filename)
    node, scope = None, tree.body
    for name in ex.function.split("."):
        node = next((n for n in scope if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == name), None)
        if node is None:
            raise ValueError(f"{filename}: no {ex.function} for exercise {ex.id}")
        scope = node.body
    lines = source.splitlines(keepends=True)
    first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
    body = textwrap.dedent("".join(lines[first - 1:node.end_lineno]))
    padded = "\n" * (first - 1) + body           # keep the line numbers of tracebacks
    module = importlib.import_module(ex.module)
    namespace = dict(module.__dict__)
    exec(compile(padded, filename, "exec", flags=__future__.annotations.compiler_flag, dont_inherit=True), namespace)
    return namespace[node.name].__code__


@contextmanager
def changed_function(ex: Exercise, change: Callable[[str], str]) -> Iterator[None]:
    """Within the block, `ex.function` runs the code of change(module source); restored on exit.

    The function object keeps its identity (only its __code__ is swapped), so every caller and
    every `from module import f` sees the change, in this process only.
    """
    path = module_file(ex.module)
    with open(path) as f:
        source = f.read()
    code = _compile_function(change(source), ex, path)
    func = function_object(ex)
    original = func.__code__
    func.__code__ = code
    try:
        yield
    finally:
        func.__code__ = original


def stubbed(ex: Exercise):
    """changed_function with the exercise's region replaced by the student copy's raise."""
    return changed_function(ex, lambda src: stub_source(src, {ex.id: ex.message}, ex.module))


def planted(ex: Exercise, old: str, new: str):
    """changed_function with one text replacement inside the exercise's region (a planted bug)."""
    def change(source: str) -> str:
        begin, end, _ = find_regions(source, ex.module)[ex.id]
        lines = source.splitlines(keepends=True)
        region = "".join(lines[begin + 1:end])
        if region.count(old) != 1:
            raise ValueError(f"planted bug for {ex.id}: {old!r} occurs {region.count(old)} times in its region "
                             f"(needs exactly 1; has {ex.module}.{ex.function} changed?)")
        return "".join(lines[:begin + 1]) + region.replace(old, new) + "".join(lines[end:])
    return changed_function(ex, change)


def all_marked_modules() -> set[str]:
    return {e.module for e in EXERCISES}
