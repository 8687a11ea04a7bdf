"""An nbgitpuller link: one URL that puts the student edition into each student's home on a JupyterHub.

A student who follows the link logs in (if not yet), gets their server started, and nbgitpuller clones the
repository into ``~/mlp-course`` (:data:`COURSE_FOLDER`, whatever the repository is called) the first time; every later visit fetches the instructor's new commits and merges
them without losing the student's work (nbgitpuller's documented rules: a file changed on both sides keeps the
student's version, a file the student deleted comes back, a new file of the instructor's that the student also
created keeps the student's under its name). Then JupyterLab opens at ``--path``.

The format is nbgitpuller's (``/hub/user-redirect/git-pull?repo=...&branch=...&targetpath=...&urlpath=...``,
every value URL-encoded as its own link generator does). ``targetpath`` is always given: without it
nbgitpuller names the folder after the URL's last part (``.git`` included), and the kernels, which import
``coursekit`` from ``~/mlp-course`` (``PYTHONPATH`` of deploy/jupyterhub_config.py and of the image,
deploy/Dockerfile), would not find it in a class repository named ``mlp-course-2026``.
"""
from __future__ import annotations

import argparse
import re
import sys
from urllib.parse import quote, urlencode, urlsplit


# The folder in each student's home that holds the edition, whatever the class repository is called. The hub's
# PYTHONPATH points into it: deploy/jupyterhub_config.py (COURSE_FOLDER) and deploy/Dockerfile (ARG COURSE_FOLDER)
# default to this same name, which tests/test_hub.py checks.
COURSE_FOLDER = "mlp-course"


class HubLinkError(ValueError):
    """A hub or repository URL that cannot make a working link; the message says why."""


def hub_link(hub: str, repo: str, branch: str = "main", path: str | None = None, target: str | None = None) -> str:
    """The link to hand students. ``path``: what JupyterLab opens, relative to the repository (default: its
    folder, in the file browser). ``target``: the folder in each home (default :data:`COURSE_FOLDER`); another
    one only with the hub's COURSE_FOLDER (the config's environment, the image's build argument) set to it."""
    parts = urlsplit(hub)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise HubLinkError(f"--hub must be the hub's http(s) address, like https://hub.example.edu, not {hub!r}")
    if parts.query or parts.fragment:
        raise HubLinkError(f"--hub must be the hub's base address, without ?query or #fragment: {hub!r}")
    if not repo or re.search(r"\s", repo):
        raise HubLinkError(f"--repo must be the class repository's git URL, without spaces: {repo!r}")
    if not branch or re.search(r"\s", branch):
        raise HubLinkError(f"--branch must be a branch name: {branch!r}")
    target = COURSE_FOLDER if target is None else target
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", target):
        raise HubLinkError(f"--target must be a plain folder name (letters, digits, . _ -): {target!r}")
    if path is not None:
        path = path.strip("/")
        if ".." in path.split("/"):
            raise HubLinkError(f"--path must stay inside the repository: {path!r}")
    urlpath = "lab/tree/" + "/".join(p for p in (target, path) if p)
    query = urlencode({"repo": repo, "branch": branch, "targetpath": target, "urlpath": urlpath}, quote_via=quote,
                      safe="")
    base = hub.rstrip("/")
    if not base.endswith("/hub"):
        base += "/hub"
    return f"{base}/user-redirect/git-pull?{query}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hub", required=True, help="the hub's address, e.g. https://hub.example.edu")
    parser.add_argument("--repo", required=True, help="the git URL of the published student edition")
    parser.add_argument("--branch", default="main", help="its branch (%(default)s)")
    parser.add_argument("--path", default=None,
                        help="what to open, relative to the repository (e.g. notebooks/01_hidden_layers.ipynb)")
    parser.add_argument("--target", default=None,
                        help=f"the folder in each home (default: {COURSE_FOLDER}, which the hub's PYTHONPATH names; "
                             "another one needs the hub's COURSE_FOLDER set to it)")


def run(args) -> int:
    try:
        print(hub_link(args.hub, args.repo, branch=args.branch, path=args.path, target=args.target))
    except HubLinkError as exc:
        print(f"coursekit hub-link: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="coursekit hub-link", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
