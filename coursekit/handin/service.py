"""The class hub's hand-in service: a JupyterHub service at /services/handin/ that stores each student's lab.

Run by the hub (deploy/jupyterhub_config.py's hand-in block) as a script, so the hub's environment needs only
JupyterHub and tornado, not coursekit::

    python service.py --store /srv/handin --term /srv/handin-term.toml [--assignment lab]

* Who hands in is the hub's logged-in user (JupyterHub OAuth: ``HubOAuthenticated``), never a name the request
  carries: a request naming another student is refused (403), and nobody can read another's receipt.
* The time of a hand-in is the service's clock when the notebook arrives, never a file time.
* The page (GET /services/handin/) has the student's button: the service fetches ``~/mlp-course/lab/mlp_lab.ipynb``
  from the student's own server with the student's own OAuth token (scope ``access:servers!user``: that student's
  servers only), so the service never needs the homes; a file chooser posts any notebook instead. The answer is a receipt: time, SHA-256, size, late or not.
* The deadline and its grace come from the term file (``coursekit.grading.term``'s format), read at every request:
  the instructor can move a deadline without restarting anything.
* A hand-in before the deadline (grace included) replaces the previous one; after it, it still replaces it and is
  marked late (late by how long). Every hand-in is appended to the student's history.
* Refused with a clear message: more than --max-mb, not JSON, JSON that is not an nbformat 4 notebook.
* Storage (the service's own folder, 0700; on Zero to JupyterHub its own volume): ``STORE/<user>/handin.ipynb``,
  ``receipt.json`` and ``history.jsonl``, each written atomically; the folder name is the user name
  percent-encoded, so no name can step out of STORE. ``coursekit collect`` turns STORE into a submissions folder.
"""
from __future__ import annotations

import argparse
import hashlib
import html
import json
import os
import tempfile
import tomllib
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote

from tornado import httpserver, ioloop, web

from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated
from jupyterhub.utils import url_path_join

NOTEBOOK_PATH = "mlp-course/lab/mlp_lab.ipynb"       # where the student edition puts the lab in each home
RECEIPT, NOTEBOOK, HISTORY = "receipt.json", "handin.ipynb", "history.jsonl"


def user_folder(store: Path, user: str) -> Path:
    """The user's folder in STORE: the name percent-encoded (no '/', no '..'), so it stays inside STORE."""
    name = quote(user, safe="")
    if name in ("", ".", ".."):
        raise ValueError(f"unusable user name {user!r}")
    return store / name


def atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def notebook_problem(raw: bytes) -> str | None:
    """Why ``raw`` is not a notebook to hand in, or None."""
    try:
        nb = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return f"not a notebook: the file is not valid JSON ({type(exc).__name__}: {str(exc)[:120]})"
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        return "not a notebook: a notebook is a JSON object with a list of cells"
    if nb.get("nbformat") != 4:
        return f"not a notebook of format 4 (nbformat is {nb.get('nbformat')!r}): save it from JupyterLab"
    return None


def read_deadline(term_file: Path, assignment: str) -> tuple[datetime, timedelta]:
    """(deadline, grace) of ``[assignment]`` in the term file; ValueError saying what is wrong."""
    table = tomllib.loads(term_file.read_text(encoding="utf-8")).get(assignment)
    if not isinstance(table, dict):
        raise ValueError(f"{term_file} has no [{assignment}] table")
    deadline = table.get("deadline")
    if isinstance(deadline, str):
        deadline = datetime.fromisoformat(deadline.replace("Z", "+00:00"))
    if not isinstance(deadline, datetime) or deadline.tzinfo is None:
        raise ValueError(f"{term_file} [{assignment}]: deadline must be a date-time with its offset")
    return deadline, timedelta(minutes=float(table.get("grace_minutes", 0)))


