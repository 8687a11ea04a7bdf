"""Find and read the submissions in a folder of students' files: untrusted input.

Two layouts, mixed freely: one notebook per file (``alice.ipynb``: student "alice"), or one folder per student
(the notebook inside, whatever its name). The folder is read as hostile:

* no symbolic link is followed, anywhere: a link (to the solution, to ``/etc/shadow``, to another student's
  folder) is never graded as the student's work; such a student gets status ``symlink`` and 0 points;
* every file is opened with ``O_NOFOLLOW | O_NONBLOCK`` below directories opened the same way, after an
  ``lstat``: a FIFO, a device or a socket is left out with the reason, never opened, so it cannot hang the batch;
* in a student's folder the notebook to grade is chosen by its content (the most of the lab's functions
  defined in its code cells; a ``.ipynb_checkpoints`` copy only when nothing else defines as many), not by
  its name or the order of the files, and the feedback says which file was graded;
* reading keeps only what grading uses (the code cells' sources and the kernel's name): outputs, attachments and
  metadata (embedded images, widget state) are dropped, so size limits apply to the code.
"""
from __future__ import annotations

import ast
import errno
import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from coursekit.grading.protocol import Limits

__all__ = ["Submission", "SubmissionFile", "UnreadableSubmission", "find_submissions", "find_in_folder",
           "read_submission", "lab_names", "safe_name", "handed_in_fingerprint", "template_code_cells"]

# the caps on reading a submissions folder are Limits' (max_handin_mb, max_sniff_mb, max_folder_entries,
# max_folder_depth, max_candidates); these functions take the grader's Limits, the defaults without one
DEFAULT_LIMITS = Limits()
SKIPPED_NAMES = ("__MACOSX",)
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISLNK, "a symbolic link"))


@dataclass
class Submission:
    """One student's hand-in. ``status`` is empty when there is a notebook to grade, else the status it is
    recorded with, ungraded and with 0 points (``no-notebook``, ``symlink``)."""
    student: str                          # a name safe as a file name
    root: Path                            # the submissions folder
    relpath: PurePosixPath | None         # the notebook to grade, relative to root
    status: str = ""
    notes: list[str] = field(default_factory=list)      # for the student's feedback
    max_bytes: int = DEFAULT_LIMITS.max_handin_mb << 20  # the most of the file read (Limits.max_handin_mb)

    @property
    def path(self) -> Path | None:
        return self.root / self.relpath if self.relpath is not None else None


@dataclass
class SubmissionFile:
    """A submitted notebook as the grader reads it."""
    sha256: str                # of the bytes handed in (a resubmission is a different file)
    data: bytes                # the notebook with code cells only; the bytes handed in if not notebook JSON
    code_cells: list[str]


class UnreadableSubmission(ValueError):
    """The file cannot be read as a submission (too large, vanished, not a regular file)."""


