"""One ``Limits`` (coursekit.grading.protocol): the command line's flags and their help, every timeout and every size
cap of a submission come from its fields; a limit written as a number elsewhere in the grader fails here."""
from __future__ import annotations

import ast
import dataclasses
import json
import re
from pathlib import Path

import pytest

from coursekit import cli
from coursekit.grading import sandbox
from coursekit.grading.protocol import JobSpec, Limits
from coursekit.grading.submissions import UnreadableSubmission, find_submissions, read_submission
from coursekit.paths import GRADING, HARVEST_DRIVER

COMMANDS = {"grade": ["grade", "subs", "--out", "out"],
            "gradescope-run": ["gradescope-run", "--submission", "s", "--autograder-dir", "a", "--results", "r"]}


def _subparser(name: str):
    parser = cli.build_parser()
    (group,) = [a for a in parser._actions if getattr(a, "choices", None) and name in a.choices]
    return group.choices[name]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_limit_is_a_flag_with_the_help_declared_in_limits(command):
    actions = {a.dest: a for a in _subparser(command)._actions}
    flags = Limits.flags()
    assert [name for _, name, *_ in flags] == [f.name for f in dataclasses.fields(Limits)]
    for flag, name, kind, _, help_text in flags:
        assert flag in actions[name].option_strings and actions[name].type is kind, name
        assert actions[name].help.startswith(help_text), name
    # each flag reaches its own field (a value no default has)
    odd = {name: kind(default * 2 + 1) for _, name, kind, default, _ in flags}
    argv = COMMANDS[command] + [x for flag, name, *_ in flags for x in (flag, str(odd[name]))]
    assert cli._limits(cli.build_parser().parse_args(argv)) == Limits(**odd)


def test_a_cell_timeout_gives_the_harvest_what_the_limits_rule_gives():
    limits = cli._limits(cli.build_parser().parse_args(COMMANDS["grade"] + ["--cell-timeout", "5"]))
    assert limits == Limits(cell_timeout=5, memory_mb=sandbox.default_memory_mb())
    assert limits.harvest_timeout == Limits().harvest_timeout == 60
    assert limits.harvest_call_timeout == 10           # min(60 / 2, max(5, 10)), not the cell's 5 s
    assert limits.harvest_stall_timeout == 60 + limits.cell_grace + 5


def test_bad_limits_are_refused_by_name():
    with pytest.raises(SystemExit, match="max_candidates must be positive"):
        cli._limits(cli.build_parser().parse_args(COMMANDS["grade"] + ["--max-candidates", "0"]))
    with pytest.raises(ValueError, match="max_restarts must be >= 0"):
        Limits(max_restarts=-1)


ODD = Limits(cell_timeout=7, submission_timeout=41, harvest_timeout=33, memory_mb=999, max_output_total_mb=3,
             max_results_mb=5, max_meta_kb=3)


