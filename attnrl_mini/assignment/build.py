"""Write a student copy: the package with the inside of the chosen exercises' regions replaced by a
raise (REFERENCE blocks and LEFT_OUT files, which compute an exercise another way, removed), the
graded tests, a pytest.ini, a HANDOUT.md generated from the registry and the source, assignment.json
(the parts, and each file's fingerprint for `pack`), and (optionally) an overlay of hidden tests."""
from __future__ import annotations

import ast
import importlib
import inspect
import json
import os
import re
import shutil
from dataclasses import dataclass

from .e2e import LENGTHS, load_reference
from .pack import MANIFEST, fingerprint
from .regions import find_regions, stub_references, stub_source
from . import part_d
from .registry import EXERCISES, PARTS, exercise_of_test, exercises_of, questions_of

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GRADED_TESTS = os.path.join("tests", "graded")
HIDDEN_TESTS = os.path.join("tests", "hidden")
# What a student copy holds (relative to the repository root). planted.py holds solution text.
COPIED = ["attnrl_mini", "train.py", "eval.py", "requirements.txt", "requirements-cpu.txt", "requirements-cuda.txt",
          "scripts", "docs", GRADED_TESTS, "README.md"]
# Copied only with a part: part D's study runs the selector bench in the copy.
COPIED_WITH_PART = {"D": [os.path.join("bench", "branch_outcomes.py"), os.path.join("bench", "world_sample.py")]}
PRIVATE = {os.path.join("attnrl_mini", "assignment", "planted.py")}
# Files that compute an exercise's result another way: left out while that exercise is stubbed.
LEFT_OUT = {os.path.join("attnrl_mini", "algorithm", "fci_triton.py"): "C10"}   # C10's accumulation, in Triton
# So that plain `pytest` works in the copy (the package is imported from the copy's root).
PYTEST_INI = "[pytest]\npythonpath = .\ntestpaths = tests/graded\n"