def safe_name(name: str) -> str:
    """A student name usable as a file name (letters, digits, ``._-``; the rest becomes ``_``)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "student"
    return cleaned[:100]


def _kind(mode: int) -> str:
    return next((text for test, text in _KINDS if test(mode)), "not a regular file")


# ------------------------------------------------------------------------------------------ reading

def _read_inside(root: Path, relpath: PurePosixPath, max_bytes: int) -> bytes:
    """The bytes of ``root/relpath``, walking down with ``O_NOFOLLOW`` at every step: a symbolic link, a FIFO
    or a device anywhere on the way raises ``UnreadableSubmission``; nothing that can block is opened."""
    fds = []
    try:
        try:
            fds.append(os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
            for part in relpath.parts[:-1]:
                fds.append(os.open(part, _OPEN_DIR, dir_fd=fds[-1]))
            st = os.lstat(relpath.name, dir_fd=fds[-1])
            if not stat.S_ISREG(st.st_mode):
                raise UnreadableSubmission(f"{relpath} is {_kind(st.st_mode)}, not a file")
            fd = os.open(relpath.name, _OPEN_FILE, dir_fd=fds[-1])
            fds.append(fd)
        except OSError as exc:
            why = "a symbolic link on the way" if exc.errno in (errno.ELOOP, errno.ENOTDIR) else exc.strerror
            raise UnreadableSubmission(f"cannot read {relpath}: {why}") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnreadableSubmission(f"{relpath} is {_kind(st.st_mode)}, not a file")
        if st.st_size > max_bytes:
            raise UnreadableSubmission(f"{relpath.name} is {st.st_size >> 20} MiB; a submitted file may be at "
                                       f"most {max_bytes >> 20} MiB")
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > max_bytes:
            raise UnreadableSubmission(f"{relpath.name} grew past {max_bytes >> 20} MiB while it was read")
        return b"".join(chunks)
    finally:
        for fd in reversed(fds):
            os.close(fd)


def _cell_source(cell) -> str:
    src = cell.get("source", "") if isinstance(cell, dict) else ""
    if isinstance(src, list):
        src = "".join(s for s in src if isinstance(s, str))
    return src if isinstance(src, str) else ""


def _parse_notebook(raw: bytes) -> dict | None:
    try:
        nb = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return nb if isinstance(nb, dict) and isinstance(nb.get("cells"), list) else None


def strip_notebook(nb: dict) -> tuple[dict, list[str]]:
    """The notebook as grading sees it: code cells' sources only (no outputs, attachments or metadata) and the
    kernel's name and language; and those sources."""
    code = [_cell_source(c) for c in nb["cells"] if isinstance(c, dict) and c.get("cell_type") == "code"]
    kernel = (nb.get("metadata") or {}).get("kernelspec") if isinstance(nb.get("metadata"), dict) else None
    metadata = {}
    if isinstance(kernel, dict):
        metadata["kernelspec"] = {k: str(kernel[k])[:200] for k in ("name", "display_name", "language")
                                  if isinstance(kernel.get(k), str)}
    cells = [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": src}
             for src in code]
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": metadata, "cells": cells}, code


def read_submission(sub: Submission) -> SubmissionFile:
    """Read ``sub``'s notebook once, safely, and strip it (see the module docstring)."""
    if sub.relpath is None:
        raise UnreadableSubmission("no notebook was submitted")
    raw = _read_inside(sub.root, sub.relpath, sub.max_bytes)
    sha = hashlib.sha256(raw).hexdigest()
    nb = _parse_notebook(raw)
    if nb is None:          # the grader says what is wrong with it
        return SubmissionFile(sha, raw, [])
    stripped, code = strip_notebook(nb)
    return SubmissionFile(sha, json.dumps(stripped, indent=1).encode(), code)


def handed_in_fingerprint(sub: Submission) -> str:
    """What a record keeps to tell whether ``sub`` changed: its status if it is not run, else ``submission_sha256``."""
    return sub.status if sub.status else submission_sha256(sub)


def template_code_cells(spec) -> list[str]:
    """The code cells of the notebook handed out to students (``<lab>.ipynb`` beside the autograder folder): the
    similarity report's boilerplate and the self-check's hints. None found: []."""
    folder, lab = getattr(spec, "autograder_dir", None), (getattr(spec, "spec", None) or {}).get("lab")
    if folder is None or not lab:
        return []
    path = Path(folder).parent / f"{lab}.ipynb"
    try:
        return strip_notebook(json.loads(path.read_text(encoding="utf-8")))[1]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def submission_sha256(sub: Submission) -> str:
    """The fingerprint of what ``sub`` hands in now ("none" without a notebook, "unreadable" if unreadable)."""
    if sub.relpath is None:
        return "none"
    try:
        return hashlib.sha256(_read_inside(sub.root, sub.relpath, sub.max_bytes)).hexdigest()
    except UnreadableSubmission:
        return "unreadable"


# ------------------------------------------------------------------------------------------ choosing by content

def lab_names(spec) -> frozenset[str]:
    """The names the lab's notebook defines and the hidden tests use: ``spec.function_names`` if the spec says,
    else every identifier quoted in the harvest code (``"relu"``, ``"train_mlp"``, ...)."""
    names = getattr(spec, "function_names", None)
    if names:
        return frozenset(names)
    try:
        tree = ast.parse(getattr(spec, "harvest_code", "") or "")
    except SyntaxError:
        return frozenset()
    return frozenset(node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)
                     and isinstance(node.value, str) and node.value.isidentifier())


_DEF_LINE = re.compile(r"^(?:async\s+def|def|class)\s+([A-Za-z_]\w*)", re.M)


