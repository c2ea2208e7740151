"""Errors a user can cause, each carrying the CLI exit code it maps to.

The CLI prints ``str(error)`` as one line and exits with ``error.exit_code``; anything that is not
an :class:`HwnasError` is a bug in hwnas and keeps its traceback.

Exit codes: 0 done; 1 nothing meets the budgets (:class:`NoCandidateError`); 2 any other problem the
user can fix, and usage errors; 74 (``EX_IOERR`` of sysexits.h) hwnas cannot write a file or the job
store: a full disk, a quota, a file-size limit, a read-only or unwritable place
(:class:`CannotWriteError`; the CLI also maps such an ``OSError`` or SQLite error to it); 130
interrupted (Ctrl-C).
"""
from __future__ import annotations


class HwnasError(Exception):
    """A problem the user can fix (bad config, unknown job, corrupt file): exit code 2."""

    exit_code = 2


class ConfigError(HwnasError):
    """A config file or override that does not validate; the message names the field."""


class ArchError(HwnasError):
    """An architecture with an unknown dimension or a value outside the dimension's choices."""


class JobError(HwnasError):
    """An unknown job or candidate, or a job in a state that does not allow the request."""


class DataError(HwnasError):
    """A dataset that is missing, malformed or refused (for example an unsafe pickle)."""


class LookupTableError(HwnasError):
    """A lookup table that cannot be read or lacks an entry that is needed."""


class ProxyError(HwnasError):
    """A zero-cost proxy that cannot score what it was given: an unknown proxy name, a loss-based
    proxy without targets, a batch too small for a statistic over samples, or a model the proxy
    does not apply to (token ids without an embedding for ``jacob_cov``); the message says which."""


class NoCandidateError(HwnasError):
    """Nothing on the front meets the budgets: exit code 1, as the CLI promises."""

    exit_code = 1


class IntegrityError(HwnasError):
    """An artifact hwnas wrote (checkpoint, supernet weights, lookup table, sample cache) that no
    longer matches the sha256 digest recorded when it was written (truncated or altered on disk), or
    that lacks the digest it should have; the message names the file and says how to recompute it."""


class TableIntegrityError(IntegrityError, LookupTableError):
    """A lookup table (or its metadata) failing its digest: both an integrity and a table error."""


class JobLockedError(JobError):
    """The job is being run by another process (it holds the job directory's lock)."""


class CannotWriteError(HwnasError):
    """hwnas cannot write a file or the job store: no space left, a disk quota, the file-size limit
    (``ulimit -f``), or a read-only or unwritable place: exit code 74 (``EX_IOERR``). Every write
    is atomic, so the files already written are kept and a rerun resumes the work
    (see :func:`hwnas.utils.write_errors.cannot_write_error`, which builds it from the ``OSError``)."""

    exit_code = 74

    def __init__(self, message: str, target: str | None = None, errno: int | None = None):
        super().__init__(message)
        self.target, self.errno = target, errno
