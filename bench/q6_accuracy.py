"""Benchmark: the test accuracy the lab's grader measures for question 6, per setting (LR, epochs), over draws of
its seeds: the figures the lab's text and the README quote, and the CPU seconds one retraining costs.

    .venv/bin/python bench/q6_accuracy.py [--lrs 0.1,0.3] [--epochs 3] [--draws 3]

Each draw is one grader run, exactly as in the sandbox but in this process: the hidden tests' ``inputs_q6`` (with
the draw's seed), ``harvest_q6`` with the solution's ``train_mlp`` (its 3 seeds and the control run), and the test
accuracy computed as ``score_q6`` does. Prints, per setting, each seed's accuracy, each draw's median (what is
scored against the 0.60/0.66/0.71/0.74 steps) and the control's accuracy. Not a timed test.
"""
import argparse
import json
import os
import re
import time

import numpy as np
import torch

from coursekit.grading.labspec import load_spec, normalized_source
from coursekit.paths import REPO

SOLUTION = REPO / "lab" / "source" / "mlp_lab_solution.ipynb"


def solution_namespace(spec) -> dict:
    """The solution notebook's code run in a fresh namespace, with the grader's stand-ins for its skipped cells."""
    from IPython.core.inputtransformer2 import TransformerManager
    transform = TransformerManager().transform_cell
    nb = json.loads(SOLUTION.read_text(encoding="utf-8"))
    ns = {"__name__": "__main__"}
    for cell in nb["cells"]:
        tags = cell.get("metadata", {}).get("tags", [])
        if cell["cell_type"] != "code" or "hidden-tests" in tags:
            continue
        source = "".join(cell["source"])
        source = spec.template_cells.get(normalized_source(source), source)
        exec(transform(re.sub(r"(?m)^### (BEGIN|END) SOLUTION\n", "", source)), ns)
    return ns


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lrs", default="0.03,0.1,0.3,1.0")
    ap.add_argument("--epochs", default="3")
    ap.add_argument("--draws", type=int, default=3, help="grader runs per setting (3 seeds each)")
    ap.add_argument("--hidden", type=int, default=None,
                    help="retrain this hidden width instead of the lab's (to compare widths on the same draws)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    spec = load_spec(REPO / "lab" / "autograder")
    tests = spec.module
    if args.hidden is not None:
        tests.HIDDEN_SIZES = [args.hidden]
    ns = solution_namespace(spec)
    exec(spec.harvest_code.replace("_ck_outcome = _ck_harvest_main", "_ck_not_run = (lambda *a: None)"), ns)
    load = os.getloadavg()
    print(f"hidden sizes {tests.HIDDEN_SIZES}")
    for lr in (float(v) for v in args.lrs.split(",")):
        for epochs in (int(v) for v in args.epochs.split(",")):
            ns["chosen_hyperparameters"] = lambda: (lr, epochs, 0.0)
            seeds, medians, controls, cpu = [], [], [], 0.0
            for draw in range(args.draws):
                inputs = tests.inputs_q6(np.random.default_rng(1000 + draw))
                recorder = ns["_CkRecorder"](ns, None)
                start = time.process_time()
                ns["harvest_q6"](recorder, inputs)
                cpu += time.process_time() - start
                accuracies = []
                for prefix in [f"q6.seed{k}" for k in range(tests.GRADER_SEEDS)] + ["q6.control"]:
                    weights = {name: recorder.arrays[f"{prefix}.{name}"] for name in ("W1", "b1", "W2", "b2")}
                    accuracies.append(tests.test_accuracy({k: torch.as_tensor(v) for k, v in weights.items()}))
                seeds += accuracies[:-1]
                medians.append(float(np.median(accuracies[:-1])))
                controls.append(accuracies[-1])
            print(f"LR={lr:g} epochs={epochs}: seeds {min(seeds):.3f} to {max(seeds):.3f} ({len(seeds)}), medians "
                  f"{' '.join(f'{m:.3f}' for m in medians)}, control {max(controls):.3f} at most; "
                  f"{cpu / args.draws:.2f} CPU s per grader run", flush=True)
    print(f"load average {load[0]:.2f} before, {os.getloadavg()[0]:.2f} after")


if __name__ == "__main__":
    main()
