"""A full disk, a file-size limit or a read-only work dir: one clear line, exit code 74, and the
last good artifacts intact (project issue 7).

The disks are real: a small tmpfs mounted under the test's temporary directory fills up and gives
``ENOSPC``, and remounted read-only gives ``EROFS`` (root ignores permission bits, so chmod would
prove nothing). Mounting needs root with CAP_SYS_ADMIN; where it is not permitted those tests are
skipped. The file-size limit test (``RLIMIT_FSIZE``: writes past it fail with ``EFBIG``) needs
nothing and always runs.

1. Full disk, three runs of one job on one tmpfs (module fixture ``disk_job``):
   a. the disk holds the first training checkpoint but not the second (an atomic replace needs
      room for both): the run stops with the one line, and the first checkpoint still loads;
   b. the disk grows, and is filled by a ballast file as soon as the trained supernet is written:
      the run stops at whatever it writes next (store, lookup table, sample cache) with the one
      line, and every artifact on the disk passes its digest check through hwnas's own loaders;
   c. the ballast is deleted and the same command finishes the job.
2. The finished job's disk remounted read-only: a new search, export and report each fail with one
   line naming the place, before doing any work where they can, and no file of the job changes.
3. The file-size limit: one line, exit code 74, no temporary file left behind.
"""
from __future__ import annotations

import copy
import errno
import hashlib
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from hwnas.errors import CannotWriteError
from hwnas.utils.io import atomic_path, has_digest, verify_digest, write_text_with_digest
from hwnas.utils.write_errors import cannot_write_error
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[2]
EXIT_CANNOT_WRITE = 74
TAIL = "; the files already written are kept and the job resumes when rerun"
NO_SPACE = "No space left on device (free space on that disk, or pass --workdir on another disk)"
READ_ONLY = "Read-only file system (make the work dir writable, or pass --workdir to a writable place)"
READ_ONLY_OUT = "Read-only file system (make that directory writable, or pass --out to a writable place)"


# -- disks ----------------------------------------------------------------------------------------
def _mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs (a real full or read-only disk) needs root with CAP_SYS_ADMIN")
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs here ({exc})")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or f'mount exited {done.returncode}'}")


def _remount(where: Path, options: str) -> None:
    done = subprocess.run(["mount", "-o", f"remount,{options}", str(where)], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, f"mount -o remount,{options}: {done.stderr.strip()}"


def _unmount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=30)


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs, unmounted whatever happens."""
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "64k")
    try:
        yield disk
    finally:
        _unmount(disk)


def fill(disk: Path, name: str = "ballast") -> Path:
    """Fill ``disk`` to the last byte with one file, and return it."""
    ballast = disk / name
    with open(ballast, "ab", buffering=0) as fh:
        for chunk in (1 << 16, 1 << 12, 1 << 9, 1):
            try:
                while True:
                    fh.write(b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    return ballast


# -- the CLI --------------------------------------------------------------------------------------
def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "2"}


def hwnas(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hwnas", *map(str, args)], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=600, **kwargs)


def one_line(result: subprocess.CompletedProcess) -> str:
    """The single stderr line of a run that failed to write (exit code 74, no traceback)."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert result.returncode == EXIT_CANNOT_WRITE, (result.returncode, result.stderr)
    print(f"exit {result.returncode}: {lines[0]}")  # shown by pytest -rP
    assert lines[0].startswith("error: cannot write ") and lines[0].endswith(TAIL), lines[0]
    return lines[0]


# -- artifacts ------------------------------------------------------------------------------------
def checkpoint_epochs(path: Path) -> int:
    """How many epochs the checkpoint at ``path`` holds, read by the trainer's own resume (which
    checks its digest)."""
    from hwnas.job.checks import load_job_config as load_config
    from hwnas.train.components import Components
    from hwnas.train.trainer import SupernetTrainer

    config = load_config(copy.deepcopy(TINY))
    parts = Components.build(config, torch.device("cpu"))
    trainer = SupernetTrainer(parts.supernet, parts.data, config.train, config.seed, torch.device("cpu"),
                              config.data.batch_size, path)
    assert trainer.try_resume()
    return trainer.start_epoch


