"""The HTML pages the grader writes (a student's feedback, the class report) as Jinja2 templates with
autoescaping on: whatever a student wrote (names, messages, code) is escaped. Self-contained pages: inline CSS,
plots inlined as SVG by the caller, nothing loaded from elsewhere. Templates live here as strings so they ship
with the package without package data."""
from __future__ import annotations

import jinja2

from coursekit.grading.term import describe_delta

__all__ = ["environment"]

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 1.5rem auto; padding: 0 1rem; color: #111; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 1.6rem; border-bottom: 1px solid #999; }
table { border-collapse: collapse; margin: 0.5rem 0; } td, th { border: 1px solid #999; padding: 0.2rem 0.5rem;
 text-align: left; vertical-align: top; } th { background: #eee; }
pre { background: #f4f4f4; border: 1px solid #ccc; padding: 0.5rem; overflow-x: auto; white-space: pre-wrap; }
.pass { font-weight: bold; } .fail { font-weight: bold; text-decoration: underline; }
.late { border: 2px solid #000; padding: 0.4rem; } .muted { color: #555; }
figure { margin: 0.5rem 0; } figure svg { max-width: 100%; height: auto; }
"""

FEEDBACK = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<title>MLP lab feedback: {{ r.student }}</title><style>{{ style }}</style></head>
<body>
<h1>MLP lab: {{ '%g' % r.final }} / {{ '%g' % r.max_total }} points <span class="muted">({{ r.student }})</span></h1>
{% if r.late_text() %}<p class="late" id="late">{{ r.late_text() }}</p>{% endif %}
{% if r.status != "ok" %}<p id="status">Status of the run: <b>{{ r.status }}</b>.</p>{% endif %}
{% if r.file %}<p class="muted">Graded file: {{ r.file }}</p>{% endif %}
<table id="summary"><tr><th>question</th><th>points</th></tr>
{% for q in r.questions %}<tr><td><a href="#{{ q.name }}">{{ q.label }}</a></td>
<td>{{ '%g' % q.points }} / {{ '%g' % q.max_points }}</td></tr>
{% endfor %}</table>
{% for q in r.questions %}
<section id="{{ q.name }}" class="question">
<h2>{{ q.label }}: {{ '%g' % q.points }} / {{ '%g' % q.max_points }}</h2>
<table><tr><th>hidden test</th><th>result</th><th>what happened</th></tr>
{% for t in q.tests %}<tr class="test {{ 'passed' if t.passed else 'failed' }}">
<td>{{ t.name }}</td>
<td>{% if t.passed %}<span class="pass">&#10003; passed</span>{% else %}<span class="fail">&#10007; FAILED</span>{% endif %}
{% if t.points is not none %} ({{ '%g' % t.points }} / {{ '%g' % t.max_points }}){% endif %}</td>
<td>{{ t.message }}{% if t.expected or t.got %}<br><b>expected:</b> <code>{{ t.expected }}</code>
<br><b>got:</b> <code>{{ t.got }}</code>{% endif %}</td></tr>
{% endfor %}</table>
{% if q.points < q.max_points %}
{% for name, src in q.code.items() %}<p>Your <code>{{ name }}</code>, as graded:</p><pre class="code">{{ src }}</pre>
{% endfor %}
{% if q.hints %}<p>Hint: run <code>check("{{ q.name }}")</code> in your notebook; its tests check that:</p>
<ul>{% for h in q.hints %}<li>{{ h }}</li>{% endfor %}</ul>{% endif %}
{% endif %}
</section>
{% endfor %}
{% if r.cell_errors %}<h2>Cells that raised an error</h2>
<ul>{% for e in r.cell_errors[:20] %}<li><code>{{ e.strip().splitlines()[0] if e.strip() else e }}</code></li>{% endfor %}</ul>{% endif %}
{% if r.notes %}<h2>Notes</h2><ul>{% for n in r.notes[:20] %}<li>{{ n }}</li>{% endfor %}</ul>{% endif %}
</body></html>
"""

REPORT = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<title>{{ title }}</title><style>{{ style }}</style></head>
<body>
<h1>{{ title }}</h1>
{% if stats %}
<p id="stats">{{ stats.n }} submissions. Final totals: mean {{ '%.1f' % stats.mean }}, median {{ '%g' % stats.median }},
min {{ '%g' % stats.min }}, max {{ '%g' % stats.max }} of {{ '%g' % stats.max_total }}.
Status: {% for s, n in statuses %}{{ s }} {{ n }}{{ ", " if not loop.last }}{% endfor %}.</p>
{% else %}<p id="stats">No graded submissions.</p>{% endif %}

<h2>Distribution of the totals</h2>
{% if totals_svg %}<figure id="totals-plot">{{ totals_svg | safe }}</figure>{% endif %}

<h2>Points per question</h2>
{% if questions_svg %}<figure id="questions-plot">{{ questions_svg | safe }}</figure>{% endif %}
<table id="questions"><tr><th>question</th><th>mean</th><th>full marks</th><th>zero</th></tr>
{% for q in per_question %}<tr><td>{{ q.name }}</td><td>{{ '%.1f' % q.mean }} / {{ '%g' % q.max }}</td>
<td>{{ q.full }}</td><td>{{ q.zero }}</td></tr>{% endfor %}</table>

<h2>Hidden tests, most often failed first</h2>
<table id="failures"><tr><th>question</th><th>test</th><th>failed</th><th>most common failure messages (numbers as #)</th></tr>
{% for f in failures %}<tr><td>{{ f.question }}</td><td>{{ f.test }}</td>
<td>{{ f.failed }} of {{ f.of }} ({{ '%.0f' % (100 * f.rate) }} %)</td>
<td>{% for msg, n in f.messages %}{{ n }} &times; <code>{{ msg }}</code>{% if not loop.last %}<br>{% endif %}{% endfor %}</td></tr>
{% endfor %}</table>

<h2>Late hand-ins ({{ late | length }})</h2>
{% if late %}<table id="late"><tr><th>student</th><th>handed in</th><th>late by</th><th>penalty</th><th>final</th></tr>
{% for r in late %}<tr><td>{{ r.student }}</td><td>{{ r.lateness.handed_in.isoformat() }}</td>
<td>{{ r.lateness.late_by | delta }}</td><td>{{ '%g' % r.penalty }}</td><td>{{ '%g' % r.final }} / {{ '%g' % r.max_total }}</td></tr>
{% endfor %}</table>{% else %}<p>None.</p>{% endif %}

<h2>Flagged for the instructor to read ({{ flagged | length }})</h2>
{% if flagged %}<table id="flagged"><tr><th>student</th><th>line</th><th>code</th><th>why</th></tr>
{% for student, flags in flagged %}{% for f in flags[:20] %}<tr><td>{{ student }}</td><td>{{ f.get("line") if f.get("line") is not none else "?" }}</td>
<td><code>{{ f.get("code", "") }}</code></td><td>{{ f.get("reason", "") }}</td></tr>{% endfor %}{% endfor %}
</table>{% else %}<p>None.</p>{% endif %}

<h2>Closest pairs by shared solution code</h2>
{% if pairs %}<table id="pairs"><tr><th>student</th><th>student</th><th>similarity</th></tr>
{% for p in pairs %}<tr><td>{{ p.a }}</td><td>{{ p.b }}</td><td>{{ '%.0f' % (100 * p.similarity) }} %</td></tr>{% endfor %}
</table><p class="muted">similarity.html shows the shared code. A high similarity is a reason to look, not a verdict.</p>
{% else %}<p>No pairs (fewer than two submissions with code).</p>{% endif %}

<h2>Slowest submissions to grade</h2>
{% if slowest %}<table id="slowest"><tr><th>student</th><th>seconds</th></tr>
{% for s, t in slowest %}<tr><td>{{ s }}</td><td>{{ '%.1f' % t }}</td></tr>{% endfor %}</table>
{% else %}<p>No timings recorded.</p>{% endif %}

{% if left_out %}<h2>Left out: of the submissions folder, of the LMS exports</h2>
<ul id="left-out">{% for line in left_out %}<li>{{ line }}</li>{% endfor %}</ul>{% endif %}
</body></html>
"""

TEMPLATES = {"feedback.html": FEEDBACK, "report.html": REPORT}


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.DictLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.globals["style"] = STYLE
    env.filters["delta"] = describe_delta
    return env
