"""Telling a failure to write (full disk, quota, file-size limit, read-only or unwritable place)
from any other error, and saying it in one line.

Writers report these failures in different ways: Python's ``OSError`` with an errno, safetensors
with ``(os error 28)`` in its message, torch's C++ zip writer with a bare ``RuntimeError``, SQLite
(under optuna and SQLAlchemy) with its own result codes. :func:`write_failure` turns what
:func:`~hwnas.utils.io.atomic_path` caught into an ``OSError`` naming the destination;
:func:`cannot_write_error` turns whatever reached the CLI into the one
:class:`~hwnas.errors.CannotWriteError` line (exit code 74) that says which place could not be
written and what to do. Anything else is left alone, traceback and all.
"""
from __future__ import annotations

import errno
import os
import re
import resource
from pathlib import Path
from typing import Iterator

from hwnas.errors import CannotWriteError, HwnasError

#: errno values that mean "this place cannot take the write": no space, quota, file-size limit
#: (``ulimit -f``), read-only file system, permission denied.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES})

_OS_ERROR_IN_TEXT = re.compile(r"\(os error (\d+)\)")  # how Rust (safetensors) reports an errno
_NEARLY_FULL_BYTES = 64 * 1024


def write_failure(exc: BaseException, path: Path, tmp: Path | None) -> OSError | None:
    """The ``OSError`` (naming ``path``) that ``exc``, raised while writing ``path`` through ``tmp``,
    stands for; None when it is not a failure of the place to take the write."""
    if isinstance(exc, HwnasError):
        return None
    if isinstance(exc, OSError):
        if exc.errno not in WRITE_ERRNOS:
            return None
        if exc.filename is None or _is_temporary_of(os.fsdecode(exc.filename), path):
            return OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path))
        return None  # it names its place already (a directory that could not be made)
    found = _OS_ERROR_IN_TEXT.search(str(exc))
    if found and int(found.group(1)) in WRITE_ERRNOS:
        code = int(found.group(1))
        return OSError(code, os.strerror(code), str(path))
    code = _place_state(path, tmp)  # a writer that hides the errno (torch's C++ zip writer)
    return OSError(code, os.strerror(code), str(path)) if code is not None else None


def _is_temporary_of(name: str, path: Path) -> bool:
    """Whether ``name`` is one of :func:`atomic_path`'s temporary files for ``path``."""
    candidate = Path(name)
    return candidate.parent == path.parent and candidate.name.startswith(f".{path.name}.") and \
        candidate.name.endswith(".tmp")


def _place_state(path: Path, tmp: Path | None) -> int | None:
    """Why a write to ``path`` (partly done in ``tmp``) that failed without an errno failed, judged
    from the file system now: read-only, (nearly) full, or ``tmp`` at the file-size limit."""
    try:
        stat = os.statvfs(path.parent)
    except OSError:
        return None
    if stat.f_flag & os.ST_RDONLY:
        return errno.EROFS
    if stat.f_bavail * stat.f_frsize < _NEARLY_FULL_BYTES:
        return errno.ENOSPC
    try:

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if tmp is not None and limit != resource.RLIM_INFINITY and \
                os.stat(tmp).st_size >= max(limit - _NEARLY_FULL_BYTES, 0):
            return errno.EFBIG
    except (ImportError, OSError, ValueError):
        pass
    return None


_STORE_TARGET = "the job store"
_SQLITE_READONLY, _SQLITE_FULL, _SQLITE_CANTOPEN = 8, 13, 14  # primary result codes


def _as_write_failure(exc: BaseException) -> tuple[str | None, int, str] | None:
    """(the place, errno, strerror) when ``exc`` itself is a failure to write; None otherwise."""
    if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
        target = os.fsdecode(exc.filename) if exc.filename is not None else None
        return target, exc.errno, exc.strerror or os.strerror(exc.errno)
    code = getattr(exc, "sqlite_errorcode", None)  # sqlite3.Error (Python 3.11+)
    if code is not None or type(exc).__module__ == "sqlite3":
        text = str(exc).splitlines()[0] if str(exc) else ""
        primary = code & 0xFF if isinstance(code, int) else None
        if primary == _SQLITE_FULL or (primary is None and "disk is full" in text):
            return _STORE_TARGET, errno.ENOSPC, text or os.strerror(errno.ENOSPC)
        if primary == _SQLITE_READONLY or (primary is None and "readonly database" in text):
            return _STORE_TARGET, errno.EROFS, text or os.strerror(errno.EROFS)
        if primary == _SQLITE_CANTOPEN:  # no database file yet, and its directory takes none
            return _STORE_TARGET, errno.EACCES, text or os.strerror(errno.EACCES)
    return None


def _chain(exc: BaseException) -> Iterator[tuple[int, BaseException]]:
    """``exc`` and every exception it was raised from or while handling, with its depth."""
    seen: set[int] = set()
    todo = [(0, exc)]
    while todo:
        depth, current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield depth, current
        for nxt in (current.__cause__, current.__context__):
            if nxt is not None:
                todo.append((depth + 1, nxt))


def cannot_write_error(exc: BaseException, option: str = "--workdir") -> CannotWriteError | None:
    """The :class:`~hwnas.errors.CannotWriteError` that ``exc`` amounts to, or None.

    ``exc`` amounts to one when it, or an exception it was raised from or while handling, is an
    ``OSError`` with one of :data:`WRITE_ERRNOS` or a SQLite "disk is full", "readonly database" or
    "unable to open database file" error (as optuna and SQLAlchemy wrap it; the store creates its
    directory first, so the last means the file cannot be created there). The earliest such
    failure that names its place is the one reported (a full disk usually fails an artifact first,
    then the store's attempt to record the stop).
    ``option`` is what the message offers for writing elsewhere (``--workdir``, ``--out``).
    """
    if isinstance(exc, CannotWriteError):
        return exc
    found, found_rank = None, (False, -1)
    for depth, current in _chain(exc):
        failure = _as_write_failure(current)
        # the earliest failure that names its place: a writer's bare OSError (a ``write`` call
        # names no file) is what atomic_path re-raised naming the file, one level up
        rank = (failure is not None and failure[0] is not None, depth)
        if failure is not None and rank > found_rank:
            found, found_rank = failure, rank
    if found is None:
        return None
    target, code, strerror = found
    if target == _STORE_TARGET:
        option = "--workdir or --store"
    if code in (errno.ENOSPC, errno.EDQUOT):
        remedy = f"free space on that disk{' or raise your quota' if code == errno.EDQUOT else ''}, " \
                 f"or pass {option} on another disk"
    elif code == errno.EFBIG:
        remedy = f"raise the file-size limit (ulimit -f), or pass {option} on another file system"
    else:
        remedy = f"make {'the work dir' if option.startswith('--workdir') else 'that directory'} writable, " \
                 f"or pass {option} to a writable place"
    return CannotWriteError(f"cannot write {target or 'a file'}: {strerror} ({remedy}); the files already "
                            "written are kept and the job resumes when rerun", target=target, errno=code)
