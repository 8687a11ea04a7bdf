"""JupyterHub for the MLP course on ONE server (up to a few dozen students at once; see deploy/README.md).

    /opt/mlp-course/env/bin/jupyterhub -f jupyterhub_config.py      # as root (it starts each student's server)

Every student gets JupyterLab in their own home, run by the course's pinned environment (COURSE_ENV: a virtual
environment with the instructor's requirements.txt installed, which pins jupyterhub, nbgitpuller and the idle culler
too; NOT the instructor's checkout, which holds the solutions: keep that unreadable for students), with a memory
and CPU limit enforced by systemd; an idle server is stopped after COURSE_IDLE_TIMEOUT seconds.
Students receive the student edition through an nbgitpuller link (`coursekit hub-link`).

Settings come from the environment so the file itself stays as published:
COURSE_ENV (/opt/mlp-course/env), COURSE_MEM_LIMIT (4G), COURSE_CPU_LIMIT (1), COURSE_IDLE_TIMEOUT (3600),
COURSE_FOLDER (mlp-course: the folder the link makes in each home, `coursekit hub-link`'s default target; its
coursekit/ is what the kernels import), COURSE_ADMINS (comma-separated user names), COURSE_STUDENTS_FILE (one user
name a line; unset: every user that the authenticator accepts), COURSE_AUTHENTICATOR (pam: the server's accounts;
or another authenticator's name, such as github, generic-oauth, lti13, native: see deploy/README.md).

Each student's server runs as the Unix account of their hub user name (SystemdSpawner). With PAM the accounts exist
already; with any other login the hub makes the account at the student's first login (adduser; create_system_users),
and a name that is already a system account (root, daemon, ... uid < 1000, nobody) is refused.
"""
import importlib.metadata
import os
import pwd
import sys
from pathlib import Path

from traitlets import import_item

c = get_config()  # noqa: F821 (JupyterHub provides it)

COURSE_ENV = Path(os.environ.get("COURSE_ENV", "/opt/mlp-course/env"))
MEM_LIMIT = os.environ.get("COURSE_MEM_LIMIT", "4G")
CPU_LIMIT = float(os.environ.get("COURSE_CPU_LIMIT", "1"))
IDLE_TIMEOUT = int(os.environ.get("COURSE_IDLE_TIMEOUT", "3600"))
COURSE_FOLDER = os.environ.get("COURSE_FOLDER", "mlp-course")   # where the nbgitpuller link puts the edition


def course_copy(spawner) -> str:
    """The student's copy of the edition (home/COURSE_FOLDER): its coursekit/ is the one the kernels import, so
    an update pulled through the link reaches the package too, and no grader code is installed for students."""
    home = getattr(spawner, "home_dir", None) or os.path.expanduser("~" + spawner.user.name)
    return os.path.join(home, COURSE_FOLDER)


def authenticator_class(name: str):
    """The authenticator ``name`` (an entry point of jupyterhub.authenticators such as github, or a dotted class
    path) as a LocalAuthenticator: one that makes the Unix account SystemdSpawner needs (Local*OAuthenticator is
    the same mixin)."""
    from jupyterhub.auth import LocalAuthenticator
    if "." in name:
        base = import_item(name)
    else:
        found = importlib.metadata.entry_points(group="jupyterhub.authenticators", name=name)
        if not found:
            known = sorted(e.name for e in importlib.metadata.entry_points(group="jupyterhub.authenticators"))
            raise ValueError(f"COURSE_AUTHENTICATOR={name!r} is no installed authenticator; installed: {known}")
        base = next(iter(found)).load()
    if issubclass(base, LocalAuthenticator):
        return base
    return type(f"Local{base.__name__}", (LocalAuthenticator, base), {"__module__": __name__})


def system_accounts() -> set[str]:
    """Accounts that are not students' (uid below 1000, and nobody): a login with such a name must not run as it."""
    return {entry.pw_name for entry in pwd.getpwall() if entry.pw_uid < 1000 or entry.pw_uid == 65534}


# -- who may log in: system accounts (PAM), the default. See deploy/README.md for the alternatives
# (NativeAuthenticator: students sign up and the instructor approves; OAuthenticator: the university's login).
AUTHENTICATOR = os.environ.get("COURSE_AUTHENTICATOR", "pam")
if AUTHENTICATOR == "pam":
    c.JupyterHub.authenticator_class = "pam"
