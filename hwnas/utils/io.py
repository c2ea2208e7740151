"""Atomic artifact writes, content digests and lock files.

Every artifact hwnas writes goes to a temporary file in the same directory, is flushed and fsynced,
and is then renamed over the destination, which POSIX makes atomic: a reader never sees a
half-written file.

Artifacts that hwnas reads back (lookup tables, sample caches) also get a sha256 digest, recorded
when they are written and checked on every read, so a file truncated or altered on disk afterwards
is refused by name instead of being used (see :func:`atomic_path_with_digest`,
:func:`verify_digest`; checkpoints and safetensors files carry theirs inside, see
:func:`hwnas.utils.tensor_digest.state_digest`). A file that should have a digest but has none (written by an older hwnas, or
its digest was deleted) is refused too, unless ``HWNAS_ACCEPT_UNVERIFIED=1`` is set, which lets it
be used with a warning.

Lock files (:func:`file_lock`) keep two processes from writing the same job or the same profiled
table at once; they are ``flock`` locks, so the kernel releases them when their process dies,
even by SIGKILL.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import tempfile
import time
import warnings
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from hwnas.errors import HwnasError, IntegrityError
from hwnas.utils.write_errors import write_failure

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: nothing is locked
    fcntl = None


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    A write that fails because the place cannot take it (no space left, a quota, the file-size
    limit, a read-only or unwritable directory: :data:`hwnas.utils.write_errors.WRITE_ERRNOS`) raises an ``OSError`` with
    that errno naming ``path`` itself, not the temporary file, even when the writer in the block
    reported it otherwise (torch's and safetensors' writers raise ``RuntimeError`` and their own
    errors; see :func:`hwnas.utils.write_errors.write_failure`). The temporary file is removed in every case, and ``path``
    keeps its previous content.
    """
    path = Path(path)
    tmp_path: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide artifacts from teammates
        os.replace(tmp_path, path)
    except Exception as exc:
        failure = write_failure(exc, path, tmp_path)
        if failure is None:
            raise
        raise failure from exc
    finally:
        if tmp_path is not None:
            try:
                tmp_path.unlink(missing_ok=True)
            except OSError:  # a file system turned read-only: never mask the error that got here
                pass


def write_text_atomic(path: str | Path, text: str, digest: bool = False) -> None:
    """Write ``text`` atomically; with ``digest``, also its sidecar digest (see
    :func:`atomic_path_with_digest`)."""
    with (atomic_path_with_digest if digest else atomic_path)(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, obj: Any, digest: bool = False) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n", digest)


def distinct_keys(pairs: list[tuple[str, Any]], on_repeat: Callable[[str], Exception]) -> dict[str, Any]:
    """A JSON object (``object_pairs_hook``) whose keys are distinct: json would silently keep the
    last of a repeated key; here ``on_repeat(key)`` is raised instead."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise on_repeat(key)
        out[key] = value
    return out


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def stable_hash(obj: Any, length: int = 12) -> str:
    """A short hash of a JSON-able object, independent of dict order."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


# -- content digests ------------------------------------------------------------------------------
DIGEST_SUFFIX = ".sha256"
ACCEPT_UNVERIFIED_ENV = "HWNAS_ACCEPT_UNVERIFIED"


def digest_path(path: str | Path) -> Path:
    """Where the digest of ``path`` lives: ``FILE.sha256``, in ``sha256sum`` format (so
    ``sha256sum -c FILE.sha256`` checks it by hand too)."""
    path = Path(path)
    return path.with_name(path.name + DIGEST_SUFFIX)


def _pending_digest_path(path: Path) -> Path:
    """The digest of a write in progress: recorded before the data is renamed into place, so a
    kill between the data's rename and its digest's leaves a digest that still matches."""
    return path.with_name(f".{path.name}{DIGEST_SUFFIX}.pending")


def _digest_line(digest: str, path: Path) -> str:
    return f"{digest}  {path.name}\n"


