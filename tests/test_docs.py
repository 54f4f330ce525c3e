"""Every reference in the repository's code, tests and docs resolves inside the repository.

Checked in every text file:
  - a path that starts at one of the repository's top-level folders (`attnrl_mini/…`, `docs/…`,
    `tests/…`, …) names a file or folder that exists;
  - a `*.md` file named anywhere exists, from the repository root or beside the file naming it;
  - a file that the code or a command writes (a whole string literal "table.md" in a .py file;
    `--out x.md`, `--markdown x.md`) is not a reference;
  - nothing points outside the repository (a parent directory's `shared` docs);
  - a section citation `§x` (`§c.1`, `§a.2–3`, `§e–g`; the paper's own numeric sections such as
    §3.1.1 are not ours) names a section, subsection or numbered item of docs/algorithm.md;
  - a test node id `tests/test_x.py::test_name` names a test function that exists;
  - a Markdown link or image `[text](target)` (not a URL) names a file relative to the page holding it;
  - a command `python train.py --flag`, `python eval.py --flag` (or `attnrl-train` / `attnrl-eval`) uses
    flags that its parser has, and `python -m attnrl_mini.x.y` names a module that exists.
This file itself is left out of the scan: it holds bad references on purpose, to show they are caught.
"""
from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEXT_SUFFIXES = {".py", ".md", ".txt", ".sh", ".toml", ".cfg", ".yml", ".yaml", ".ipynb", ""}
RUN_OUTPUTS = {"runs", "results"}          # top-level folders that runs and benches write, not the repository
TOP_LEVEL = ("attnrl_mini", "bench", "docs", "scripts", "tests", "data", "notebooks", ".ci")
# The official release's own data files, described (not shipped) in docs/algorithm.md §j; a bare "data/" is the
# release's folder or an export's OUT/data/ (ours is attnrl_mini/data/, so any longer data/... path is stale).
RELEASE_PATHS = {"data/deepscaler/deepscaler_train.parquet", "data/train/deepscaler_train.parquet",
                 "data/train/dapo+math_train.parquet", "data/"}
OUTSIDE = ("../" + "shared", "/work/" + "shared", "shared/" + "docs")

PATH_RE = re.compile(r"(?<![\w./+-])((?:%s)/[\w./+-]*)" % "|".join(re.escape(t) for t in TOP_LEVEL))
MD_RE = re.compile(r"(?<![\w./+-])((?:\.{1,2}/)*[\w+-][\w./+-]*\.md)\b")
WRITTEN_RE = re.compile(r"--(?:out|markdown|json|png)[ =]\S+")   # a file a command writes
SECTION_RE = re.compile(r"§((?:0|[a-j])(?:\.\d+)*(?:[–-](?:\d+|[a-j]))?)(?![\w])")
NODE_RE = re.compile(r"(tests/test_\w+\.py)::(test_\w+)")
LINK_RE = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
COMMAND_RE = re.compile(r"(?:python3? (train|eval)\.py|attnrl-(train|eval))((?: +[^\s`|;&)]+)*)")
MODULE_RE = re.compile(r"python3? -m (attnrl_mini(?:\.\w+)*)")


VENDORED = {"verl-0.9.1", "attnrl-378c38e"}   # in attnrl_mini/tools/verl_config/: other projects' files, copied unmodified (their paths are theirs)


def skipped_dir(name: str, top: bool) -> bool:
    """Hidden folders (.git, a .venv, caches) except .ci, __pycache__, top-level run outputs, vendored copies."""
    return (name.startswith(".") and name != ".ci") or name == "__pycache__" or (top and name in RUN_OUTPUTS) \
        or name in VENDORED


@functools.cache
def text_files() -> tuple[Path, ...]:
    """The repository's text files, less this one."""
    files = []
    for folder, dirs, names in os.walk(ROOT):
        here = Path(folder)
        dirs[:] = [d for d in dirs if not skipped_dir(d, here == ROOT)]
        for name in names:
            path = here / name
            if path.suffix in TEXT_SUFFIXES and (path.suffix or here.name == ".ci") \
                    and path != Path(__file__).resolve():
                files.append(path)
    return tuple(sorted(files))


@functools.cache
def written_names() -> frozenset[str]:
    """*.md names that the code writes: a whole string literal such as "table.md" in a .py file."""
    return frozenset(m.group(2) for p in text_files() if p.suffix == ".py"
                     for m in re.finditer(r"""(["'])([\w.+-]+\.md)\1""", p.read_text()))


# ------------------------------------------------------------------------------------------------
# The checkers, each returning a list of "file:line: what is wrong" strings
# ------------------------------------------------------------------------------------------------

