"""The lab's hidden tests, loaded in the grader's process: questions, inputs, harvest code, scoring.

``lab/autograder/`` (written by ``coursekit assign`` from the solution notebook) holds

* ``spec.json``: the questions, their titles, the points of each hidden test (``tests``: ``[name, points]``
  pairs, in the order the feedback lists them), the source's hash, and ``grader_skip``: the template cells whose
  effects the grade never uses (the ``check("qN")`` self-checks, the training run), each with the stand-in the
  grader runs instead of a submitted cell that is still exactly that template cell (see ``template_cells``);
* ``hidden_tests.py``: the hidden-test cells of the solution notebook. For each question ``qN`` it
  defines ``QN = {"name", "title", "points": {test: points}}`` and three functions:

  - ``inputs_qN(rng) -> dict[str, np.ndarray]``: the test inputs (keys start with ``"qN."``);
  - ``harvest_qN(rec, inputs)``: runs in the sandbox after the notebook's cells, in the notebook's namespace,
    in a process of its own for the question (self-contained: it imports what it needs and uses only the
    ``_ck_*`` helpers of :mod:`coursekit.grading.harvest_driver`); it calls the student's functions on the
    inputs and sends back what they return as arrays;
  - ``score_qN(inputs, outputs, meta) -> dict[test, (ok, message)]``: runs in the grader's process,
    on the arrays only.

What grading one submission takes from it (the steps are ``coursekit.grading.grade.STEPS``)::

    spec = load_spec("lab/autograder")
    inputs = spec.make_inputs(seed)                                            # the inputs step
    result = runner.execute_submission(notebook, spec.harvest_code, inputs)   # the run step: the sandbox
    questions = spec.score(inputs, result)                                     # the score step: the grader
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from coursekit.paths import AUTOGRADER as DEFAULT_AUTOGRADER_DIR
from coursekit.paths import BANNED_CALLS
from coursekit.paths import HARVEST_DRIVER as DRIVER

QUESTION_NAME = re.compile(r"^q(\d+)$")


@dataclass
class QuestionResult:
    """One question's grade: ``passed`` / ``failed`` hold one readable line per hidden test."""
    name: str
    points: float
    max_points: float
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    title: str = ""
    flags: list[str] = field(default_factory=list)      # what a hidden test saw the code do, for the instructor

    def as_dict(self) -> dict:
        return {"name": self.name, "title": self.title, "points": self.points, "max_points": self.max_points,
                "passed": list(self.passed), "failed": list(self.failed)}


class SpecError(RuntimeError):
    """The autograder folder is missing, incomplete or inconsistent (regenerate it with assign)."""


def normalized_source(source: str) -> str:
    """A cell's source without trailing whitespace (each line's and the cell's) and with \\n line ends: what
    counts as "the same cell as the template's"."""
    return "\n".join(line.rstrip() for line in source.replace("\r\n", "\n").split("\n")).rstrip()


def _question_number(name: str) -> int:
    match = QUESTION_NAME.match(name)
    if not match:
        raise SpecError(f"question names look like 'q1', 'q2', ...; got {name!r}")
    return int(match.group(1))


def harvest_functions_source(hidden_tests_source: str) -> str:
    """The source of every top-level ``harvest_qN`` function of the hidden tests, in file order."""
    tree = ast.parse(hidden_tests_source)
    parts = [ast.get_source_segment(hidden_tests_source, node) for node in tree.body
             if isinstance(node, ast.FunctionDef) and node.name.startswith("harvest_q")]
    return "\n\n\n".join(parts)


