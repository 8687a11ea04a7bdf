"""The submissions folder is untrusted input, and OUT may fail: links, FIFOs, sockets and devices, several
notebooks in a folder, huge outputs, names that spreadsheets would run, markers that must stay with their
student, OUT read-only, full or not creatable.

One class of the tiny two-question lab (tests/grading_helpers.TinySpec: add 2 points, mul 3) is graded in one
batch; each entry has its exact expected points. The operations tests run the real ``coursekit grade`` command
on submissions that never reach the sandbox (corrupt files), in a bubblewrap mount namespace where OUT is a
read-only bind mount or a tiny tmpfs.
"""
import csv
import errno
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

import coursekit
from coursekit.grading import outfiles
from coursekit.grading.batch import BatchSummary, grade_folder, spreadsheet_safe
from coursekit.grading.outfiles import OutputError, atomic_write
from coursekit.grading.sandbox import Limits
from coursekit.grading.submissions import find_submissions, lab_names, read_submission
from grading_helpers import GOOD_CELLS, TINY_HARVEST, TinySpec, make_notebook, require_bwrap

LIMITS = Limits(cell_timeout=5, submission_timeout=60, harvest_timeout=6)
REPO = Path(coursekit.__file__).resolve().parent.parent
ADD, MUL = dict(TinySpec.questions)["add"], dict(TinySpec.questions)["mul"]
WRONG_MUL = "def mul(a, b):\n    return a - b"
MARKED = ["m1", "m2", "m3"]
CSV_NAMES = ["=1+2", "-3", "@SUM(A1)", "+cmd"]


def _marked_cells(student):
    mark = f"MARK-{student}"
    return [f"# {mark}-comment\nprint('{mark}-out')", f"import sys\nprint('{mark}-err', file=sys.stderr)",
            f"def add(a, b):\n    raise ValueError('{mark}-add')", GOOD_CELLS[2],
            f"raise RuntimeError('{mark}-cell')"]


def _big_notebook(path):
    """The good notebook with 24 MiB of embedded image output and 8 MiB of widget state."""
    make_notebook(path, *GOOD_CELLS)
    nb = nbformat.read(path, as_version=4)
    nb.cells[1].outputs = [nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo" + "A" * (24 << 20)})]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {"x": "B" * (8 << 20)}}}
    nbformat.write(nb, path)
    assert path.stat().st_size > 32 << 20


def build_class(root: Path) -> tuple[Path, dict, list]:
    """The hostile folder; ({student: (add, mul, status)}, entries that must be left out)."""
    subs, outside = root / "subs", root / "outside"
    outside.mkdir()
    make_notebook(outside / "solution.ipynb", *GOOD_CELLS)
    make_notebook(subs / "good.ipynb", *GOOD_CELLS)
    make_notebook(subs / "bo" / "lab.ipynb", GOOD_CELLS[0], GOOD_CELLS[1], WRONG_MUL)
    (subs / "link_solution.ipynb").symlink_to(outside / "solution.ipynb")
    (subs / "link_shadow.ipynb").symlink_to("/etc/shadow")
    (subs / "link_student").symlink_to(subs / "good.ipynb")
    (subs / "link_folder").symlink_to(subs / "bo")
    (subs / "link_outside").symlink_to(outside)
    (subs / "inner").mkdir()
    (subs / "inner" / "lab.ipynb").symlink_to(outside / "solution.ipynb")
    os.mkfifo(subs / "fifo.ipynb")
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(subs / "sock.ipynb"))
    unix.close()
    left_out = ["fifo.ipynb", "sock.ipynb"]
    try:
        os.mknod(subs / "dev.ipynb", 0o600 | 0o020000, os.makedev(1, 3))    # like /dev/null
        left_out.append("dev.ipynb")
    except PermissionError:
        pass                         # not root: no device file to plant
    (subs / "pipes").mkdir()
    os.mkfifo(subs / "pipes" / "a_lab.ipynb")
    make_notebook(subs / "pipes" / "b.ipynb", *GOOD_CELLS)
    # the lab notebook beside an Untitled.ipynb and a checkpoint of an older attempt: chosen by content
    make_notebook(subs / "untitled" / "zz_final.ipynb", *GOOD_CELLS)
    make_notebook(subs / "untitled" / "Untitled.ipynb", "print('trying something')")
    make_notebook(subs / "untitled" / ".ipynb_checkpoints" / "zz_final-checkpoint.ipynb",
                  GOOD_CELLS[0], GOOD_CELLS[1], WRONG_MUL)
    make_notebook(subs / "checkpoint_only" / "Untitled.ipynb", "x = 1")
    make_notebook(subs / "checkpoint_only" / ".ipynb_checkpoints" / "lab-checkpoint.ipynb", *GOOD_CELLS)
    _big_notebook(subs / "big.ipynb")
    for student in MARKED:
        make_notebook(subs / f"{student}.ipynb", *_marked_cells(student))
    for name in CSV_NAMES:
        (subs / f"{name}.ipynb").write_text('{"cells": [')
    expected = {"good": (ADD, MUL, "ok"), "bo": (ADD, 0, "ok"), "pipes": (ADD, MUL, "ok"),
                "untitled": (ADD, MUL, "ok"), "checkpoint_only": (ADD, MUL, "ok"), "big": (ADD, MUL, "ok"),
                **{s: (0, MUL, "ok") for s in MARKED},
                **{s: (0, 0, "symlink") for s in ("link_solution", "link_shadow", "link_student", "link_folder",
                                                  "link_outside", "inner")}}
    return subs, expected, left_out


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    require_bwrap()
    root = tmp_path_factory.mktemp("hostile")
    subs, expected, left_out = build_class(root)
    out = root / "out"
    logs = []
    summary = grade_folder(subs, out, spec=TinySpec(), limits=LIMITS, workers=2, progress=False, log=logs.append)
    records = {p.stem: json.loads(p.read_text()) for p in (out / "records").glob("*.json")}
    return subs, out, summary, records, expected, left_out, logs