else:
    c.JupyterHub.authenticator_class = authenticator_class(AUTHENTICATOR)
    c.LocalAuthenticator.create_system_users = True
    c.Authenticator.blocked_users = system_accounts()
c.Authenticator.admin_users = {name.strip() for name in os.environ.get("COURSE_ADMINS", "").split(",") if name.strip()}
students_file = os.environ.get("COURSE_STUDENTS_FILE")
if students_file:
    c.Authenticator.allowed_users = {line.strip() for line in Path(students_file).read_text().splitlines()
                                     if line.strip() and not line.startswith("#")}
else:
    c.Authenticator.allow_all = True

# -- each student's server: the course's environment, JupyterLab, limits enforced by systemd (cgroups).
c.JupyterHub.spawner_class = "systemdspawner.SystemdSpawner"
c.Spawner.cmd = [str(COURSE_ENV / "bin" / "jupyterhub-singleuser")]
c.Spawner.default_url = "/lab"
c.Spawner.notebook_dir = "~"
c.Spawner.mem_limit = MEM_LIMIT
c.Spawner.cpu_limit = CPU_LIMIT
c.Spawner.environment = {
    # The course's python3 kernel is the one in COURSE_ENV: first on PATH, and the only ipykernel there.
    "PATH": f"{COURSE_ENV / 'bin'}:/usr/local/bin:/usr/bin:/bin",
    # torch starts one OpenMP thread per visible core; more than the CPU limit only makes them wait for each other.
    "OMP_NUM_THREADS": str(max(1, int(CPU_LIMIT))),
    # nbgitpuller links open JupyterLab (also when a link names no urlpath).
    "NBGITPULLER_APP": "lab",
    "PYTHONPATH": course_copy,
}
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 90
c.SystemdSpawner.isolate_tmp = True       # a private /tmp per student
c.SystemdSpawner.isolate_devices = True
c.SystemdSpawner.disable_user_sudo = True

# -- the idle culler: stops servers without activity for IDLE_TIMEOUT seconds (their files stay in the home).
c.JupyterHub.services = [{
    "name": "jupyterhub-idle-culler",
    "command": [sys.executable, "-m", "jupyterhub_idle_culler", f"--timeout={IDLE_TIMEOUT}",
                "--cull-every=300", "--concurrency=5"],
}]
c.JupyterHub.load_roles = [{
    "name": "jupyterhub-idle-culler",
    "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
    "services": ["jupyterhub-idle-culler"],
}]

# -- the hub's own state, in one folder (the sqlite database and the cookie secret survive restarts).
state = Path(os.environ.get("COURSE_HUB_STATE", "/srv/jupyterhub"))
c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")
c.JupyterHub.bind_url = os.environ.get("COURSE_HUB_URL", "http://:8000")   # put TLS in front (deploy/README.md)

# -- hand-in (helper H8's block; README "Running a term"): students hand in at /services/handin/, a service that
# knows them through the hub's login and keeps the hand-ins in its own folder (0700, never in a student's home).
# On when COURSE_HANDIN_TERM names the term file (deadline, grace; re-read at every hand-in).
if os.environ.get("COURSE_HANDIN_TERM"):
    c.JupyterHub.services.append({
        "name": "handin",
        "url": os.environ.get("COURSE_HANDIN_URL", "http://127.0.0.1:10101"),
        "command": [sys.executable, os.environ.get("COURSE_HANDIN_SERVICE", "/opt/mlp-course/handin_service.py"),
                    "--store", os.environ.get("COURSE_HANDIN_DIR", "/srv/handin"),
                    "--term", os.environ["COURSE_HANDIN_TERM"],
                    "--proxy-url", os.environ.get("COURSE_HANDIN_PROXY_URL", "http://127.0.0.1:8000")],
        "oauth_no_confirm": True,
        # the student's token, as the service gets it, reaches that student's own server only (to read the lab)
        "oauth_client_allowed_scopes": ["access:servers!user"],
    })
    # JupyterHub's default user role ('self') does not reach services: every user may open this one.
    c.JupyterHub.load_roles.append({"name": "user", "scopes": ["self", "access:services!service=handin"]})
