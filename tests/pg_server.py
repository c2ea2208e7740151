"""A throwaway PostgreSQL server for the store tests, and the session fixture ``pg_url``.

:func:`start` finds ``initdb``/``pg_ctl`` (on PATH or in Debian's /usr/lib/postgresql/*/bin),
initialises a data directory in a fresh temp dir, and starts a server listening only on 127.0.0.1
on a free port, with its unix socket in that temp dir, trust auth and ``fsync=off``. Postgres
refuses to run as root, so as root both commands run as the ``postgres`` user (``runuser``), which
then owns the temp dir. Anything missing or failing gives ``(None, reason)`` instead of raising;
the fixture then skips with that reason.
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import closing
from dataclasses import dataclass

import pytest


@dataclass
class PgServer:
    url: str
    root: str
    pg_ctl: str
    prefix: list[str]

    @property
    def data_dir(self) -> str:
        return os.path.join(self.root, "data")

    def stop(self) -> None:
        subprocess.run([*self.prefix, self.pg_ctl, "stop", "-D", self.data_dir, "-m", "immediate", "-w"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60, check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def find_binaries() -> tuple[str, str] | None:
    """(initdb, pg_ctl) of one installation: PATH first, then the newest Debian layout."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl:
        return initdb, pg_ctl
    for bindir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True):
        initdb, pg_ctl = os.path.join(bindir, "initdb"), os.path.join(bindir, "pg_ctl")
        if os.access(initdb, os.X_OK) and os.access(pg_ctl, os.X_OK):
            return initdb, pg_ctl
    return None


def _version_key(bindir: str) -> tuple[int, ...]:
    version = os.path.basename(os.path.dirname(bindir))
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def _free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(text: str, n: int = 3) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return " | ".join(lines[-n:]) or "no output"


def _run_as(prefix: list[str], args: list[str], timeout: float) -> tuple[bool, str]:
    try:
        done = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    return done.returncode == 0, done.stdout + done.stderr


def start() -> tuple[PgServer | None, str]:
    """Start a throwaway server: ``(server, "")`` or ``(None, why not)``."""
    try:
        import psycopg  # noqa: F401  (the SQLAlchemy dialect needs it)
    except ImportError:
        return None, "psycopg is not installed (pip install -e '.[postgres]')"
    binaries = find_binaries()
    if binaries is None:
        return None, "PostgreSQL is not installed (no initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin)"
    initdb, pg_ctl = binaries

    as_root = os.geteuid() == 0
    # As root, /tmp rather than $TMPDIR: the postgres user must be able to reach the directory.
    root = tempfile.mkdtemp(prefix="hwnas-pg-", dir="/tmp" if as_root and os.path.isdir("/tmp") else None)
    prefix: list[str] = []
    if as_root:  # postgres will not run as root
        runuser = shutil.which("runuser")
        if runuser is None:
            shutil.rmtree(root, ignore_errors=True)
            return None, "running as root and `runuser` is missing, so postgres cannot be started"
        try:
            import pwd

            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root, ignore_errors=True)
            return None, "running as root and there is no `postgres` user to run the server as"
        os.chown(root, user.pw_uid, user.pw_gid)
        prefix = [runuser, "-u", "postgres", "--"]
    os.chmod(root, 0o700)

    data = os.path.join(root, "data")
    ok, output = _run_as(prefix, [initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8",
                                  "--no-sync", "--locale=C"], timeout=120)
    if not ok:
        shutil.rmtree(root, ignore_errors=True)
        return None, f"initdb failed: {_tail(output)}"

    port = _free_port()
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c full_page_writes=off"
    server = PgServer(f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", root, pg_ctl, prefix)
    ok, output = _run_as(prefix, [pg_ctl, "start", "-D", data, "-w", "-t", "60", "-o", options,
                                  "-l", os.path.join(root, "server.log")], timeout=90)
    if not ok:
        log = ""
        try:
            with open(os.path.join(root, "server.log"), encoding="utf-8", errors="replace") as fh:
                log = fh.read()
        except OSError:
            pass
        server.stop()
        return None, f"pg_ctl start failed: {_tail(log or output)}"

    # pg_ctl -w waited for the server; make sure it takes TCP connections too.
    deadline = time.monotonic() + 30
    while True:
        try:
            with closing(socket.create_connection(("127.0.0.1", port), timeout=1)):
                break
        except OSError as exc:
            if time.monotonic() > deadline:
                server.stop()
                return None, f"postgres started but 127.0.0.1:{port} refuses connections: {exc}"
            time.sleep(0.2)
    return server, ""


@pytest.fixture(scope="session")
def pg_url():
    """The SQLAlchemy URL of a throwaway PostgreSQL server for this session; skips if none can start."""
    server, reason = start()
    if server is None:
        pytest.skip(f"no PostgreSQL server for the store tests: {reason}")
    try:
        yield server.url
    finally:
        server.stop()