def _rows(out):
    with open(out / "gradebook.csv", newline="") as fh:
        return list(csv.reader(fh))


# ----------------------------------------------------------------------------------------- the graded class

@pytest.mark.slow
def test_every_hostile_entry_gets_its_exact_score(hostile):
    _, out, summary, records, expected, _, _ = hostile
    for student, (add, mul, status) in expected.items():
        grade = records[student]["grade"]
        points = {q["name"]: q["points"] for q in grade["questions"]}
        assert (points["add"], points["mul"], grade["status"]) == (add, mul, status), (student, grade["feedback"])
        assert grade["total"] == add + mul
    assert summary.failed == 0 and summary.graded == len(records)


@pytest.mark.slow
def test_links_are_never_followed_and_are_reported(hostile):
    subs, out, summary, records, _, _, logs = hostile
    for student in ("link_solution", "link_shadow", "link_student", "link_folder", "link_outside", "inner"):
        feedback = (out / "feedback" / f"{student}.txt").read_text()
        assert "symbolic link" in feedback and "not followed" in feedback
        # no link target shown to the student
        assert "/etc/shadow" not in feedback and str(subs.parent / "outside") not in feedback
        assert records[student]["grade"]["total"] == 0
    assert any("link_shadow.ipynb: a symbolic link (to /etc/shadow), not followed" in line for line in logs)
    assert any(line.startswith("inner/lab.ipynb: a symbolic link") for line in summary.left_out)


@pytest.mark.slow
def test_fifos_sockets_and_devices_are_skipped_with_a_reason(hostile):
    _, out, summary, records, _, left_out, _ = hostile
    text = (out / "summary.txt").read_text()
    for name in left_out:
        assert name.removesuffix(".ipynb") not in records
        assert any(line.startswith(f"{name}: ") and "skipped" in line for line in summary.left_out), name
        assert name in text
    assert "pipes/a_lab.ipynb: a named pipe (FIFO), not a file: skipped" in summary.left_out
    assert "graded b.ipynb" in (out / "feedback" / "pipes.txt").read_text()