def check_artifacts(workdir: Path) -> dict[str, int | None]:
    """Every artifact under ``workdir`` passes its check; no temporary file is left. Returns the
    names checked (relative to ``workdir``), a checkpoint's with its epochs."""
    from hwnas.hwmodels.lut import LookupTable
    from hwnas.train.components import load_weights_file

    checked: dict[str, int | None] = {}
    for path in sorted(p for p in workdir.rglob("*") if p.is_file()):
        rel = str(path.relative_to(workdir))
        assert not path.name.endswith(".tmp"), f"temporary file left behind: {rel}"
        epochs = None
        if path.name == "checkpoint.pt":
            epochs = checkpoint_epochs(path)
        elif path.suffix == ".safetensors":
            load_weights_file(path)
        elif path.suffix in (".csv", ".json"):
            assert has_digest(path), f"{rel} has no digest"
            verify_digest(path, what="artifact", remedy="rerun the job")
            if path.suffix == ".csv" and "samples" not in path.name:
                LookupTable.load(path, require_digest=True)
        elif path.name == "config.yaml":
            assert isinstance(yaml.safe_load(path.read_text()), dict)
        else:
            continue
        checked[rel] = epochs
    return checked


def hashes(workdir: Path) -> dict[str, str]:
    return {str(p.relative_to(workdir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(workdir.rglob("*")) if p.is_file()}


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 600) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.02)
    return False


