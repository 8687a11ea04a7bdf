"""The container helpers (tests/containers.py) do what the tests built on them rely on: a Debian bookworm
container with Python 3.11, Docker's default confinement (no SYS_ADMIN, seccomp on), an enforced memory
limit, pip through the proxy with a cache kept on the host, torch from this machine's local wheels, and
``podman build`` from the local base image."""

import json
import os
import resource
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

import containers

# Capability bit numbers (linux/capability.h) of Docker's default set.
CAP_BITS = {"CHOWN": 0, "DAC_OVERRIDE": 1, "FOWNER": 3, "FSETID": 4, "KILL": 5, "SETGID": 6, "SETUID": 7,
            "SETPCAP": 8, "NET_BIND_SERVICE": 10, "NET_RAW": 13, "SYS_CHROOT": 18, "MKNOD": 27,
            "AUDIT_WRITE": 29, "SETFCAP": 31}
CAP_SYS_ADMIN_BIT = 21


def status_field(status_text: str, field: str) -> str:
    for line in status_text.splitlines():
        if line.startswith(field + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"{field} not in /proc/self/status:\n{status_text}")


# ------------------------------------------------------------------------------------ no podman needed

def test_rootfs_key_depends_on_suite_and_packages_not_their_order():
    assert containers.rootfs_key("bookworm", ["bubblewrap", "sudo"]) == containers.rootfs_key("bookworm",
                                                                                              ["sudo", "bubblewrap"])
    assert containers.rootfs_key("bookworm") != containers.rootfs_key("bookworm", ["bubblewrap"])
    assert containers.rootfs_key("bookworm") != containers.rootfs_key("trixie")


def test_bad_suite_and_package_string_are_refused():
    with pytest.raises(ValueError, match="unknown Debian suite 'jessie'"):
        containers.rootfs_key("jessie")
    with pytest.raises(TypeError, match="not one string"):
        containers.rootfs_key("bookworm", "bubblewrap")
    with pytest.raises(ValueError, match="as a number"):
        containers._uid_of("student")


def test_ulimits_never_exceed_the_hosts_hard_limits():
    args = containers.ulimit_args()
    limits = dict(value.split("=") for value in args[1::2])
    nofile = int(limits["nofile"].split(":")[1])
    nproc = int(limits["nproc"].split(":")[1])
    for limit, value in ((resource.RLIMIT_NOFILE, nofile), (resource.RLIMIT_NPROC, nproc)):
        hard = resource.getrlimit(limit)[1]
        assert hard == resource.RLIM_INFINITY or value <= hard
    assert nproc <= containers.PODMAN_NPROC_CEILING


FAKE_DEBOOTSTRAP = """#!/bin/sh
# Stands in for debootstrap: records each call, takes a while, then makes a tree (or fails when asked).
echo "$@" >> "$CALLS"
sleep 2
[ -n "$FAIL" ] && { echo "E: Couldn't download packages: $FAIL" >&2; exit 1; }
target="$4"
mkdir -p "$target/etc" "$target/usr/bin"
"""


def _fake_debootstrap_env(tmp_path, **extra) -> dict:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir(exist_ok=True)
    script = fake_bin / "debootstrap"
    script.write_text(FAKE_DEBOOTSTRAP)
    script.chmod(0o755)
    return {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}", "CALLS": str(tmp_path / "calls"),
            "COURSEKIT_IMAGE_CACHE": str(tmp_path / "cache"), **extra}


ROOTFS_IN_A_PROCESS = ("import sys; sys.path.insert(0, {tests!r}); import containers; "
                       "print(containers.debian_rootfs('bookworm', ['bubblewrap']))")


