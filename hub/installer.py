"""Idempotent install steps: each ``ensure_*`` checks first and changes only what is missing."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_REQUIREMENTS = ROOT / "docker" / "notebook" / "requirements.txt"
# bubblewrap: the grading sandbox (assessments/grading/sandbox.py).
# slurmdbd and mariadb-server: the embedded cluster's accounting (hub/slurm_accounting.py).
# openmpi-bin: the MPI library (libopenmpi3) and mpirun/mpiexec that mpi4py's wheel (pinned in the
# notebook requirements) loads at run time; hpc-301's mpi-halo notebook launches `mpirun -n 2`.
APT_PACKAGES = ["slurm-wlm", "slurmdbd", "mariadb-server", "munge", "sudo", "python3-venv", "shellcheck",
                "bubblewrap", "openmpi-bin"]
# chromium: driven by Playwright in tests/e2e; postgresql: the progress database's production backend,
# tested beside SQLite (tests/progress start a throwaway cluster of their own); prometheus: scrapes
# the hub and the services in tests/integration/test_metrics.py; systemd: `systemd-analyze verify` of
# the hub's unit (tests/unit/test_systemd_unit.py; nothing is started with it).
TEST_APT_PACKAGES = ["chromium", "postgresql", "prometheus", "systemd"]
# Node.js may come from elsewhere than Debian (its npm then conflicts with Debian's): install
# Debian's only where the commands are missing.
APT_IF_COMMAND_MISSING = {"node": "nodejs", "npm": "npm"}
PROXY_VERSION = "5.3.0"
IMPORT_TIME_HOGS = ["rfc3987-syntax"]
# The notebook env must not live under a root-only home (pyenv in /root): learners run it.
NOTEBOOK_PYTHON = "/usr/bin/python3"


class InstallError(RuntimeError):
    """An install step failed; the message names the step and what to do."""


def say(message: str) -> None:
    print(f"academy: {message}", flush=True)


def _run(argv: list[str], what: str, **kwargs) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        raise InstallError(f"{what} failed (exit {result.returncode}):\n{tail}")


def missing_apt_packages(packages: list[str]) -> list[str]:
    missing = []
    for name in packages:
        result = subprocess.run(["dpkg-query", "-W", "-f=${Status}", name], capture_output=True, text=True)
        if "install ok installed" not in result.stdout:
            missing.append(name)
    return missing


def ensure_apt_packages(packages: list[str] = APT_PACKAGES) -> None:
    missing = missing_apt_packages(packages)
    missing += [pkg for cmd, pkg in APT_IF_COMMAND_MISSING.items() if shutil.which(cmd) is None]
    if not missing:
        return
    say(f"installing Debian packages: {' '.join(missing)} (apt-get, a few minutes)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update", "-q"], "apt-get update", env=env)
    _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], "apt-get install", env=env)


def ensure_proxy() -> None:
    if shutil.which("configurable-http-proxy"):
        return
    say(f"installing configurable-http-proxy {PROXY_VERSION} (npm)")
    _run(["npm", "install", "-g", "--no-fund", "--no-audit", f"configurable-http-proxy@{PROXY_VERSION}"],
         "npm install configurable-http-proxy")


TEST_OIDC_SOURCE = ROOT / "tests" / "oidc"


def test_oidc_dir(cfg: dict) -> Path:
    """Where the tests' OpenID provider (tests/oidc: panva's oidc-provider, from npm) is installed."""
    return Path(cfg["notebook_env"]).parent / "test-oidc"


def ensure_test_oidc_provider(cfg: dict) -> None:
    """npm-install the tests' OpenID provider beside the environments, once per package.json."""
    target = test_oidc_dir(cfg)
    wanted = (TEST_OIDC_SOURCE / "package.json").read_text()
    if (target / "package.json").exists() and (target / "package.json").read_text() == wanted and \
            (target / "node_modules" / "oidc-provider").is_dir():
        return
    say("installing the tests' OpenID provider (npm: oidc-provider)")
    target.mkdir(parents=True, exist_ok=True)
    (target / "package.json").write_text(wanted)
    _run(["npm", "install", "--no-fund", "--no-audit", "--omit=dev"], "npm install oidc-provider", cwd=target)


