"""The generic half of the harvest: the code that calls the student's functions after the notebook's cells.

It runs in the harvest process, which the job's main thread forks after the last cell (so with the notebook's
objects), each question's calls in a process of its own forked from that one (``coursekit.grading.warm_server``).
This file is not imported there: :mod:`coursekit.grading.labspec` reads its source text and puts it at
the top of ``harvest_code``, followed by the lab's ``harvest_<question>`` functions and a call of
``_ck_harvest_main``. It runs in the notebook's namespace (like one more cell), so every name starts
with ``_ck_``, and it trusts nothing the student left behind:

* values are sent back only if their type is exactly ``torch.Tensor`` / ``nn.Parameter`` (no
  subclasses, so no ``__eq__`` tricks) of a real numeric dtype; they are converted with torch's own
  unbound methods and checked to be plain ``numpy.ndarray`` copies of the right shape;
* the arrays sent back are plain numeric ones only (read back with ``allow_pickle=False``), converted and
  saved with numpy's functions as they were before any cell ran (``_ck_refs``);
* the description (JSON) covers every key: the error text if the call raised (``error``), the type name,
  dtype, shape, device, finiteness, and why a tensor was not sent back (``problem``);
* each student call is wrapped in its own try/except, so one crash loses one key, not the harvest;
* its caps (the largest tensor sent back, an error's text) are the job's ``Limits`` (``JobSpec.harvest_max_elements``,
  ``harvest_error_chars``), which the harvest process puts in ``_ck_caps`` after the last cell; they are read
  once, before any of the student's code is called, and the grader's own cap on a question's values
  (``max_results_mb``) is applied outside the question's process whatever the student's code changes here.

The verdict is never computed here: the grader recomputes everything from the arrays.
"""


def _ck_error_text(exc, chars):
    try:
        text = f"{type(exc).__name__}: {exc}"
    except Exception:  # a student's exception whose __str__ raises
        text = "an exception whose message cannot be shown"
    return text[:chars]


def _ck_read_caps(namespace, sandboxed):
    """``(largest tensor in elements, characters of an error's text)``: in the sandbox the job's, which the
    harvest process put in ``_ck_caps`` (missing: an error, never a default of this file's own); run in process
    (the lab's own tests, no job), the default ``Limits``'."""
    if sandboxed:
        caps = namespace["_ck_caps"]
        return int(caps["max_elements"]), int(caps["error_chars"])
    from coursekit.grading.protocol import Limits
    return Limits().harvest_max_elements, Limits.HARVEST_ERROR_CHARS


