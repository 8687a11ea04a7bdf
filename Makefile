# Two commands on a fresh machine (Python 3.11; the student edition also takes 3.12 and 3.13):
#   make lab   - set everything up, open JupyterLab on the course
#   make test  - set everything up, run the whole test suite (unit tests, nbval, browser)
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
# d2l pins its 2023 dependencies exactly: installed without them (requirements.txt pins what its code needs).
D2L := $(shell grep -o '^d2l==[^;[:space:]]*' requirements.txt)
# The virtual environment is rebuilt only when the pins change.
STAMP := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml | sha1sum | cut -c1-12)
# JupyterLab refuses to start as root unless told to (containers, CI).
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)
NOTEBOOKS := notebooks lab/mlp_lab.ipynb lab/source/mlp_lab_solution.ipynb
PYTEST_ARGS ?=

.PHONY: setup lab test test-fast bench notebooks clean-venv release

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is needed, found " + sys.version' 
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps $(D2L)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	rm -f $(VENV)/.installed-*
	touch $@

lab: setup
	$(VENV)/bin/jupyter lab $(ALLOW_ROOT) --notebook-dir=. notebooks/01_hidden_layers.ipynb

test: setup
	$(PY) -m pytest tests --nbval $(NOTEBOOKS) --nbval-sanitize-with tests/nbval_sanitize.cfg $(PYTEST_ARGS)

# Unit tests only, no notebooks and no browser: the quick loop while developing.
test-fast: setup
	$(PY) -m pytest tests -m "not slow" $(PYTEST_ARGS)

bench: setup
	$(PY) bench/bench_training.py
	$(PY) bench/bench_grading.py

# Re-run the lecture notebooks in place after editing them (nbval compares with the committed outputs).
notebooks: setup
	$(PY) scripts/execute_notebooks.py notebooks/*.ipynb

# The student edition (no solutions, no grader) as a git repository with one commit; see README
# "Run the course for a class". Again on the same folder: one commit more (what students then pull).
RELEASE_DIR ?= build/student-edition
RELEASE_ARGS ?=
release: setup
	$(VENV)/bin/coursekit release --out $(RELEASE_DIR) $(RELEASE_ARGS)

clean-venv:
	rm -rf $(VENV)