def open_job_outside(workdir: Path) -> dict:
    """The job's status and best candidate, read in another process: a store opened here would
    stay open and keep the disk from being remounted read-only."""
    script = ("import json, sys, hwnas\n"
              "job = hwnas.open_job('tiny', workdir=sys.argv[1])\n"
              "front = job.front()\n"
              "best = int(front['id'].iloc[0]) if len(front) else None\n"
              "print(json.dumps({'status': job.status, 'candidate': best}))\n")
    done = subprocess.run([sys.executable, "-c", script, str(workdir)], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- 1. a full disk -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def disk_job(tmp_path_factory):
    """The three runs of one job on one tmpfs (see the module docstring), their results recorded;
    the tmpfs stays mounted (and the job done) for the read-only tests."""
    base = tmp_path_factory.mktemp("disk-faults")
    config = base / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "data": {**TINY["data"], "batch_size": 256}}))  # fewer steps
    disk = base / "disk"
    # ~120 KiB of store and config, then one 188 KiB checkpoint fits, a second beside it does not
    _mount_tmpfs(disk, "420k")
    workdir, job_dir = disk / "w", disk / "w" / "tiny"
    runs: dict = {"disk": disk, "config": config, "workdir": workdir, "job_dir": job_dir}
    try:
        command = ["search", config, "--workdir", workdir, "--quiet"]
        runs["a"] = hwnas(*command)
        runs["a_checked"] = check_artifacts(workdir)

        _remount(disk, "size=2m")
        process = subprocess.Popen([sys.executable, "-m", "hwnas", *map(str, command)], cwd=ROOT, env=_env(),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            runs["b_filled"] = _wait_for(job_dir / "supernet.safetensors", process)
            ballast = fill(disk) if runs["b_filled"] else None
            out, err = process.communicate(timeout=600)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        runs["b"] = subprocess.CompletedProcess(process.args, process.returncode, out, err)
        runs["b_checked"] = check_artifacts(workdir)

        if ballast is not None:
            ballast.unlink()
        runs["c"] = hwnas(*command)
        runs["c_checked"] = check_artifacts(workdir)
        runs["c_job"] = open_job_outside(workdir)
        yield runs
    finally:
        _unmount(disk)


def test_full_disk_in_training_fails_in_one_line_and_keeps_the_last_checkpoint(disk_job):
    line = one_line(disk_job["a"])
    assert line == f"error: cannot write {disk_job['job_dir'] / 'checkpoint.pt'}: {NO_SPACE}{TAIL}"
    assert disk_job["a_checked"]["tiny/checkpoint.pt"] == 1  # the checkpoint of epoch 1 of 2, intact
    assert "tiny/config.yaml" in disk_job["a_checked"]


def test_disk_filling_after_training_fails_in_one_line_and_keeps_every_artifact(disk_job):
    assert disk_job["b_filled"], "the job ended before its supernet was written"
    line = one_line(disk_job["b"])
    # whatever it wrote next (the store, a lookup table, a sample cache), named
    assert re.fullmatch(rf"error: cannot write {re.escape(str(disk_job['workdir']))}/\S+: {re.escape(NO_SPACE + TAIL)}",
                        line) or \
        line == f"error: cannot write the job store: database or disk is full (free space on that disk, or pass " \
                f"--workdir or --store on another disk){TAIL}", line
    assert {"tiny/checkpoint.pt", "tiny/supernet.safetensors"} <= set(disk_job["b_checked"])
    assert disk_job["b_checked"]["tiny/checkpoint.pt"] == 2


def test_rerun_after_space_is_freed_finishes_the_job(disk_job):
    result = disk_job["c"]
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert disk_job["c_job"]["status"] == "done"
    assert {"tiny/lut.csv", "tiny/accuracy_samples.csv", "tiny/latency_samples.csv"} <= set(disk_job["c_checked"])


# -- 2. a read-only work dir ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def read_only_job(disk_job):
    """The finished job's disk remounted read-only, with the job's file hashes and a candidate."""
    workdir = disk_job["workdir"]
    assert disk_job["c_job"]["status"] == "done"
    (workdir / "exports").mkdir(exist_ok=True)
    (workdir / "empty").mkdir(exist_ok=True)
    before = hashes(workdir)
    _remount(disk_job["disk"], "ro")
    return {**disk_job, "candidate": disk_job["c_job"]["candidate"], "hashes": before}


def test_new_search_in_read_only_workdir_fails_before_any_work(read_only_job):
    workdir = read_only_job["workdir"]
    result = hwnas("search", read_only_job["config"], "--workdir", workdir, "--name", "tiny2", "--quiet")
    assert one_line(result) == f"error: cannot write {workdir / 'tiny2'}: {READ_ONLY}{TAIL}"
    assert hashes(workdir) == read_only_job["hashes"]


def test_search_whose_workdir_cannot_be_made_fails_before_any_work(read_only_job):
    workdir = read_only_job["workdir"] / "new"
    result = hwnas("search", read_only_job["config"], "--workdir", workdir, "--quiet")
    assert one_line(result) == f"error: cannot write {workdir}: {READ_ONLY}{TAIL}"
    assert not workdir.exists()


def test_search_in_read_only_dir_without_a_store_fails_before_any_work(read_only_job):
    workdir = read_only_job["workdir"] / "empty"
    result = hwnas("search", read_only_job["config"], "--workdir", workdir, "--quiet")
    assert one_line(result) == ("error: cannot write the job store: unable to open database file (make the work "
                                f"dir writable, or pass --workdir or --store to a writable place){TAIL}")
    assert not any(workdir.iterdir())


def test_export_to_read_only_dir_fails_in_one_line(read_only_job):
    workdir, out = read_only_job["workdir"], read_only_job["workdir"] / "exports"
    result = hwnas("export", "tiny", "--candidate", read_only_job["candidate"], "--out", out, "--workdir", workdir,
                   "--quiet")
    # the first file export replaces there (its manifest, which it retracts first), named
    assert re.fullmatch(rf"error: cannot write {re.escape(str(out))}/[\w.]+: {re.escape(READ_ONLY_OUT + TAIL)}",
                        one_line(result))
    assert hashes(workdir) == read_only_job["hashes"]


def test_report_to_read_only_dir_fails_in_one_line(read_only_job):
    workdir, out = read_only_job["workdir"], read_only_job["workdir"] / "report"
    result = hwnas("report", "tiny", "--out", out, "--workdir", workdir, "--quiet")
    assert one_line(result) == f"error: cannot write {out}: {READ_ONLY_OUT}{TAIL}"
    assert hashes(workdir) == read_only_job["hashes"]


# -- 3. the file-size limit -----------------------------------------------------------------------
FSIZE_LIMIT = 160_000  # the store (~120 KB) fits; the first checkpoint (~190 KB) does not


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (FSIZE_LIMIT, FSIZE_LIMIT))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death by signal