@pytest.mark.slow
def test_the_lab_notebook_is_chosen_by_content_and_named_in_the_feedback(hostile):
    _, out, _, records, _, _, _ = hostile
    assert records["untitled"]["file"] == "untitled/zz_final.ipynb"
    assert "graded zz_final.ipynb" in (out / "feedback" / "untitled.txt").read_text()
    assert records["checkpoint_only"]["file"] == "checkpoint_only/.ipynb_checkpoints/lab-checkpoint.ipynb"
    assert "graded .ipynb_checkpoints/lab-checkpoint.ipynb" in (out / "feedback" / "checkpoint_only.txt").read_text()


@pytest.mark.slow
def test_nothing_of_one_student_reaches_another_and_no_grader_internals_reach_any(hostile):
    subs, out, _, records, _, _, _ = hostile
    hidden_lines = [line.strip() for line in TINY_HARVEST.splitlines() if len(line.strip()) > 20]
    internal = [str(out), str(subs), str(REPO), str(out / ".staging")]
    for student in records:
        student_files = [out / "feedback" / f"{student}.txt", out / "gradescope" / student / "results.json"]
        texts = [p.read_text() for p in student_files]
        texts.append(json.dumps(records[student]["grade"]))
        for text in texts:
            for other in MARKED:
                if other != student:
                    assert f"MARK-{other}" not in text, (student, other)
            assert not any(line in text for line in hidden_lines), student
            assert not any(path in text for path in internal), student
    own = (out / "feedback" / "m2.txt").read_text()
    assert "MARK-m2-add" in own and "MARK-m2-cell" in own          # the student's own errors are there
    assert not (out / ".staging").exists()                         # no copy of a notebook left behind


@pytest.mark.slow
def test_large_outputs_and_widget_state_do_not_matter(hostile):
    subs, out, _, records, _, _, _ = hostile
    assert records["big"]["grade"]["total"] == ADD + MUL
    (sub,), _ = find_submissions_one(subs, "big")
    stripped = read_submission(sub)
    assert len(stripped.data) < 4096 and stripped.code_cells == GOOD_CELLS


def find_submissions_one(subs, student):
    found, left = find_submissions(subs, lab_names(TinySpec()))
    return [s for s in found if s.student == student], left


