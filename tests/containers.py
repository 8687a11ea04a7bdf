"""Debian root file systems and podman containers for the tests that need a clean machine.

No registry is reachable here, so every image starts from ``debootstrap`` (Debian's own mirror, through the
proxy). The API, in the order a test uses it:

* ``require_podman()``: skip when podman, runc or debootstrap is missing or we are not root; in CI
  (COURSEKIT_REQUIRE_ALL=1) fail instead.
* ``debian_rootfs(suite, packages=())``: a ``debootstrap --variant=minbase`` tree with Python (bookworm: 3.11,
  trixie: 3.13), venv, pip, ca-certificates, git and make, plus ``packages``. Cached under
  ``$COURSEKIT_IMAGE_CACHE`` (default /var/tmp/coursekit-images), keyed by suite + package list, built once even
  when several tests or processes ask at the same time (flock, then an atomic rename). Treat it as read-only;
  copy it (``cp -a``) before changing it, e.g. for a chroot.
* ``base_image(suite, packages=())``: the same tree imported into podman as
  ``localhost/coursekit-base:<suite>-<key>`` (labels coursekit.suite / coursekit.python).
* ``podman_run(image, argv, ...)``: run a command in a fresh container with what Docker (and so Gradescope and
  Kubernetes) gives by default: Docker's 14 default capabilities for root, none for other users, the default
  seccomp profile, no --privileged. ``pip=True`` lets pip in the container reach PyPI through the proxy (host
  CA bundle), share a pip cache kept on the host, and, for Python 3.11 images, take torch from this machine's
  local wheels as the host's pip does.
* ``podman_build(context, dockerfile, tag, build_args)``: ``podman build`` the same way (base image local only).

Every podman call names ``--runtime runc`` (crun fails here), ``--network=host`` (no netavark) and ulimits no
higher than ours (runc may not raise them: "error setting rlimit ... operation not permitted").
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import resource
import shutil
import subprocess
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path

from conftest import skip_or_fail

IMAGE_CACHE = Path(os.environ.get("COURSEKIT_IMAGE_CACHE", "/var/tmp/coursekit-images"))
DEBIAN_MIRROR = os.environ.get("COURSEKIT_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SUITE_PYTHON = {"bookworm": "3.11", "trixie": "3.13"}
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates", "git", "make")
# The host's CA bundle holds the proxy's CA; a container's own bundle does not.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# This machine's pip takes torch/torchvision from these (cp311 only); mounted read-only for Python 3.11 images.
LOCAL_WHEEL_DIRS = (Path("/opt/wheels"), Path("/opt/pypi"), Path("/opt/pypi-more"))
LOCAL_PIP_CONSTRAINTS = Path("/etc/xdg/pip/constraints.txt")
# Docker's default set (moby's oci/caps/defaults.go); podman's own default lacks the last three.
DOCKER_DEFAULT_CAPS = ("CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "SETGID", "SETUID", "SETFCAP", "SETPCAP",
                       "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "NET_RAW", "MKNOD", "AUDIT_WRITE")
PODMAN_EXTRA_CAPS = ("NET_RAW", "MKNOD", "AUDIT_WRITE")
# podman lowers its own RLIMIT_NPROC to this at start (seen here: podman 4.3.1), so runc can set no more.
PODMAN_NPROC_CEILING = 32768
PIP_CACHE_IN_CONTAINER = "/var/cache/coursekit-pip"
# The proxy strips caching headers (no Cache-Control, no ETag), so pip's HTTP cache keeps no download; a
# wheelhouse filled by `pip download` (which skips files already there) is what saves the second download.
WHEELHOUSE_IN_CONTAINER = PIP_CACHE_IN_CONTAINER + "/wheelhouse"


class ContainerError(subprocess.CalledProcessError):
    """A podman command failed; ``str()`` includes the command's stderr (the container's, for a run)."""

    def __str__(self) -> str:
        tail = (self.stderr or "")[-4000:]
        return f"{super().__str__()}\n--- stderr ---\n{tail}"


# ---------------------------------------------------------------------------------------------- availability

def podman_missing() -> str | None:
    """Why podman containers cannot run here, or None when they can."""
    for tool, package in (("podman", "podman"), ("runc", "runc"), ("debootstrap", "debootstrap")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install {package})"
    if os.geteuid() != 0:
        return "the container tests run rootful podman and debootstrap, which need root"
    return None


def podman_available() -> bool:
    return podman_missing() is None


def require_podman() -> None:
    """Skip the calling test when containers cannot run here; fail under COURSEKIT_REQUIRE_ALL=1."""
    reason = podman_missing()
    if reason is not None:
        skip_or_fail(reason)


# ------------------------------------------------------------------------------------------- root file systems

@contextmanager
def _locked(name: str):
    """An exclusive lock shared by every process using the cache (tests, helpers, xdist workers)."""
    IMAGE_CACHE.mkdir(parents=True, exist_ok=True)
    with open(IMAGE_CACHE / f"{name}.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _packages(suite: str, packages) -> tuple[str, ...]:
    if suite not in SUITE_PYTHON:
        raise ValueError(f"unknown Debian suite {suite!r}; known: {', '.join(SUITE_PYTHON)}")
    if isinstance(packages, str):
        raise TypeError("packages is a sequence of Debian package names, not one string")
    return tuple(sorted(set(BASE_PACKAGES) | set(packages)))


def rootfs_key(suite: str, packages=()) -> str:
    """The cache key of a root file system: suite, package list and mirror."""
    text = json.dumps([suite, _packages(suite, packages), DEBIAN_MIRROR])
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def debian_rootfs(suite: str, packages=(), *, timeout: float = 1800) -> Path:
    """A cached ``debootstrap --variant=minbase`` tree of ``suite`` with BASE_PACKAGES + ``packages``.

    Built in a temp folder beside its final place and renamed when complete, so a tree that exists is whole.
    Took 50 s for bookworm on a quiet machine here, 3-5 min for trixie at load 6-19 (mostly waiting).
    """
    all_packages = _packages(suite, packages)
    key = rootfs_key(suite, packages)
    target = IMAGE_CACHE / f"rootfs-{suite}-{key}"
    if target.is_dir():
        return target
    with _locked(f"rootfs-{suite}-{key}"):
        if target.is_dir():  # another process built it while we waited
            return target
        for stale in IMAGE_CACHE.glob(f".building-{suite}-{key}-*"):  # left by a build that was killed
            shutil.rmtree(stale, ignore_errors=True)
        building = Path(tempfile.mkdtemp(prefix=f".building-{suite}-{key}-", dir=IMAGE_CACHE))
        building.chmod(0o755)  # it becomes the container's "/": mkdtemp's 0700 would lock out other users
        try:
            result = subprocess.run(
                ["debootstrap", "--variant=minbase", "--include=" + ",".join(all_packages), suite,
                 str(building), DEBIAN_MIRROR],
                capture_output=True, text=True, timeout=timeout)
            if result.returncode != 0:
                log = building / "debootstrap" / "debootstrap.log"
                details = log.read_text(errors="replace")[-3000:] if log.exists() else ""
                raise RuntimeError(f"debootstrap {suite} failed (status {result.returncode}):\n"
                                   f"{result.stderr[-3000:]}\n{details}")
            (building / "etc" / "coursekit-rootfs.json").write_text(
                json.dumps({"suite": suite, "packages": all_packages, "mirror": DEBIAN_MIRROR}))
            building.rename(target)
        finally:
            if building.exists():
                shutil.rmtree(building, ignore_errors=True)
    return target


# ---------------------------------------------------------------------------------------------------- images

def _podman(args, *, timeout: float = 600, input: bytes | None = None, check: bool = True, text: bool = True):
    result = subprocess.run(["podman", *args], capture_output=True, input=input, timeout=timeout, text=text)
    if check and result.returncode != 0:
        raise ContainerError(result.returncode, ["podman", *args], result.stdout, result.stderr)
    return result


def image_exists(image: str) -> bool:
    return _podman(["image", "exists", image], check=False).returncode == 0


def image_labels(image: str) -> dict:
    out = _podman(["image", "inspect", "--format", "{{json .Labels}}", image]).stdout.strip()
    return json.loads(out) if out and out != "null" else {}


def base_image(suite: str, packages=()) -> str:
    """The podman image of ``debian_rootfs(suite, packages)``; imported once, then reused by tag."""
    key = rootfs_key(suite, packages)
    tag = f"localhost/coursekit-base:{suite}-{key}"
    if image_exists(tag):
        return tag
    rootfs = debian_rootfs(suite, packages)
    with _locked(f"image-{suite}-{key}"):
        if image_exists(tag):
            return tag
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        try:
            result = subprocess.run(
                ["podman", "import",
                 "--change", f"LABEL coursekit.suite={suite}",
                 "--change", f"LABEL coursekit.python={SUITE_PYTHON[suite]}",
                 "--change", "ENV LANG=C.UTF-8",
                 "--change", 'CMD ["/bin/bash"]',
                 "-", tag],
                stdin=tar.stdout, capture_output=True, text=True, timeout=600)
        finally:
            tar.stdout.close()
            tar_status = tar.wait()
        if result.returncode != 0 or tar_status != 0:
            raise ContainerError(result.returncode or tar_status, ["podman", "import", tag], result.stdout,
                                 result.stderr)
    return tag


# ----------------------------------------------------------------------------------------------- run options

def ulimit_args() -> list[str]:
    """--ulimit flags at (not above) the host's hard limits: runc cannot raise them, podman's defaults do."""
    _, nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
    _, nproc = resource.getrlimit(resource.RLIMIT_NPROC)
    nproc = PODMAN_NPROC_CEILING if nproc == resource.RLIM_INFINITY else min(nproc, PODMAN_NPROC_CEILING)
    nofile = 1048576 if nofile == resource.RLIM_INFINITY else nofile
    return ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}"]


def _uid_of(user) -> int:
    if user is None:
        return 0
    uid = str(user).split(":")[0]
    if not uid.isdigit():
        raise ValueError(f"give the container user as a number (uid or uid:gid), not {user!r}: "
                         "the host's pip cache folder is made for that uid")
    return int(uid)


def _pip_conf(local_wheels: bool) -> Path:
    """A pip.conf for /etc/pip.conf in a container: host CA bundle, shared cache, maybe the local wheels."""
    lines = ["[global]", f"cert = {HOST_CA_BUNDLE}", f"cache-dir = {PIP_CACHE_IN_CONTAINER}",
             "disable-pip-version-check = true", "default-timeout = 180"]
    if local_wheels:
        present = [folder for folder in LOCAL_WHEEL_DIRS if folder.is_dir()]
        indexes = [f"file://{folder}/simple" for folder in present if (folder / "simple").is_dir()]
        links = [str(folder) for folder in present if not (folder / "simple").is_dir()]
        if links:
            lines.append("find-links = " + " ".join(links))
        if indexes:
            lines.append("extra-index-url = " + " ".join(indexes))
        if LOCAL_PIP_CONSTRAINTS.is_file():
            lines.append(f"constraint = {LOCAL_PIP_CONSTRAINTS}")
    text = "\n".join(lines) + "\n"
    path = IMAGE_CACHE / "pip-conf" / f"pip-{hashlib.sha1(text.encode()).hexdigest()[:10]}.conf"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{uuid.uuid4().hex}")
        temporary.write_text(text)
        temporary.chmod(0o644)
        temporary.rename(path)
    return path


def pip_options(uid: int = 0, *, local_wheels: bool = False) -> tuple[list[tuple[str, str, str]], dict]:
    """(mounts, env) that let pip in a container use PyPI through the proxy and a cache kept on the host.

    The cache is one folder per container uid (pip-cache/<uid>, owned by it), with a wheelhouse in it
    ($COURSEKIT_WHEELHOUSE in the container): install with ``cached_pip_install`` so a second run does not
    download again (pip's own HTTP cache keeps nothing behind this proxy). ``local_wheels`` (Python 3.11 only:
    the wheels are cp311) also mounts this machine's local package folders and torch constraint read-only, so
    pip takes torch 2.14.1 from disk as on the host.
    """
    cache = IMAGE_CACHE / "pip-cache" / str(uid)
    (cache / "wheelhouse").mkdir(parents=True, exist_ok=True)
    for folder in (cache, cache / "wheelhouse"):
        os.chown(folder, uid, uid)
    mounts = [(str(HOST_CA_BUNDLE), str(HOST_CA_BUNDLE), "ro"),
              (str(_pip_conf(local_wheels)), "/etc/pip.conf", "ro"),
              (str(cache), PIP_CACHE_IN_CONTAINER, "rw")]
    if local_wheels:
        mounts += [(str(folder), str(folder), "ro") for folder in LOCAL_WHEEL_DIRS if folder.is_dir()]
        if LOCAL_PIP_CONSTRAINTS.is_file():
            mounts.append((str(LOCAL_PIP_CONSTRAINTS), str(LOCAL_PIP_CONSTRAINTS), "ro"))
    env = {"PIP_CERT": str(HOST_CA_BUNDLE), "SSL_CERT_FILE": str(HOST_CA_BUNDLE),
           "REQUESTS_CA_BUNDLE": str(HOST_CA_BUNDLE), "PIP_CACHE_DIR": PIP_CACHE_IN_CONTAINER,
           "COURSEKIT_WHEELHOUSE": WHEELHOUSE_IN_CONTAINER}
    return mounts, env


def cached_pip_install(pip: str, args: str) -> str:
    """A shell line for a ``pip=True`` container: ``pip download`` ``args`` into the host-kept wheelhouse
    (files already there are not fetched again), then install them from it alone. ``args``: requirement
    arguments as for pip install, e.g. "-r requirements.txt" or "iniconfig==2.0.0". Needs wheels: an
    sdist-only package would have to be built without an index."""
    return (f'{pip} download --dest "$COURSEKIT_WHEELHOUSE" {args} && '
            f'{pip} install --no-index --find-links "$COURSEKIT_WHEELHOUSE" {args}')


def _mount_args(mounts) -> list[str]:
    args = []
    for mount in mounts:
        if isinstance(mount, str):
            args += ["-v", mount]
            continue
        host, inside, *mode = mount
        if not Path(host).exists():
            raise FileNotFoundError(f"mount source does not exist: {host}")
        args += ["-v", f"{host}:{inside}" + (f":{mode[0]}" if mode else "")]
    return args


# ---------------------------------------------------------------------------------------------- run and build

def podman_run(image: str, argv, *, memory: str | None = None, user=None, mounts=(), env: dict | None = None,
               workdir: str | None = None, timeout: float = 900, network: str = "host", pip: bool = False,
               local_wheels: bool | None = None, check: bool = True, name: str | None = None,
               extra=()) -> subprocess.CompletedProcess:
    """Run ``argv`` in a fresh container of ``image`` (removed afterwards); returns the CompletedProcess (text).

    Like ``docker run``'s defaults: root gets Docker's 14 default capabilities (no SYS_ADMIN: no mount, no
    unshare), another ``user`` ("uid" or "uid:gid") none; the default seccomp profile; never --privileged.
    ``memory`` ("2g") is a hard limit without swap: past it the kernel kills the process (status 137).
    ``mounts``: (host, container[, "ro"]) tuples or podman -v strings. ``pip=True`` adds ``pip_options``;
    ``local_wheels`` defaults to whether the image's Python is 3.11 (label coursekit.python).
    With ``check`` a non-zero status raises ContainerError carrying stdout and stderr. On timeout the container
    is removed and subprocess.TimeoutExpired raised. ``name``: the container's name (default: a random one).
    """
    if isinstance(argv, str):
        raise TypeError("argv is a list of arguments; for a shell line pass ['sh', '-c', line]")
    name = name or f"coursekit-test-{uuid.uuid4().hex[:12]}"
    args = ["run", "--rm", "--name", name, "--runtime", "runc", f"--network={network}", *ulimit_args()]
    uid = _uid_of(user)
    if user is not None:
        args += ["--user", str(user)]
    if uid == 0:
        # podman's default set is Docker's minus these three; a non-root user gets no capability either way
        # (podman would make added ones effective for a non-root user, Docker does not).
        args += ["--cap-add", ",".join(PODMAN_EXTRA_CAPS)]
    if memory is not None:
        args += ["--memory", memory, "--memory-swap", memory]
    all_env = {}
    all_mounts = list(mounts)
    if pip:
        if local_wheels is None:
            local_wheels = image_labels(image).get("coursekit.python") == "3.11"
        pip_mounts, pip_env = pip_options(uid, local_wheels=local_wheels)
        all_mounts = pip_mounts + all_mounts
        all_env.update(pip_env)
    all_env.update(env or {})
    for key, value in all_env.items():
        args += ["-e", f"{key}={value}"]
    args += _mount_args(all_mounts)
    if workdir is not None:
        args += ["--workdir", workdir]
    args += [*extra, image, *argv]
    try:
        return _podman(args, timeout=timeout, check=check)
    except subprocess.TimeoutExpired:
        _podman(["rm", "--force", "--time", "0", name], check=False, timeout=120)
        raise


def podman_build(context, dockerfile, tag: str, build_args: dict | None = None, *, pip: bool = True,
                 local_wheels: bool = False, memory: str | None = None, timeout: float = 1800,
                 extra=()) -> subprocess.CompletedProcess:
    """``podman build`` of ``dockerfile`` in ``context`` as ``tag``; the base image must already be local
    (``--pull=never``: no registry here), e.g. ``build_args={"BASE": base_image("bookworm")}``.

    With ``pip``, RUN steps see /etc/pip.conf (host CA bundle, the shared pip cache of uid 0, and with
    ``local_wheels`` this machine's cp311 wheels); build mounts are not committed into the image.
    Raises ContainerError with the build log on failure.
    """
    args = ["build", "--pull=never", "--runtime", "runc", "--network=host", *ulimit_args(),
            "-f", str(dockerfile), "-t", tag]
    for key, value in (build_args or {}).items():
        args += ["--build-arg", f"{key}={value}"]
    if memory is not None:
        args += ["--memory", memory]
    if pip:
        mounts, _ = pip_options(0, local_wheels=local_wheels)
        args += _mount_args(mounts)
    args += [*extra, str(context)]
    return _podman(args, timeout=timeout)


def remove_image(image: str) -> None:
    _podman(["rmi", "--force", image], check=False)