def _is_stub(node) -> bool:
    """A template's ``def f(...): '''doc'''; raise NotImplementedError`` (nothing written yet)."""
    body = [b for b in node.body if not (isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant))]
    return len(body) == 1 and isinstance(body[0], ast.Raise)


def defined_names(code_cells: list[str]) -> tuple[set[str], set[str]]:
    """Top-level names defined by the code cells, and those of them with more than a stub body."""
    defined, written = set(), set()
    for src in code_cells:
        src = re.sub(r"^\s*[%!].*$", "pass", src, flags=re.M)     # IPython-only lines
        try:
            tree = ast.parse(src)
        except (SyntaxError, ValueError, RecursionError):
            defined.update(_DEF_LINE.findall(src))
            continue
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                defined.add(node.name)
                if not _is_stub(node):
                    written.add(node.name)
            elif isinstance(node, ast.ClassDef):
                defined.add(node.name)
                methods = [b for b in node.body if isinstance(b, (ast.FunctionDef, ast.AsyncFunctionDef))]
                if any(not _is_stub(m) for m in methods):
                    written.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    if isinstance(t, ast.Name):
                        defined.add(t.id)
                        written.add(t.id)
    return defined, written


def _choose(root: Path, candidates: list[tuple[PurePosixPath, int]], names: frozenset[str], limits: Limits) \
        -> tuple[PurePosixPath | None, str]:
    """The candidate defining the most of the lab's names (then: not a checkpoint copy, the most of them
    written, a .ipynb, the newest); and why, for the feedback."""
    best, best_key, readable = None, None, 0
    for relpath, mtime_ns in candidates[:limits.max_candidates]:
        try:
            nb = _parse_notebook(_read_inside(root, relpath, limits.max_handin_mb << 20))
        except UnreadableSubmission:
            continue
        code = strip_notebook(nb)[1] if nb is not None else []
        defined, written = defined_names(code)
        if names:
            defined, written = defined & names, written & names
        key = (nb is not None, len(defined), ".ipynb_checkpoints" not in relpath.parts, len(written),
               relpath.suffix == ".ipynb", mtime_ns, str(relpath))
        readable += 1
        if best_key is None or key > best_key:
            best, best_key = relpath, key
    if best is None:
        best = candidates[0][0]
    return best, readable


def _sniff(root: Path, relpath: PurePosixPath, limits: Limits) -> bool:
    """Whether a file under another name is a notebook (JSON with a list of cells)."""
    try:
        raw = _read_inside(root, relpath, limits.max_sniff_mb << 20)
    except UnreadableSubmission:
        return False
    return raw.lstrip()[:1] == b"{" and _parse_notebook(raw) is not None


def _walk(root: Path, top: PurePosixPath, limits: Limits):
    """``(relpath, lstat)`` of everything below ``root/top``, never following a link or opening a non-folder."""
    seen = 0
    stack = [(top, 0)]
    while stack:
        folder, depth = stack.pop()
        try:
            fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                for part in folder.parts:
                    new = os.open(part, _OPEN_DIR, dir_fd=fd)
                    os.close(fd)
                    fd = new
                with os.scandir(fd) as it:
                    entries = sorted((e.name, e.stat(follow_symlinks=False)) for e in it)
            finally:
                os.close(fd)
        except OSError:
            continue
        for name, st in entries:
            seen += 1
            if seen > limits.max_folder_entries:
                return
            rel = folder / name
            yield rel, st
            if stat.S_ISDIR(st.st_mode) and depth < limits.max_folder_depth and name not in SKIPPED_NAMES:
                stack.append((rel, depth + 1))


