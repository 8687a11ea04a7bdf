"""The training benchmark still runs end to end (its figures live in the README; this is not a timed test)."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.slow
def test_bench_training_runs_both_pipelines(tmp_path, real_data_dir):
    out = tmp_path / "bench.json"
    env = {**os.environ, "COURSEKIT_DATA": str(real_data_dir)}
    run = subprocess.run([sys.executable, str(REPO / "bench" / "bench_training.py"), "--epochs", "1", "--seeds", "1",
                          "--recipe", "standardized", "--json", str(out)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    # One epoch cannot reach the 0.85 floor, so the script reports FAIL for it and exits 1; it must not crash
    # (d2l reads a copy of the real files: had it tried to download them, it would have crashed here).
    assert run.returncode in (0, 1), run.stderr[-3000:]
    assert "FAIL  coursekit accuracy >= 0.85 (standardized)" in run.stdout
    assert "speed-up >= 8" in run.stdout
    result = json.loads(out.read_text())
    [(ours_seconds, ours_acc)] = result["runs"]["standardized"]["coursekit"]
    [(d2l_seconds, d2l_acc)] = result["runs"]["standardized"]["d2l"]
    # After one epoch both pipelines have learned something real (about 0.81 each), and the same model built
    # from the same seed gets within a few points in either pipeline.
    assert ours_acc > 0.75 and d2l_acc > 0.75 and abs(ours_acc - d2l_acc) < 0.05
    assert ours_seconds < d2l_seconds
    assert result["ratio"] == pytest.approx(d2l_seconds / ours_seconds)
