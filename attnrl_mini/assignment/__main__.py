"""python -m attnrl_mini.assignment {build, grade, check, e2e} (see docs/teaching.md)."""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m attnrl_mini.assignment", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="write a student copy")
    b.add_argument("--out", required=True, help="a new directory for the copy")
    b.add_argument("--parts", default="A,B,C", help="parts whose exercises are stubbed (default A,B,C)")
    b.add_argument("--overlay", default=None, help="a folder of hidden tests (named test_<id>_...), copied into the copy")
    g = sub.add_parser("grade", help="grade a copy: terminal table + results.json")
    g.add_argument("dir", help="the copy (a directory built by `build`)")
    g.add_argument("--results", default=None, help="where to write results.json (default DIR/results.json)")
    c = sub.add_parser("check", help="the CI check of the assignment itself")
    c.add_argument("--no-e2e", action="store_true", help="skip the end-to-end training runs")
    e = sub.add_parser("e2e", help="a part's end-to-end check (a toy training run)")
    e.add_argument("--part", required=True, choices=["A", "B", "C"])
    e.add_argument("--length", default="ci", choices=["ci", "full"])
    e.add_argument("--record", action="store_true", help="store this run as the reference (reference code only)")
    args = p.parse_args(argv)
    try:
        return _run(args)
    except (ValueError, FileExistsError, FileNotFoundError) as err:   # bad input: one line, no traceback
        sys.exit(f"error: {err}")


def _run(args) -> int:
    if args.cmd == "build":
        from .build import build
        summary = build(args.out, args.parts, args.overlay)
        print(f"student copy in {summary['out']}: parts {','.join(summary['parts'])}, {summary['exercises']} "
              f"exercises, {summary['hidden_test_files']} hidden test files; handout {summary['out']}/HANDOUT.md")
        return 0
    if args.cmd == "grade":
        from .grade import grade, table
        scores, results = grade(args.dir, args.results)
        print(table(scores))
        return 0
    if args.cmd == "check":
        try:
            from .check import check
        except ModuleNotFoundError as err:   # a student copy has no planted bugs
            sys.exit(f"error: `check` needs the instructor's repository ({err})")
        return 0 if check(run_e2e=not args.no_e2e) else 1
    from . import e2e
    result = e2e.run_part(args.part, args.length)
    print(result.summary())
    if args.record:
        e2e.record_reference(result)
        print(f"recorded as the reference in {e2e.REFERENCE_FILE}")
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