def test_the_job_gets_every_limit_from_limits_and_has_none_of_its_own():
    spec = ODD.job_spec(["x = 1"], "pass", cells_deadline=12, skip={0: "why"})
    assert (spec.cell_timeout, spec.cells_deadline, spec.memory_mb) == (7, 12, 999)
    assert spec.harvest_call_timeout == ODD.harvest_call_timeout == min(33 / 2, max(7, 10))
    assert (spec.harvest_question_timeout, spec.harvest_grant_timeout) == (33, ODD.harvest_grant_timeout)
    assert spec.output_limit_bytes == 3 << 20 and spec.max_results_bytes == (5 << 20) + (3 << 10)
    # the harvest's own caps travel with the job too: its largest tensor follows max_results_mb
    assert spec.harvest_max_elements == ODD.harvest_max_elements == (5 << 20) // 16
    assert Limits().harvest_max_elements == 4 * 2**20 and spec.harvest_error_chars == Limits.HARVEST_ERROR_CHARS
    assert JobSpec.from_json(spec.to_json()) == spec
    # a limit left out is an error, never a default of the job's own (the warm server had 60 s and 10 s)
    no_default = {f.name for f in dataclasses.fields(JobSpec)
                  if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    assert no_default == {f.name for f in dataclasses.fields(JobSpec)} - {"skip"}


def test_a_replay_gets_its_cells_time_again_within_the_submissions():
    assert Limits(submission_timeout=300).replay_deadline(20) == 1.5 * 20 + 5
    assert Limits(submission_timeout=300).replay_deadline(0) == 5
    assert Limits(submission_timeout=40).replay_deadline(100) == 40


def _driver(namespace: dict) -> dict:
    """The harvest driver's source run in ``namespace`` (as labspec puts it at the top of the harvest code)."""
    exec(compile(HARVEST_DRIVER.read_text(encoding="utf-8"), "<harvest>", "exec"), namespace)
    return namespace


def test_the_harvest_takes_its_caps_from_the_job_before_any_student_code_runs():
    import torch
    caps = {"max_elements": 10, "error_chars": 12}

    def raise_the_cap():          # the student's code, called by the harvest: tries to lift the caps it was given
        caps["max_elements"] = caps["error_chars"] = 10**9
        return torch.zeros(11)

    def harvest_q1(rec, inputs):
        rec.call("q1.first", raise_the_cap)
        rec.call("q1.second", lambda: torch.zeros(11))
        rec.call("q1.fits", lambda: torch.zeros(10))
        rec.call("q1.boom", lambda: 1 / 0)

    # the sandbox's harvest process gives _ck_inputs, _ck_caps (from the JobSpec) and _ck_per_question
    ns = _driver({"_ck_inputs": {}, "_ck_caps": caps, "_ck_per_question": lambda plan: [run() for _, run in plan]})
    [(arrays, meta)] = ns["_ck_harvest_main"]([("q1", harvest_q1)], ns)
    assert sorted(arrays) == ["q1.fits"]
    for key in ("q1.first", "q1.second"):
        assert meta[key]["problem"] == "too large to send back (11 elements)", meta
    assert meta["q1.boom"]["error"] == "ZeroDivisionError: division by zero"[:12]
    # a harvest process that gave no caps: an error, never a default of the driver's own
    ns = _driver({"_ck_inputs": {}, "_ck_per_question": lambda plan: [run() for _, run in plan]})
    with pytest.raises(KeyError, match="_ck_caps"):
        ns["_ck_harvest_main"]([("q1", harvest_q1)], ns)
    # run in process (the lab's own tests, no job): the default Limits' caps
    assert _driver({})["_ck_read_caps"]({}, False) == (Limits().harvest_max_elements, Limits.HARVEST_ERROR_CHARS)


def test_no_job_is_built_outside_limits():
    for path in sorted(GRADING.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        built = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Call)
                 and getattr(n.func, "id", getattr(n.func, "attr", None)) == "JobSpec"]
        assert path.name == "protocol.py" or not built, f"{path.name}:{built}: use Limits.job_spec"


LIMIT_NAME = re.compile(r"(TIMEOUT|_S|_MB|_KB|_BYTES|_ELEMENTS|_CHARS|_TEXT|_ENTRIES)$|(^|_)MAX(_|$)")
# The modules that apply a submission's limits or wait on the machine (the sandbox: the server's start, its probes,
# a job's start and kill): every wait and cap there is a field of Limits, derived from them, or a class constant
# of Limits.
SCANNED = ("runner", "warm_server", "harvest_driver", "submissions", "batch", "grade", "sandbox", "cli")
CLOCKS = {"time", "monotonic", "perf_counter"}


def _number(node) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) in (int, float)


def _reads_clock(node) -> bool:
    return any(isinstance(n, ast.Call) and getattr(n.func, "attr", getattr(n.func, "id", None)) in CLOCKS
               for n in ast.walk(node))


def _limit_arg(name: str) -> bool:
    return "timeout" in name or name.startswith("max_")


def _uses_a_limit(node) -> bool:
    """``limits.x``, ``spec.x``, ``self.limits.x``: a value of the job's Limits or JobSpec."""
    return any(isinstance(n, ast.Attribute) and (getattr(n.value, "id", None) in ("limits", "spec")
                                                 or getattr(n.value, "attr", None) in ("limits", "spec"))
               for n in ast.walk(node))


def _has_a_number(node) -> bool:
    """A number other than 0 and 1 in ``node``, unless all of ``node`` is a unit (1024, 2 ** 20: KiB, MiB)."""
    if all(isinstance(n, (ast.Constant, ast.BinOp, ast.operator)) for n in ast.walk(node)):
        try:
            if eval(compile(ast.Expression(node), "<unit>", "eval"), {"__builtins__": {}}) in (1 << 10, 1 << 20):
                return False
        except Exception:       # noqa: BLE001 (not a constant expression)
            pass
    return any(_number(n) and n.value not in (0, 1) for n in ast.walk(node))


