"""Flags for the instructor: lines of a submission that reach for the grader's internals or the interpreter's
machinery.

The sandbox keeps a submission from other students and from the grader's files, and the grader computes the
points itself; but what the notebook's cells did in the job's process can still, in principle, shape the harvest,
which is forked from that process after the last cell with everything the cells left there (patched modules,
hooks; see the README's "Isolation guarantees and their limits"). Honest lab code never needs any of what is
flagged here, so a flag is a reason to read the notebook, not a verdict. (While the harvest calls the student's
functions, the warm server's audit hook refuses some of the same things at run time: those are the runtime flags
``runner`` adds.)

``scan_cells(sources)`` reads the code cells (after IPython's input transformation, as they run) with
:mod:`ast`, never running them, and returns ``[{"line": int | None, "code": str, "reason": str}, ...]``;
``line`` counts within the cell, and ``reason`` starts with the cell's number.
"""
from __future__ import annotations

import ast

__all__ = ["scan_cells"]

# modules whose attributes a submission must not replace (the harvest and the lab's tests use them)
GUARDED_MODULES = {"numpy", "json", "torch", "os", "sys", "io", "zipfile", "builtins", "pickle", "IPython",
                   "coursekit", "d2l", "signal", "types", "math", "random", "tempfile", "select"}
# modules that only interpreter-level tricks need
MACHINERY_MODULES = {
    "torch.overrides": "torch.overrides (function modes and overrides change what torch calls do)",
    "torch.utils._python_dispatch": "torch's dispatch modes (they change what torch calls do)",
    "gc": "the garbage collector's object lists (a way to reach the grader's objects)",
    "inspect": "stack frames (a way to reach the grader's objects)",
    "ctypes": "ctypes (raw memory and C calls)",
    "signal": "signal handling (the grader's time limits use signals)",
    "importlib": "the import machinery",
    "sys.monitoring": "the interpreter's monitoring hooks",
    "threading": None,      # legitimate (DataLoader); listed so that 'from threading import settrace' is seen
    "fcntl": "fcntl (file descriptors: the job's channels to the grader)",
    "socket": "sockets (the job's channel to the warm server is one)",
    "_socket": "sockets (the job's channel to the warm server is one)",
    "mmap": "mmap (raw memory)",
    "_thread": "_thread (threads below threading)",
    "multiprocessing.reduction": "passing file descriptors between processes",
    "traceback": "tracebacks and their frames (a way to reach the grader's objects)",
}
MACHINERY_NAMES = {
    "TorchFunctionMode": "a TorchFunctionMode (it changes what torch calls do)",
    "TorchDispatchMode": "a TorchDispatchMode (it changes what torch calls do)",
    "__torch_function__": "__torch_function__ (it changes what torch calls do)",
    "__torch_dispatch__": "__torch_dispatch__ (it changes what torch calls do)",
    "_DisableTorchFunction": "torch's switch that disables __torch_function__",
    "DisableTorchFunction": "torch's switch that disables __torch_function__",
    "DisableTorchFunctionSubclass": "torch's switch that disables __torch_function__",
    "settrace": "a trace function (sees and changes every frame)",
    "setprofile": "a profile function (sees every call)",
    "_getframe": "stack frames (a way to reach the grader's objects)",
    "get_objects": "the garbage collector's object lists",
    "get_referrers": "the garbage collector's object lists",
    "modules": None,            # only as sys.modules, below
    "__builtins__": "the builtins of the namespace",
    "__main__": "the __main__ module (the grading driver's)",
    "__subclasses__": "every subclass of a type (a way to reach the grader's objects)",
    "__globals__": "a function's globals (a way to reach the grader's objects)",
    "__code__": "a function's code object",
    # frames, by every route to them (a traceback, a generator, a coroutine): the harvest's objects are a frame away
    "tb_frame": "a traceback's frame (a way to reach the grader's objects)",
    "tb_next": "a traceback's frames (a way to reach the grader's objects)",
    "gi_frame": "a generator's frame (a way to reach the grader's objects)",
    "cr_frame": "a coroutine's frame (a way to reach the grader's objects)",
    "ag_frame": "an async generator's frame (a way to reach the grader's objects)",
    "f_back": "the calling frame (a way to reach the grader's objects)",
    "f_locals": "a frame's variables (a way to reach the grader's objects)",
    "f_globals": "a frame's globals (a way to reach the grader's objects)",
    "_current_frames": "every thread's frame",
    "currentframe": "stack frames (a way to reach the grader's objects)",
    "addaudithook": "an audit hook (sees the grader's events)",
    "FileIO": "io.FileIO (a file descriptor by number: the job's channels to the grader)",
}
# processes: the grader's harvest is a process the job's main thread forks and waits for after the last cell
PROCESS_CALLS = {"fork", "forkpty", "waitpid", "wait", "wait3", "wait4", "waitid", "pidfd_open", "register_at_fork",
                 "sendmsg", "recvmsg", "recvmsg_into", "socketpair", "fromfd"}
