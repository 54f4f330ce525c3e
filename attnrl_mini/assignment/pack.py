"""`assignment pack`, run in a student copy: check that only the exercise regions changed, then write
submission.zip with the files that hold exercises (what the grader reads) and assignment.json."""
from __future__ import annotations

import hashlib
import json
import os
import zipfile

from .regions import find_regions

MANIFEST = "assignment.json"


def fingerprint(path: str, rel: str) -> str:
    """sha256 of a file, of its text outside the exercise regions for a .py file."""
    with open(path, "rb") as f:
        data = f.read()
    if rel.endswith(".py"):
        text = data.decode()
        lines = text.splitlines(keepends=True)
        for begin, end, _ in sorted(find_regions(text, rel).values(), key=lambda r: -r[0]):
            del lines[begin + 1:end]
        data = "".join(lines).encode()
    return hashlib.sha256(data).hexdigest()


def pack(copy_dir: str, out: str | None = None) -> tuple[str, list[str]]:
    """(the zip written, the exercise files in it). Raises ValueError listing files changed outside the regions."""
    from .grade import _files            # the same notion of "a file of the copy" as grading
    with open(os.path.join(copy_dir, MANIFEST)) as f:
        manifest = json.load(f)
    expected: dict[str, str] = manifest["files"]
    have = _files(copy_dir)
    changed = [rel for rel, digest in sorted(expected.items())
               if rel in have and fingerprint(os.path.join(copy_dir, rel), rel) != digest]
    added = sorted(rel for rel in have - set(expected) if rel.endswith(".py"))
    if changed or added:
        raise ValueError("these files differ from the copy you were given outside the exercise regions (the grader "
                         "would refuse the submission): " + ", ".join(changed + [f"{a} (new)" for a in added]))
    exercise_files = sorted(rel for rel in expected if rel.endswith(".py") and rel in have
                            and find_regions(open(os.path.join(copy_dir, rel)).read(), rel))
    out = out or os.path.join(copy_dir, "submission.zip")
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for rel in exercise_files + [MANIFEST]:
            z.write(os.path.join(copy_dir, rel), rel)
    return out, exercise_files