def _hard_coded(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.LShift) and _number(node.left) \
                and node.left.value != 1:           # "64 << 20": a size in MiB written as a number (1 << 20: a chunk)
            found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
        if isinstance(node, ast.Assign) and _number(node.value):
            for target in node.targets:
                if isinstance(target, ast.Name) and LIMIT_NAME.search(target.id):
                    found.append(f"{path.name}:{node.lineno}: {target.id} = {node.value.value}")
        if isinstance(node, ast.keyword) and node.arg and _limit_arg(node.arg) and _number(node.value):
            found.append(f"{path.name}:{node.lineno}: {node.arg}={node.value.value}")
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args.posonlyargs + node.args.args
            pairs = list(zip(args[len(args) - len(node.args.defaults):], node.args.defaults))
            pairs += [(a, d) for a, d in zip(node.args.kwonlyargs, node.args.kw_defaults) if d is not None]
            found += [f"{path.name}:{node.lineno}: {node.name}({a.arg}={d.value})" for a, d in pairs
                      if _limit_arg(a.arg) and _number(d)]
        # a deadline or an age written as a number: "time.monotonic() + 10", "time.time() - mtime < 3600"
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)) and \
                any(_reads_clock(side) for side in (node.left, node.right)) and \
                any(_number(side) for side in (node.left, node.right)):
            found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
        if isinstance(node, ast.Compare) and _reads_clock(node.left) and \
                any(_number(c) and c.value > 1 for c in node.comparators):
            found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
        # a limit derived outside Limits: "min(limits.submission_timeout, 1.5 * spent + 5)", "16 * limits.x + 4096"
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv)) \
                and any(_uses_a_limit(a) and _has_a_number(b) for a, b in ((node.left, node.right),
                                                                           (node.right, node.left))):
            found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("min", "max") and \
                any(_uses_a_limit(a) for a in node.args) and \
                any(_has_a_number(a) and not _uses_a_limit(a) for a in node.args):
            found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_limit_is_written_as_a_number_outside_limits():
    paths = [GRADING / f"{m}.py" for m in SCANNED if m != "cli"] + [Path(cli.__file__)]
    assert [line for p in paths for line in _hard_coded(p)] == []


def test_the_scan_finds_a_limit_written_as_a_number(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("_HARVEST_CALL_S = 10.0\nsize = 64 << 20\nchunk = 1 << 20\n_CK_MAX_ELEMENTS = 4_000_000\n"
                       "_CK_MAX_TEXT = 600\nGRADER_RESERVE_MB = 1024\n"
                       "def run(timeout=60):\n    wait(timeout=5)\n"
                       "def usage(folder, max_entries=20000):\n    deadline = time.monotonic() + 10\n"
                       "    if time.time() - mtime < 3600:\n        pass\n"
                       "    if time.monotonic() - t0 > limits.kill_wait:\n        pass\n"
                       "    remaining = min(limits.submission_timeout, 1.5 * spent + 5)\n"
                       "    cap = 16 * ((limits.max_results_mb << 20) + 4096)\n"
                       "    kept = limits.max_output_kb * 1024\n    mib = spec.output_limit_bytes / 2 ** 20\n")
    assert sorted(_hard_coded(planted), key=lambda line: int(line.split(":")[1])) == [
        "planted.py:1: _HARVEST_CALL_S = 10.0", "planted.py:2: 64 << 20", "planted.py:4: _CK_MAX_ELEMENTS = 4000000",
        "planted.py:5: _CK_MAX_TEXT = 600", "planted.py:6: GRADER_RESERVE_MB = 1024",
        "planted.py:7: run(timeout=60)", "planted.py:8: timeout=5", "planted.py:9: usage(max_entries=20000)",
        "planted.py:10: time.monotonic() + 10", "planted.py:11: time.time() - mtime < 3600",
        "planted.py:15: min(limits.submission_timeout, 1.5 * spent + 5)",
        "planted.py:16: 16 * ((limits.max_results_mb << 20) + 4096)", "planted.py:16: (limits.max_results_mb << 20) + 4096"]


def test_the_warm_servers_own_tmpfs_sizes_are_limits():
    cmd = sandbox.bwrap_command(["python"], Path("/tmp/spool"), [])
    sizes = [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "--size"]
    assert sizes == [str(Limits.SERVER_SHM_MB << 20), str(Limits.SERVER_TMP_MB << 20)]


def _notebook(size_bytes: int) -> bytes:
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {},
          "cells": [{"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                     "source": "x = 1\n"},
                    {"cell_type": "markdown", "metadata": {}, "source": "a" * size_bytes}]}
    return json.dumps(nb).encode()


def test_the_submissions_folder_is_read_within_limits(tmp_path):
    (tmp_path / "ada.ipynb").write_bytes(_notebook(3 << 19))        # 1.5 MiB
    folder = tmp_path / "bob"
    folder.mkdir()
    for i in range(3):
        (folder / f"try{i}.ipynb").write_bytes(_notebook(10))
    subs, _ = find_submissions(tmp_path, limits=Limits(max_handin_mb=1, max_candidates=2))
    ada, bob = subs
    with pytest.raises(UnreadableSubmission):
        read_submission(ada)                 # past max_handin_mb
    assert read_submission(find_submissions(tmp_path)[0][0]).code_cells == ["x = 1\n"]    # the default reads it
    assert bob.relpath.name == "try1.ipynb"  # of three candidates only the first two were read (the newest wins)
    assert find_submissions(tmp_path)[0][1].relpath.name == "try2.ipynb"