def test_two_processes_asking_for_one_rootfs_build_it_once(tmp_path):
    env = _fake_debootstrap_env(tmp_path)
    code = ROOTFS_IN_A_PROCESS.format(tests=str(Path(__file__).parent))
    processes = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    paths = {out.strip() for out, _ in outputs}
    assert len(paths) == 1
    rootfs = Path(paths.pop())
    calls = (tmp_path / "calls").read_text().splitlines()
    assert len(calls) == 1, calls
    assert calls[0].startswith("--variant=minbase --include=bubblewrap,ca-certificates,git,make,python3,")
    assert rootfs.parent == tmp_path / "cache" and (rootfs / "etc" / "coursekit-rootfs.json").is_file()
    assert oct(rootfs.stat().st_mode & 0o777) == "0o755"  # it becomes "/" for every user in the container
    assert not list((tmp_path / "cache").glob(".building-*"))


def test_a_failed_debootstrap_says_why_and_leaves_nothing(tmp_path):
    env = _fake_debootstrap_env(tmp_path, FAIL="python3-venv")
    code = ROOTFS_IN_A_PROCESS.format(tests=str(Path(__file__).parent))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "debootstrap bookworm failed (status 1)" in done.stderr
    assert "Couldn't download packages: python3-venv" in done.stderr
    assert not [path for path in (tmp_path / "cache").iterdir() if not path.name.endswith(".lock")]


# ---------------------------------------------------------------------------------------- containers

@pytest.fixture(scope="module")
def bookworm_image() -> str:
    containers.require_podman()
    return containers.base_image("bookworm")


@pytest.mark.slow
def test_bookworm_container_runs_python311_confined_like_docker(bookworm_image):
    script = "python3 -c 'import sys; print(sys.version_info[:2])'; cat /proc/self/status; " \
             "unshare --pid --fork true; echo unshare-status=$?"
    result = containers.podman_run(bookworm_image, ["sh", "-c", script])
    assert "(3, 11)" in result.stdout
    # Docker's default capabilities exactly: no SYS_ADMIN, so no new namespaces, no mounts.
    effective = int(status_field(result.stdout, "CapEff"), 16)
    assert effective == sum(1 << bit for bit in CAP_BITS.values())
    assert not effective & (1 << CAP_SYS_ADMIN_BIT)
    assert "unshare-status=1" in result.stdout and "Operation not permitted" in result.stderr
    assert status_field(result.stdout, "Seccomp") == "2"  # a seccomp filter is on
    # A non-root user has no capability at all.
    result = containers.podman_run(bookworm_image, ["sh", "-c", "id -u; grep CapEff /proc/self/status"],
                                   user="1000:1000")
    assert result.stdout.split()[0] == "1000"
    assert int(status_field(result.stdout, "CapEff"), 16) == 0


@pytest.mark.slow
def test_network_none_leaves_only_loopback(bookworm_image):
    probe = ("import errno, socket; s = socket.socket(); s.settimeout(10); "
             "print(errno.errorcode[s.connect_ex(('{}', 443))])")
    result = containers.podman_run(bookworm_image, ["python3", "-c", probe.format("151.101.0.223")], network="none")
    assert result.stdout.strip() == "ENETUNREACH"
    interfaces = containers.podman_run(bookworm_image, ["ls", "/sys/class/net"], network="none")
    assert interfaces.stdout.split() == ["lo"]


@pytest.mark.slow
def test_memory_limit_is_enforced(bookworm_image):
    allocate = "python3 -c 'x = bytearray({} * 2**20); x[::4096] = b\"1\" * len(x[::4096]); print(\"allocated\")'"
    small = containers.podman_run(bookworm_image, ["sh", "-c", allocate.format(16)], memory="128m")
    assert "allocated" in small.stdout
    big = containers.podman_run(bookworm_image, ["sh", "-c", allocate.format(512)], memory="128m", check=False)
    assert big.returncode == 137, (big.returncode, big.stdout, big.stderr)  # SIGKILL by the OOM killer
    assert "allocated" not in big.stdout
    with pytest.raises(containers.ContainerError, match="exit status 137"):
        containers.podman_run(bookworm_image, ["sh", "-c", allocate.format(512)], memory="128m")


