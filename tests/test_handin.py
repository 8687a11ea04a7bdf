"""Hand-in on the class hub (coursekit/handin/service.py, `coursekit collect`), then `coursekit grade` on what was
collected.

The fast tests check the service's and collect's refusals on their own. The slow test runs the real hub of
tests/test_hub.py (deploy/jupyterhub_config.py with its hand-in block) with three students in Chromium: each logs
in through the nbgitpuller link and hands in from the service's page; ada also tries to hand in as bob and to read
bob's receipt (refused), bob tries invalid JSON, a file over the size limit and a request without the XSRF token
(refused); the instructor then moves the deadline into the past and cy hands in late. `coursekit collect` and
`coursekit grade --term --roster` run on the result.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import nbformat
import pytest

from conftest import REPO, skip_or_fail
from coursekit.cli import main
from coursekit.grading.term import LatePolicy
from coursekit.handin.collect import collect

sys.path.insert(0, str(REPO / "coursekit" / "handin"))
import service  # noqa: E402  (the service runs as a script in the hub: imported the same way here)

SERVICE = REPO / "coursekit" / "handin" / "service.py"
NB = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def test_only_notebooks_are_taken():
    assert service.notebook_problem(json.dumps(NB).encode()) is None
    assert "not valid JSON" in service.notebook_problem(b"{\"cells\": [")
    assert "not valid JSON" in service.notebook_problem(b"\xff\xfe")
    assert "list of cells" in service.notebook_problem(b"[1, 2]")
    assert "format 4" in service.notebook_problem(json.dumps(dict(NB, nbformat=3)).encode())


def test_user_folders_stay_inside_the_store(tmp_path):
    assert service.user_folder(tmp_path, "../../etc").parent == tmp_path
    assert service.user_folder(tmp_path, "a/b").name == "a%2Fb"
    for bad in ("", ".", ".."):
        with pytest.raises(ValueError):
            service.user_folder(tmp_path, bad)


def test_the_deadline_comes_from_the_term_file(tmp_path):
    term = tmp_path / "term.toml"
    term.write_text("[lab]\ndeadline = 2026-12-11T23:59:00+01:00\ngrace_minutes = 15\n")
    deadline, grace = service.read_deadline(term, "lab")
    assert deadline == datetime(2026, 12, 11, 22, 59, tzinfo=timezone.utc) and grace == timedelta(minutes=15)
    term.write_text("[lab]\ndeadline = 2026-12-11T23:59:00\n")
    with pytest.raises(ValueError, match="offset"):
        service.read_deadline(term, "lab")


def _hand_in(store: Path, user: str, raw: bytes, when: str, sha=None):
    folder = service.user_folder(store, user)
    folder.mkdir(parents=True)
    (folder / "handin.ipynb").write_bytes(raw)
    (folder / "receipt.json").write_text(json.dumps({"student": user, "handed_in_at": when,
                                                     "sha256": sha or hashlib.sha256(raw).hexdigest()}))


def test_collect_reads_the_store_as_untrusted(tmp_path):
    store, out = tmp_path / "store", tmp_path / "subs"
    raw = json.dumps(NB).encode()
    _hand_in(store, "ada", raw, "2026-12-11T20:00:00+00:00")
    _hand_in(store, "=bo@uni", raw, "2026-12-13T01:00:00+00:00")           # an odd name, and late
    _hand_in(store, "cy", raw, "2026-12-11T20:00:00+00:00", sha="0" * 64)  # changed after its receipt
    (store / "dee").mkdir()
    (store / "dee" / "receipt.json").write_text("{}")
    os.symlink(store / "ada" / "handin.ipynb", store / "dee" / "handin.ipynb")   # a link: not followed
    os.symlink(store / "ada", store / "eve")
    (store / "stray.txt").write_text("x")
    _hand_in(store, "bo uni", raw, "2026-12-11T20:00:00+00:00")           # the same file-safe name as =bo@uni
    policy = LatePolicy(datetime(2026, 12, 11, 23, tzinfo=timezone.utc), timedelta(0), 10, 50)
    rows, left_out = collect(store, out, policy)
    assert [(r["student"], r["late_by"]) for r in rows] == [("bo_uni", "1 d 2 h"), ("ada", ""), ("bo_uni-2", "")]
    assert len(rows) == 3 and all((out / f"{r['student']}.ipynb").read_bytes() == raw for r in rows)
    text = "\n".join(left_out)
    assert "cy: the notebook's SHA-256 is not the receipt's" in text
    assert "dee: unreadable hand-in" in text and "eve: not a student's folder" in text
    assert "stray.txt: not a student's folder" in text
    with open(out / "manifest.csv", newline="") as fh:
        manifest = list(csv.DictReader(fh))
    assert {m["sha256"] for m in manifest} == {hashlib.sha256(raw).hexdigest()}
    assert main(["collect", "--store", str(tmp_path / "nope"), "--out", str(out)]) == 2


# ------------------------------------------------------------------------------------------ the hub, in Chromium

LAB = "lab/mlp_lab.ipynb"


def _term(path: Path, deadline: datetime) -> None:
    path.write_text(f"[lab]\ndeadline = {deadline.isoformat(timespec='seconds')}\ngrace_minutes = 0\n"
                    "penalty_percent_per_day = 10\nmax_penalty_percent = 50\n")


def _post(page, url: str, body: str, xsrf: bool = True) -> dict:
    return page.evaluate("""async ([url, body, useXsrf]) => {
        const headers = useXsrf ? {"X-XSRFToken": xsrf} : {};
        const r = await fetch(url, {method: "POST", body: body, headers: headers, credentials: "same-origin"});
        let answer = {};
        try { answer = await r.json(); } catch (e) { answer = {error: "(no JSON)"}; }
        return {status: r.status, answer: answer};
    }""", [url, body, xsrf])


def _get(page, url: str) -> list:
    """A GET from the page's script: JupyterHub takes its login cookie from a script only with the XSRF token."""
    return page.evaluate("""async (url) => {
        const r = await fetch(url, {headers: {"X-XSRFToken": xsrf}, credentials: "same-origin"});
        return [r.status, await r.text()];
    }""", url)