def bad_paths(text: str, where: Path) -> list[str]:
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = WRITTEN_RE.sub("", line)
        for bad in OUTSIDE:
            if bad in line:
                out.append(f"{where}:{lineno}: points outside the repository ({bad!r})")
        for m in PATH_RE.finditer(line):
            path = m.group(1).rstrip(".,;:")
            if "{" in path or "*" in path or path in RELEASE_PATHS or path.endswith("/..."):
                continue
            if not (ROOT / path).exists():
                out.append(f"{where}:{lineno}: {path} is not in the repository")
        for m in MD_RE.finditer(line):
            name = m.group(1)
            if name in written_names():
                continue
            if not ((ROOT / name).exists() or (where.parent / name).exists()):
                out.append(f"{where}:{lineno}: {name} is not in the repository")
    return out


def algorithm_sections(text: str) -> dict[str, set[int]]:
    """Section labels of docs/algorithm.md ('0', 'a', 'b.1', ...) -> the numbers of their list items."""
    sections: dict[str, set[int]] = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"#{2,4} ((?:0|[a-j])(?:\.\d+)*)\.?\s", line)
        if m:
            current = m.group(1)
            sections[current] = set()
            continue
        if line.startswith("#"):                     # an unlettered heading ("Open questions") ends the section
            current = None
            continue
        item = re.match(r"(\d+)\. ", line)
        if item and current is not None:
            sections[current].add(int(item.group(1)))
    return sections


def section_exists(label: str, sections: dict[str, set[int]]) -> bool:
    """'c.1' a subsection; 'c.1.4' item 4 of c.1; 'a.2' item 2 of §a when §a has no subsection a.2."""
    parts = label.split(".")
    if parts[0] not in sections:
        return False
    current = parts[0]
    for part in parts[1:]:
        if f"{current}.{part}" in sections:
            current = f"{current}.{part}"
        elif int(part) not in sections[current]:
            return False
    return True


def bad_sections(text: str, where: Path, sections: dict[str, set[int]]) -> list[str]:
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        for m in SECTION_RE.finditer(line):
            label = m.group(1)
            head, _, tail = label.replace("–", "-").partition("-")
            labels = [head]
            if tail.isalpha():                                   # §e–g: every letter between
                labels = [chr(c) for c in range(ord(head), ord(tail) + 1)]
            elif tail:                                           # §a.2–3: both ends
                labels.append(head.rsplit(".", 1)[0] + "." + tail)
            for lab in labels:
                if not section_exists(lab, sections):
                    out.append(f"{where}:{lineno}: §{label} is not a section of docs/algorithm.md")
    return out


def bad_test_ids(text: str, where: Path) -> list[str]:
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        for m in NODE_RE.finditer(line):
            test_file, name = ROOT / m.group(1), m.group(2)
            if not test_file.exists() or not re.search(rf"^def {name}\(", test_file.read_text(), re.M):
                out.append(f"{where}:{lineno}: {m.group(0)} is not a test in the repository")
    return out


def bad_links(text: str, where: Path) -> list[str]:
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        for m in LINK_RE.finditer(line):
            target = m.group(1)
            if re.match(r"[a-z]+:", target):                      # http://, https://, mailto:
                continue
            if not (where.parent / target).exists():
                out.append(f"{where}:{lineno}: link {target} does not resolve from {where.parent.name}/")
    return out


@functools.cache
def cli_flags(command: str) -> frozenset[str]:
    """Every option string of train.py's or eval.py's parser."""
    import sys
    sys.path.insert(0, str(ROOT))
    if command == "train":
        from attnrl_mini.cli.train import build_parser
        parser = build_parser()
    else:
        from attnrl_mini.cli import eval as eval_cli
        parser = eval_cli.build_parser()
    return frozenset(o for a in parser._actions for o in a.option_strings)


def bad_commands(text: str, where: Path) -> list[str]:
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        for m in COMMAND_RE.finditer(line):
            command = m.group(1) or m.group(2)
            for flag in re.findall(r"(?<!\S)(--[a-z][\w-]*)", m.group(3)):
                if flag.split("=")[0] not in cli_flags(command):
                    out.append(f"{where}:{lineno}: {command}.py has no flag {flag}")
        for m in MODULE_RE.finditer(line):
            path = ROOT / m.group(1).replace(".", "/")
            if not (path.with_suffix(".py").exists() or (path / "__main__.py").exists()):
                out.append(f"{where}:{lineno}: no module {m.group(1)} to run with python -m")
    return out


# ------------------------------------------------------------------------------------------------
# The checkers catch what they should (so the repository-wide tests below can fail)
# ------------------------------------------------------------------------------------------------

SECTIONS = algorithm_sections((ROOT / "docs" / "algorithm.md").read_text())
HERE = ROOT / "attnrl_mini" / "x.py"


