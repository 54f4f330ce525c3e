"""Write a student copy: the package with the chosen exercises' regions replaced by a raise, the
graded tests, a HANDOUT.md generated from the registry and the docs, and (optionally) an overlay
of the instructor's hidden tests (in the copy's folder HIDDEN_TESTS)."""
from __future__ import annotations

import ast
import json
import os
import re
import shutil

from .e2e import LENGTHS, load_reference
from .regions import find_regions, stub_source
from .registry import EXERCISES, PARTS, exercises_of

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GRADED_TESTS = os.path.join("tests", "graded")
HIDDEN_TESTS = os.path.join("tests", "hidden")
# What a student copy holds (relative to the repository root). planted.py holds solution text.
COPIED = ["attnrl_mini", "train.py", "eval.py", "requirements.txt", "requirements-cpu.txt", "requirements-cuda.txt",
          "scripts", "docs", GRADED_TESTS, "README.md"]
PRIVATE = {os.path.join("attnrl_mini", "assignment", "planted.py")}
MANIFEST = "assignment.json"     # in the copy: which parts it asks for (grade reads it)


def build(out: str, parts: str = "A,B,C", overlay: str | None = None) -> dict:
    """Write the student copy to `out` (must not exist or be empty). Returns a summary dict."""
    chosen = exercises_of(parts)
    if os.path.exists(out) and os.listdir(out):
        raise FileExistsError(f"--out {out} exists and is not empty; choose a new directory")
    if overlay is not None and not os.path.isdir(overlay):
        raise FileNotFoundError(f"--overlay {overlay} is not a directory")
    stubs = {e.id: e.message for e in chosen}
    found: set[str] = set()
    for item in COPIED:
        src = os.path.join(REPO, item)
        if not os.path.exists(src):
            continue
        if os.path.isfile(src):
            _copy_file(src, os.path.join(out, item))
            continue
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames[:] = [d for d in dirnames if d != "__pycache__" and not d.startswith(".")]
            for name in filenames:
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, REPO)
                if rel in PRIVATE or name.endswith(".pyc"):
                    continue
                dest = os.path.join(out, rel)
                if name.endswith(".py"):
                    with open(path) as f:
                        source = f.read()
                    found |= set(find_regions(source, rel)) & set(stubs)
                    os.makedirs(os.path.dirname(dest), exist_ok=True)
                    with open(dest, "w") as f:
                        f.write(stub_source(source, stubs, rel))
                else:
                    _copy_file(path, dest)
    missing = sorted(set(stubs) - found)
    if missing:
        raise ValueError(f"no solution region found for exercise(s) {', '.join(missing)}")
    n_hidden = 0
    if overlay is not None:
        dest = os.path.join(out, HIDDEN_TESTS)
        shutil.copytree(overlay, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        n_hidden = sum(name.startswith("test") and name.endswith(".py") for _, _, fs in os.walk(dest) for name in fs)
    letters = sorted({e.part for e in chosen})
    with open(os.path.join(out, MANIFEST), "w") as f:
        json.dump({"parts": letters, "exercises": [e.id for e in chosen]}, f, indent=1)
    with open(os.path.join(out, "HANDOUT.md"), "w") as f:
        f.write(handout(letters))
    return {"out": out, "parts": letters, "exercises": len(chosen), "hidden_test_files": n_hidden}


def _copy_file(src: str, dest: str) -> None:
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    shutil.copy2(src, dest)


def _signature_and_docstring(module: str, qualname: str) -> tuple[str, str]:
    path = os.path.join(REPO, *module.split(".")) + ".py"
    with open(path) as f:
        source = f.read()
    tree = ast.parse(source)
    node, scope = None, tree.body
    for name in qualname.split("."):
        node = next(n for n in scope if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == name)
        scope = node.body
    lines = source.splitlines()
    header = []
    for line in lines[node.lineno - 1:]:
        header.append(line.strip())
        if line.rstrip().endswith(":"):
            break
    return " ".join(header), ast.get_docstring(node) or ""


def _algorithm_section(letter: str) -> str:
    """The heading of docs/algorithm.md's section §<letter>, when the file is there."""
    path = os.path.join(REPO, "docs/algorithm.md")
    if not os.path.exists(path):
        return ""
    with open(path) as f:
        for line in f:
            if re.match(rf"#+\s*§?{letter[-1]}[.)]?\s", line):      # "## b. Attention ..." or "## §b ..."
                return line.lstrip("#").strip()
    return ""


def handout(parts: list[str]) -> str:
    """HANDOUT.md: the assignment text, generated from the registry, the docstrings and the docs."""
    ref = load_reference()
    out = ["# attnrl-mini assignment: GRPO, tree rollouts and AttnRL from the real code", "",
           "You fill in the bodies of real functions of this package: each one raises",
           "`NotImplementedError(\"Exercise <id> ...\")` where the code is missing. The docstrings above each",
           "missing body say what to compute; `docs/algorithm.md` explains the algorithm section by section.",
           "", "```bash",
           "python -m pytest tests/graded -q                    # the graded tests (tests/graded/)",
           "python -m pytest tests/graded -q -k c2              # one exercise's tests",
           "python -m attnrl_mini.assignment grade .            # score table + results.json",
           "python -m attnrl_mini.assignment e2e --part A       # a part's end-to-end check (toy training run)",
           "```", "",
           "Work through the parts in order: a later part's training run uses the earlier parts.", ""]
    for letter in parts:
        part = PARTS[letter]
        exs = [e for e in EXERCISES if e.part == letter]
        out += [f"## Part {letter}: {part.title}", "",
                "| exercise | function | points | equation | docs | depends on |", "|---|---|---:|---|---|---|"]
        for e in exs:
            out.append(f"| {e.id}{' (challenge)' if e.challenge else ''} | `{e.module}.{e.function}` | {e.points} | "
                       f"{e.equation or '–'} | docs/algorithm.md {e.section} | {', '.join(e.depends_on) or '–'} |")
        out.append("")
        for e in exs:
            signature, doc = _signature_and_docstring(e.module, e.function)
            section = _algorithm_section(e.section)
            out += [f"### {e.id}: {e.title}{' (challenge)' if e.challenge else ''}", "",
                    f"`{signature}` in `{e.module.replace('.', '/')}.py`", "", e.handout, "",
                    f"Read: docs/algorithm.md {e.section}{f' ({section})' if section else ''}."
                    + (f" Equation: {e.equation}." if e.equation else ""), "",
                    "Graded by: " + ", ".join(f"`{t}`" for t in e.tests), ""]
            if doc:
                out += ["Docstring:", "", "```text", doc, "```", ""]
        full, ci = LENGTHS["full"][letter], LENGTHS["ci"][letter]
        measured = ref.get("full", {}).get(letter)
        out += [f"### End-to-end check of part {letter}", "",
                f"`python -m attnrl_mini.assignment e2e --part {letter} --length full` trains the toy model with "
                f"`--algo {part.algo}` for {full.steps} steps (fixed seed) and passes when held-out accuracy "
                f"({full.eval_problems} problems) rises by at least {100 * full.min_gain:.0f} points"
                + (f"; the reference solution gains {100 * measured['gain']:.1f} points in about "
                   f"{measured['seconds'] / 60:.0f} min on a laptop CPU" if measured else "")
                + f". `--length ci` is the {ci.steps}-step version. Both print the first step at which your run's "
                  "metrics leave the reference run's: identical code gives identical samples, so an early "
                  "divergence points at a numerical difference.", ""]
    return "\n".join(out)