class Base(HubOAuthenticated, web.RequestHandler):
    def prepare(self):
        cfg = self.settings["handin"]
        try:
            deadline, grace = read_deadline(cfg["term"], cfg["assignment"])
        except (OSError, ValueError) as exc:
            raise web.HTTPError(503, reason=f"the hand-in is closed: its term file cannot be read ({exc})")
        self.cfg = dict(cfg, deadline=deadline, grace=grace)

    def student(self) -> str:
        """The logged-in user; a request naming someone else (``student``) is refused."""
        user = self.current_user["name"]
        named = self.get_argument("student", None)
        if named is not None and named != user:
            raise web.HTTPError(403, reason=f"you are logged in as {user}: you can hand in and see only your own "
                                            "work, not another student's")
        return user

    def receipt(self, user: str) -> dict | None:
        try:
            return json.loads((user_folder(self.cfg["store"], user) / RECEIPT).read_text())
        except (OSError, ValueError):
            return None

    def write_error(self, status_code, **kwargs):
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": self._reason, "status": status_code}))


class ReceiptHandler(Base):
    @web.authenticated
    def get(self):
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(self.receipt(self.student()) or {}))


async def fetch_from_server(proxy_url: str, user: str, token: str) -> bytes:
    """The lab notebook from the user's own server, as that user (their OAuth token); HTTPError saying why not."""
    from tornado.httpclient import AsyncHTTPClient, HTTPClientError
    url = url_path_join(proxy_url, "user", quote(user, safe=""), "api/contents", NOTEBOOK_PATH)
    try:
        answer = await AsyncHTTPClient().fetch(url + "?content=1&type=notebook",
                                               headers={"Authorization": f"token {token}"}, request_timeout=60)
    except HTTPClientError as exc:
        why = {404: f"there is no ~/{NOTEBOOK_PATH} in your home", 403: "your server refused the hand-in service"}
        raise web.HTTPError(400, reason=f"cannot read ~/{NOTEBOOK_PATH} from your server: "
                                        f"{why.get(exc.code, f'status {exc.code}')}; is your server running?")
    except OSError as exc:
        raise web.HTTPError(400, reason=f"cannot reach your server ({exc}): start it from the hub and try again")
    content = json.loads(answer.body).get("content")
    return json.dumps(content, ensure_ascii=False).encode("utf-8")