@pytest.mark.parametrize("text", ["see ../" "shared/docs/algorithm.md", "as environment.md says", "algorithm.md §a",
                                  "docs/missing.md", "attnrl_mini/nothing.py", "`bench/gone/`", "./algorithm.md"])
def test_a_reference_outside_the_repository_is_caught(text):
    assert bad_paths(text, HERE)


@pytest.mark.parametrize("text", ["docs/algorithm.md", "attnrl_mini/worlds/toy/problems.py", "`docs/results/compare/`",
                                  "the release's data/train/deepscaler_train.parquet", "README.md",
                                  "python bench/fci_cost.py --out docs/fci_cost.md", "writes table.md"])
def test_a_reference_inside_the_repository_passes(text):
    assert bad_paths(text, HERE) == []


def test_section_lookup_by_hand():
    sections = algorithm_sections("## a. Steps\n1. one\n2. two\n## c. ATB\n### c.1 Candidates\n1. x\n4. y\n"
                                  "## Open questions\n7. z\n")
    assert sections == {"a": {1, 2}, "c": set(), "c.1": {1, 4}}
    for ok in ("a", "a.2", "c.1", "c.1.4"):
        assert section_exists(ok, sections), ok
    for bad in ("b", "a.3", "c.2", "c.1.2"):
        assert not section_exists(bad, sections), bad
    assert bad_sections("§a.1–2, §a, paper §3.1.1", HERE, sections) == []
    assert len(bad_sections("§a.2–3", HERE, sections)) == 1
    assert len(bad_sections("§a–c", HERE, sections)) == 1           # there is no §b


def test_algorithm_md_has_every_section_letter_and_subsection():
    expected = ["0", "a", "b", "b.1", "b.2", "b.3", "c", "c.1", "c.2", "c.3", "c.4", "c.5", "d", "d.1", "d.2",
                "d.3", "d.4", "d.5", "d.6", "e", "e.1", "e.2", "e.3", "f", "g", "h", "i", "j"]
    assert [s for s in SECTIONS if s in expected] == expected


def test_a_broken_link_is_caught_and_a_good_one_passes():
    page = ROOT / "docs" / "x.md"
    assert bad_links("![curves](results/toy_attnrl_curves.png) [alg](algorithm.md) [w](https://x.org/a)", page) == []
    assert bad_links("![curves](docs/results/toy_attnrl_curves.png)", page)      # written from the root
    assert bad_links("[gone](missing.md#part)", page)


def test_a_command_with_an_unknown_flag_is_caught():
    assert bad_commands("`python train.py --lora-rank 32 --out runs/x --resume`", HERE) == []
    assert bad_commands("python eval.py --model toy --adapter runs/toy --generator hf", HERE) == []
    assert bad_commands("python -m attnrl_mini.tools.inspect --png x.png; python -m attnrl_mini.assignment check", HERE) == []
    assert bad_commands("python train.py --steps 3 --lora-ranks 32", HERE)
    assert bad_commands("attnrl-eval --benchmark toy", HERE)
    assert bad_commands("python -m attnrl_mini.tools.nothing", HERE)


def test_unknown_test_id_is_caught():
    assert bad_test_ids("`tests/test_fci.py::test_forward_influence_by_hand`", HERE) == []
    assert bad_test_ids("`tests/test_fci.py::test_that_does_not_exist`", HERE)
    assert bad_test_ids("`tests/test_nothing.py::test_x`", HERE)


# ------------------------------------------------------------------------------------------------
# The repository
# ------------------------------------------------------------------------------------------------

def test_scan_covers_code_tests_and_docs():
    names = {p.relative_to(ROOT).as_posix() for p in text_files()}
    assert {"README.md", "docs/walkthrough.md", "attnrl_mini/algorithm/fci.py", "tests/test_tree.py", "eval.py"} <= names


def test_every_file_and_section_reference_resolves():
    problems = []
    for path in text_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        problems += bad_paths(text, path) + bad_sections(text, path, SECTIONS) + bad_test_ids(text, path)
        if path.suffix in (".md", ".ipynb"):
            problems += bad_links(text, path) + bad_commands(text, path)
    assert not problems, "\n".join(p.replace(f"{ROOT}/", "") for p in problems)


def test_walkthrough_names_a_test_for_every_equation():
    text = (ROOT / "docs" / "walkthrough.md").read_text()
    for eq in range(2, 11):
        rows = [line for line in text.splitlines() if line.startswith(f"| Eq. {eq} |")]
        assert rows, f"docs/walkthrough.md has no row for Eq. {eq}"
        assert all(NODE_RE.search(row) for row in rows), f"the Eq. {eq} row names no test"