class LabSpec:
    """The loaded hidden tests. Build it with :func:`load_spec`."""

    def __init__(self, autograder_dir: Path, spec: dict, module):
        self.autograder_dir = autograder_dir
        self.spec = spec
        self.module = module
        self._questions = []
        for entry in spec["questions"]:
            entry = dict(entry, points=dict((str(t), int(p)) for t, p in entry["tests"]))
            name = entry["name"]
            for prefix in ("inputs_", "harvest_", "score_"):
                if not callable(getattr(module, prefix + name, None)):
                    raise SpecError(f"{autograder_dir / 'hidden_tests.py'} has no function {prefix}{name}; "
                                    "regenerate the autograder with `python -m coursekit.grading.assign`")
            self._questions.append(entry)
        cells = spec.get("grader_skip", [])
        if not isinstance(cells, list) or not all(isinstance(c, dict) and isinstance(c.get("source"), str)
                                                  and isinstance(c.get("stand_in"), str) for c in cells):
            raise SpecError(f"{autograder_dir / 'spec.json'}: grader_skip must list {{source, stand_in}} objects; "
                            "regenerate the autograder with `python -m coursekit.grading.assign`")
        self._template_cells = {normalized_source(c["source"]): c["stand_in"] for c in cells}
        source = (autograder_dir / "hidden_tests.py").read_text(encoding="utf-8")
        calls = ", ".join(f"({q['name']!r}, harvest_{q['name']})" for q in self._questions)
        self._harvest_code = (
            "# --- coursekit harvest: runs after the notebook's cells, in its namespace ---\n"
            + DRIVER.read_text(encoding="utf-8") + "\n\n"
            + f"_CK_BANNED_CALLS_SOURCE = {BANNED_CALLS.read_text(encoding='utf-8')!r}\n\n\n"
            + harvest_functions_source(source) + "\n\n\n"
            + f"_ck_outcome = _ck_harvest_main([{calls}], globals())\n")

    @property
    def questions(self) -> list[tuple[str, int]]:
        """``[(name, max_points), ...]`` in question order."""
        return [(q["name"], q["max_points"]) for q in self._questions]

    @property
    def titles(self) -> dict[str, str]:
        return {q["name"]: q["title"] for q in self._questions}

    @property
    def version(self) -> str:
        """A short hash of the solution source the autograder was generated from."""
        return str(self.spec.get("source_sha256", ""))[:12]

    @property
    def template_cells(self) -> dict[str, str]:
        """``{normalized template source: stand-in source}`` of the lab's ``grader-skip`` cells: a submitted cell
        whose ``normalized_source`` is a key runs as its stand-in (the template cell's literal assignments,
        e.g. ``LR = 0.1``), not as itself. Unchanged, such a cell only prints (a self-check) or trains a model
        the grade does not use (the grader retrains ``train_mlp`` itself); an edited one runs as written."""
        return dict(self._template_cells)

    @property
    def max_total(self) -> int:
        return sum(points for _, points in self.questions)

    @property
    def harvest_code(self) -> str:
        """Python source the runner executes in the student's process after the notebook's cells."""
        return self._harvest_code

    def make_inputs(self, seed: int = 0) -> dict[str, np.ndarray]:
        """All questions' hidden-test inputs for ``seed`` (each question draws from its own generator)."""
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        inputs = {}
        for q in self._questions:
            rng = np.random.default_rng([int(seed), _question_number(q["name"])])
            part = getattr(self.module, "inputs_" + q["name"])(rng)
            for key, value in part.items():
                if not key.startswith(q["name"] + "."):
                    raise SpecError(f"inputs_{q['name']} made key {key!r}; keys must start with '{q['name']}.'")
                if type(value) is not np.ndarray or value.dtype.kind not in "biuf":
                    raise SpecError(f"input {key!r} must be a numeric numpy array")
                inputs[key] = value
        return inputs

    def score(self, inputs: dict, result) -> list[QuestionResult]:
        """Score each question from the harvested data only (``result.outputs`` arrays, ``result.meta`` JSON)."""
        outputs = _clean_outputs(getattr(result, "outputs", None) or {})
        meta = getattr(result, "meta", None) or {}
        if not isinstance(meta, dict):
            meta = {}
        status = getattr(result, "status", "ok")
        results = []
        for q in self._questions:
            name = q["name"]
            scorer = getattr(self.module, "score_" + name)
            try:
                verdicts = scorer(inputs, outputs, meta)
            except Exception as exc:  # a bug in a hidden test must not hide the other questions' grades
                verdicts = {test: (False, f"the hidden test crashed ({type(exc).__name__}: {exc}); "
                                          "tell your instructor") for test in q["points"]}
            qr = QuestionResult(name=name, points=0, max_points=q["max_points"], title=q["title"])
            for test, points in q["points"].items():
                ok, message, flag = _verdict(verdicts.get(test))
                if flag:
                    qr.flags.append(f"{name} {test}: {flag}")
                if ok:
                    qr.points += points
                    qr.passed.append(f"{test} ({points}/{points})" + (f": {message}" if message else ""))
                else:
                    if status != "ok" and not meta:
                        message = f"the notebook did not finish ({status}); {message}"
                    qr.failed.append(f"{test} (0/{points}): {message}")
            results.append(qr)
        return results


def _verdict(value) -> tuple[bool, str, str]:
    """A hidden test's ``(passed, message)``, or ``(passed, message, flag)`` where ``flag`` says what it saw the
    code do that the instructor should look at."""
    if isinstance(value, tuple) and len(value) in (2, 3) and isinstance(value[0], bool):
        return value[0], str(value[1] or ""), str(value[2] or "") if len(value) == 3 else ""
    return False, "the hidden test gave no verdict", ""


def _clean_outputs(outputs) -> dict[str, np.ndarray]:
    """Keep only plain numeric numpy arrays (whatever else came back is ignored)."""
    clean = {}
    if isinstance(outputs, dict):
        for key, value in outputs.items():
            if isinstance(key, str) and type(value) is np.ndarray and value.dtype.kind in "biuf":
                clean[key] = value
    return clean


def _load_module(path: Path):
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    name = f"coursekit_hidden_tests_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling-free introspection need it registered
    try:
        spec.loader.exec_module(module)
    except Exception:
        sys.modules.pop(name, None)
        raise
    return module


def load_spec(autograder_dir: str | Path | None = None) -> LabSpec:
    """Load ``spec.json`` and ``hidden_tests.py`` from ``autograder_dir`` (default: the repo's lab/autograder)."""
    folder = Path(autograder_dir) if autograder_dir is not None else DEFAULT_AUTOGRADER_DIR
    spec_path, tests_path = folder / "spec.json", folder / "hidden_tests.py"
    for path in (spec_path, tests_path):
        if not path.is_file():
            raise SpecError(f"{path} is missing; generate the autograder with `python -m coursekit.grading.assign`")
    try:
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SpecError(f"{spec_path} is not valid JSON: {exc}") from exc
    if not isinstance(spec.get("questions"), list) or not spec["questions"]:
        raise SpecError(f"{spec_path} lists no questions")
    return LabSpec(folder, spec, _load_module(tests_path))