class _CkRecorder:
    """Collects arrays and their descriptions; ``call``/``call_on_inputs``/``record``/``note`` are what
    harvesters use."""

    def __init__(self, namespace, refs=None, caps=None):
        import types

        import numpy
        import torch
        self.torch = torch
        # numpy's functions and json.dumps as the job took them before any cell ran (``_ck_refs``): a notebook
        # that patched numpy.array or json.dumps changes nothing here. Without them (in-process tests): numpy's.
        self.np = numpy if refs is None else types.SimpleNamespace(
            array=refs.np_array, ndarray=refs.np_ndarray, isfinite=refs.np_isfinite, isnan=refs.np_isnan)
        self.from_numpy = torch.from_numpy if refs is None else refs.torch_from_numpy
        import json
        self.json_dumps = json.dumps if refs is None else refs.json_dumps
        # torch's C base class cannot be monkeypatched from Python (immutable type): its methods and
        # descriptors read a tensor's real data whatever the notebook did to torch.Tensor.
        self.base = torch._C.TensorBase
        self.tensor_types = (type(torch._C._VariableFunctions.zeros(1)), torch.nn.Parameter)
        self.ns = namespace
        self.max_elements, self.error_chars = _ck_read_caps(namespace, False) if caps is None else caps
        self.arrays, self.meta = {}, {}
        self.numeric = {torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.uint8, torch.int8,
                        torch.int16, torch.int32, torch.int64, torch.bool}

    def note(self, key, value):
        """Store a JSON-able value (numbers, strings, lists, dicts) under ``key`` in outputs.json."""
        try:
            self.json_dumps(value)
        except Exception as exc:
            value = {"error": "not JSON-able: " + _ck_error_text(exc, self.error_chars)}
        self.meta[key] = value

    def record(self, key, value):
        """Send ``value`` back under ``key``: a tensor becomes an array; a tuple/list, one key per item."""
        torch, np = self.torch, self.np
        kind = type(value)
        if kind is tuple or kind is list:
            self.meta[key] = {"type": kind.__name__, "len": len(value)}
            if len(value) <= 8:
                for i, item in enumerate(value):
                    self.record(f"{key}.{i}", item)
            return
        info = {"type": getattr(kind, "__qualname__", "?")[:100]}
        self.meta[key] = info
        exact_tensor = kind is self.tensor_types[0]
        parameter = kind is self.tensor_types[1] and \
            getattr(kind, "__torch_function__", None) is torch._C._disabled_torch_function_impl
        if not (exact_tensor or parameter):
            return  # the grader says "returned a <type>, expected a torch.Tensor"
        base = self.base
        dtype = base.dtype.__get__(value)
        shape = tuple(base.size(value))
        info.update(dtype=str(dtype), shape=list(shape), device=str(base.device.__get__(value)),
                    requires_grad=bool(base.requires_grad.__get__(value)))
        if dtype not in self.numeric:
            info["problem"] = f"dtype {dtype} is not a real numeric dtype"
            return
        numel = 1
        for n in shape:
            numel *= n
        if numel > self.max_elements:
            info["problem"] = f"too large to send back ({numel} elements)"
            return
        t = base.cpu(base.detach(value))
        if dtype in (torch.float16, torch.bfloat16):
            t = base.float(t)
        array = np.array(base.numpy(t), copy=True)
        if type(array) is not np.ndarray or array.dtype.kind not in "biuf" or array.shape != shape:
            info["problem"] = "could not be converted to a plain numeric array"
            return
        if array.dtype.kind == "f":
            info["finite"] = bool(np.isfinite(array).all())
            info["nan"] = int(np.isnan(array).sum())
        self.arrays[key] = array

    def run(self, key, fn, *args, watch=None, **kwargs):
        """Call ``fn`` (a callable, or the name of one in the notebook); return ``(ok, value)``.

        On failure (not defined, or it raised) the error is stored under ``key``. ``watch``: a context
        manager entered around the call only (e.g. :func:`_ck_torch_calls`).
        """
        if isinstance(fn, str):
            name = fn
            fn = self.ns.get(name)
            if fn is None or not callable(fn):
                self.meta[key] = {"error": f"NameError: '{name}' is not defined in the notebook"}
                return False, None
        try:
            if watch is None:
                out = fn(*args, **kwargs)
            else:
                with watch:
                    out = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - SystemExit and friends from student code too
            if isinstance(exc, KeyboardInterrupt):
                raise
            self.meta[key] = {"error": _ck_error_text(exc, self.error_chars)}
            return False, None
        return True, out

    def call(self, key, fn, *args, watch=None, **kwargs):
        """:meth:`run`, then :meth:`record` what came back under ``key``; returns the value or None."""
        ok, out = self.run(key, fn, *args, watch=watch, **kwargs)
        if ok:
            self.record(key, out)
        return out

    def call_on_inputs(self, inputs, question, names):
        """Call each function in ``names`` on every input ``<question>.x_*`` (as a tensor), recording each result
        under ``<question>.<name>.x_*`` and, under ``<question>.<name>.torch_calls``, the torch functions it used."""
        prefix = question + ".x_"
        for name in names:
            trace = _ck_torch_calls()
            for key in sorted(inputs):
                if key.startswith(prefix):
                    x = self.from_numpy(inputs[key].copy())
                    self.call(f"{question}.{name}.{key[len(question) + 1:]}", name, x, watch=trace)
            self.note(f"{question}.{name}.torch_calls", sorted(trace.names))


