"""An nbgitpuller link: one URL that puts the student edition into each student's home on a JupyterHub.

A student who follows the link logs in (if not yet), gets their server started, and nbgitpuller clones the
repository into ``~/<target>`` the first time; every later visit fetches the instructor's new commits and merges
them without losing the student's work (nbgitpuller's documented rules: a file changed on both sides keeps the
student's version, a file the student deleted comes back, a new file of the instructor's that the student also
created keeps the student's under its name). Then JupyterLab opens at ``--path``.

The format is nbgitpuller's (``/hub/user-redirect/git-pull?repo=...&branch=...&targetpath=...&urlpath=...``,
every value URL-encoded as its own link generator does). ``targetpath`` is always given: without it
nbgitpuller names the folder after the URL's last part, ``.git`` included.
"""
from __future__ import annotations

import argparse
import re
import sys
from urllib.parse import quote, urlencode, urlsplit


class HubLinkError(ValueError):
    """A hub or repository URL that cannot make a working link; the message says why."""


def default_target(repo: str) -> str:
    """The folder name nbgitpuller would pick, without a trailing ``.git``: ``.../mlp-course.git`` -> mlp-course."""
    name = repo.rstrip("/").split("/")[-1].split(":")[-1]
    return name[:-4] if name.endswith(".git") else name


def hub_link(hub: str, repo: str, branch: str = "main", path: str | None = None, target: str | None = None) -> str:
    """The link to hand students. ``path``: what JupyterLab opens, relative to the repository (default: its
    folder, in the file browser)."""
    parts = urlsplit(hub)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise HubLinkError(f"--hub must be the hub's http(s) address, like https://hub.example.edu, not {hub!r}")
    if parts.query or parts.fragment:
        raise HubLinkError(f"--hub must be the hub's base address, without ?query or #fragment: {hub!r}")
    if not repo or re.search(r"\s", repo):
        raise HubLinkError(f"--repo must be the class repository's git URL, without spaces: {repo!r}")
    if not branch or re.search(r"\s", branch):
        raise HubLinkError(f"--branch must be a branch name: {branch!r}")
    target = target or default_target(repo)
    if not target or target in (".", "..") or "/" in target:
        raise HubLinkError(f"cannot name a folder after {repo!r}: give --target")
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
    parser.add_argument("--target", default=None, help="the folder in each home (default: the repository's name)")


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
