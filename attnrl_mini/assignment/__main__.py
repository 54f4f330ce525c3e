"""python -m attnrl_mini.assignment {build, pack, grade, check, e2e, study} (see docs/teaching.md)."""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m attnrl_mini.assignment", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="write a student copy")
    b.add_argument("--out", required=True, help="a new directory for the copy")
    b.add_argument("--parts", default="A,B,C", help="parts whose exercises are stubbed (default A,B,C; "
                   "A,B,C,D adds the optional part D, the selector study)")
    b.add_argument("--overlay", default=None, help="a folder of hidden tests (named test_<id>_...), copied into the copy")
    k = sub.add_parser("pack", help="(student) check and zip a finished copy into submission.zip")
    k.add_argument("dir", nargs="?", default=".", help="the copy (default: the current folder)")
    k.add_argument("--out", default=None, help="the zip to write (default DIR/submission.zip)")
    g = sub.add_parser("grade", help="(instructor) grade submissions with trusted code: results.json per student")
    g.add_argument("submissions", nargs="+", help="a submission (folder or zip) or a folder of them (one per student)")
    g.add_argument("--out", default="grades", help="folder for <student>/results.json and summary.csv (default grades)")
    g.add_argument("--parts", default="A,B,C", help="the parts the copy was built with (default A,B,C)")
    g.add_argument("--overlay", default=None, help="a folder of hidden tests (named test_<id>_...)")
    g.add_argument("--timeout", type=float, default=900.0, help="seconds one submission's tests may run (default 900)")
    c = sub.add_parser("check", help="the CI check of the assignment itself")
    c.add_argument("--no-e2e", action="store_true", help="skip the end-to-end training runs")
    e = sub.add_parser("e2e", help="a part's end-to-end check (a toy training run)")
    e.add_argument("--part", required=True, choices=["A", "B", "C"])
    e.add_argument("--length", default="ci", choices=["ci", "full"])
    e.add_argument("--record", action="store_true", help="store this run as the reference (reference code only)")
    st = sub.add_parser("study", help="(student, part D) the short selector study with your seed: the counts of D2")
    st.add_argument("--student-id", required=True, help="your student id (it gives your seed)")
    st.add_argument("--out", default="part_d_study", help="folder for the study's results (default part_d_study)")
    args = p.parse_args(argv)
    try:
        return _run(args)
    except (ValueError, FileExistsError, FileNotFoundError, RuntimeError) as err:   # one line, no traceback
        sys.exit(f"error: {err}")


def _run(args) -> int:
    if args.cmd == "build":
        from .build import build
        summary = build(args.out, args.parts, args.overlay)
        print(f"student copy in {summary['out']}: parts {','.join(summary['parts'])}, {summary['exercises']} "
              f"exercises, {summary['hidden_test_files']} hidden test files; handout {summary['out']}/HANDOUT.md")
        return 0
    if args.cmd == "pack":
        from .pack import pack
        out, files = pack(args.dir, args.out)
        print(f"wrote {out}: {', '.join(files)} and assignment.json; hand in this file")
        return 0
    if args.cmd == "grade":
        from .grade import grade_all, table
        graded = grade_all(args.submissions, args.out, args.parts, args.overlay, args.timeout)
        if len(graded) == 1:
            print(table(graded[0]))
        print(f"results: {args.out}/<submission>/results.json, class summary: {args.out}/summary.csv")
        return 0
    if args.cmd == "check":
        try:
            from .check import check
        except ModuleNotFoundError as err:   # a student copy has no planted bugs
            sys.exit(f"error: `check` needs the instructor's repository ({err})")
        return 0 if check(run_e2e=not args.no_e2e) else 1
    if args.cmd == "study":
        from . import part_d
        return part_d.main(["--student-id", args.student_id, "--out", args.out])
    from . import e2e
    result = e2e.run_part(args.part, args.length)
    print(result.summary())
    if args.record:
        e2e.record_reference(result)
        print(f"recorded as the reference in {e2e.REFERENCE_FILE}")
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