@contextmanager
def atomic_path_with_digest(path: str | Path) -> Iterator[Path]:
    """:func:`atomic_path`, and the file's sha256 recorded in ``FILE.sha256``.

    The order keeps data and digest in agreement whenever the process is killed: the new digest
    goes to a pending file first, then the data is renamed into place, then the digest file is
    replaced and the pending one removed. A reader accepts the data if it matches the digest file or
    the pending one, so it sees the old file with the old digest or the new file with the new one.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        yield tmp
        line = _digest_line(sha256_file(tmp), path)
        write_text_atomic(_pending_digest_path(path), line)
    write_text_atomic(digest_path(path), line)
    _pending_digest_path(path).unlink(missing_ok=True)


def write_text_with_digest(path: str | Path, text: str) -> None:
    write_text_atomic(path, text, digest=True)


def write_json_with_digest(path: str | Path, obj: Any) -> None:
    write_json_atomic(path, obj, digest=True)


def record_digest(path: str | Path) -> None:
    """Record the digest of ``path`` as it is now: vouch for a file written by other means
    (by hand, or by a test simulating a partial write)."""
    path = Path(path)
    write_text_atomic(digest_path(path), _digest_line(sha256_file(path), path))
    _pending_digest_path(path).unlink(missing_ok=True)


def has_digest(path: str | Path) -> bool:
    """Whether a digest (recorded or pending) exists for ``path``."""
    path = Path(path)
    return digest_path(path).exists() or _pending_digest_path(path).exists()


def _recorded_digests(path: Path) -> list[str] | None:
    """The digests recorded for ``path`` (the digest file's, then a pending one's); None when
    neither file exists. An unreadable digest file counts as a digest that matches nothing."""
    found = None
    for source in (digest_path(path), _pending_digest_path(path)):
        try:
            text = source.read_text(encoding="ascii")
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError):
            text = ""
        found = found or []
        token = text.split(maxsplit=1)[0].lower() if text.split() else ""
        if len(token) == 64 and all(c in "0123456789abcdef" for c in token):
            found.append(token)
    return found


def accept_unverified() -> bool:
    return os.environ.get(ACCEPT_UNVERIFIED_ENV, "").strip().lower() in ("1", "true", "yes")


def check_digest(path: str | Path, actual: str, recorded: str | list[str] | None, *, what: str, remedy: str,
                 where: str | None = None, error: type[HwnasError] = IntegrityError) -> bool:
    """Judge ``actual`` (the digest of the content read from ``path``) against what was recorded
    when the file was written; return True when it matches.

    A mismatch raises ``error`` naming the file and ``remedy`` (what to do). No recorded digest
    (``recorded`` None: an older hwnas wrote the file, or the digest was removed) raises too,
    unless ``HWNAS_ACCEPT_UNVERIFIED`` is set: then the file is used with a warning and False is
    returned. ``where`` names the digest's place for the messages (the digest file by default).
    """
    path = Path(path)
    where = where or f"its digest file {digest_path(path).name}"
    if recorded is None:
        if accept_unverified():
            warnings.warn(f"{what} {path} has no recorded sha256 digest; used unverified because "
                          f"{ACCEPT_UNVERIFIED_ENV} is set", stacklevel=3)
            return False
        raise error(f"{what} {path} has no recorded sha256 digest ({where} is missing: the file was written by "
                    f"an older hwnas, or the digest was removed), so it cannot be verified; {remedy}, or set "
                    f"{ACCEPT_UNVERIFIED_ENV}=1 to use it unverified")
    candidates = [recorded] if isinstance(recorded, str) else list(recorded)
    if actual not in candidates:
        raise error(f"{what} {path} does not match the sha256 digest recorded when it was written (in {where}): "
                    f"it was truncated or altered on disk; {remedy}")
    return True


def verify_digest(path: str | Path, *, what: str, remedy: str, data: bytes | None = None, required: bool = True,
                  error: type[HwnasError] = IntegrityError) -> bool:
    """Check ``path`` (or ``data``, its bytes as already read) against ``FILE.sha256``.

    Returns True when it matches. With ``required`` False, a file with no digest file at all is
    accepted silently (False is returned): a file the user made, which hwnas never recorded.
    Otherwise see :func:`check_digest`.
    """
    path = Path(path)
    recorded = _recorded_digests(path)
    if recorded is None and not required:
        return False
    actual = hashlib.sha256(data).hexdigest() if data is not None else sha256_file(path)
    return check_digest(path, actual, recorded, what=what, remedy=remedy, error=error)


class LockBusy(Exception):
    """The lock is held by another process; ``holder`` is what that process recorded (pid, host,
    since), empty when it could not be read."""

    def __init__(self, path: Path, holder: dict[str, Any]):
        super().__init__(f"{path} is locked by {holder or 'another process'}")
        self.path, self.holder = path, holder


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        raw = os.pread(fd, 4096, 0)
        holder = json.loads(raw.decode("utf-8")) if raw.strip() else {}
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


UNNAMED_HOLDER_PATIENCE_S = 1.0


def _lock_unless_held(fcntl, fd: int, path: Path) -> None:
    """Take the lock now, or raise :class:`LockBusy` naming its holder. A holder that names nobody
    is either a process that has just locked and not yet written its pid, or :func:`lock_held`
    probing for an instant (``hwnas jobs``): neither should make a run look busy, so that case is
    retried for up to :data:`UNNAMED_HOLDER_PATIENCE_S` before giving up."""
    deadline = time.monotonic() + UNNAMED_HOLDER_PATIENCE_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            holder = _read_holder(fd)
            if holder or time.monotonic() > deadline:
                raise LockBusy(path, holder) from None
            time.sleep(0.02)


@contextmanager
def file_lock(path: str | Path, blocking: bool = False) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed, never removed) for the block.

    Not ``blocking``: raise :class:`LockBusy` at once when another process holds it. The holder's
    pid, host and start time are written into the file for the refusal message. The kernel
    releases the lock when the process exits in any way, SIGKILL included, so no stale lock is
    ever left behind. Where ``fcntl`` does not exist (Windows) nothing is locked.
    """
    if fcntl is None:  # pragma: no cover - not POSIX
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if blocking:
            fcntl.flock(fd, fcntl.LOCK_EX)
        else:
            _lock_unless_held(fcntl, fd, path)
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder).encode(), 0)
        except OSError:  # a full disk: the lock holds all the same, only its holder goes unnamed
            pass
        try:
            yield
        finally:
            try:
                os.ftruncate(fd, 0)  # released: nobody to name any more
            except OSError:  # never mask the error that ended the block
                pass
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def lock_held(path: str | Path) -> bool | None:
    """Whether some process holds :func:`file_lock` on ``path`` now; None when that cannot be told
    (no such file here: the job ran on another machine, or never started; or not POSIX). Takes a
    shared lock for an instant, so it never blocks and never creates the file."""
    if fcntl is None:  # pragma: no cover - not POSIX
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
