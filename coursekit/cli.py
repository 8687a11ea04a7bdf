"""The ``coursekit`` command.

    coursekit grade SUBMISSIONS_DIR --out OUT_DIR      grade a class (gradebook, feedback, Gradescope results)
    coursekit collect --store DIR --out SUBS           the hub's hand-ins as a submissions folder + manifest.csv
    coursekit gradescope-bundle --out autograder.zip   the autograder to upload to Gradescope
    coursekit assign                                   regenerate the student notebook and hidden tests
    coursekit gradescope-run ...                       what the bundle's run_autograder calls
    coursekit release --out DIR                        write the student edition (a git repository)
    coursekit hub-link --hub URL --repo URL            an nbgitpuller link to it on a JupyterHub
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _limits_args(p: argparse.ArgumentParser):
    """A flag for every field of ``Limits``, with the help declared there (protocol.Limits), and the seed."""
    from coursekit.grading.protocol import Limits
    from coursekit.grading.sandbox import default_memory_mb
    defaults = {"memory_mb": default_memory_mb()}      # less in a container with less memory
    for flag, name, kind, default, help_text in Limits.flags():
        p.add_argument(flag, dest=name, type=kind, default=defaults.get(name, default),
                       help=f"{help_text} (%(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the hidden tests' inputs (%(default)s)")


def _limits(args):
    """The ``Limits`` the flags ask for: every field from its flag, nothing derived here."""
    from dataclasses import fields

    from coursekit.grading.protocol import Limits
    try:
        return Limits(**{f.name: getattr(args, f.name) for f in fields(Limits)})
    except ValueError as exc:
        raise SystemExit(f"coursekit: {exc}") from None


def cmd_grade(args) -> int:
    from coursekit.grading import sandbox
    from coursekit.grading.batch import OutputError, grade_folder
    from coursekit.grading.labspec import SpecError
    if not Path(args.submissions).is_dir():
        print(f"coursekit grade: no such folder: {args.submissions}", file=sys.stderr)
        return 2
    limits = _limits(args)
    from coursekit.grading.lms import RosterError, load_roster
    from coursekit.grading.term import TermError, hand_in_times, load_term
    try:     # the term (deadline, late policy), the hand-in times and the roster: checked before grading starts
        policy = load_term(args.term, args.assignment_key) if args.term else None
        manifest = Path(args.manifest) if args.manifest else Path(args.submissions) / "manifest.csv"
        times = hand_in_times(manifest) if args.manifest or (policy and manifest.is_file()) else {}
        roster = load_roster(args.roster) if args.roster else None
    except (TermError, RosterError) as exc:
        print(f"coursekit grade: {exc}", file=sys.stderr)
        return 2
    if policy and not times:
        print(f"coursekit grade: a late policy but no hand-in times ({manifest} not found): no penalty applies",
              file=sys.stderr)
    print(f"isolation: {sandbox.describe_isolation()}")
    try:
        summary = grade_folder(args.submissions, args.out, autograder_dir=args.autograder_dir, limits=limits,
                               seed=args.seed, workers=args.workers, progress=not args.no_progress,
                               regrade=args.regrade, policy=policy, hand_in_times=times, roster=roster,
                               assignment=args.assignment)
    except (SpecError, FileNotFoundError) as exc:
        print(f"coursekit grade: {exc}", file=sys.stderr)
        return 2
    except OutputError as exc:      # read-only, full, not creatable: what was written stays valid
        print(f"coursekit grade: {exc}; the grades written so far are kept: run again to resume",
              file=sys.stderr)
        return 2
    print(summary.text())
    return 1 if summary.failed else 0


def cmd_collect(args) -> int:
    from coursekit.grading.outfiles import OutputError
    from coursekit.grading.term import TermError, load_term
    from coursekit.handin.collect import collect
    try:
        policy = load_term(args.term, args.assignment_key) if args.term else None
        rows, left_out = collect(args.store, args.out, policy)
    except (TermError, NotADirectoryError, OutputError) as exc:
        print(f"coursekit collect: {exc}", file=sys.stderr)
        return 2
    for line in left_out:
        print(f"left out: {line}")
    late = [r for r in rows if r["late_by"]]
    print(f"{len(rows)} hand-ins in {args.out} ({len(late)} late); manifest: {Path(args.out) / 'manifest.csv'}")
    return 0


def cmd_bundle(args) -> int:
    from coursekit.grading.gradescope import build_bundle
    try:
        path = build_bundle(args.out, autograder_dir=args.autograder_dir, visibility=args.visibility)
    except FileNotFoundError as exc:
        print(f"coursekit gradescope-bundle: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}: upload it as the assignment's autograder (Gradescope: Configure Autograder, zip file)")
    return 0


def cmd_gradescope_run(args) -> int:
    import json
    import traceback
    from coursekit.grading import sandbox
    from coursekit.grading.grade import grade_gradescope_submission
    from coursekit.grading.outfiles import atomic_write
    try:
        print(f"isolation: {sandbox.describe_isolation()}")
        results = grade_gradescope_submission(args.submission, args.autograder_dir, args.results,
                                              limits=_limits(args), seed=args.seed)
    except Exception as exc:     # noqa: BLE001 (Gradescope needs a results file whatever happened)
        traceback.print_exc()
        atomic_write(Path(args.results), json.dumps({
            "score": 0.0, "tests": [],
            "output": f"The autograder itself failed ({type(exc).__name__}: {exc}); tell your instructor."}))
        return 1
    print(f"score {results['score']:g}")
    return 0


def cmd_assign(args) -> int:
    from coursekit.grading import assign
    return assign.main(args.rest) or 0


def cmd_release(args) -> int:
    from coursekit import release
    return release.run(args)


def cmd_hub_link(args) -> int:
    from coursekit import hublink
    return hublink.run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coursekit", description="The MLP course kit's command line.")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("grade", help="grade a folder of submitted notebooks (sandboxed, resumable)",
                       description="Grade every notebook in SUBMISSIONS_DIR (one file, or one folder, per "
                                   "student) into OUT_DIR: gradebook.csv, feedback/, gradescope/, records/. "
                                   "Run it again after an interruption: it grades only what is missing.")
    g.add_argument("submissions", metavar="SUBMISSIONS_DIR")
    g.add_argument("--out", required=True, metavar="OUT_DIR")
    g.add_argument("--autograder-dir", default=None,
                   help="the hidden tests made by `coursekit assign` (default: the repository's lab/autograder, "
                        "wherever the command is run from)")
    g.add_argument("--workers", type=int, default=None, help="submissions graded at once (default: CPU cores)")
    g.add_argument("--regrade", action="store_true", help="grade everything again, even what has a record")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--term", metavar="TERM_TOML", default=None,
                   help="deadline and late policy (README: Running a term); penalties need the hand-in times")
    g.add_argument("--assignment-key", default="lab", help="the table of the term file to use (%(default)s)")
    g.add_argument("--manifest", default=None,
                   help="hand-in times: the manifest.csv of `coursekit collect` (default: SUBMISSIONS_DIR/manifest.csv)")
    g.add_argument("--roster", default=None, metavar="ROSTER_CSV",
                   help="students and their LMS identifiers: writes canvas.csv, moodle.csv, roster_grades.csv")
    g.add_argument("--assignment", default="MLP lab", help="the assignment's column name in the LMS exports")
    _limits_args(g)
    g.set_defaults(func=cmd_grade)

    col = sub.add_parser("collect", help="the hub's hand-ins as a submissions folder with manifest.csv",
                         description="Copy each student's latest hand-in from the hand-in service's store into OUT "
                                     "(OUT/<student>.ipynb) with OUT/manifest.csv (student, time, SHA-256, late by).")
    col.add_argument("--store", required=True, help="the hand-in service's folder (COURSE_HANDIN_DIR)")
    col.add_argument("--out", required=True, help="the submissions folder to write")
    col.add_argument("--term", default=None, help="the term file: late by is worked out from its deadline")
    col.add_argument("--assignment-key", default="lab", help="the table of the term file (%(default)s)")
    col.set_defaults(func=cmd_collect)

    b = sub.add_parser("gradescope-bundle", help="build the Gradescope autograder zip")
    b.add_argument("--out", default="mlp_lab_autograder.zip")
    b.add_argument("--autograder-dir", default=None, help="default: the repository's lab/autograder")
    b.add_argument("--visibility", default="after_published",
                   choices=("hidden", "after_due_date", "after_published", "visible"),
                   help="when students see the hidden tests' results on Gradescope (%(default)s)")
    b.set_defaults(func=cmd_bundle)

    r = sub.add_parser("gradescope-run", help="grade one Gradescope submission (used by run_autograder)")
    r.add_argument("--submission", required=True, help="the folder with the student's files")
    r.add_argument("--autograder-dir", required=True)
    r.add_argument("--results", required=True, help="where to write results.json")
    _limits_args(r)
    r.set_defaults(func=cmd_gradescope_run)

    a = sub.add_parser("assign", help="regenerate lab/mlp_lab.ipynb and lab/autograder from the solution",
                       add_help=False)
    a.add_argument("rest", nargs=argparse.REMAINDER)
    a.set_defaults(func=cmd_assign)

    rel = sub.add_parser("release", help="write the student edition (no solutions) as a git repository",
                         description="Write the student edition of the course into DIR as a git repository "
                                     "(one reproducible commit; again on an earlier release: one commit more).")
    from coursekit import release as _release
    _release.add_arguments(rel)
    rel.set_defaults(func=cmd_release)

    hub = sub.add_parser("hub-link", help="an nbgitpuller link that puts the student edition in each student's home")
    from coursekit import hublink as _hublink
    _hublink.add_arguments(hub)
    hub.set_defaults(func=cmd_hub_link)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["assign"]:      # everything after it is assign's own (argparse would eat "--help")
        from coursekit.grading import assign
        return assign.main(argv[1:]) or 0
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