DESCRIPTOR_CALLS = {"write", "read", "pwrite", "pread", "dup", "dup2", "fdopen", "ftruncate", "lseek", "fstat",
                    "open", "readlink", "listdir", "scandir", "kill", "killpg", "setsid", "setpgid"}
JOB_STRINGS = ("/proc", "/dev/fd", "/spool", "/run/coursekit", "coursekit-spool", "job.json", "inputs.npz",
               "results.bin", "events.jsonl", "output.txt", "outputs.npz", "outputs.json", "hidden_tests",
               "/autograder")


def _transform(source: str) -> str:
    try:
        from IPython.core.inputtransformer2 import TransformerManager
        return TransformerManager().transform_cell(source)
    except Exception:       # noqa: BLE001 (what IPython cannot transform does not run either)
        return source


def _dotted(node) -> str | None:
    """'np.linalg.norm' for an attribute chain on a name, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    if isinstance(node, ast.Call):      # get_ipython().x, type(x).y: the call's own name
        inner = _dotted(node.func)
        if inner:
            parts.append(inner + "()")
            return ".".join(reversed(parts))
    return None


class _Scanner(ast.NodeVisitor):
    def __init__(self, aliases: dict):
        self.aliases = aliases      # local name -> module (kept from cell to cell, as the kernel keeps them)
        self.hits: list[tuple[int | None, str]] = []

    def flag(self, node, reason):
        self.hits.append((getattr(node, "lineno", None), reason))

    def module_of(self, dotted: str | None) -> str | None:
        if not dotted:
            return None
        head, _, rest = dotted.partition(".")
        base = self.aliases.get(head)
        if base is None:
            return None
        return f"{base}.{rest}" if rest else base

    def visit_Import(self, node):
        for a in node.names:
            self.aliases[(a.asname or a.name).split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
            self._check_module(node, a.name)
        self.generic_visit(node)

    def visit_ImportFrom(self, node):
        mod = node.module or ""
        self._check_module(node, mod)
        for a in node.names:
            full = f"{mod}.{a.name}" if mod else a.name
            self.aliases[a.asname or a.name] = full
            self._check_module(node, full)
            if a.name in MACHINERY_NAMES and MACHINERY_NAMES[a.name]:
                self.flag(node, f"imports {MACHINERY_NAMES[a.name]}")
        self.generic_visit(node)

    def _check_module(self, node, name):
        # what students import (coursekit.selfcheck, coursekit.banned_calls) is outside the grading package
        if name.startswith("coursekit.grading."):
            self.flag(node, f"imports {name} (the grader's own code)")
            return
        for mod, why in MACHINERY_MODULES.items():
            if why and (name == mod or name.startswith(mod + ".")):
                self.flag(node, f"imports {why}")
                return

    def _check_store(self, node, target):
        if isinstance(target, (ast.Tuple, ast.List)):
            for t in target.elts:
                self._check_store(node, t)
            return
        if isinstance(target, ast.Attribute):
            full = self.module_of(_dotted(target))
            if full and full.split(".")[0] in GUARDED_MODULES:
                self.flag(node, f"replaces {full} (patching a library the grader uses)")
            elif target.attr.startswith("__") and target.attr.endswith("__"):
                self.flag(node, f"replaces the special method {target.attr} of an object")
        elif isinstance(target, ast.Name) and (target.id.startswith("_ck") or target.id == "__builtins__"):
            self.flag(node, f"assigns {target.id} (a name of the grading code)")

    def visit_Assign(self, node):
        for t in node.targets:
            self._check_store(node, t)
        self.generic_visit(node)

    def visit_AugAssign(self, node):
        self._check_store(node, node.target)
        self.generic_visit(node)

    def visit_AnnAssign(self, node):
        self._check_store(node, node.target)
        self.generic_visit(node)

    def visit_Delete(self, node):
        for t in node.targets:
            self._check_store(node, t)
        self.generic_visit(node)

    def visit_Call(self, node):
        func = _dotted(node.func)
        full = self.module_of(func) or func or ""
        name = full.rsplit(".", 1)[-1]
        if name in ("setattr", "delattr") and full in ("setattr", "delattr") and node.args:
            target = self.module_of(_dotted(node.args[0]))
            if target and target.split(".")[0] in GUARDED_MODULES:
                self.flag(node, f"{name} on {target} (patching a library the grader uses)")
        elif full in ("exec", "eval", "compile", "__import__", "builtins.exec", "builtins.eval"):
            self.flag(node, f"runs code built at run time ({full}), which this scan cannot read")
        elif full.startswith("os.") and name in DESCRIPTOR_CALLS and name not in ("listdir", "scandir", "open") \
                and node.args and not isinstance(node.args[0], ast.Constant | ast.JoinedStr):
            self.flag(node, f"{full} on a file descriptor or process (the job's channels to the grader)")
        elif full == "open" and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, int):
            self.flag(node, "opens a file descriptor by number (the job's channels to the grader)")
        elif name in PROCESS_CALLS and (full.startswith(("os.", "socket.")) or isinstance(node.func, ast.Attribute)):
            self.flag(node, f"{full or name} (processes and sockets: the grader's harvest is a process the job "
                            "forks, and its channel a socket)")
        self.generic_visit(node)

    def visit_Attribute(self, node):
        why = MACHINERY_NAMES.get(node.attr)
        full = self.module_of(_dotted(node)) or ""
        if node.attr == "modules" and full == "sys.modules":
            self.flag(node, "sys.modules (the loaded modules, the grading driver's among them)")
        elif why:
            self.flag(node, f"uses {why}")
        elif full.startswith("torch.overrides") or full.startswith("torch._C._"):
            self.flag(node, f"uses {full} (torch's internals)")
        elif node.attr.startswith("_ck"):
            self.flag(node, f"uses {node.attr} (a name of the grading code)")
        self.generic_visit(node)

    def visit_Name(self, node):
        if node.id.startswith("_ck") or (node.id in MACHINERY_NAMES and MACHINERY_NAMES[node.id]
                                         and node.id.startswith("__") and isinstance(node.ctx, ast.Load)):
            self.flag(node, f"uses {node.id}" + (" (a name of the grading code)" if node.id.startswith("_ck")
                                                 else f" ({MACHINERY_NAMES[node.id]})"))
        self.generic_visit(node)

    def visit_FunctionDef(self, node):
        if node.name in ("__torch_function__", "__torch_dispatch__"):
            self.flag(node, f"defines {node.name} (it changes what torch calls do)")
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Constant(self, node):
        if isinstance(node.value, str) and MACHINERY_NAMES.get(node.value) and not node.value.startswith("__"):
            self.flag(node, f"names {node.value!r}: {MACHINERY_NAMES[node.value]}")      # getattr(tb, "tb_frame")
        if isinstance(node.value, str):
            for s in JOB_STRINGS:
                if s in node.value:
                    self.flag(node, f"names {s!r} (the job's own files or the system's process table)")
                    break


def scan_cells(sources) -> list[dict]:
    """The flags of a notebook's code cells (see the module's docstring), in cell and line order."""
    flags, seen = [], set()
    aliases = {"np": "numpy", "torch": "torch", "json": "json", "os": "os", "sys": "sys"}
    for number, source in enumerate(sources, start=1):
        if not isinstance(source, str) or not source.strip():
            continue
        code = _transform(source)
        try:
            tree = ast.parse(code)
        except (SyntaxError, ValueError):
            continue        # it does not run either: nothing it could reach
        scanner = _Scanner(aliases)
        scanner.visit(tree)
        lines, written = code.splitlines(), source.splitlines()
        if len(written) == len(lines):
            lines = written         # the line as the student wrote it (``%time f()``, not its translation)
        for line, reason in scanner.hits:
            key = (number, line, reason)
            if key in seen:
                continue
            seen.add(key)
            text = lines[line - 1].strip() if line and 0 < line <= len(lines) else ""
            flags.append({"line": line, "code": text[:300], "reason": f"cell {number}: {reason}"})
    return flags
