"""`assignment pack`, run in a student copy: check that only the exercise regions changed, then write
submission.zip with the files that hold exercises (what the grader reads), the answers files of the
manifest's "answers" (part D's PART_D.json: data, checked by the grader) and assignment.json."""
from __future__ import annotations

import hashlib
import json
import os
import zipfile

from .regions import find_regions, outside_regions

MANIFEST = "assignment.json"
# Files a submission may hold beyond the distributed ones: caches and outputs, never read.
IGNORED_DIRS = {"__pycache__", ".pytest_cache", ".git", ".ipynb_checkpoints", "runs", ".venv",
                "part_d_study"}     # part D's study output (assignment study --out default)
IGNORED_FILES = {"results.json", ".DS_Store", "submission.zip"}


def copy_files(root: str) -> set[str]:
    """The files of a copy (relative paths), less caches and outputs."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in IGNORED_DIRS and not d.endswith(".egg-info")]
        for name in filenames:
            if name in IGNORED_FILES or name.endswith(".pyc"):
                continue
            out.add(os.path.relpath(os.path.join(dirpath, name), root))
    return out


def fingerprint(path: str, rel: str) -> str:
    """sha256 of a file, of its text outside the exercise regions for a .py file."""
    with open(path, "rb") as f:
        data = f.read()
    if rel.endswith(".py"):
        data = outside_regions(data.decode(), rel).encode()
    return hashlib.sha256(data).hexdigest()


def pack(copy_dir: str, out: str | None = None) -> tuple[str, list[str]]:
    """(the zip written, the exercise files in it). Raises ValueError listing files changed outside the regions."""
    with open(os.path.join(copy_dir, MANIFEST)) as f:
        manifest = json.load(f)
    expected: dict[str, str] = manifest["files"]
    answers = [rel for rel in manifest.get("answers", [])]          # data files the student fills in (part D)
    have = copy_files(copy_dir)
    changed = [rel for rel, digest in sorted(expected.items())
               if rel in have and rel not in answers and fingerprint(os.path.join(copy_dir, rel), rel) != digest]
    added = sorted(rel for rel in have - set(expected) if rel.endswith(".py"))
    if changed or added:
        raise ValueError("these files differ from the copy you were given outside the exercise regions (the grader "
                         "would refuse the submission): " + ", ".join(changed + [f"{a} (new)" for a in added]))
    exercise_files = sorted(rel for rel in expected if rel.endswith(".py") and rel in have
                            and find_regions(open(os.path.join(copy_dir, rel)).read(), rel))
    out = out or os.path.join(copy_dir, "submission.zip")
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for rel in exercise_files + [a for a in answers if a in have] + [MANIFEST]:
            z.write(os.path.join(copy_dir, rel), rel)
    return out, exercise_files