def build(out: str, parts: str = "A,B,C", overlay: str | None = None) -> dict:
    """Write the student copy to `out` (must not exist or be empty). Returns a summary dict."""
    chosen = exercises_of(parts)
    if os.path.exists(out) and os.listdir(out):
        raise FileExistsError(f"--out {out} exists and is not empty; choose a new directory")
    if overlay is not None and not os.path.isdir(overlay):
        raise FileNotFoundError(f"--overlay {overlay} is not a directory")
    if overlay is not None:
        ids = {e.id for e in chosen}
        unscored = [f"{rel}::{name}" for rel, name in hidden_test_names(overlay) if exercise_of_test(name) not in ids]
        if unscored:
            raise ValueError(f"hidden test(s) {', '.join(unscored)} would count for no exercise of parts {parts}: "
                             "name each test_<exercise id>_... (e.g. test_c2_...)")
    stubs = {e.id: e.message for e in chosen}
    found: set[str] = set()
    letters = sorted({e.part for e in chosen})
    for item in COPIED + [f for letter in letters for f in COPIED_WITH_PART.get(letter, [])]:
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
                if rel in PRIVATE or name.endswith(".pyc") or LEFT_OUT.get(rel) in stubs:
                    continue
                dest = os.path.join(out, rel)
                if name.endswith(".py"):
                    with open(path) as f:
                        source = f.read()
                    found |= set(find_regions(source, rel)) & set(stubs)
                    os.makedirs(os.path.dirname(dest), exist_ok=True)
                    with open(dest, "w") as f:
                        f.write(stub_references(stub_source(source, stubs, rel), set(stubs), rel))
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
    answers = [q.answers_file for q in questions_of(parts)]
    if part_d.ANSWERS_FILE in answers:
        part_d.write_template(os.path.join(out, part_d.ANSWERS_FILE))
    with open(os.path.join(out, "pytest.ini"), "w") as f:
        f.write(PYTEST_INI)
    with open(os.path.join(out, "HANDOUT.md"), "w") as f:
        f.write(handout(letters))
    files = {}                      # what `pack` checks a submission against (grading builds its own copy)
    for dirpath, _, filenames in os.walk(out):
        for name in filenames:
            rel = os.path.relpath(os.path.join(dirpath, name), out)
            files[rel] = fingerprint(os.path.join(dirpath, name), rel)
    manifest = {"parts": letters, "exercises": [e.id for e in chosen], "files": dict(sorted(files.items()))}
    if answers:                     # data files a student fills in (validated, never run): `pack` takes them
        manifest["answers"] = answers
    with open(os.path.join(out, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=1)
    return {"out": out, "parts": letters, "exercises": len(chosen), "hidden_test_files": n_hidden}


def hidden_test_names(overlay: str) -> list[tuple[str, str]]:
    """[(file relative to the overlay, test function name)] of the overlay's test_*.py files."""
    out = []
    for dirpath, dirnames, filenames in os.walk(overlay):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.startswith("test") and name.endswith(".py"):
                path = os.path.join(dirpath, name)
                with open(path) as f:
                    tree = ast.parse(f.read(), path)
                rel = os.path.relpath(path, overlay)
                out += [(rel, n.name) for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test")]
    return out


def _copy_file(src: str, dest: str) -> None:
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    shutil.copy2(src, dest)


def _module_source(module: str) -> tuple[str, ast.Module]:
    path = os.path.join(REPO, *module.split(".")) + ".py"
    with open(path) as f:
        source = f.read()
    return source, ast.parse(source)


def _nodes(tree: ast.Module, qualname: str) -> list:
    """[class node, ..., function node] along `qualname`."""
    out, scope = [], tree.body
    for name in qualname.split("."):
        node = next(n for n in scope if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == name)
        out.append(node)
        scope = node.body
    return out


def _signature_and_docstring(module: str, qualname: str) -> tuple[str, str]:
    source, tree = _module_source(module)
    node = _nodes(tree, qualname)[-1]
    header = []
    for line in source.splitlines()[node.lineno - 1:]:
        header.append(line.strip())
        if line.rstrip().endswith(":"):
            break
    return " ".join(header), ast.get_docstring(node) or ""


@dataclass
class RegionContext:
    available: list[str]     # parameters and the locals assigned above the region
    defined_for_later: list[str]   # names the code below the region reads, which the region must assign
    returns: bool            # the region ends the function with a return
    class_doc: str           # the docstring of the class a method belongs to
    lines: int               # lines of the reference region (code, not comments)


def region_context(e) -> RegionContext:
    """What a region's code can use and must provide, read from the reference source."""
    source, tree = _module_source(e.module)
    path = _nodes(tree, e.function)
    func = path[-1]
    begin, end, _ = find_regions(source, e.module)[e.id]            # 0-based marker lines
    args = func.args
    available = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
    available += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
    assigned_above, read_below, assigned_inside = [], set(), set()
    nested = {id(r) for n in ast.walk(func) if isinstance(n, (ast.FunctionDef, ast.Lambda)) and n is not func
              for r in ast.walk(n)}
    loop_only = {n.id for f in ast.walk(func) if isinstance(f, (ast.For, ast.comprehension))
                 for n in ast.walk(f.target) if isinstance(n, ast.Name)}
    returns = False
    for node in ast.walk(func):
        line = getattr(node, "lineno", None)
        if line is None:
            continue
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Store) and line - 1 < begin and node.id not in available + assigned_above \
                    and node.id not in loop_only:
                assigned_above.append(node.id)
            elif isinstance(node.ctx, ast.Store) and begin < line - 1 < end:
                assigned_inside.add(node.id)
            elif isinstance(node.ctx, ast.Load) and line - 1 > end:
                read_below.add(node.id)
        if isinstance(node, ast.Return) and begin < line - 1 < end and id(node) not in nested and node.value is not None:
            returns = True
    code_lines = [l for l in source.splitlines()[begin + 1:end] if l.strip() and not l.strip().startswith("#")]
    class_doc = ast.get_docstring(path[-2]) if len(path) > 1 else ""
    return RegionContext(available + assigned_above, sorted(read_below & assigned_inside), returns,
                         class_doc or "", len(code_lines))


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


MINUTES_PER_LINE = 6     # effort estimate: minutes per line of reference code, reading and testing included


def data_classes(e) -> list[str]:
    """Source (fields and docstring, no methods) of the package's classes an exercise works with:
    those its signature names and those its reference code uses."""
    source, tree = _module_source(e.module)
    func = _nodes(tree, e.function)[-1]
    begin, end, _ = find_regions(source, e.module)[e.id]
    names = []
    for node in ast.walk(func):
        in_signature = node.lineno < func.body[0].lineno if hasattr(node, "lineno") else False
        in_region = hasattr(node, "lineno") and begin < node.lineno - 1 < end
        if isinstance(node, ast.Name) and (in_signature or in_region) and node.id not in names:
            names.append(node.id)
    module = importlib.import_module(e.module)
    out = []
    for name in names:                     # grows: a class's fields may name another class (Rollout -> Continuation)
        cls = getattr(module, name, None)
        if not (isinstance(cls, type) and cls.__module__.startswith("attnrl_mini.algorithm")) or \
                e.function.split(".")[0] == name:
            continue
        lines = inspect.getsource(cls).splitlines()
        kept = []
        for line in lines:
            if kept and re.match(r"\s+(def |@)", line):
                break
            kept.append(line)
        out.append("\n".join(kept).rstrip())
        names += [n for n in re.findall(r"\b[A-Z]\w+", "\n".join(kept[1:])) if n not in names]
    return out


def handout(parts: list[str]) -> str:
    """HANDOUT.md: the assignment text, generated from the registry, the docstrings and the docs."""
    ref = load_reference()
    out = ["# attnrl-mini assignment: GRPO, tree rollouts and AttnRL from the real code", "",
           "You fill in the bodies of real functions of this package. Each one has a region",
           "", "```python", "# BEGIN SOLUTION C2", "raise NotImplementedError(\"Exercise C2 ...\")", "# END SOLUTION C2",
           "```", "",
           "Replace the `raise` by your code **between the two marker lines**. Only the text between the markers is",
           "graded: grading takes it into a clean copy of this package, so a change anywhere else (another line of",
           "the file, another file, the tests) makes the grader refuse the whole submission (score 0). Keep the",
           "marker lines as they are. Everything an exercise needs is below: the rule, the equations (the module",
           "and class docstrings are included), the names your code can use and what it must return.",
           "`docs/algorithm.md` explains the algorithm section by section.",
           "", "```bash",
           "python -m pytest                                    # the graded tests (tests/graded/)",
           "python -m pytest -k test_c1_                        # one exercise's tests (test_c1_ is not test_c10_)",
           "python -m attnrl_mini.assignment e2e --part A       # a part's end-to-end check (toy training run)",
           "python -m attnrl_mini.assignment pack               # writes submission.zip: hand that in",
           "```", "",
           "**Handing in.** Run `python -m attnrl_mini.assignment pack` in this folder and upload the",
           "`submission.zip` it writes (the files that hold your exercises, unchanged elsewhere). `pack` refuses",
           "to write it while a file outside the regions differs from the copy you were given, and says which.",
           "Your score is the fraction of each exercise's graded tests that pass, times its points; the instructor",
           "may add hidden tests of the same exercises.", "",
           "Work through the parts in order: a later part's training run uses the earlier parts.", ""]
    for letter in parts:
        shown_modules: set[str] = set()        # a module's docstring: once per part, at its first exercise
        part = PARTS[letter]
        exs = [e for e in EXERCISES if e.part == letter]
        contexts = {e.id: region_context(e) for e in exs}
        minutes = sum(c.lines for c in contexts.values()) * MINUTES_PER_LINE
        out += [f"## Part {letter}: {part.title}", "",
                f"Effort: about {minutes / 60:.1f} h (an estimate, not a measurement: {MINUTES_PER_LINE} min per line "
                f"of the reference solution's {sum(c.lines for c in contexts.values())} lines, reading and testing "
                "included; " + ("D2's study run comes on top" if letter == "D" else "the end-to-end run comes on top") + ").", "",
                "| exercise | function | points | equation | docs | depends on |", "|---|---|---:|---|---|---|"]
        for e in exs:
            out.append(f"| {e.id}{' (challenge)' if e.challenge else ''} | `{e.module}.{e.function}` | {e.points} | "
                       f"{e.equation or '–'} | docs/algorithm.md {e.section} | {', '.join(e.depends_on) or '–'} |")
        out.append("")
        for e in exs:
            signature, doc = _signature_and_docstring(e.module, e.function)
            section = _algorithm_section(e.section)
            ctx = contexts[e.id]
            out += [f"### {e.id}: {e.title}{' (challenge)' if e.challenge else ''}", "",
                    f"`{signature}` in `{e.module.replace('.', '/')}.py`", "", e.handout, "",
                    f"Read: docs/algorithm.md {e.section}{f' ({section})' if section else ''}."
                    + (f" Equation: {e.equation}." if e.equation else ""), "",
                    "Your code can use: " + ", ".join(f"`{n}`" for n in ctx.available)
                    + " (the parameters and the locals set above the region), and the module's imports and functions.",
                    "",
                    ("It must end with `return ...` (the function's result, see its docstring)." if ctx.returns else
                     "It returns nothing" + (": it must assign " + ", ".join(f"`{n}`" for n in ctx.defined_for_later)
                                             + ", which the code below the region reads." if ctx.defined_for_later
                                             else "; it changes the object's state (see the docstring).")), "",
                    f"Graded by ({len(e.tests)} tests, `python -m pytest -k test_{e.id.lower()}_`): "
                    + ", ".join(f"`{t}`" for t in e.tests), ""]
            if doc:
                out += ["Docstring:", "", "```text", doc, "```", ""]
            classes = data_classes(e)
            if classes:
                out += ["The data it works with:", "", "```python", "\n\n".join(classes), "```", ""]
            if ctx.class_doc:
                out += [f"Docstring of the class `{e.function.split('.')[0]}`:", "", "```text", ctx.class_doc, "```", ""]
            if e.module not in shown_modules:
                shown_modules.add(e.module)
                module_doc = ast.get_docstring(_module_source(e.module)[1]) or ""
                if module_doc:
                    out += [f"Docstring of the module `{e.module}` (shared by its exercises):", "", "```text",
                            module_doc, "```", ""]
        if letter == "D":
            out += part_d_handout()
            continue
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


STUDY_MINUTES = "under 2 min: 49-111 s measured on a shared 2-core CPU"   # docs/teaching.md, Part D


def part_d_handout() -> list[str]:
    """The D2 section of HANDOUT.md: the command, the table to fill, the question, the seed rule."""
    q = next(q for q in questions_of("D"))
    rows = [f"| `{k}` | {what} | |" for k, what in part_d.COUNTS.items()]
    return [f"### {q.id}: {q.title} ({q.points} points)", "",
            "The branch-selector study (docs/compass.md, `bench/branch_outcomes.py`) forks the same initial "
            "responses with different selectors and counts the forks whose outcomes disagree (*mixed*: only "
            "they give the tree advantages contrast). The matched worlds `early` and `late` put the same two "
            "decisions at the start or at the end of the response. Run the short study with YOUR seed:", "",
            "```bash", "python -m attnrl_mini.assignment study --student-id YOUR_ID", "```", "",
            f"It runs `bench/branch_outcomes.py --worlds early,late --selectors fci,entropy --prompts "
            f"{part_d.STUDY_PROMPTS} --seed SEED` ({STUDY_MINUTES}; your D1 computes "
            "its intervals and the trainer's scoring uses your parts A-C, so finish those first) and prints its "
            "counts. Your seed is `int(sha256(id.strip().lower()).hexdigest()[:8], 16) % 1000000`: the "
            "published shares of docs/compass.md are for seed 0 and 42 prompts, and do not answer your counts.", "",
            f"Fill `{part_d.ANSWERS_FILE}` (it is in this folder: `student_id`, the counts below as whole numbers, and "
            "`why`); `pack` puts it in submission.zip. The grader reruns the study for your id's seed and scores "
            "each count within max(1, 2% of the rerun's value); the free text is read by a person, not scored "
            "automatically.", "",
            "| key in `counts` | what it counts | your value |", "|---|---|---:|", *rows, "",
            "**The question** (`why`, a few sentences): which forks buy contrast, and why? Compare fci and "
            "entropy on `early` and on `late`, and use `late.fci.mixed_at` against `late.fci.mixed`: what "
            "share of fci's mixed forks on `late` fell at a decision, and what does a fork after every decision "
            "regenerate?", ""]
