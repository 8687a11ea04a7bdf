"""The student edition: what a class gets, as a git repository with one commit, and nothing instructor-only.

``coursekit release --out DIR`` (or ``make release``) writes into DIR:

* every lecture notebook ``notebooks/*.ipynb`` (outputs kept unless ``--strip-outputs``) and any other file
  under ``notebooks/`` the lectures read (figures, small data), hidden and cache folders left out;
* ``lab/mlp_lab.ipynb``, the student notebook that ``coursekit assign`` generates;
* the modules of ``coursekit`` that the student side imports, found by following imports (see
  :func:`student_modules`) from the code cells of those notebooks and of ``selfcheck.py``: grading internals
  that no student-side module imports stay out, and a module someone adds is picked up when it is imported;
* the pinned environment (``requirements.txt``, ``environment.yml``) without the instructor's tools, a
  ``pyproject.toml`` for exactly those modules, a student ``README.md`` and ``Makefile`` (``make lab``,
  ``make check``), ``start.py`` (the same without make, e.g. on Windows), ``selfcheck.py``, nbval's sanitize rules,
  and a Binder configuration (``.binder/``);
* with ``--colab-repo https://github.com/ORG/REPO``, an Open-in-Colab badge and a Colab-only setup cell at the top
  of every notebook (coursekit/colab.py).

The commit is reproducible: fixed author and committer (name, e-mail, date), files written with fixed modes, no
timestamps anywhere; the same sources give the same commit id. Running it again on an earlier release folder
adds one commit on top of it (none if nothing changed), so a class repository and the students' nbgitpuller
copies receive updates as ordinary git history.

History only moves forward: with ``--class-repo URL`` (the published class repository) the release is built on
that repository's ``main``: cloned when DIR is missing (a lost ``build/``), fast-forwarded when DIR is behind it,
refused when the two have diverged. Every release is then a fast-forward of what students already pulled, pushed
without force (a force-push would break every student's nbgitpuller copy). The command line starts a new history
only when asked (``--new-history``, the first release of a class) or when the class repository is still empty.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from coursekit import colab
from coursekit.paths import EDITION_TEMPLATES as TEMPLATES, REPO

PACKAGE = "coursekit"
LAB_NOTEBOOK = "lab/mlp_lab.ipynb"
# Pinned in the instructor's environment only: browser tests, the hub and the similarity report.
INSTRUCTOR_ONLY_PINS = frozenset({"playwright", "jupyterhub", "jupyterhub-idle-culler", "nbgitpuller", "copydetect"})
# The one identity and date of every release commit (SOURCE_DATE_EPOCH, the reproducible-builds convention,
# overrides the date).
AUTHOR_NAME = "MLP course kit"
AUTHOR_EMAIL = "coursekit-release@invalid"
DEFAULT_EPOCH = 1767225600  # 2026-01-01T00:00:00Z
MARKER = ".coursekit-release"   # present in every release: a folder holding it may be released into again
SKIPPED_PARTS = {"__pycache__", ".ipynb_checkpoints"}


class ReleaseError(RuntimeError):
    """The release cannot be written as asked; the message says why and what to do."""


# ------------------------------------------------------------------------------------------ what goes in
def lecture_files(repo: Path = REPO) -> list[str]:
    """Every file under notebooks/ (lectures and what they read), relative, sorted; hidden and cache files out."""
    folder = repo / "notebooks"
    found = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(repo)
        if path.is_file() and not any(p.startswith(".") or p in SKIPPED_PARTS for p in rel.parts):
            found.append(rel.as_posix())
    if not any(name.endswith(".ipynb") for name in found):
        raise ReleaseError(f"no lecture notebooks under {folder}")
    return found


def notebook_code(path: Path) -> list[str]:
    """The code cells of a notebook (IPython magics and shell lines dropped)."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    cells = []
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else source
        lines = [line for line in source.split("\n") if not line.lstrip().startswith(("%", "!"))]
        cells.append("\n".join(lines))
    return cells