@pytest.mark.slow
def test_gradebook_cells_never_start_a_formula(hostile):
    _, out, _, records, _, _, _ = hostile
    rows = _rows(out)
    cells = [cell for row in rows for cell in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    by_file = {row[-1]: row for row in rows[1:]}
    assert by_file["'=1+2.ipynb"][0] == "1_2" and by_file["'-3.ipynb"][0] == "'-3"
    assert by_file["'@SUM(A1).ipynb"][-2] == "invalid-notebook" and "'+cmd.ipynb" in by_file
    for name in ("similarity.csv", "similarity.html", "summary.txt"):
        assert (out / name).is_file()
    similarity = list(csv.reader(open(out / "similarity.csv", newline="")))
    assert not [c for row in similarity for c in row if c[:1] in ("=", "+", "-", "@", "\t", "\r")]


def test_out_inside_the_submissions_folder_is_not_a_student(tmp_path):
    subs = tmp_path / "subs"
    make_notebook(subs / "ada.ipynb", *GOOD_CELLS)
    (subs / "grades").mkdir()
    found, left = find_submissions(subs, out_dir=subs / "grades")
    assert [s.student for s in found] == ["ada"] and left == []
    assert [s.student for s in find_submissions(subs)[0]] == ["ada", "grades"]


def test_spreadsheet_safe_follows_owasp():
    for bad in ("=1+2", "+1", "-1", "@A1", "\tx", "\rx"):
        assert spreadsheet_safe(bad) == "'" + bad
    assert spreadsheet_safe("alice") == "alice" and spreadsheet_safe(5) == "5"


def test_the_summary_lists_flagged_submissions_with_their_lines(tmp_path, monkeypatch):
    """A1's grade carries ``flags``; the summary shows each flagged submission with its lines."""
    from coursekit.grading import grade
    from coursekit.grading.runner import ExecutionResult

    flags = {"eve": [{"line": 3, "code": "torch.overrides.TorchFunctionMode", "reason": "interpreter machinery"},
                     {"line": None, "code": "open('/proc/self/maps')", "reason": "reads /proc"}]}

    def run(path, harvest_code, inputs, limits=None, template_cells=None):    # the sandbox, faked: what it saw
        return ExecutionResult(outputs={"add": inputs["a"] + inputs["b"], "mul": inputs["a"] * inputs["b"]},
                               runtime_flags=flags.get(Path(path).stem, []))
    monkeypatch.setattr(grade, "execute_submission", run)
    for student in ("ada", "eve"):
        make_notebook(tmp_path / "subs" / f"{student}.ipynb", *GOOD_CELLS)
    summary = grade_folder(tmp_path / "subs", tmp_path / "out", spec=TinySpec(), progress=False,
                           log=lambda *a: None)
    text = (tmp_path / "out" / "summary.txt").read_text()
    assert summary.flagged == flags
    assert "flagged for the instructor to read (1)" in text
    assert "    line 3: torch.overrides.TorchFunctionMode  (interpreter machinery)" in text
    assert "    ?: open('/proc/self/maps')  (reads /proc)" in text
    assert "ada" not in text.split("flagged for the instructor")[1].split("most similar")[0]
    assert "torch.overrides" not in (tmp_path / "out" / "feedback" / "eve.txt").read_text()


def test_summary_text_without_flags_says_nothing_about_them():
    assert "flagged" not in BatchSummary(total=1).text()


# ----------------------------------------------------------------------------------------- operations

def _corrupt_class(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"s{i:02d}.ipynb").write_text('{"cells": [' + " " * i)
    return folder


def _cli(*args):
    return [sys.executable, "-m", "coursekit.cli", "grade", *args, "--no-progress", "--workers", "1"]


def _one_clean_error_line(done):
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_out_that_cannot_be_created_is_one_clear_error(tmp_path):
    subs = _corrupt_class(tmp_path / "subs", 2)
    (tmp_path / "file").write_text("a file, not a folder")
    done = subprocess.run(_cli(str(subs), "--out", str(tmp_path / "file" / "out")),
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    line = _one_clean_error_line(done)
    assert line.startswith("coursekit grade: cannot write") and "not a folder" in line


def _bwrap(tmp_path, script: str, extra: list[str]):
    if shutil.which("bwrap") is None or os.geteuid() != 0:
        require_bwrap()
    cmd = ["bwrap", "--dev-bind", "/", "/", *extra, "--chdir", str(tmp_path), "--die-with-parent",
           "bash", "-c", script]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_read_only_out_is_one_clear_error_and_keeps_the_records(tmp_path):
    subs = _corrupt_class(tmp_path / "subs", 3)
    out = tmp_path / "out"
    done = subprocess.run(_cli(str(subs), "--out", str(out)), cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    before = {p.name: p.read_bytes() for p in (out / "records").iterdir()}
    (subs / "s00.ipynb").write_text('{"cells": [ "changed"')          # a resubmission: work to do
    cli = " ".join(_cli(str(subs), "--out", str(out)))
    done = _bwrap(tmp_path, f"{cli} >{tmp_path}/stdout 2>{tmp_path}/stderr; echo $? >{tmp_path}/rc",
                  ["--bind", str(tmp_path), str(tmp_path), "--ro-bind", str(out), str(out)])
    assert done.returncode == 0, done.stderr
    result = subprocess.CompletedProcess([], int((tmp_path / "rc").read_text()), (tmp_path / "stdout").read_text(),
                                         (tmp_path / "stderr").read_text())
    line = _one_clean_error_line(result)
    assert "read-only" in line and "run again to resume" in line
    assert {p.name: p.read_bytes() for p in (out / "records").iterdir()} == before


@pytest.mark.slow
def test_a_full_disk_stops_the_batch_cleanly_and_a_rerun_resumes(tmp_path):
    """OUT on a 2 MiB tmpfs: full from the start (one error line), then full halfway through the class (stops,
    keeps every record it wrote), then with room again (the rerun grades only what is missing)."""
    subs = _corrupt_class(tmp_path / "subs", 30)
    mnt, res = tmp_path / "mnt", tmp_path / "res"
    mnt.mkdir()
    res.mkdir()
    cli = " ".join(_cli(str(subs), "--out", str(mnt / "out")))
    script = f"""
head -c 3000000 /dev/zero > {mnt}/filler 2>/dev/null
{cli} >{res}/1.out 2>{res}/1.err; echo $? > {res}/1.rc
truncate -s 1880K {mnt}/filler
{cli} >{res}/2.out 2>{res}/2.err; echo $? > {res}/2.rc
mkdir {res}/records2 && cp -a {mnt}/out/records/. {res}/records2/
find {mnt}/out -name '*.tmp' > {res}/2.tmp
rm {mnt}/filler
{cli} >{res}/3.out 2>{res}/3.err; echo $? > {res}/3.rc
cp {mnt}/out/gradebook.csv {res}/
"""
    done = _bwrap(tmp_path, script, ["--bind", str(tmp_path), str(tmp_path), "--size", str(2 << 20),
                                     "--tmpfs", str(mnt)])
    assert done.returncode == 0, done.stderr

    def run(k):
        return subprocess.CompletedProcess([], int((res / f"{k}.rc").read_text()), (res / f"{k}.out").read_text(),
                                           (res / f"{k}.err").read_text())

    assert "the disk is full" in _one_clean_error_line(run(1))
    assert "the disk is full" in _one_clean_error_line(run(2))
    kept = sorted((res / "records2").iterdir())
    assert 1 <= len(kept) < 30, len(kept)
    assert all(json.loads(p.read_text())["grade"]["status"] == "invalid-notebook" for p in kept)
    assert (res / "2.tmp").read_text() == ""
    third = run(3)
    assert third.returncode == 0, third.stderr
    assert f"30 submissions: {30 - len(kept)} graded now, {len(kept)} already graded" in third.stdout
    with open(res / "gradebook.csv", newline="") as fh:
        assert [r["student"] for r in csv.DictReader(fh)] == [f"s{i:02d}" for i in range(30)]


def test_write_errors_inside_the_batch_become_output_errors(tmp_path, monkeypatch):
    """ENOSPC injected at the write layer after a few files: OutputError, records so far valid, rerun resumes."""
    subs = _corrupt_class(tmp_path / "subs", 6)
    real, calls = outfiles.atomic_write, []

    def flaky(path, data):
        calls.append(path)
        if len(calls) == 9:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)
    monkeypatch.setattr(outfiles, "atomic_write", flaky)
    with pytest.raises(OutputError, match="disk is full"):
        grade_folder(subs, tmp_path / "out", spec=TinySpec(), workers=1, progress=False, log=lambda *a: None)
    done = sorted(p.stem for p in (tmp_path / "out" / "records").glob("*.json"))
    assert 1 <= len(done) < 6 and all(json.loads((tmp_path / "out" / "records" / f"{s}.json").read_text())
                                      for s in done)
    monkeypatch.setattr(outfiles, "atomic_write", real)
    s = grade_folder(subs, tmp_path / "out", spec=TinySpec(), workers=1, progress=False, log=lambda *a: None)
    assert (s.graded, s.skipped) == (6 - len(done), len(done))


def test_a_rerun_removes_what_a_killed_write_left(tmp_path):
    """atomic_write's temporary files (a grader killed while it wrote) are removed by the next run, nothing else."""
    subs = _corrupt_class(tmp_path / "subs", 1)
    out = tmp_path / "out"
    left = [out / ".gradebook.csv.k2j3.tmp", out / "feedback" / ".s00.txt.x1y2.tmp",
            out / "gradescope" / "s00" / ".results.json.ab12.tmp"]
    for path in left:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("half")
    (out / "notes.tmp").write_text("the instructor's")
    s = grade_folder(subs, out, spec=TinySpec(), workers=1, progress=False, log=lambda *a: None)
    assert s.graded == 1
    assert not any(path.exists() for path in left)
    assert (out / "notes.tmp").read_text() == "the instructor's"


def test_atomic_write_leaves_the_old_file_when_it_fails(tmp_path, monkeypatch):
    target = tmp_path / "gradebook.csv"
    atomic_write(target, "old\n")

    def boom(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="No space"):
        atomic_write(target, "new\n")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["gradebook.csv"]
