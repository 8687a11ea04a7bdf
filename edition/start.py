"""Set up and start the course without `make` (Windows, or anywhere): what the Makefile does, in Python.

    python start.py lab            # set up .venv (first time: a download of a few GB) and open JupyterLab
    python start.py check          # run your lab's self-checks (selfcheck.py)
    python start.py test-lectures  # run every lecture and compare it with the outputs it came with
    python start.py setup          # only set up .venv
    python start.py lab --torch cpu   # PyTorch's CPU-only build (Linux, Windows): much smaller, no GPU use

Use the Python you want the course on (3.11, 3.12 or 3.13), e.g. `py -3.13 start.py lab` on Windows. The
environment is .venv/ in this folder; it is rebuilt only when requirements.txt or pyproject.toml change (the same
stamp as `make setup`). Only the standard library is used here: this runs before anything is installed.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SUPPORTED = ((3, 11), (3, 12), (3, 13))
# PyTorch's own index of CPU-only wheels (https://pytorch.org/get-started/locally/); same versions as PyPI's.
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def problem(version=sys.version_info, system: str | None = None, machine: str | None = None,
            bits64: bool | None = None) -> str | None:
    """One line saying why this Python or machine cannot run the course and what to do, or None if it can."""
    system = platform.system() if system is None else system
    machine = (platform.machine() if machine is None else machine).lower()
    bits64 = sys.maxsize > 2**32 if bits64 is None else bits64
    found = f"{version[0]}.{version[1]}"
    if tuple(version[:2]) not in SUPPORTED:
        return (f"Python {found} cannot run this course: it needs Python 3.11, 3.12 or 3.13 (install one from "
                f"python.org, then run this with it, e.g. `python3.13 start.py lab`; or use Google Colab)")
    if not bits64:
        return ("this is a 32-bit Python, and PyTorch is built for 64-bit only: install the 64-bit Python "
                "(python.org, 'Windows installer (64-bit)'), or use Google Colab")
    if system == "Darwin" and machine in ("x86_64", "i386"):
        return ("PyTorch stopped building for Intel Macs after 2.2, and the course needs 2.14: use Google Colab "
                "(see README); on an Apple-silicon Mac, use an arm64 Python instead of one running under Rosetta")
    if system not in ("Linux", "Windows", "Darwin"):
        return f"PyTorch has no wheels for {system}: use Linux, macOS (Apple silicon), Windows or Google Colab"
    return None


def venv_python(venv: Path, windows: bool | None = None) -> Path:
    """The virtual environment's interpreter: Scripts\\python.exe on Windows, bin/python elsewhere."""
    windows = os.name == "nt" if windows is None else windows
    return venv / ("Scripts/python.exe" if windows else "bin/python")


def venv_script(venv: Path, name: str, windows: bool | None = None) -> Path:
    windows = os.name == "nt" if windows is None else windows
    return venv / ("Scripts" if windows else "bin") / (name + (".exe" if windows else ""))


def stamp(folder: Path = HERE) -> str:
    """The name `make setup` gives its stamp: the first 12 hex digits of sha1(requirements.txt + pyproject.toml)."""
    data = (folder / "requirements.txt").read_bytes() + (folder / "pyproject.toml").read_bytes()
    return ".installed-" + hashlib.sha1(data).hexdigest()[:12]


def pinned(name: str, folder: Path = HERE) -> str:
    """`name==version` as requirements.txt pins it (the line with no environment marker, or d2l's)."""
    for line in (folder / "requirements.txt").read_text(encoding="utf-8").splitlines():
        match = re.match(rf"^{re.escape(name)}==([^;\s]+)", line.strip())
        if match:
            return f"{name}=={match[1]}"
    raise SystemExit(f"start.py: requirements.txt pins no {name}")


def install_commands(python: Path, torch: str = "default", folder: Path = HERE) -> list[list[str]]:
    """The pip commands of `make setup`, in order: torch first from the CPU index when asked, then the pins, then
    d2l without its 2023 pins, then the course's package."""
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    commands = []
    if torch == "cpu":
        commands.append(pip + ["--index-url", CPU_INDEX, pinned("torch", folder), pinned("torchvision", folder)])
    commands += [pip + ["-r", "requirements.txt"],
                 pip + ["--no-deps", pinned("d2l", folder)],
                 pip + ["--no-deps", "--no-build-isolation", "-e", "."]]
    return commands


def run(command: list[str], **kwargs) -> None:
    print("+", " ".join(command), flush=True)
    done = subprocess.run(command, cwd=HERE, **kwargs)
    if done.returncode:
        raise SystemExit(f"start.py: this step failed (exit status {done.returncode}): {' '.join(command)}")


def setup(venv: Path, torch: str) -> Path:
    python = venv_python(venv)
    mark = venv / stamp()
    if mark.is_file():
        return python
    if not python.exists():
        run([sys.executable, "-m", "venv", str(venv)])
    for command in install_commands(python, torch):
        run(command)
    for old in venv.glob(".installed-*"):
        old.unlink()
    mark.touch()
    return python


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["lab", "check", "test-lectures", "setup", "preflight"])
    parser.add_argument("--torch", choices=["default", "cpu"], default=os.environ.get("TORCH") or "default",
                        help="cpu: PyTorch's CPU-only wheels (Linux, Windows); default: PyPI's (CUDA on Linux)")
    parser.add_argument("--venv", default=".venv", help="where the environment goes (%(default)s)")
    args = parser.parse_args(argv)
    why = problem()
    if why:
        print(f"start.py: {why}", file=sys.stderr)
        return 1
    if args.command == "preflight":
        return 0
    venv = HERE / args.venv
    python = setup(venv, args.torch)
    env = dict(os.environ)
    if args.command == "lab":
        root = ["--allow-root"] if hasattr(os, "getuid") and os.getuid() == 0 else []
        run([str(venv_script(venv, "jupyter")), "lab", *root, "--notebook-dir=.", "notebooks/01_hidden_layers.ipynb"])
    elif args.command == "check":
        run([str(python), "selfcheck.py"])
    elif args.command == "test-lectures":
        env["OMP_NUM_THREADS"] = "1"
        run([str(python), "-m", "pytest", "--nbval", "notebooks", "--nbval-sanitize-with", "nbval_sanitize.cfg"],
            env=env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