def _folder_submission(root: Path, top: PurePosixPath, names: frozenset[str], left_out: list[str], limits: Limits) \
        -> tuple[PurePosixPath | None, str, list[str]]:
    """The notebook to grade in one student's folder: (relpath, status if none, notes for the student)."""
    notebooks, others, links = [], [], []
    for rel, st in _walk(root, top, limits):
        shown = rel.relative_to(top)
        if stat.S_ISLNK(st.st_mode):
            links.append(str(shown))
            left_out.append(f"{rel}: a symbolic link, not followed")
        elif stat.S_ISREG(st.st_mode):
            if rel.name.endswith(".ipynb"):
                notebooks.append((rel, st.st_mtime_ns))
            elif not rel.name.startswith("."):
                others.append((rel, st.st_mtime_ns))
        elif not stat.S_ISDIR(st.st_mode):
            left_out.append(f"{rel}: {_kind(st.st_mode)}, not a file: skipped")
    notes = [f"{link} is a symbolic link: links are not followed, hand in the file itself" for link in links[:5]]
    if not notebooks:
        notebooks = [(rel, m) for rel, m in others if _sniff(root, rel, limits)]
    if not notebooks:
        if links:
            return None, "symlink", notes
        return None, "no-notebook", notes + ["no notebook in the folder"]
    chosen, readable = _choose(root, notebooks, names, limits)
    shown = chosen.relative_to(top)
    if not chosen.name.endswith(".ipynb"):
        notes.append(f"graded {shown}, a notebook saved under another name")
    elif len(notebooks) > 1:
        notes.append(f"graded {shown}: of the {len(notebooks)} notebooks in the folder, the one that defines "
                     "the most of the lab's functions")
    else:
        notes.append(f"graded {shown}")
    return chosen, "", notes


def find_submissions(submissions_dir, names: frozenset[str] = frozenset(), out_dir=None,
                     limits: Limits = DEFAULT_LIMITS) -> tuple[list[Submission], list[str]]:
    """The submissions in a folder, sorted by student, and what was left out (with why, for the instructor).
    ``names``: the lab's function names (see :func:`lab_names`), to choose a student's notebook by content;
    ``out_dir``: the grader's output folder, never a submission should it sit in the submissions folder;
    ``limits``: how much of the folder and its files is read."""
    root = Path(submissions_dir)
    if not root.is_dir():
        raise NotADirectoryError(f"submissions folder not found: {root}")
    root = root.resolve()
    subs, left_out, seen = [], [], set()
    entries = []
    with os.scandir(root) as it:
        for entry in it:
            try:
                entries.append((entry.name, entry.stat(follow_symlinks=False)))
            except OSError:             # gone since it was listed
                continue
    out_id = None
    if out_dir is not None and Path(out_dir).exists():
        out_st = os.stat(out_dir)
        out_id = (out_st.st_dev, out_st.st_ino)
    for name, st in sorted(entries):
        if name.startswith(".") or name in SKIPPED_NAMES or (st.st_dev, st.st_ino) == out_id:
            continue
        rel = PurePosixPath(name)
        student = name[: -len(".ipynb")] if name.endswith(".ipynb") else (
            rel.stem if stat.S_ISREG(st.st_mode) else name)
        relpath, status, notes = None, "", []
        if stat.S_ISLNK(st.st_mode):
            try:
                target = os.readlink(root / name)
            except OSError:
                target = "?"
            left_out.append(f"{name}: a symbolic link (to {target}), not followed: scored 0")
            status = "symlink"
            notes = [f"{name} is a symbolic link: links are not followed, hand in the file itself"]
        elif stat.S_ISDIR(st.st_mode):
            relpath, status, notes = _folder_submission(root, rel, names, left_out, limits)
        elif stat.S_ISREG(st.st_mode):
            if name.endswith(".ipynb"):
                relpath = rel
            elif _sniff(root, rel, limits):
                relpath, notes = rel, [f"graded {name}, a notebook saved under another name"]
            else:
                left_out.append(f"{name}: not a notebook")
                continue
        else:
            left_out.append(f"{name}: {_kind(st.st_mode)}, not a file: skipped")
            continue
        safe = safe_name(student)
        base, k = safe, 2
        while safe in seen:
            safe, k = f"{base}-{k}", k + 1
        seen.add(safe)
        subs.append(Submission(safe, root, relpath, status, notes, limits.max_handin_mb << 20))
    return subs, left_out


def find_in_folder(folder, names: frozenset[str] = frozenset(), limits: Limits = DEFAULT_LIMITS) -> Submission:
    """The one submission in a folder that holds one student's files (Gradescope's ``submission/``)."""
    root = Path(folder).resolve()
    left_out: list[str] = []
    relpath, status, notes = _folder_submission(root.parent, PurePosixPath(root.name), names, left_out, limits)
    if relpath is not None:
        relpath = relpath.relative_to(root.name)
    return Submission("submission", root, relpath, status, notes, limits.max_handin_mb << 20)
