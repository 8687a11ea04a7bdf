"""Similarity of the class's code: pairs of submissions ranked by how much solution code they share.

``similarity_report(codes, template_code)`` compares every pair of submissions with copydetect (winnowed
fingerprints of the tokenized code: variable, function and class names and string contents are masked, so
renaming variables or reordering functions does not hide a copy) and returns the pairs, most similar first.
The template's own code (the student notebook as handed out: imports, signatures, public tests, ``check``
cells) is boilerplate and never counts as shared. ``write_similarity`` writes ``similarity.csv`` (every pair)
and ``similarity.html`` (copydetect's report: the pairs above the display threshold, shared code highlighted).

A high similarity is a reason for the instructor to look, never a verdict.
"""
from __future__ import annotations

import csv
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Pair", "similarity_report", "write_similarity", "solution_code"]

NOISE_CHARS = 25          # copydetect's k: the shortest shared run of (tokenized) code that counts
GUARANTEE_CHARS = 30      # copydetect's window: any shared run this long is always found
DISPLAY_THRESHOLD = 0.33  # pairs shown in the HTML report (the CSV has them all)


@dataclass
class Pair:
    a: str
    b: str
    similarity_a: float       # share of a's code found in b
    similarity_b: float       # share of b's code found in a
    shared_tokens: int

    @property
    def similarity(self) -> float:
        return max(self.similarity_a, self.similarity_b)


def solution_code(code_cells: list[str], template_cells: list[str] = ()) -> str:
    """A submission's own code: its code cells less the template's lines (signatures, docstrings, tests, ...),
    so that what two students share around the template's code is not counted either."""
    template = {line.strip() for cell in template_cells for line in cell.splitlines()}
    own = [line for cell in code_cells for line in cell.splitlines() if line.strip() not in template]
    return "\n".join(own) + "\n"


def _detector(codes: dict[str, str], template_code: str, folder: Path, out_html: Path | None):
    from copydetect import CopyDetector
    detector = CopyDetector(noise_t=NOISE_CHARS, guarantee_t=GUARANTEE_CHARS, display_t=DISPLAY_THRESHOLD,
                            extensions=["py"], autoopen=False, silent=True, force_language="python",
                            out_file=str(out_html or folder / "report.html"))
    (folder / "template").mkdir()
    (folder / "template" / "template.py").write_text(template_code, encoding="utf-8")
    detector.add_file(str(folder / "template" / "template.py"), type="boilerplate")
    (folder / "code").mkdir()
    for student, code in sorted(codes.items()):
        path = folder / "code" / f"{student}.py"
        path.write_text(code, encoding="utf-8")
        detector.add_file(str(path))
    detector.run()
    return detector


def _pairs(detector) -> list[Pair]:
    names = [Path(f).stem for f in detector.test_files]
    index = {f: i for i, f in enumerate(detector.ref_files)}
    pairs = []
    for i, test_f in enumerate(detector.test_files):
        for ref_f in detector.test_files[i + 1:]:
            j = index[ref_f]
            sim_a, sim_b = detector.similarity_matrix[i, j]
            if sim_a < 0:          # not compared (copydetect could not read one of them)
                continue
            pairs.append(Pair(names[i], Path(ref_f).stem, float(sim_a), float(sim_b),
                              int(detector.token_overlap_matrix[i, j])))
    pairs.sort(key=lambda p: (-p.similarity, -p.shared_tokens, p.a, p.b))
    return pairs


def similarity_report(codes: dict[str, str], template_code: str = "") -> list[Pair]:
    """Every pair of ``codes`` ({student: code}), most similar first."""
    if len(codes) < 2:
        return []
    with tempfile.TemporaryDirectory(prefix="coursekit-similarity-") as tmp:
        return _pairs(_detector(codes, template_code, Path(tmp), None))


def _csv(pairs: list[Pair]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["rank", "student_a", "student_b", "similarity", "share_of_a_in_b", "share_of_b_in_a",
                "shared_tokens"])
    for rank, p in enumerate(pairs, 1):
        w.writerow([rank, p.a, p.b, f"{p.similarity:.3f}", f"{p.similarity_a:.3f}", f"{p.similarity_b:.3f}",
                    p.shared_tokens])
    return buf.getvalue()


def write_similarity(codes: dict[str, str], template_code: str, write, sanitize=lambda cell: cell,
                     work_dir=None) -> list[Pair]:
    """Compute the pairs and write them with ``write(name, text)``: ``similarity.csv`` and ``similarity.html``.
    ``sanitize`` is applied to every CSV cell (the gradebook's rule against spreadsheet formulas); the students'
    code is copied for copydetect into a temporary folder in ``work_dir`` (one the grader cleans, should this
    process be killed)."""
    import html
    with tempfile.TemporaryDirectory(prefix="coursekit-similarity-", dir=work_dir) as tmp:
        folder = Path(tmp)
        if len(codes) >= 2:
            detector = _detector(codes, template_code, folder, folder / "report.html")
            pairs = _pairs(detector)
            page = detector.generate_html_report(output_mode="return")
            page = page.replace(str(folder / "code") + "/", "").replace(str(folder), "")
        else:
            pairs = []
            page = ("<!DOCTYPE html><html><body><p>Fewer than two submissions with code: nothing to compare "
                    f"({html.escape(', '.join(sorted(codes)))}).</p></body></html>")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for row in csv.reader(io.StringIO(_csv(pairs))):
        w.writerow([sanitize(cell) for cell in row])
    write("similarity.csv", buf.getvalue())
    write("similarity.html", page)
    return pairs
