"""The class report (``OUT/report.html``): how the class did, on one self-contained page.

The distribution of the totals and of each question's points (SVG plots inlined, drawn from numbers only), each
hidden test's failure rate with its most common failure messages (numbers masked, so that "expected 0.5, got
0" and "expected 0.7, got 0" count as the same mistake), the late hand-ins, the submissions flagged for the
instructor, the closest similarity pairs and the slowest submissions. Everything a student wrote (names,
messages, flagged code) reaches the page through Jinja2's autoescaping; nothing is loaded from elsewhere.
"""
from __future__ import annotations

import io
import re
import statistics
from collections import Counter, defaultdict

__all__ = ["class_report", "failure_table", "mistake_pattern"]

_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def mistake_pattern(message: str) -> str:
    """A failure message with its numbers masked as ``#``: the same mistake on other inputs reads the same."""
    return _NUMBER.sub("#", " ".join(message.split()))


def failure_table(results) -> list[dict]:
    """Per hidden test: question, test, failed, of, rate, and the three most common messages with counts;
    the most often failed first."""
    counts: dict[tuple, list] = defaultdict(lambda: [0, 0, Counter()])
    for r in results:
        for q in r.questions:
            for t in q.tests:
                entry = counts[(q.name, t.name)]
                entry[1] += 1
                if not t.passed:
                    entry[0] += 1
                    entry[2][mistake_pattern(t.message) or "(no message)"] += 1
    rows = [{"question": qn, "test": tn, "failed": f, "of": n, "rate": f / n if n else 0.0,
             "messages": c.most_common(3)} for (qn, tn), (f, n, c) in counts.items()]
    return sorted(rows, key=lambda row: (-row["rate"], row["question"], row["test"]))


def _svg(fig) -> str:
    import matplotlib.pyplot as plt
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]            # without the XML declaration and doctype: inline in HTML


def _plots(results, questions: list[tuple[str, float]]) -> tuple[str, str]:
    import matplotlib
    import matplotlib.pyplot as plt
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "coursekit", "font.size": 10}):
        max_total = sum(p for _, p in questions) or 1
        fig, ax = plt.subplots(figsize=(6.5, 2.8))
        finals = [r.final for r in results]
        ax.hist(finals, bins=[i * max_total / 20 for i in range(21)], color="0.75", edgecolor="black", hatch="//")
        ax.set_xlabel(f"final total (of {max_total:g} points)")
        ax.set_ylabel("students")
        ax.set_xlim(0, max_total)
        ax.yaxis.get_major_locator().set_params(integer=True)
        totals_svg = _svg(fig)
        n = max(1, len(questions))
        cols = min(3, n)
        rows = (n + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.1 * rows), squeeze=False)
        for ax, (name, max_points) in zip(axes.flat, questions):
            points = Counter(next((q.points for q in r.questions if q.name == name), 0.0) for r in results)
            xs = sorted(set(points) | {0.0, float(max_points)})
            ax.bar([f"{x:g}" for x in xs], [points.get(x, 0) for x in xs], color="0.75", edgecolor="black")
            ax.set_title(f"{name} (of {max_points:g})")
            ax.yaxis.get_major_locator().set_params(integer=True)
            ax.tick_params(axis="x", labelrotation=90 if len(xs) > 6 else 0)
        for ax in list(axes.flat)[n:]:
            ax.axis("off")
        fig.supxlabel("points")
        fig.supylabel("students")
        fig.tight_layout()
        return totals_svg, _svg(fig)


def class_report(results, questions: list[tuple[str, float]], *, flagged: dict | None = None, pairs=(),
                 seconds: dict | None = None, left_out=(), title: str = "MLP lab: class report") -> str:
    """The report's HTML. ``results``: ``results.StudentResult`` per student; ``questions``: (name, max points);
    ``flagged``: student -> flags; ``pairs``: ``similarity.Pair`` closest first; ``seconds``: student -> seconds
    the grading took."""
    from coursekit.grading.html_pages import environment
    results = sorted(results, key=lambda r: r.student)
    finals = [r.final for r in results]
    stats = None
    if finals:
        stats = {"n": len(finals), "mean": statistics.mean(finals), "median": statistics.median(finals),
                 "min": min(finals), "max": max(finals), "max_total": sum(p for _, p in questions)}
    statuses = Counter(r.status for r in results)
    totals_svg, questions_svg = _plots(results, questions) if results else ("", "")
    per_question = []
    for name, max_points in questions:
        pts = [next((q.points for q in r.questions if q.name == name), 0.0) for r in results]
        per_question.append({"name": name, "max": max_points, "mean": statistics.mean(pts) if pts else 0.0,
                             "full": sum(p == max_points for p in pts), "zero": sum(p == 0 for p in pts)})
    slowest = sorted(((s, t) for s, t in (seconds or {}).items() if isinstance(t, (int, float))),
                     key=lambda st: -st[1])[:10]
    late = [r for r in results if r.lateness is not None and r.lateness.late]
    return environment().get_template("report.html").render(
        title=title, stats=stats, statuses=sorted(statuses.items()), totals_svg=totals_svg,
        questions_svg=questions_svg, per_question=per_question, failures=failure_table(results),
        flagged=sorted((flagged or {}).items()), pairs=list(pairs), slowest=slowest, late=late,
        left_out=list(left_out))
