"""The grader's view of a job's processes from /proc (``sandbox._proc_table``): the memory watchdog reads it five
times a second per job, so with a uid it reads the status of that uid's processes only, found by the owner of
their /proc folder. It must still find every one of them: a non-dumpable process (a job's harvest makes itself
one) has the files in its /proc folder owned by root, but the folder itself keeps its effective uid."""
import os
import subprocess
import sys
import pytest

from coursekit.grading import sandbox
from grading_helpers import REQUIRE_ALL

# drops to the uid, makes itself non-dumpable, holds 64 MiB, starts one child, waits
HOLDER = """
import ctypes, os, sys, time
uid = int(sys.argv[1])
os.setgroups([]); os.setgid(uid); os.setuid(uid)
ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)
block = bytearray(64 << 20)
if os.fork() == 0:
    time.sleep(60)
    os._exit(0)
print("ready", flush=True)
time.sleep(60)
"""


@pytest.fixture
def uid_processes():
    """(uid, the holder's Popen): a sandbox uid no grader uses meanwhile (its slot's lock), two processes of it."""
    if os.geteuid() != 0:
        if REQUIRE_ALL:
            pytest.fail("needs root (to run processes under a sandbox uid); COURSEKIT_REQUIRE_ALL=1 needs it")
        pytest.skip("needs root (to run processes under a sandbox uid)")
    with sandbox.UidSlot() as slot:
        proc = subprocess.Popen([sys.executable, "-I", "-c", HOLDER, str(slot.uid)], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready"
            yield slot.uid, proc
        finally:
            for pid in sandbox._proc_table(slot.uid):
                sandbox._kill_through_pidfd(pid, slot.uid)
            proc.wait(timeout=10)       # reaped: a zombie of the uid would still count as one of its processes


def test_the_uid_scan_finds_every_process_of_the_uid_dumpable_or_not(uid_processes):
    uid, holder = uid_processes
    full = {pid: row for pid, row in sandbox._proc_table().items() if row[0] == uid}
    only = sandbox._proc_table(uid)
    assert len(only) == 2 and holder.pid in only
    assert {pid: row[:2] for pid, row in only.items()} == {pid: row[:2] for pid, row in full.items()}
    assert os.stat(f"/proc/{holder.pid}/status").st_uid == 0      # not dumpable: its files are root's
    assert os.stat(f"/proc/{holder.pid}").st_uid == uid           # its folder is not
    assert all(row[0] == uid for row in only.values())
    assert sandbox._sandbox_memory_mb(-1, uid, 3072) >= 64


def test_killing_a_uid_leaves_none_of_its_processes(uid_processes):
    uid, holder = uid_processes
    assert len(sandbox._proc_table(uid)) == 2
    for pid in sandbox._proc_table(uid):
        sandbox._kill_through_pidfd(pid, uid)
    holder.wait(timeout=10)
    assert sandbox._kill_uid(uid, timeout=10)      # the forked child, reparented to init, is gone too
    assert not sandbox._proc_table(uid)