@pytest.mark.slow
def test_pip_installs_from_pypi_through_the_proxy_into_the_host_wheelhouse(bookworm_image):
    wheel = containers.IMAGE_CACHE / "pip-cache" / "1000" / "wheelhouse" / "iniconfig-2.0.0-py3-none-any.whl"
    wheel.unlink(missing_ok=True)
    script = (containers.cached_pip_install("python3 -m pip", "iniconfig==2.0.0")
              + " && PYTHONPATH=/tmp/site python3 -c 'import iniconfig; print(iniconfig.__file__)'")
    # Into a --target folder rather than a venv: making a venv takes a minute on a busy machine.
    target = {"PIP_TARGET": "/tmp/site", "PIP_BREAK_SYSTEM_PACKAGES": "1"}
    # As a non-root user, without the local wheels: the package comes from pypi.org through the proxy ...
    first = containers.podman_run(bookworm_image, ["sh", "-c", script], user="1000:1000", pip=True,
                                  local_wheels=False, env=target)
    assert "/tmp/site/iniconfig/__init__.py" in first.stdout
    assert "Downloading iniconfig-2.0.0" in first.stdout
    assert wheel.is_file()
    # ... once: a fresh container takes it from the host's wheelhouse.
    second = containers.podman_run(bookworm_image, ["sh", "-c", script], user="1000:1000", pip=True,
                                   local_wheels=False, env=target)
    assert "File was already downloaded" in second.stdout and "Downloading iniconfig" not in second.stdout
    assert "/tmp/site/iniconfig/__init__.py" in second.stdout
    # Without the host's CA bundle the proxy's certificate is not trusted.
    without_ca = containers.podman_run(
        bookworm_image, ["sh", "-c", "python3 -m pip download --no-cache-dir --retries 0 --timeout 20 "
                                     "--dest /tmp/d iniconfig==2.0.0"],
        user="1000:1000", check=False)
    assert without_ca.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in without_ca.stdout + without_ca.stderr


@pytest.mark.slow
def test_pip_takes_torch_from_the_local_wheels_in_a_python311_image(bookworm_image):
    if not any(folder.is_dir() for folder in containers.LOCAL_WHEEL_DIRS):
        pytest.skip("this machine has no local wheel folders (/opt/wheels, /opt/pypi): nothing to mount")
    script = ("python3 -m pip install --dry-run --no-deps --quiet --report /tmp/report.json torch && "
              "cat /tmp/report.json")
    result = containers.podman_run(bookworm_image, ["sh", "-c", script], pip=True)
    install = json.loads(result.stdout)["install"]
    assert install[0]["metadata"]["name"] == "torch"
    assert install[0]["download_info"]["url"].startswith("file:///opt/"), install[0]["download_info"]["url"]


@pytest.mark.slow
def test_podman_build_from_the_local_base(bookworm_image, tmp_path):
    (tmp_path / "Dockerfile").write_text(textwrap.dedent("""\
        ARG BASE
        FROM ${BASE}
        RUN PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet --target /opt/site iniconfig==2.0.0
        RUN useradd --create-home --uid 1000 student
        USER 1000
        ENV PYTHONPATH=/opt/site
        CMD ["python3", "-c", "import iniconfig, os; print('iniconfig as', os.getuid())"]
        """))
    tag = "localhost/coursekit-test-build:latest"
    try:
        containers.podman_build(tmp_path, tmp_path / "Dockerfile", tag, {"BASE": bookworm_image})
        result = containers.podman_run(tag, [])
        assert result.stdout.strip() == "iniconfig as 1000"
        # The build's pip.conf mount was not committed into the image (buildah leaves an empty mount point).
        inside = containers.podman_run(tag, ["sh", "-c", "cat /etc/pip.conf 2>/dev/null; echo end"])
        assert inside.stdout.strip() == "end"
    finally:
        containers.remove_image(tag)


@pytest.mark.slow
def test_a_run_past_its_timeout_leaves_no_container(bookworm_image):
    name = f"coursekit-test-timeout-{uuid.uuid4().hex[:8]}"
    with pytest.raises(subprocess.TimeoutExpired):
        containers.podman_run(bookworm_image, ["sleep", "600"], timeout=5, name=name)
    names = subprocess.run(["podman", "ps", "--all", "--format", "{{.Names}}"], capture_output=True, text=True,
                           check=True).stdout.split()
    assert name not in names