class HandinHandler(Base):
    @web.authenticated
    async def post(self):
        user = self.student()
        if self.get_argument("source", "") == "server":
            raw = await fetch_from_server(self.settings["proxy_url"], user, self.hub_auth.get_token(self))
        else:
            raw = self.request.body
        limit = self.cfg["max_bytes"]
        if len(raw) > limit:
            raise web.HTTPError(413, reason=f"the notebook is {len(raw) / 2**20:.1f} MiB, more than the "
                                            f"{limit / 2**20:g} MiB allowed: clear its outputs and hand it in again")
        problem = notebook_problem(raw)
        if problem:
            raise web.HTTPError(400, reason=problem)
        now = datetime.now(timezone.utc)                  # the service's clock, never the file's
        deadline, grace = self.cfg["deadline"], self.cfg["grace"]
        late_by = now - deadline if now > deadline + grace else timedelta(0)
        folder = user_folder(self.cfg["store"], user)
        folder.mkdir(mode=0o700, exist_ok=True)
        if folder.is_symlink() or not folder.is_dir():
            raise web.HTTPError(500, reason="the hand-in folder is not a plain folder: tell your instructor")
        receipt = {"student": user, "handed_in_at": now.isoformat(timespec="seconds"),
                   "sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw),
                   "deadline": deadline.isoformat(), "late": late_by > timedelta(0),
                   "late_by_seconds": int(late_by.total_seconds()),
                   "replaced": (folder / NOTEBOOK).exists()}
        atomic_write(folder / NOTEBOOK, raw)
        atomic_write(folder / RECEIPT, json.dumps(receipt, indent=1).encode())
        with open(folder / HISTORY, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(receipt) + "\n")
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(receipt))


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Hand in the MLP lab</title>
<style>body {{ font-family: system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; }}
button {{ font-size: 1.1rem; padding: 0.4rem 1rem; }} pre {{ background: #f4f4f4; padding: 0.5rem; }}</style></head>
<body>
<h1>Hand in the MLP lab</h1>
<p>Logged in as <b id="user">{user}</b>. Deadline: <b>{deadline}</b>{grace}.</p>
<p><button id="handin">Hand in ~/{path}</button></p>
<p>or another notebook: <input type="file" id="file" accept=".ipynb"> <button id="handin-file">Hand in this file</button></p>
<p>Save the notebook in JupyterLab first: what is on disk is handed in. Handing in again replaces the earlier
hand-in{after}.</p>
<h2>Your receipt</h2>
<pre id="receipt">{receipt}</pre>
<script>
const xsrf = {xsrf};
const show = (text) => {{ document.getElementById("receipt").textContent = text; }};
async function post(body, query = "") {{
  const r = await fetch({api} + query, {{method: "POST", body: body, credentials: "same-origin",
                                headers: {{"X-XSRFToken": xsrf, "Content-Type": "application/x-ipynb+json"}}}});
  const answer = await r.json();
  show(r.ok ? JSON.stringify(answer, null, 1) : "REFUSED: " + answer.error);
}}
document.getElementById("handin").onclick = async () => {{
  show("handing in..."); await post("", "?source=server");
}};
document.getElementById("handin-file").onclick = async () => {{
  const f = document.getElementById("file").files[0];
  if (!f) {{ show("REFUSED: choose a file first"); return; }}
  show("handing in..."); await post(await f.arrayBuffer());
}};
</script></body></html>
"""


class PageHandler(Base):
    @web.authenticated
    def get(self):
        user = self.student()
        receipt = self.receipt(user)
        deadline, grace = self.cfg["deadline"], self.cfg["grace"]
        late = datetime.now(timezone.utc) > deadline + grace
        self.finish(PAGE.format(
            user=html.escape(user), deadline=html.escape(deadline.isoformat()),
            grace=f" (with {grace.total_seconds() / 60:g} minutes of grace)" if grace else "",
            path=NOTEBOOK_PATH,
            after=", and <b>the deadline has passed: a hand-in now is marked late</b>" if late else "",
            receipt=html.escape(json.dumps(receipt, indent=1)) if receipt else "nothing handed in yet",
            xsrf=json.dumps(self.xsrf_token.decode() if isinstance(self.xsrf_token, bytes) else self.xsrf_token),
            api=json.dumps(url_path_join(self.settings["service_prefix"], "api/handin"))))


def make_app(store: Path, term: Path, assignment: str, max_mb: float, proxy_url: str) -> web.Application:
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/handin/")
    return web.Application([
        (prefix, PageHandler),
        (url_path_join(prefix, "api/handin"), HandinHandler),
        (url_path_join(prefix, "api/receipt"), ReceiptHandler),
        (url_path_join(prefix, "oauth_callback"), HubOAuthCallbackHandler),
    ], handin={"store": store, "term": term, "assignment": assignment, "max_bytes": int(max_mb * 2**20)},
        service_prefix=prefix, proxy_url=proxy_url,
        cookie_secret=os.urandom(32), xsrf_cookies=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--store", required=True, help="the service's own folder (0700)")
    p.add_argument("--term", required=True, help="the term file (deadline, grace_minutes), read at every request")
    p.add_argument("--assignment", default="lab", help="its table (%(default)s)")
    p.add_argument("--proxy-url", default="http://127.0.0.1:8000",
                   help="where the service reaches the students' servers: the hub's proxy (%(default)s)")
    p.add_argument("--max-mb", type=float, default=20.0, help="largest notebook accepted (%(default)s MiB)")
    args = p.parse_args(argv)
    try:
        read_deadline(Path(args.term), args.assignment)
    except (OSError, ValueError) as exc:
        p.error(str(exc))
    store = Path(args.store)
    store.mkdir(mode=0o700, parents=True, exist_ok=True)
    store.chmod(0o700)
    app = make_app(store, Path(args.term), args.assignment, args.max_mb,
                   args.proxy_url.rstrip("/") + os.environ.get("JUPYTERHUB_BASE_URL", "/"))
    url = os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101")
    from urllib.parse import urlsplit
    where = urlsplit(url)
    server = httpserver.HTTPServer(app, max_body_size=int((args.max_mb + 4) * 2**20))
    server.listen(where.port or 80, where.hostname or "127.0.0.1")
    ioloop.IOLoop.current().start()


if __name__ == "__main__":
    main()
