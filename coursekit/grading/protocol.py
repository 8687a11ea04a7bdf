"""The contract between the grader and the sandbox: the limits of one submission (and every timeout derived
from them), the job the grader hands to the warm server, the events a job reports, and the results frame
only the grader's harvest can produce.

Standard library only: ``warm_server.py`` imports it inside the sandbox before any student code runs.

One job's trip (see ``coursekit.grading.runner``)::

    grader                                  warm server (warm_server.py --serve)       job process (a fork of it)
    writes job.json, inputs.npz and    ->   ServerCommand (stdin, one line):
    the nonce (root-only, 0600)             opens inputs, results, nonce (never
                                            reads it), unlinks them, forks   ->  reads job.json as root, unlinks it,
                                       <-   ServerReply "started"                 own pid + mount namespace,
                                                                                  own /dev/shm and /tmp, drops uid
    reads Events (untrusted)           <-------------------------------------   ready, start/end per cell, cells-done
                                            checks the asker from outside   <-   main thread forks harvest H, waits;
    reads server.jsonl (granted...)    <-   stops the job, hands H the      ->   H asks on its socket
                                            results, inputs, nonce files
    accepts frames carrying the nonce  <-  results file -------------------------  one process per question; H writes
                                       <-   ServerReply "exit"                     its frame (only its own keys), the
                                                                                   nonce copied in by sendfile

Events are only hints for time limits and feedback (a cell can write any of them); results are accepted only in
frames that carry the nonce. The nonce is in the grader's memory only: the server hands its file, unread, to the
harvest process it checked, which has the kernel copy it into each frame (no job, no server holds it).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import ClassVar

# taken at import, before any student code runs in the job: a cell that replaces json.dumps cannot garble events
_DUMPS = json.dumps

# ------------------------------------------------------------------------------------------------ limits


def _limit(default, help: str, flag: str | None = None):
    """A field of ``Limits``: its default, and the help of its command-line flag (``--`` and the field's name
    with dashes, unless ``flag`` names another). ``coursekit grade`` makes its flags from these (``cli.py``)."""
    return field(default=default, metadata={"help": help, "flag": flag})


@dataclass(frozen=True)
class Limits:
    """What one submission may use. Times in seconds, sizes in MiB (KiB where the name says so).

    Declared once: each field is also a flag of ``coursekit grade`` and ``coursekit gradescope-run`` with the
    help given here (see ``flags()``), and every timeout and size cap the grader, the warm server or the job
    applies is one of these fields or derived from them here (properties); the machine's own waits, the same for
    every submission, are class constants here (no flag). Nowhere else."""
    cell_timeout: float = _limit(60.0, "seconds per notebook cell")
    submission_timeout: float = _limit(300.0, "seconds per submission, every cell together, every attempt "
                                       "(the harvest has its own)", flag="--timeout")
    harvest_timeout: float = _limit(60.0, "seconds for the grader's calls of one question's functions (each "
                                    "question is harvested in a process of its own, killed after this)")
    memory_mb: int = _limit(3072, "resident memory of all of a submission's processes, MiB; also RLIMIT_DATA "
                            "(in a container with less memory the default is less)")
    max_processes: int = _limit(64, "processes and threads of a submission (of its uid, or its user namespace "
                                "without root)")
    max_file_mb: int = _limit(64, "largest file a submission may write, MiB")
    max_disk_mb: int = _limit(512, "all the files in a submission's folder together, MiB")
    max_output_kb: int = _limit(64, "output kept for the feedback (head and tail), KiB")
    max_output_total_mb: int = _limit(16, "output of a submission's cells, MiB: a cell that prints more fails")
    max_restarts: int = _limit(4, "fresh processes after a cell that killed its process")
    max_notebook_mb: int = _limit(16, "a submitted notebook's code, MiB (outputs and attachments dropped)")
    max_handin_mb: int = _limit(256, "a handed-in file read from the submissions folder, outputs included, MiB")
    max_sniff_mb: int = _limit(64, "a file under another name read to see whether it is a notebook, MiB")
    max_folder_entries: int = _limit(2000, "entries looked at in one student's folder, all depths")
    max_folder_depth: int = _limit(6, "folders below a student's folder looked into")
    max_candidates: int = _limit(20, "notebooks in one student's folder read to choose the one to grade")
    max_results_mb: int = _limit(64, "the values one question's harvest sends back, MiB")
    max_meta_kb: int = _limit(256, "the harvest's description (JSON) of one question, KiB")

    # The machine's own waits and sizes, the same for every submission (no flag: none of them bounds what a
    # submission may use; each is far above what it takes on a busy machine, so only a stuck machine reaches it).
    # the warm server's own /dev/shm and /tmp (no job writes there: each job gets its own, ``shm_mb``, ``tmp_mb``)
    SERVER_SHM_MB: ClassVar[int] = 16
    SERVER_TMP_MB: ClassVar[int] = 64
    # the warm server's start: torch, d2l, IPython and the data set imported and loaded once (seconds when quiet,
    # minutes on a loaded machine)
    SERVER_START_TIMEOUT: ClassVar[float] = 600.0
    # after its stdin is closed, the warm server's own exit before it is killed
    SERVER_EXIT_TIMEOUT: ClassVar[float] = 5.0
    # the server's report that it forked a job (a fork and its namespaces: milliseconds)
    JOB_START_TIMEOUT: ClassVar[float] = 30.0
    # a throw-away bwrap or unshare() that finds which isolation this machine allows (well under a second)
    ISOLATION_PROBE_TIMEOUT: ClassVar[float] = 60.0
    # SIGKILLed processes (a job's, a sandbox uid's) reported gone, or the uid is not used again
    KILL_TIMEOUT: ClassVar[float] = 10.0
    # before the server hands the harvest its channel: the job's stopped threads and killed processes settled
    # (milliseconds; on a stuck machine the channel is handed over after this anyway, the job still stopped)
    HARVEST_GRANT_SETTLE_TIMEOUT: ClassVar[float] = 2.0
    # a job folder without its grader's lock (a grader older than the lock, or one between making the folder and
    # locking it) is left alone this long before the next grader's start removes it
    UNLOCKED_SPOOL_AGE_S: ClassVar[float] = 3600.0
    # memory of the grader and the warm server beside the jobs (README, "Gradescope, measured"): in a container
    # with less than ``memory_mb`` and this, the jobs get the container's limit less this (``default_memory_mb``)
    GRADER_RESERVE_MB: ClassVar[int] = 1024
    # ... but never less than this: a container's odd limit never leaves the jobs nothing
    MIN_MEMORY_MB: ClassVar[int] = 256
    # a cell's or the harvest's error (a traceback's head and where it happened), as the job sends it and the
    # grader keeps it for the feedback
    ERROR_TEXT_CHARS: ClassVar[int] = 1500
    # an error's text in the harvest's description of one key: shorter, a question may have dozens of keys (the
    # description as a whole is capped by ``max_meta_kb``)
    HARVEST_ERROR_CHARS: ClassVar[int] = 600
    # the results file holds one frame per question: the grader reads back a file of this many frames at most
    MAX_QUESTIONS: ClassVar[int] = 16
    # a frame's header (magic, nonce, question, sizes: under 300 bytes), counted generously
    FRAME_HEADER_BYTES: ClassVar[int] = 4096

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"Limits.{f.name} must be a number, got {value!r}")
            if f.name == "max_restarts":
                if value < 0:
                    raise ValueError(f"Limits.max_restarts must be >= 0, got {value!r}")
            elif not value > 0:
                raise ValueError(f"Limits.{f.name} must be positive, got {value!r}")

    @staticmethod
    def flags() -> list[tuple[str, str, type, object, str]]:
        """``(flag, field name, type, default, help)`` of every limit: what the command line offers."""
        return [(f.metadata["flag"] or "--" + f.name.replace("_", "-"), f.name, type(f.default), f.default,
                 f.metadata["help"]) for f in fields(Limits)]

    @classmethod
    def from_times(cls, cell_timeout: float, submission_timeout: float, memory_mb: int | None = None) -> "Limits":
        """The limits for a cell's and a submission's time (what ``coursekit grade`` asks for), the rest default.
        The harvest keeps its default time: it may retrain with the student's code, whatever a cell may take."""
        extra = {} if memory_mb is None else {"memory_mb": memory_mb}
        return cls(cell_timeout=cell_timeout, submission_timeout=submission_timeout, **extra)

    @property
    def cell_grace(self) -> float:
        """After a cell's soft limit (an exception raised in it), time to unwind before the process is killed."""
        return min(5.0, max(1.0, self.cell_timeout / 2))

    @property
    def harvest_call_timeout(self) -> float:
        """One call of a student's function from the harvest (the lab may train with the student's code)."""
        return min(self.harvest_timeout / 2, max(self.cell_timeout, 10.0))

    @property
    def harvest_grant_timeout(self) -> float:
        """How long the harvest process waits for the server to hand it the results channel."""
        return self.harvest_timeout

    @property
    def harvest_grant_check(self) -> float:
        """How long the server re-checks a request for the results channel (the job's main thread may not be
        waiting for its harvest yet) before it refuses it."""
        return 5.0

    @property
    def harvest_stall_timeout(self) -> float:
        """The grader's own limit on the harvest: no question's frame for this long (the harvest process kills a
        question's process after ``harvest_timeout`` itself; this is for a harvest process that does not)."""
        return self.harvest_timeout + self.cell_grace + 5

    @property
    def job_start_grace(self) -> float:
        """Time a fresh job process may take to start (fork, namespaces, reading its job) on top of its cells."""
        return 10.0

    @property
    def kill_wait(self) -> float:
        """How long the grader waits for a killed job to be reported gone."""
        return self.KILL_TIMEOUT

    def replay_deadline(self, finished_cell_seconds: float) -> float:
        """The time of the attempt that runs again only the cells that had finished when the submission's time ran
        out (then the harvest): their measured time once more, half as much again and 5 s beside (a machine busier
        than during the first run; cells of milliseconds, whose measured time says little); never more than the
        submission's time."""
        return min(self.submission_timeout, 1.5 * finished_cell_seconds + 5.0)

    @property
    def max_question_results_bytes(self) -> int:
        """One question's values and description (``max_results_mb``, ``max_meta_kb``): the harvest process stops
        reading a question's process past this."""
        return (self.max_results_mb << 20) + (self.max_meta_kb << 10)

    @property
    def max_results_file_bytes(self) -> int:
        """The results file the grader reads back, a frame per question for up to ``MAX_QUESTIONS`` questions; a
        larger file is not read at all (no results: the harvest did not behave)."""
        return self.MAX_QUESTIONS * (self.max_question_results_bytes + self.FRAME_HEADER_BYTES)

    @property
    def harvest_max_elements(self) -> int:
        """The largest tensor the harvest sends back, in elements: two of them at 8 bytes an element (float64,
        int64) fit in one question's values (``max_results_mb``). A larger one is described (type, shape), not
        sent, so it costs its own key, not the question's other values."""
        return (self.max_results_mb << 20) // 16

    @property
    def shm_mb(self) -> int:
        """Size of the job's own /dev/shm (DataLoader workers pass batches through it; it is memory that no
        process's resident size shows, so it is kept small)."""
        return int(min(256, max(32, self.memory_mb // 8)))

    @property
    def tmp_mb(self) -> int:
        """Size of the job's own /tmp (``tempfile``'s folder)."""
        return int(min(self.max_disk_mb, 256))

    @property
    def max_files(self) -> int:
        """Files and folders a job may create in its folder."""
        return 20000

    def job_spec(self, cells: list, harvest: str, cells_deadline: float, skip: dict | None = None) -> "JobSpec":
        """The job for these limits: every time limit and size cap the job process applies comes from here."""
        return JobSpec(cells=list(cells), harvest=harvest, cell_timeout=self.cell_timeout,
                       cells_deadline=cells_deadline, harvest_call_timeout=self.harvest_call_timeout,
                       output_limit_bytes=self.max_output_total_mb << 20, memory_mb=self.memory_mb,
                       harvest_question_timeout=self.harvest_timeout, harvest_grant_timeout=self.harvest_grant_timeout,
                       max_results_bytes=self.max_question_results_bytes,
                       harvest_max_elements=self.harvest_max_elements,
                       harvest_error_chars=self.HARVEST_ERROR_CHARS, skip=dict(skip or {}))

    def rlimits(self, counted_apart: bool) -> dict:
        """The job's resource limits, applied in the forked process before it runs anything. ``counted_apart``:
        the job's tasks are counted apart from the grader's, under a uid of its own or (mode userns) in a user
        namespace of its own, so ``RLIMIT_NPROC`` bounds the job only (root ignores it)."""
        mb = 1 << 20
        # RLIMIT_AS would break a CUDA build of torch (it maps large virtual areas); DATA does not.
        out = {"RLIMIT_DATA": max(self.memory_mb, 1536) * mb,
               "RLIMIT_FSIZE": self.max_file_mb * mb,
               "RLIMIT_CORE": 0,
               "RLIMIT_CPU": int(self.submission_timeout + self.harvest_timeout) + 30}
        if counted_apart:
            out["RLIMIT_NPROC"] = self.max_processes
        return out


# ------------------------------------------------------------------------------------- the job (grader -> job)

JOB_FILE = "job.json"           # JobSpec, root-only; the job reads it before dropping its uid, then unlinks it
INPUTS_FILE = "inputs.npz"      # the hidden tests' inputs, root-only, read and unlinked the same way
OUTPUT_FILE = "output.txt"      # the notebook's stdout and stderr (root-owned; the job holds a descriptor)
EVENTS_FILE = "events.jsonl"    # Events, one JSON object a line (root-owned; the job holds a descriptor)
RESULTS_FILE = "results.bin"    # the harvest's frames, one per question (root-owned; opened by the server, handed
                                # to the harvest process only after the server checked it, never to the job's)
SERVER_EVENTS_FILE = "server.jsonl"   # what the server decided about the harvest (root-owned; the job never has it)
NONCE_FILE = "nonce"            # the grader's nonce (hex), root-only: the server opens and unlinks it unread and
                                # hands it to the checked harvest process, which copies it into each frame (sendfile)
WORK_DIR = "work"               # the job's own folder (its uid, 0700): cwd, HOME
DATA_LINK = "data"              # ../data seen from work/: the data set as torchvision (d2l) expects it


@dataclass
class JobSpec:
    """What a job process runs: the cells (already through IPython's input transformation in the job), the
    cells it must skip (they ended an earlier attempt), the harvest code, and its time limits."""
    cells: list                     # source of each code cell, as written in the notebook
    harvest: str                    # the harvest code (sets ``_ck_outcome = (arrays, meta)``)
    cell_timeout: float
    cells_deadline: float           # seconds after the job starts at which the remaining cells are skipped
    harvest_call_timeout: float
    output_limit_bytes: int
    memory_mb: int
    harvest_question_timeout: float         # one question's calls together (its own process, killed after)
    harvest_grant_timeout: float            # how long the harvest waits for the server's channel
    max_results_bytes: int                  # one question's values and description
    harvest_max_elements: int               # the largest tensor the harvest sends back
    harvest_error_chars: int                # an error's text in the harvest's description
    skip: dict = field(default_factory=dict)    # cell index -> why it is skipped

    def to_json(self) -> str:
        d = asdict(self)
        d["skip"] = {str(k): v for k, v in self.skip.items()}
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> "JobSpec":
        d = json.loads(text)
        d["skip"] = {int(k): str(v) for k, v in d.get("skip", {}).items()}
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


@dataclass
class ServerCommand:
    """One line on the warm server's stdin: fork a job in ``folder`` (as the server sees it)."""
    job_id: str
    folder: str
    uid: int | None
    rlimits: dict
    env: dict
    shm_mb: int
    tmp_mb: int
    hide: str = ""                              # a folder the job must not see (a tmpfs over it) ...
    keep: list = field(default_factory=list)    # ... except these folders inside it (bound back)
    keep_ro: list = field(default_factory=list)  # read-only folders under /tmp (Python, the venv...) bound back
    grant_check_s: float = Limits().harvest_grant_check   # how long the server re-checks a harvest request
                                                          # before refusing (runner sets its job's Limits')

    def to_line(self) -> bytes:
        return (json.dumps(asdict(self)) + "\n").encode()

    @classmethod
    def from_line(cls, line: bytes) -> "ServerCommand":
        return cls(**json.loads(line))


KILL_PREFIX = b"kill "      # a line "kill <job id>" on the server's stdin: SIGKILL that job (its namespace)


def kill_line(job_id: str) -> bytes:
    """The server's instruction to kill a job: it signals its own unreaped child, so never a recycled pid."""
    return KILL_PREFIX + job_id.encode() + b"\n"


def parse_kill_line(line: bytes) -> str | None:
    """The job id of a kill line, or None if ``line`` is not one."""
    return line[len(KILL_PREFIX):].decode(errors="replace").strip() if line.startswith(KILL_PREFIX) else None


@dataclass
class ServerReply:
    """One line on the warm server's stdout: ``ready`` (once), ``started`` (pid) and ``exit`` (code) per job."""
    kind: str
    job_id: str = ""
    pid: int | None = None
    code: int | None = None
    seconds: float = 0.0

    def to_line(self) -> bytes:
        return (json.dumps(asdict(self)) + "\n").encode()

    @classmethod
    def from_line(cls, line: bytes) -> "ServerReply | None":
        try:
            d = json.loads(line)
            return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})
        except (ValueError, TypeError):
            return None


# ------------------------------------------------------------------------------ events (job -> grader, untrusted)

READY, SKIP, START, END, CELLS_DONE, HARVEST_START, HARVEST_END = (
    "ready", "skip", "start", "end", "cells-done", "harvest-start", "harvest-end")


@dataclass
class Event:
    kind: str
    cell: int | None = None
    status: str = ""
    error: str | None = None
    seconds: float | None = None
    out: int | None = None          # bytes of output so far (at harvest-start)
    cpu: float | None = None        # CPU seconds of the job's process so far (at cells-done, harvest-end; profiling)

    def to_line(self) -> bytes:
        fields_set = {k: getattr(self, k) for k in ("kind", "cell", "status", "error", "seconds", "out", "cpu")}
        return (_DUMPS({k: v for k, v in fields_set.items() if v is not None})[:8000] + "\n").encode()

    @classmethod
    def parse(cls, line: str) -> "Event | None":
        """An event from a line the job wrote, or None for anything malformed (never raises)."""
        try:
            d = json.loads(line)
            ev = cls(kind=str(d["kind"]), cell=d.get("cell"), status=str(d.get("status", "")),
                     error=None if d.get("error") is None else str(d["error"]), seconds=d.get("seconds"),
                     out=d.get("out"), cpu=d.get("cpu"))
        except (ValueError, TypeError, KeyError, AttributeError):
            return None
        if ev.cell is not None and (type(ev.cell) is not int):
            return None
        if ev.seconds is not None and not isinstance(ev.seconds, (int, float)):
            ev.seconds = None
        if ev.out is not None and type(ev.out) is not int:
            ev.out = None
        if ev.cpu is not None and type(ev.cpu) not in (int, float):
            ev.cpu = None
        return ev


# ----------------------------------------------------------------------------- results (harvest -> grader)

RESULTS_MAGIC = b"COURSEKIT-RESULTS-1\n"
NONCE_BYTES = 32


def encode_results(nonce: bytes, npz: bytes, meta_json: bytes, question: str = "") -> bytes:
    """The frame the harvest writes: magic, the grader's nonce, the question it holds (one frame per question,
    appended in order), the sizes, the .npz bytes, the JSON bytes."""
    header = f"{question} {len(npz)} {len(meta_json)}\n".encode() if question else f"{len(npz)} {len(meta_json)}\n".encode()
    return RESULTS_MAGIC + nonce.hex().encode() + b"\n" + header + npz + meta_json


def _decode_one(data: bytes, start: int, nonce: bytes):
    """``(question, npz, json, end)`` for the frame at ``data[start:]``, or None if it is not a well-formed frame
    carrying ``nonce``."""
    if not data.startswith(RESULTS_MAGIC, start):
        return None
    pos = start + len(RESULTS_MAGIC)
    nonce_end = data.find(b"\n", pos, pos + 2 * NONCE_BYTES + 1)
    if nonce_end < 0 or data[pos:nonce_end] != nonce.hex().encode():
        return None
    header_end = data.find(b"\n", nonce_end + 1, nonce_end + 200)
    if header_end < 0:
        return None
    parts = data[nonce_end + 1:header_end].split()
    question = parts[0].decode("ascii", "replace") if len(parts) == 3 else ""
    try:
        n_npz, n_json = (int(x) for x in parts[-2:])
    except ValueError:
        return None
    body = header_end + 1
    if len(parts) not in (2, 3) or n_npz < 0 or n_json < 0 or body + n_npz + n_json > len(data):
        return None
    return question, data[body:body + n_npz], data[body + n_npz:body + n_npz + n_json], body + n_npz + n_json


def decode_results(frame: bytes, nonce: bytes) -> tuple[bytes, bytes] | None:
    """``(npz bytes, JSON bytes)`` if ``frame`` is exactly one well-formed frame carrying ``nonce``, else None."""
    one = _decode_one(frame, 0, nonce)
    if one is None or one[3] != len(frame):
        return None
    return one[1], one[2]


def decode_frames(data: bytes, nonce: bytes) -> tuple[list[tuple[str, bytes, bytes]], bool]:
    """Every frame carrying ``nonce`` in ``data`` (the harvest appends one per question): ``([(question, npz,
    JSON), ...], intact)``; ``intact`` is False if something else follows the last good frame (a frame cut off
    by a kill, or bytes that are not a frame), which is then ignored."""
    frames, pos = [], 0
    while pos < len(data):
        one = _decode_one(data, pos, nonce)
        if one is None:
            return frames, False
        frames.append(one[:3])
        pos = one[3]
    return frames, True
