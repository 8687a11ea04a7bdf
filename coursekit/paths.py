"""Where the kit's files are: computed here once, imported everywhere else.

The repository is the folder that holds the ``coursekit`` package (a checkout, or an editable install of
one). ``REPO`` is safe to compute anywhere but only meaningful in a checkout: the student edition has no
``lab/autograder``, and the functions that need it say so. Standard library only (the sandbox and the
student edition import it).
"""
from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent                # coursekit
GRADING = PACKAGE / "grading"                            # the instructor's autograder
REPO = PACKAGE.parent                                    # the checkout
LAB = REPO / "lab"
AUTOGRADER = LAB / "autograder"                          # spec.json, hidden_tests.py (generated)
LAB_SOURCE = LAB / "source" / "mlp_lab_solution.ipynb"   # the instructor's single source
STUDENT_NOTEBOOK = LAB / "mlp_lab.ipynb"                 # what students get (generated)
EDITION_TEMPLATES = REPO / "edition"                     # the student edition's own files (coursekit release)
REQUIREMENTS = REPO / "requirements.txt"
HARVEST_DRIVER = GRADING / "harvest_driver.py"           # the harvest's generic part (source text)
BANNED_CALLS = PACKAGE / "banned_calls.py"               # the rule for torch's activations (source text)
WARM_SERVER_PROGRAM = GRADING / "warm_server.py"         # what the sandbox runs