def test_file_size_limit_fails_in_one_line_without_temporary_files(tmp_path, tiny_config_file):
    workdir = tmp_path / "w"
    result = hwnas("search", tiny_config_file, "--workdir", workdir, "--quiet", "--set", "data.batch_size=256",
                   preexec_fn=_limit_file_size)
    assert one_line(result) == (f"error: cannot write {workdir / 'tiny' / 'checkpoint.pt'}: File too large (raise the "
                                f"file-size limit (ulimit -f), or pass --workdir on another file system){TAIL}")
    assert not [p for p in workdir.rglob("*") if p.name.endswith(".tmp")]
    assert not (workdir / "tiny" / "checkpoint.pt").exists()
    check_artifacts(workdir)


# -- atomic writes on a real full or read-only disk -----------------------------------------------
def _temporaries(disk: Path) -> list[Path]:
    return [p for p in disk.rglob("*") if p.name.endswith(".tmp")]


def test_failed_atomic_writes_keep_the_previous_file_and_digest(small_disk):
    from safetensors.torch import save_file

    path = small_disk / "table.csv"
    write_text_with_digest(path, "a,b\n1,2\n")

    def intact() -> bool:
        return path.read_text() == "a,b\n1,2\n" and verify_digest(path, what="table", remedy="-") and \
            not _temporaries(small_disk)

    _remount(small_disk, "ro")  # first: a writer that failed may keep its deleted file open (busy)
    with pytest.raises(OSError) as caught:
        write_text_with_digest(path, "a,b\n5,6\n")
    assert (caught.value.errno, caught.value.filename) == (errno.EROFS, str(path))
    assert intact()

    _remount(small_disk, "rw")
    fill(small_disk)
    writers = {"text": lambda tmp: tmp.write_text("x" * 100_000),
               "torch.save": lambda tmp: torch.save({"w": torch.zeros(50_000)}, tmp),
               "safetensors": lambda tmp: save_file({"w": torch.zeros(50_000)}, str(tmp))}
    for name, write in writers.items():
        with pytest.raises(OSError) as caught:
            with atomic_path(path) as tmp:
                write(tmp)
        assert (caught.value.errno, caught.value.filename) == (errno.ENOSPC, str(path)), name
        assert intact(), name
    with pytest.raises(OSError) as caught:
        write_text_with_digest(path, "a,b\n3,4\n" * 10_000)
    assert (caught.value.errno, caught.value.filename) == (errno.ENOSPC, str(path))
    assert intact()


def test_only_failures_to_write_become_the_one_line():
    assert cannot_write_error(FileNotFoundError(errno.ENOENT, "No such file or directory", "x")) is None
    assert cannot_write_error(OSError(errno.EIO, "Input/output error", "x")) is None
    assert cannot_write_error(RuntimeError("boom")) is None
    error = cannot_write_error(OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), "/w/job/lut.csv"))
    assert isinstance(error, CannotWriteError) and error.exit_code == EXIT_CANNOT_WRITE
    assert str(error).startswith(f"cannot write /w/job/lut.csv: {os.strerror(errno.EDQUOT)} (free space")
    import sqlite3

    try:  # how the store's failure arrives: SQLite's error wrapped by SQLAlchemy, then optuna
        try:
            raise sqlite3.OperationalError("attempt to write a readonly database")
        except sqlite3.OperationalError as exc:
            raise RuntimeError("An exception is raised during the commit.") from exc
    except RuntimeError as wrapped:
        error = cannot_write_error(wrapped)
    assert str(error) == ("cannot write the job store: attempt to write a readonly database (make the work dir "
                          f"writable, or pass --workdir or --store to a writable place){TAIL}")


def test_torchscript_export_on_full_disk_raises_instead_of_aborting(small_disk):
    """torch.jit.save writing to a path aborts the whole process (a C++ exception thrown in a
    destructor) when the disk fills; hwnas saves TorchScript through memory, so the write fails
    like any other."""
    script = ("import sys, torch\n"
              "from hwnas.export.formats import save_scripted\n"
              "module = torch.jit.script(torch.nn.Linear(200, 200))\n"
              "try:\n"
              f"    save_scripted(module, __import__('pathlib').Path({str(small_disk / 'm.pt')!r}))\n"
              "except OSError as exc:\n"
              "    sys.exit(74 if exc.errno == 28 else 1)\n")
    fill(small_disk)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=_env(), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == EXIT_CANNOT_WRITE, result.stderr[-2000:]
    assert not _temporaries(small_disk)