def _hand_in_from_page(page, hub_url: str, user: str) -> dict:
    page.goto(f"{hub_url}/services/handin/", timeout=120_000)
    assert page.locator("#user").inner_text() == user
    page.click("#handin")
    page.wait_for_function("() => /sha256|REFUSED/.test(document.getElementById('receipt').textContent)",
                           timeout=60_000)
    text = page.locator("#receipt").inner_text()
    assert not text.startswith("REFUSED"), text
    return json.loads(text)


@pytest.mark.slow
def test_three_students_hand_in_on_the_hub(tmp_path, real_data_dir, playwright, monkeypatch):
    from browser_support import CHROMIUM_PATH, free_loopback_port, launch_chromium
    from test_hub import PROXY, STUDENTS, ClassRepository, Hub, hub_link, log_in_through_link
    if not PROXY.exists():
        skip_or_fail(f"configurable-http-proxy not found at {PROXY} (apt-get install node-configurable-http-proxy)")
    if not CHROMIUM_PATH.exists():
        skip_or_fail(f"Chromium not found at {CHROMIUM_PATH} (apt-get install chromium)")
    term, store = tmp_path / "term.toml", tmp_path / "handin"
    _term(term, datetime.now(timezone.utc) + timedelta(days=1))
    monkeypatch.setenv("COURSE_HANDIN_TERM", str(term))
    monkeypatch.setenv("COURSE_HANDIN_SERVICE", str(SERVICE))
    monkeypatch.setenv("COURSE_HANDIN_DIR", str(store))
    monkeypatch.setenv("COURSE_HANDIN_URL", f"http://127.0.0.1:{free_loopback_port()}")
    repo = ClassRepository(tmp_path / "instructor")
    receipts = {}
    hub = Hub(tmp_path / "hub", real_data_dir)
    monkeypatch.setenv("COURSE_HANDIN_PROXY_URL", hub.url)
    with hub:
        link = hub_link(hub.url, repo.url, path=LAB)
        api = f"{hub.url}/services/handin/api"
        browser = launch_chromium(playwright)
        try:
            pages = {}
            for user in STUDENTS:
                page = pages[user] = browser.new_context().new_page()
                log_in_through_link(page, link, user)
                # The student's work: a cell of their own, saved in their home.
                path = hub.homes / user / "mlp-course" / LAB
                nb = nbformat.read(path, as_version=4)
                nb.cells.append(nbformat.v4.new_code_cell(f"# {user}'s own work"))
                nbformat.write(nb, path)
                if user == "cy":
                    break                  # cy hands in after the deadline, below
                receipts[user] = _hand_in_from_page(page, hub.url, user)
                assert receipts[user]["student"] == user and receipts[user]["late"] is False
            ada, bob = pages["ada"], pages["bob"]
            bob_before = (service.user_folder(store, "bob") / "handin.ipynb").read_bytes()
            # ada as bob: refused, bob's hand-in untouched; bob's receipt is not ada's to read.
            answer = _post(ada, f"{api}/handin?student=bob", json.dumps(NB))
            assert answer["status"] == 403 and "you are logged in as ada" in answer["answer"]["error"], answer
            seen = _get(ada, f"{api}/receipt?student=bob")
            assert seen[0] == 403 and receipts["bob"]["sha256"] not in seen[1], seen
            own = json.loads(_get(ada, f"{api}/receipt")[1])
            assert own["sha256"] == receipts["ada"]["sha256"]
            assert (service.user_folder(store, "bob") / "handin.ipynb").read_bytes() == bob_before
            # Hostile input from bob: refused with a reason, his hand-in untouched.
            for body, status, words in (("{\"cells\": [", 400, "not valid JSON"),
                                        ("[1]", 400, "list of cells"),
                                        ("x" * (21 * 2**20), 413, "more than the 20 MiB allowed")):
                answer = _post(bob, f"{api}/handin", body)
                assert answer["status"] == status and words in answer["answer"]["error"], (words, answer)
            assert _post(bob, f"{api}/handin", json.dumps(NB), xsrf=False)["status"] == 403
            assert (service.user_folder(store, "bob") / "handin.ipynb").read_bytes() == bob_before
            # bob hands in again before the deadline: it replaces the first.
            again = _hand_in_from_page(bob, hub.url, "bob")
            assert again["replaced"] is True and again["late"] is False
            receipts["bob"] = again
            # The deadline passes (the instructor sets it to now in the term file, re-read at every hand-in): cy,
            # handing in after it, is late; ada's and bob's hand-ins came before it.
            _term(term, datetime.now(timezone.utc))
            time.sleep(2)
            receipts["cy"] = _hand_in_from_page(pages["cy"], hub.url, "cy")
            assert receipts["cy"]["late"] is True and receipts["cy"]["late_by_seconds"] >= 1
            assert "marked late" in pages["cy"].content()
        except Exception:
            print(hub.log_tail())
            raise
        finally:
            browser.close()
    for user in STUDENTS:
        stored = (service.user_folder(store, user) / "handin.ipynb").read_bytes()
        assert hashlib.sha256(stored).hexdigest() == receipts[user]["sha256"]
        assert [u for u in STUDENTS if f"# {u}'s own work".encode() in stored] == [user]
    history = (service.user_folder(store, "bob") / "history.jsonl").read_text().splitlines()
    assert len(history) == 2
    assert store.stat().st_mode & 0o077 == 0

    # The instructor: collect, then grade with the term and a roster.
    subs, out = tmp_path / "submissions", tmp_path / "grades"
    assert main(["collect", "--store", str(store), "--out", str(subs), "--term", str(term)]) == 0
    with open(subs / "manifest.csv", newline="") as fh:
        manifest = {row["student"]: row for row in csv.DictReader(fh)}
    assert set(manifest) == set(STUDENTS) and manifest["cy"]["late_by"] != ""
    assert manifest["ada"]["late_by"] == "" and manifest["bob"]["sha256"] == receipts["bob"]["sha256"]
    roster = tmp_path / "roster.csv"
    roster.write_text("student,name,canvas_id,email\n" + "".join(f"{u},{u.title()},{i},{u}@uni.example\n"
                                                                 for i, u in enumerate(STUDENTS + ("dan",))))
    assert main(["grade", str(subs), "--out", str(out), "--term", str(term), "--roster", str(roster),
                 "--workers", "2", "--no-progress"]) == 0
    with open(out / "gradebook.csv", newline="") as fh:
        book = {row["student"]: row for row in csv.DictReader(fh)}
    assert set(book) == set(STUDENTS)
    assert book["cy"]["late_by"] != "" and book["ada"]["late_by"] == book["bob"]["late_by"] == ""
    assert "1 day late" in (out / "feedback" / "cy.txt").read_text()
    for name in ("report.html", "canvas.csv", "moodle.csv", "feedback/ada.html"):
        assert (out / name).stat().st_size > 0, name
    status = {row["student"]: row["status"] for row in csv.DictReader((out / "roster_grades.csv").open())}
    assert status == {"ada": "graded", "bob": "graded", "cy": "late", "dan": "missing"}
