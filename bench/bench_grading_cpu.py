"""Benchmark: CPU seconds that grading one submission costs, per kind of submission (the grader, the warm server,
the job, its harvest and scoring together), measured one submission at a time on a warm server.

    .venv/bin/python bench/bench_grading_cpu.py [--kinds correct,exception,...] [--repeat 2]

Wall-clock times mean little on a shared machine; CPU seconds hold still far better under load, so this is the
figure to compare two versions of the grader, or of the lab, by. They are counted for the whole process tree:
with a cgroup of its own (root: cgroup v1 ``cpuacct`` or v2 ``cpu.stat``), every process of it; without one,
this process plus the warm server and everything it reaped (a stray killed in a job's PID namespace is missed).

Per submission it prints: ``run`` (``execute_submission``: everything from reading the notebook to the job's
last process gone), of which ``grader`` (this process: starting the job, watching its memory, reading its
events), ``cells`` and ``harvest`` (the job's own report: its cells, and the harvest with one process per
question); ``score`` (the hidden tests' scoring, in this process). Then the sum over bench_grading.py's class of
100 and the shortest wall time that sum allows on the given cores: CPU / cores, plus the endless loop's cell
limit, which comes last there. The load average is printed before and after (not a timed test).
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_grading import make_plan  # noqa: E402
from coursekit.grading.labspec import load_spec  # noqa: E402
from coursekit.grading.protocol import Limits  # noqa: E402
from coursekit.grading.runner import execute_submission, shutdown_server, warm_server  # noqa: E402
from test_bad_submissions import write_submission  # noqa: E402

DEFAULT_KINDS = ["correct", "exception", "missing_functions", "os_exit", "fork_bomb", "huge_output", "memory",
                 "empty", "corrupt_json"]


class TreeCPU:
    """CPU seconds used by this process and every process it started, since ``__init__``."""

    def __init__(self):
        self.group, self.server_pid = None, None     # without a cgroup: set server_pid once the server runs
        if os.geteuid() == 0:
            for base, stat in ((Path("/sys/fs/cgroup/cpuacct"), "cpuacct.usage"), (Path("/sys/fs/cgroup"), "cpu.stat")):
                group = base / f"coursekit-bench-{os.getpid()}"
                try:
                    group.mkdir()
                    (group / "cgroup.procs").write_text(str(os.getpid()))
                except OSError:
                    try:
                        group.rmdir()
                    except OSError:
                        pass
                    continue
                self.group, self.stat = group, group / stat
                break
        self.start = self._now()

    def _now(self) -> float:
        if self.group is not None:
            text = self.stat.read_text()
            if self.stat.name == "cpuacct.usage":
                return int(text) / 1e9
            return int(dict(line.split() for line in text.splitlines())["usage_usec"]) / 1e6
        t = os.times()
        total = t.user + t.system + t.children_user + t.children_system
        if self.server_pid:
            try:
                fields = Path(f"/proc/{self.server_pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")   # utime..cstime
            except OSError:
                pass
        return total

    def seconds(self) -> float:
        return self._now() - self.start

    @property
    def how(self) -> str:
        return f"cgroup {self.group}" if self.group else "this process and the warm server's (reaped) tree"

    def close(self):
        if self.group is None:
            return
        try:
            (self.group.parent / "cgroup.procs").write_text(str(os.getpid()))
        except OSError:
            return
        for _ in range(100):        # the warm server's last processes may take a moment to be gone
            try:
                self.group.rmdir()
                return
            except OSError:
                time.sleep(0.1)


def own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kinds", default=",".join(DEFAULT_KINDS),
                    help="submission kinds of tests/test_bad_submissions.py, or 'class': every kind of "
                         "bench_grading.py's class but the endless loop (then its sum is printed)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--cores", type=int, default=2, help="for the shortest wall time of bench_grading's class")
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="torch's threads while scoring (grade_folder's: cores // workers, 1 with 2 workers on 2 "
                         "cores); 0: torch's default")
    args = ap.parse_args(argv)
    if args.torch_threads:
        import torch
        torch.set_num_threads(args.torch_threads)
    spec = load_spec(REPO / "lab" / "autograder")
    inputs = spec.make_inputs(0)
    limits = Limits()
    load_before = os.getloadavg()
    cpu = TreeCPU()
    rows = {}
    with tempfile.TemporaryDirectory(prefix="coursekit-bench-cpu-") as tmp:
        folder = Path(tmp)
        t0 = cpu.seconds()
        cpu.server_pid = warm_server().proc.pid
        server_start = cpu.seconds() - t0
        print(f"CPU counted for: {cpu.how}\nwarm server start: {server_start:.2f} CPU s", flush=True)
        kinds = sorted(set(make_plan(100).values()) - {"infinite_loop"}) if args.kinds == "class" else \
            args.kinds.split(",")
        for kind in kinds:
            for rep in range(args.repeat):
                student = f"{kind}{rep}"
                write_submission(folder, student, kind, tag=student)
                path = folder / f"{student}.ipynb"
                if not path.exists():       # a folder of its own (renamed)
                    path = next(p for p in (folder / student).iterdir() if p.is_file())
                c0, o0, w0 = cpu.seconds(), own_cpu(), time.monotonic()
                result = execute_submission(path, spec.harvest_code, inputs, limits=limits,
                                            template_cells=spec.template_cells)
                c1, o1, w1 = cpu.seconds(), own_cpu(), time.monotonic()
                total = sum(q.points for q in spec.score(inputs, result))
                c2 = cpu.seconds()
                reported = {e.get("kind"): e.get("cpu") for e in result.events if e.get("cpu") is not None}
                row = {"run": c1 - c0, "grader": o1 - o0, "cells": reported.get("cells-done"),
                       "harvest": reported.get("harvest-end"), "score": c2 - c1, "wall": w1 - w0}
                rows.setdefault(kind, []).append(row)
                print(f"{kind:28s} run {row['run']:5.2f} (grader {row['grader']:4.2f}, cells {row['cells'] or 0:4.2f}, "
                      f"harvest {row['harvest'] or 0:4.2f})  score {row['score']:4.2f}  CPU s;  wall {row['wall']:5.1f} s"
                      f"  {total:g} points, {result.status}", flush=True)
    shutdown_server()
    cpu.close()
    mean = {kind: round(sum(r["run"] + r["score"] for r in rs) / len(rs), 3) for kind, rs in rows.items()}
    result = {"cpu_seconds_per_submission": mean, "warm_server_start_cpu_seconds": round(server_start, 2),
              "counted": cpu.how, "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in os.getloadavg()]}
    plan = make_plan(100)
    if all(kind in mean or kind == "infinite_loop" for kind in plan.values()):
        class_cpu = sum(mean[kind] for kind in plan.values() if kind != "infinite_loop")
        result["bench_grading_class_cpu_seconds"] = round(class_cpu, 1)
        result[f"bench_grading_shortest_wall_on_{args.cores}_cores"] = round(
            server_start + class_cpu / args.cores + limits.cell_timeout, 1)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