def _ck_banned_calls():
    """:mod:`coursekit.banned_calls` (the rule for "torch's activations are not allowed"), run afresh
    from the source text that labspec puts in ``_CK_BANNED_CALLS_SOURCE``: a module the notebook replaced or
    patched in ``sys.modules`` is never used."""
    import types
    module = types.ModuleType("_ck_banned_calls")
    exec(compile(_CK_BANNED_CALLS_SOURCE, "coursekit/banned_calls.py", "exec"), module.__dict__)
    return module


def _ck_torch_calls():
    """A context manager that records the torch functions and the ATen operators called inside it (``names``)."""
    return _ck_banned_calls().CallTrace()


class _CkSwap:
    """Temporarily replace names in the notebook (e.g. ``relu``) by reference versions.

    A question is graded on its own: q4's forward pass uses the reference ``relu`` while it is tested,
    so an unfinished q1 does not cost q4's points.
    """

    def __init__(self, namespace, replacements):
        self.ns, self.replacements, self.saved = namespace, replacements, {}

    def __enter__(self):
        missing = object()
        for name, value in self.replacements.items():
            self.saved[name] = self.ns.get(name, missing)
            self.ns[name] = value
        self.missing = missing
        return self

    def __exit__(self, *exc):
        for name, value in self.saved.items():
            if value is self.missing:
                self.ns.pop(name, None)
            else:
                self.ns[name] = value
        return False


def _ck_harvest_main(harvesters, namespace):
    """Run each ``(question, harvester)`` on the inputs; return ``(arrays, meta)`` for the job to send back.

    In the sandbox the harvest process provides ``_ck_inputs`` (the hidden tests' inputs, which no cell could
    read), ``_ck_refs`` and ``_ck_per_question``, which runs each question in a process of its own and writes
    its frame (see ``coursekit.grading.warm_server``). Run in process without them (the lab's own tests), it reads
    ``inputs.npz`` and writes ``outputs.npz`` and ``outputs.json`` in the working folder instead."""
    per_question = namespace.get("_ck_per_question")
    if per_question is not None:
        # the sandbox: each question in a process of its own (``_ck_per_question`` runs the calls there and
        # sends back only that question's values), so one question's code cannot touch another's values or time
        inputs, refs, caps = namespace["_ck_inputs"], namespace.get("_ck_refs"), _ck_read_caps(namespace, True)

        def question_run(question, harvester):
            def run():
                recorder = _CkRecorder(namespace, refs, caps)
                try:
                    harvester(recorder, inputs)
                except BaseException as exc:  # noqa: BLE001
                    recorder.meta[f"{question}.harvest_error"] = {"error": _ck_error_text(exc, caps[1])}
                return recorder.arrays, recorder.meta
            return run

        return per_question([(question, question_run(question, harvester)) for question, harvester in harvesters])
    import numpy as np
    inputs = namespace.get("_ck_inputs")
    in_process = inputs is None
    if in_process:
        with np.load("inputs.npz", allow_pickle=False) as f:
            inputs = {k: np.array(f[k], copy=True) for k in f.files}
    recorder = _CkRecorder(namespace, namespace.get("_ck_refs"))
    for question, harvester in harvesters:
        try:
            harvester(recorder, inputs)
        except BaseException as exc:  # noqa: BLE001
            if isinstance(exc, KeyboardInterrupt):
                raise
            recorder.meta[f"{question}.harvest_error"] = {"error": _ck_error_text(exc, recorder.error_chars)}
    if in_process:
        import json
        np.savez("outputs.npz", **recorder.arrays)
        with open("outputs.json", "w", encoding="utf-8") as f:
            json.dump(recorder.meta, f, sort_keys=True)
    return recorder.arrays, recorder.meta