def _notebook_env_fingerprint() -> str:
    """What the session environment holds of ours: the project's packages (the entry point, the nbgrader
    extension, the exchange client, the grader...), its Jupyter config and the pinned requirements.
    All of the packages, not a list of files: a list goes stale, and a stale grader in the env is
    what every grading job then runs."""
    h = hashlib.sha256(NOTEBOOK_REQUIREMENTS.read_bytes())
    h.update((ROOT / "pyproject.toml").read_bytes())
    files = [p for package in ("hub", "spawners", "assessments", "courses") for p in (ROOT / package).rglob("*")
             if p.is_file() and p.suffix in (".py", ".j2", ".json", ".yaml", ".js", ".mako", ".css")
             and "notebooks" not in p.parts and "__pycache__" not in p.parts and "node_modules" not in p.parts]
    files += [*(ROOT / "docker" / "notebook").rglob("*")]
    for path in sorted(f for f in files if f.is_file()):
        h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    h.update(Path(__file__).read_bytes())  # the install steps themselves
    return h.hexdigest()


def ensure_notebook_env(env_dir: str) -> None:
    """The learners' session environment: world-readable, root-owned, pinned."""
    env = Path(env_dir)
    marker = env / ".academy-installed"
    fingerprint = _notebook_env_fingerprint()
    if marker.exists() and marker.read_text().strip() == fingerprint:
        return
    if not (env / "bin" / "python").exists():
        say(f"creating the notebook environment in {env} (torch, JupyterLab, nbgrader: a few minutes)")
        _run([NOTEBOOK_PYTHON, "-m", "venv", str(env)], "creating the notebook venv")
    else:
        say(f"updating the notebook environment in {env}")
    pip = [str(env / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    _run([*pip, "-r", str(NOTEBOOK_REQUIREMENTS)], "installing the notebook requirements")
    # Every session start waits for what Python imports. jsonschema builds rfc3987_syntax's
    # grammar at import (2.2 s of a 3.6 s jupyterhub-singleuser import, through jupyter-events)
    # and only uses it to check "iri" formats, which it skips when the package is absent.
    _run([str(env / "bin" / "python"), "-m", "pip", "uninstall", "-y", "-q", *IMPORT_TIME_HOGS],
         "removing import-time hogs from the notebook env")
    # The session entry point (spawners.singleuser) and the grader (assessments.grading) run inside jobs from here.
    # The project's package data holds no course notebook (pyproject.toml): learners read this env.
    _run([*pip, "--no-deps", "--force-reinstall", str(ROOT)], "installing the session entry point into the notebook env")
    shutil.rmtree(ROOT / "build", ignore_errors=True)  # setuptools' by-product, in the checkout
    os.chmod(env, 0o755)
    marker.write_text(fingerprint + "\n")


def ensure_checkout_private(root: Path = ROOT) -> None:
    """The checkout holds every course's solutions and hidden tests (courses/notebooks, .git): only
    its owner (root, or the developer who cloned it) may enter it. Nothing a learner or a grading
    sandbox runs is read from here: sessions and grading jobs run from the notebook environment."""
    mode = root.stat().st_mode & 0o7777
    if mode & 0o077:
        say(f"making {root} private to its owner (it holds the courses' solutions and hidden tests)")
        os.chmod(root, mode & ~0o077)


def load_credentials(path: str) -> dict[str, str]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def ensure_group(name: str) -> None:
    """A Unix group (e.g. the operators' one that Slurm's AllowGroups names)."""
    if subprocess.run(["getent", "group", name], capture_output=True).returncode != 0:
        _run(["groupadd", "--system", name], f"groupadd {name}")


def _user_exists(name: str) -> bool:
    return subprocess.run(["id", "-u", name], capture_output=True).returncode == 0


def ensure_demo_users(users: dict[str, list[str]], credentials_file: str) -> dict[str, str]:
    """Real Unix accounts with generated passwords, kept (root-only) across runs."""
    path = Path(credentials_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    creds = load_credentials(credentials_file)
    changed = False
    for name in users:
        if not _user_exists(name):
            _run(["useradd", "--create-home", "--shell", "/bin/bash", "--user-group", name], f"useradd {name}")
            creds.pop(name, None)
        # Debian's useradd leaves homes world-readable (0755): one learner could read another's work.
        os.chmod(pwd.getpwnam(name).pw_dir, 0o700)
        if name not in creds:
            creds[name] = secrets.token_urlsafe(9)
            _run(["chpasswd"], f"setting {name}'s password", input=f"{name}:{creds[name]}\n")
            changed = True
    if changed:
        tmp = path.with_suffix(".tmp")
        tmp.touch(mode=0o600)
        os.chmod(tmp, 0o600)
        tmp.write_text(json.dumps(creds, indent=2) + "\n")
        os.replace(tmp, path)
    return {name: creds[name] for name in users}


def require_root(action: str) -> None:
    if os.geteuid() != 0:
        raise InstallError(
            f"{action} needs root: it installs packages, creates Unix users and starts Slurm's daemons. "
            f"Run it again with sudo: sudo {' '.join(['./academy', *sys.argv[1:]])}"
        )