def _parse(source: str, where: str) -> ast.AST:
    """The AST of a cell or module; for a cell that is not valid Python, of its import lines alone (their
    modules are still needed when the student fixes the cell)."""
    try:
        return ast.parse(source, where)
    except SyntaxError:
        imports = [line.strip() for line in source.split("\n") if re.match(r"^\s*(import|from)\s+\w", line)]
        body = []
        for line in imports:
            try:
                body += ast.parse(line).body
            except SyntaxError:
                continue
        return ast.Module(body=body, type_ignores=[])


def _module_file(repo: Path, module: str) -> Path | None:
    base = repo.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_names(tree: ast.AST, current: str | None, is_package: bool) -> set[str]:
    """Module names an AST imports (also inside functions), relative imports resolved against ``current``.

    ``from a import b`` yields both ``a`` and ``a.b`` (b may be a submodule); the caller keeps what exists."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                if current is None:
                    continue
                parts = current.split(".")
                anchor = parts if is_package else parts[:-1]
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) \
                == "import_module" and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            names.add(node.args[0].value)
    return names


def student_modules(roots: list[str], repo: Path = REPO) -> list[str]:
    """The ``coursekit`` modules the given Python sources need: the closure of their imports.

    Each imported module brings its parent packages (their ``__init__`` runs first) and everything it imports,
    at module level or inside a function (a lazy import is still needed when that function runs)."""
    todo, seen = [], set()

    def want(names):
        for name in names:
            if name != PACKAGE and not name.startswith(PACKAGE + "."):
                continue
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                module = ".".join(parts[:i])
                if module not in seen and _module_file(repo, module) is not None:
                    seen.add(module)
                    todo.append(module)

    for source in roots:
        want(_imported_names(_parse(source, "<student code>"), None, False))
    while todo:
        module = todo.pop()
        path = _module_file(repo, module)
        want(_imported_names(ast.parse(path.read_text(encoding="utf-8"), str(path)), module,
                             path.name == "__init__.py"))
    return sorted(seen)


def _pin_name(line: str) -> str | None:
    match = re.match(r"^\s*(?:-\s+)?([A-Za-z0-9][A-Za-z0-9._-]*)\s*==", line)
    return match[1].lower().replace("_", "-") if match else None


def student_requirements(text: str) -> str:
    """requirements.txt without the instructor-only pins (and their comment lines that would then dangle)."""
    kept, comments = [], []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            comments.append(line)      # held until we know whether the pins under it stay
            continue
        if _pin_name(line) in INSTRUCTOR_ONLY_PINS:
            comments = []              # they explained an instructor-only pin
            continue
        kept += comments + [line]
        comments = []
    return "\n".join(kept + comments).rstrip("\n") + "\n"


def student_environment(text: str, editable: bool) -> str:
    """environment.yml without the instructor-only pins; without ``-e .`` for Binder (see .binder/postBuild)."""
    kept = []
    for line in text.splitlines():
        if _pin_name(line) in INSTRUCTOR_ONLY_PINS:
            continue
        if not editable and re.match(r"^\s*-\s+-e\s+\.\s*$", line):
            continue
        kept.append(line)
    return "\n".join(kept).rstrip("\n") + "\n"


def student_pyproject(repo: Path, packages: list[str], package_data: dict[str, list[str]]) -> str:
    project = tomllib.loads((repo / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    deps = ", ".join(json.dumps(d) for d in project.get("dependencies", []))
    return (
        '[build-system]\nrequires = ["setuptools>=64"]\nbuild-backend = "setuptools.build_meta"\n\n'
        f'[project]\nname = {json.dumps(project["name"])}\nversion = {json.dumps(project["version"])}\n'
        f'description = {json.dumps(project.get("description", ""))}\nreadme = "README.md"\n'
        f'requires-python = {json.dumps(project.get("requires-python", ">=3.11"))}\n'
        '# The exact pins live in requirements.txt; these are the ranges the package itself needs.\n'
        f'dependencies = [{deps}]\n\n'
        '[tool.setuptools]\n# Only the modules the lectures and the lab import are part of this edition.\n'
        f'packages = [{", ".join(json.dumps(p) for p in packages)}]\n\n'
        + ("[tool.setuptools.package-data]\n" + "".join(
            f'{json.dumps(p)} = [{", ".join(json.dumps(n) for n in names)}]\n' for p, names in package_data.items())
           + "\n" if package_data else "") +
        '[tool.pytest.ini_options]\naddopts = "-p no:cacheprovider"\n'
    )


def _strip_outputs(text: str) -> str:
    nb = json.loads(text)
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"], cell["execution_count"] = [], None
        cell.get("metadata", {}).pop("execution", None)
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def edition_files(repo: Path = REPO, keep_outputs: bool = True,
                  colab_repo: str | None = None) -> dict[str, tuple[bytes, int]]:
    """Every file of the student edition: ``{relative path: (content, mode)}``, nothing written yet.

    ``colab_repo``: the class repository on GitHub; every notebook then starts with an Open-in-Colab badge and a
    setup cell that acts on Colab only (coursekit/colab.py)."""
    files: dict[str, tuple[bytes, int]] = {}
    requirements = (repo / "requirements.txt").read_text(encoding="utf-8")

    def notebook(rel: str, data: bytes) -> bytes:
        if not colab_repo:
            return data
        try:
            return colab.with_colab_cells(data.decode("utf-8"), rel, colab_repo, requirements).encode("utf-8")
        except colab.ColabError as exc:
            raise ReleaseError(str(exc)) from None

    def add(rel: str, content: bytes | str, mode: int = 0o644):
        files[rel] = (content.encode("utf-8") if isinstance(content, str) else content, mode)

    lectures = lecture_files(repo)
    for rel in lectures:
        data = (repo / rel).read_bytes()
        if rel.endswith(".ipynb") and not keep_outputs:
            data = _strip_outputs(data.decode("utf-8")).encode("utf-8")
        add(rel, notebook(rel, data) if rel.endswith(".ipynb") else data)
    lab = repo / LAB_NOTEBOOK
    if not lab.is_file():
        raise ReleaseError(f"{lab} is missing: run `coursekit assign` first")
    add(LAB_NOTEBOOK, notebook(LAB_NOTEBOOK, lab.read_bytes()))

    templates = {p.relative_to(TEMPLATES).as_posix(): p for p in sorted(TEMPLATES.rglob("*")) if p.is_file()
                 and not any(part in SKIPPED_PARTS for part in p.parts)}
    roots = [code for rel in lectures + [LAB_NOTEBOOK] if rel.endswith(".ipynb") for code in notebook_code(repo / rel)]
    roots += [p.read_text(encoding="utf-8") for rel, p in templates.items() if rel.endswith(".py")]
    modules = student_modules(roots, repo)
    if "coursekit.selfcheck" not in modules:
        raise ReleaseError("the lab notebook no longer imports coursekit.selfcheck: is it the student notebook?")
    for module in modules:
        path = _module_file(repo, module)
        add(path.relative_to(repo).as_posix(), path.read_bytes())
    packages = sorted(m for m in modules if _module_file(repo, m).name == "__init__.py")
    # Files a package reads beside its modules (a widget's .js and .css): those of the packages that go in.
    package_data = {}
    for package in packages:
        folder = _module_file(repo, package).parent
        for path in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix not in (".py", ".pyc")
                           and not p.name.startswith(".")):
            add(path.relative_to(repo).as_posix(), path.read_bytes())
            package_data.setdefault(package, []).append(path.name)

    for rel, path in templates.items():
        add(rel, path.read_bytes(), 0o755 if os.access(path, os.X_OK) else 0o644)
    environment = (repo / "environment.yml").read_text(encoding="utf-8")
    add("requirements.txt", student_requirements(requirements))
    add("environment.yml", student_environment(environment, editable=True))
    add(".binder/environment.yml", student_environment(environment, editable=False))
    add("pyproject.toml", student_pyproject(repo, packages, package_data))
    add("nbval_sanitize.cfg", (repo / "tests" / "nbval_sanitize.cfg").read_bytes())
    add(MARKER, "This folder is a student edition written by `coursekit release`; "
                "running it again here adds a commit.\n")
    return dict(sorted(files.items()))


# ------------------------------------------------------------------------------------------ writing it
def _git_env(epoch: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    date = f"{epoch} +0000"
    env.update(GIT_AUTHOR_NAME=AUTHOR_NAME, GIT_AUTHOR_EMAIL=AUTHOR_EMAIL, GIT_AUTHOR_DATE=date,
               GIT_COMMITTER_NAME=AUTHOR_NAME, GIT_COMMITTER_EMAIL=AUTHOR_EMAIL, GIT_COMMITTER_DATE=date,
               GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, LC_ALL="C", TZ="UTC")
    return env


def _git(out: Path, *args: str, env: dict) -> str:
    command = ["git", "-c", "core.autocrlf=false", "-c", "core.fileMode=true", "-c", "commit.gpgSign=false",
               "-c", "core.hooksPath=" + os.devnull, "-C", str(out), *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise ReleaseError(f"git {' '.join(args)} failed in {out}: {done.stderr.strip()}")
    return done.stdout.strip()


def _published_git(cwd: Path, *args: str) -> str:
    """git against the class repository, with the instructor's own git settings (credential helpers, SSH keys) and
    never a password prompt (a private repository without credentials fails instead of waiting)."""
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", LC_ALL="C")
    done = subprocess.run(["git", "-c", "core.hooksPath=" + os.devnull, "-C", str(cwd), *args], env=env,
                          capture_output=True, text=True)
    if done.returncode:
        raise ReleaseError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def _is_release(out: Path) -> bool:
    return (out / MARKER).is_file() and (out / ".git").is_dir()


def build_on_class_repo(out: Path, class_repo: str, branch: str = "main") -> bool:
    """Make ``out`` hold the class repository's ``branch`` (or a release ahead of it) before the new edition is
    written on top. Returns False when the class repository has no such branch yet (nothing published).

    ``out`` missing or empty: a clone. ``out`` an earlier release: fetched; fast-forwarded when behind; kept when
    it already contains the published commit; refused when the two have diverged."""
    if not _published_git(Path.cwd(), "ls-remote", "--heads", class_repo, f"refs/heads/{branch}"):
        return False
    if not (out.is_dir() and any(out.iterdir())):
        out.parent.mkdir(parents=True, exist_ok=True)
        _published_git(out.parent, "clone", "-q", "--no-tags", "--branch", branch, class_repo, str(out))
        if not (out / MARKER).is_file():
            raise ReleaseError(f"{class_repo} ({branch}) is not a student edition written by `coursekit release` "
                               f"(no {MARKER}); {out} was cloned from it and left as it is")
        return True
    if not _is_release(out):
        return True   # write_release refuses it with its own message
    _published_git(out, "fetch", "-q", "--no-tags", class_repo, f"refs/heads/{branch}")
    published = _published_git(out, "rev-parse", "FETCH_HEAD")
    local = _published_git(out, "rev-parse", "HEAD")
    ancestor = lambda a, b: subprocess.run(["git", "-C", str(out), "merge-base", "--is-ancestor", a, b],
                                           capture_output=True).returncode == 0
    if ancestor(published, local):
        return True
    if ancestor(local, published):
        _published_git(out, "merge", "-q", "--ff-only", published)
        return True
    raise ReleaseError(f"{out} (at {local[:12]}) and {class_repo} {branch} (at {published[:12]}) have diverged: "
                       f"a release from here would not be a fast-forward of what students pulled. Release into a "
                       f"new folder with --class-repo {class_repo} (it builds on the published history); nothing "
                       f"was written")


def write_release(out: str | Path, repo: Path = REPO, keep_outputs: bool = True, message: str | None = None,
                  epoch: int | None = None, class_repo: str | None = None, new_history: bool = True,
                  colab_repo: str | None = None) -> str:
    """Write the student edition into ``out`` and commit it; return the commit id.

    ``out`` must not exist, be empty, or be an earlier release (then one commit is added on top, or none when
    nothing changed). Anything else is refused, so no folder of the instructor's is overwritten.
    ``class_repo``: the published class repository (URL or path) to build on, see :func:`build_on_class_repo`.
    ``new_history=False``: refuse to start a new root commit unless the class repository is still empty."""
    out = Path(out).resolve()
    if out == repo.resolve() or repo.resolve() in out.parents and not out.is_relative_to(repo / "build"):
        raise ReleaseError(f"{out} lies inside the instructor's repository; write the release elsewhere "
                           f"(for example build/student-edition)")
    files = edition_files(repo, keep_outputs=keep_outputs, colab_repo=colab_repo)
    if class_repo:
        build_on_class_repo(out, class_repo)
    # With a class repository, out is now its clone (or it had nothing published yet: the first release).
    if not new_history and not class_repo and not _is_release(out):
        raise ReleaseError(f"{out} holds no earlier release, so this would start a new history that students' "
                           f"copies cannot pull. Give --class-repo URL (the published class repository: the release "
                           f"builds on what students already have), or --new-history for the first release of a class")
    if epoch is None:
        epoch = int(os.environ.get("SOURCE_DATE_EPOCH", DEFAULT_EPOCH))
    env = _git_env(epoch)
    earlier = out.is_dir() and any(out.iterdir())
    if earlier and not _is_release(out):
        raise ReleaseError(f"{out} is not empty and not an earlier release; choose an empty or new folder")
    out.mkdir(parents=True, exist_ok=True)
    if earlier:
        # Replace the tracked files by the new edition (a file dropped from the course goes away too).
        for rel in _git(out, "ls-files", "-z", env=env).split("\0"):
            if rel and (out / rel).is_file():
                (out / rel).unlink()
    else:
        _git(out, "init", "-q", "--template=", "-b", "main", env=env)
    for rel, (content, mode) in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(mode)
    for folder in sorted((p for p in out.rglob("*") if p.is_dir() and ".git" not in p.relative_to(out).parts),
                         reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
    _git(out, "add", "-A", ".", env=env)
    if earlier and not _git(out, "status", "--porcelain", env=env):
        return _git(out, "rev-parse", "HEAD", env=env)
    subject = message or ("Student edition of the MLP course" if not earlier else "Update of the student edition")
    _git(out, "commit", "-q", "--no-verify", "-m", subject, env=env)
    return _git(out, "rev-parse", "HEAD", env=env)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="coursekit release", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="where to write the edition: a new or empty folder, or an earlier release to update")
    parser.add_argument("--strip-outputs", action="store_true",
                        help="clear the lectures' outputs (default: kept, so the notebooks read well on GitHub)")
    parser.add_argument("--message", default=None, help="the commit message (default: a fixed one)")
    parser.add_argument("--class-repo", default=None, metavar="URL",
                        help="the published class repository (git URL or path): the release is built on its main, "
                             "so pushing it is a fast-forward (DIR is cloned from it when missing)")
    parser.add_argument("--new-history", action="store_true",
                        help="allow a new history in a missing or empty DIR without --class-repo (a class's first "
                             "release; students' copies of another history could not pull it)")
    parser.add_argument("--colab-repo", default=None, metavar="https://github.com/ORG/REPO",
                        help="the class repository on GitHub: each notebook gets an Open-in-Colab badge and a setup "
                             "cell that installs what Colab lacks, on Colab only (default: no Colab cells)")


def run(args) -> int:
    try:
        commit = write_release(args.out, keep_outputs=not args.strip_outputs, message=args.message,
                               class_repo=args.class_repo, new_history=args.new_history, colab_repo=args.colab_repo)
    except ReleaseError as exc:
        print(f"coursekit release: {exc}", file=sys.stderr)
        return 2
    files = len(edition_files(keep_outputs=not args.strip_outputs, colab_repo=args.colab_repo))
    print(f"wrote the student edition to {args.out}: {files} files, commit {commit}\n"
          f"publish it: git -C {args.out} push {args.class_repo or '<the class repository URL>'} main")
    return 0


if __name__ == "__main__":
    sys.exit(main())
