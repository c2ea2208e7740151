"""Integrity of a job's artifacts, and one process per job.

1. Every artifact hwnas writes and reads back records a sha256 digest when it is written: the
   supernet training checkpoint and the trained supernet weights inside themselves (the
   checkpoint's ``digest`` entry, the safetensors metadata), the lookup tables (the job's, the
   profiler's cache, imported table devices) and the sample caches in ``FILE.sha256`` beside them.
   For each: an intact file loads; a truncated one, one with a flipped byte, and one whose digest
   was altered or removed are refused with an error naming the file and saying what to do; a kill
   between writing a file and its digest leaves a pair that still agrees; and a job resumed after
   the damage stops with that one-line error (exit code 2), not a traceback.
2. A second ``hwnas search`` on a job that is running is refused at once, naming the holder's
   pid; the lock dies with its holder (SIGKILL included), and jobs of other names are not held up.
"""
from __future__ import annotations

import copy
import os
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from hwnas.job.checks import load_job_config as load_config
from hwnas.errors import HwnasError, IntegrityError, JobLockedError, LookupTableError
from hwnas.ir import OpSig
from hwnas.hwmodels.lut import LookupTable, meta_path
from hwnas.utils import io as hio
from hwnas.utils.io import (ACCEPT_UNVERIFIED_ENV, LockBusy, atomic_path_with_digest, digest_path, file_lock,
                            verify_digest)
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[2]


# -- damage ---------------------------------------------------------------------------------------
def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip_byte(path: Path, offset: int | None = None) -> None:
    """Flip one bit of one byte (by default the last but one: tensor data in a safetensors file)."""
    data = bytearray(path.read_bytes())
    offset = len(data) - 2 if offset is None else offset
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def change_a_digit(path: Path) -> None:
    """Alter a CSV so that it still parses: the last digit of the last line becomes another digit."""
    text = path.read_text()
    body, last = text.rstrip("\n").rsplit("\n", 1)
    i = max(j for j, c in enumerate(last) if c.isdigit())
    last = last[:i] + str((int(last[i]) + 1) % 10) + last[i + 1:]
    path.write_text(f"{body}\n{last}\n")


def alter_digest_file(path: Path) -> None:
    sidecar = digest_path(path)
    digest, name = sidecar.read_text().split()
    sidecar.write_text(f"{'0' if digest[0] != '0' else '1'}{digest[1:]}  {name}\n")


def refused(call, path: Path | None, error=HwnasError, match: str | None = None) -> str:
    with pytest.raises(error, match=match) as info:
        call()
    message = str(info.value)
    assert path is None or str(path) in message, message
    assert "\n" not in message
    return message


# =================================================================================================
# 1. Checkpoint
# =================================================================================================
@pytest.fixture(scope="module")
def tiny_supernet():
    from hwnas.data import load_data
    from hwnas.spaces.cnn import CNNSupernet
    from hwnas.spaces.registry import build_space

    cfg = load_config(None, ["space.stages.0.depth=[1]", "space.stages.1.depth=[1]", "space.stages.2.depth=[1]",
                             "train.subnets_per_step=2", "train.epochs=1"])
    data = load_data()
    space = build_space(cfg.space, data.input_shape, data.num_classes)

    def fresh():
        torch.manual_seed(0)
        return CNNSupernet(space)

    return cfg, data, fresh


def _trainer(tiny_supernet, ckpt: Path):
    from hwnas.train.trainer import SupernetTrainer

    cfg, data, fresh = tiny_supernet
    return SupernetTrainer(fresh(), data, cfg.train, 0, torch.device("cpu"), 64, ckpt)


@pytest.fixture
def checkpoint(tiny_supernet, tmp_path) -> Path:
    ckpt = tmp_path / "checkpoint.pt"
    trainer = _trainer(tiny_supernet, ckpt)
    trainer.history = [{"epoch": 0, "loss": 1.5}]
    trainer.save_checkpoint(0)
    return ckpt


def _rewrite_checkpoint(path: Path, change) -> None:
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)


def test_an_intact_checkpoint_resumes(tiny_supernet, checkpoint):
    trainer = _trainer(tiny_supernet, checkpoint)
    assert trainer.try_resume() and trainer.start_epoch == 1 and trainer.history == [{"epoch": 0, "loss": 1.5}]


def test_a_truncated_checkpoint_is_refused(tiny_supernet, checkpoint):
    truncate(checkpoint)
    refused(_trainer(tiny_supernet, checkpoint).try_resume, checkpoint, match="delete it to retrain")


def test_a_checkpoint_with_a_flipped_byte_is_refused(tiny_supernet, checkpoint):
    flip_byte(checkpoint, checkpoint.stat().st_size // 2)  # inside the weights' storage
    refused(_trainer(tiny_supernet, checkpoint).try_resume, checkpoint, match="delete it to retrain")


def test_a_checkpoint_altered_inside_is_refused_by_its_digest(tiny_supernet, checkpoint):
    """A well-formed checkpoint whose weights were changed after it was written (the zip records
    are consistent, only the digest can tell)."""
    def nudge(state):
        first = next(iter(state["model"]))
        state["model"][first] = state["model"][first] + 1e-3

    _rewrite_checkpoint(checkpoint, nudge)
    trainer = _trainer(tiny_supernet, checkpoint)
    before = {k: v.clone() for k, v in trainer.supernet.state_dict().items()}
    message = refused(trainer.try_resume, checkpoint, IntegrityError, match="does not match")
    assert "truncated or altered" in message and "delete it to retrain" in message
    # refused before loading: the supernet was not touched
    assert all(torch.equal(before[k], v) for k, v in trainer.supernet.state_dict().items())


def test_a_checkpoint_whose_digest_was_altered_or_removed_is_refused(tiny_supernet, checkpoint):
    _rewrite_checkpoint(checkpoint, lambda s: s.update(digest="0" * 64))
    refused(_trainer(tiny_supernet, checkpoint).try_resume, checkpoint, IntegrityError, match="does not match")
    _rewrite_checkpoint(checkpoint, lambda s: s.pop("digest"))  # as an older hwnas wrote it
    message = refused(_trainer(tiny_supernet, checkpoint).try_resume, checkpoint, IntegrityError,
                      match="no recorded sha256 digest")
    assert "delete it to retrain" in message and ACCEPT_UNVERIFIED_ENV in message


def test_an_unverified_checkpoint_is_used_only_when_asked_with_a_warning(tiny_supernet, checkpoint, monkeypatch):
    _rewrite_checkpoint(checkpoint, lambda s: s.pop("digest"))
    monkeypatch.setenv(ACCEPT_UNVERIFIED_ENV, "1")
    with pytest.warns(UserWarning, match="used unverified"):
        assert _trainer(tiny_supernet, checkpoint).try_resume()
    _rewrite_checkpoint(checkpoint, lambda s: s.update(digest="0" * 64))  # a mismatch is never accepted
    refused(_trainer(tiny_supernet, checkpoint).try_resume, checkpoint, IntegrityError, match="does not match")


# =================================================================================================
# 2. Supernet weights (safetensors, digest in the file's metadata)
# =================================================================================================
def _components(tiny_supernet):
    from hwnas.train.components import Components

    cfg, data, fresh = tiny_supernet
    return Components(config=cfg, data=data, space=None, supernet=fresh(), compute=torch.device("cpu"))


@pytest.fixture
def weights(tiny_supernet, tmp_path) -> Path:
    from hwnas.train.components import save_weights

    path = tmp_path / "supernet.safetensors"
    net = tiny_supernet[2]()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.5)  # not the fresh supernet's weights, so that loading them shows
    save_weights(path, net.state_dict())
    return path


def test_intact_weights_load(tiny_supernet, weights):
    parts = _components(tiny_supernet)
    parts.load_weights(weights)
    stored = load_file(str(weights))
    assert all(torch.equal(stored[k], v) for k, v in parts.supernet.state_dict().items())


@pytest.mark.parametrize("damage", ["truncate", "flip", "alter-digest", "remove-digest", "rewritten-tensor"])
def test_damaged_weights_are_refused(tiny_supernet, weights, damage):
    if damage == "truncate":
        truncate(weights)
    elif damage == "flip":
        flip_byte(weights)  # a bit of the last tensor's data: still a valid safetensors file
    else:
        state = load_file(str(weights))
        metadata = {"hwnas_sha256": "0" * 64} if damage == "alter-digest" else None
        if damage == "rewritten-tensor":
            from safetensors import safe_open

            with safe_open(str(weights), framework="pt") as fh:
                metadata = fh.metadata()  # the genuine digest, over changed weights
            first = next(iter(state))
            state[first] = state[first] + 1
        save_file(state, str(weights), metadata=metadata)
    message = refused(lambda: _components(tiny_supernet).load_weights(weights), weights,
                      IntegrityError if damage != "truncate" else HwnasError)
    assert "hwnas search" in message  # what to do


# =================================================================================================
# 3. Lookup tables (CSV and JSON, FILE.sha256 beside them)
# =================================================================================================
def _table() -> LookupTable:
    table = LookupTable(device={"name": "board", "processor": "lab"})
    for i, cout in enumerate((8, 16, 24)):
        table.add(OpSig("conv", 3, 8, 8, cout, kernel=3, stride=1), 0.125 * (i + 1), 0.01, 5)
    return table


@pytest.fixture(params=["csv", "json"])
def saved_table(request, tmp_path) -> Path:
    path = tmp_path / f"board.{request.param}"
    _table().save(path)
    return path


def test_an_intact_table_loads_and_records_its_digests(saved_table):
    back = LookupTable.load(saved_table, require_digest=True)
    assert back.entries == _table().entries and back.device["processor"] == "lab"
    assert digest_path(saved_table).exists()
    if saved_table.suffix == ".csv":
        assert digest_path(meta_path(saved_table)).exists()
    # sha256sum format: `sha256sum -c board.csv.sha256` checks it by hand too
    digest, name = digest_path(saved_table).read_text().split()
    assert name == saved_table.name and len(digest) == 64


@pytest.mark.parametrize("damage", ["truncate", "flip", "alter-digest", "remove-digest"])
@pytest.mark.parametrize("require", [False, True])
def test_a_damaged_table_is_refused(saved_table, damage, require):
    """Whether the reader requires a digest (the profiler's cache) or not (a table named by
    device.table), a table hwnas wrote is checked: its metadata says it has a digest."""
    if damage == "truncate":
        truncate(saved_table)
    elif damage == "flip":
        if saved_table.suffix == ".csv":
            change_a_digit(saved_table)  # still parses: only the digest can tell
        else:
            text = saved_table.read_text()
            saved_table.write_text(text.replace("0.125", "0.126", 1))
    elif damage == "alter-digest":
        alter_digest_file(saved_table)
    else:
        digest_path(saved_table).unlink()
    message = refused(lambda: LookupTable.load(saved_table, require_digest=require), saved_table, LookupTableError)
    if damage != "truncate":  # a truncated file may fail to parse first, naming its line
        assert "sha256" in message and "delete it" in message


def test_a_table_whose_metadata_was_altered_is_refused(tmp_path):
    path = tmp_path / "board.csv"
    _table().save(path)
    meta = meta_path(path)
    meta.write_text(meta.read_text().replace('"lab"', '"other"'))
    refused(lambda: LookupTable.load(path), meta, LookupTableError, match="does not match")


def test_a_hand_made_table_needs_no_digest_unless_required(tmp_path):
    """device.table may name a table the user wrote: it has no digest and is read as it is; the
    profiler's cache, which hwnas wrote, must have one."""
    path = tmp_path / "mine.csv"
    path.write_text("kind,cin,h,w,cout,latency_ms\nconv,3,8,8,8,0.1\n")
    assert len(LookupTable.load(path)) == 1
    refused(lambda: LookupTable.load(path, require_digest=True), path, LookupTableError,
            match="no recorded sha256 digest")


def test_the_profiler_refuses_a_damaged_cache(tmp_path):
    from hwnas.hwmodels.profiler import build_lookup_table, lut_path

    class Device:
        name = "board"

        def fingerprint(self):
            return "f00"

        def describe(self):
            return {"name": self.name}

    path = lut_path(tmp_path, Device())
    _table().save(path)
    change_a_digit(path)
    message = refused(lambda: build_lookup_table(Device(), None, None, tmp_path), path, LookupTableError)
    assert "profile the device again" in message


def test_an_imported_table_device_must_have_its_digest_in_a_job(tmp_path):
    """A table in WORKDIR/devices (what hwnas import-table writes) is checked strictly by a job:
    an old import without digests, or one whose digest was removed, is refused there."""
    from hwnas.config import DeviceConfig
    from hwnas.job.runner import SearchJob
    from hwnas.utils.progress import Reporter

    work = tmp_path / "w"
    path = work / "devices" / "board.csv"
    _table().save(path)
    job = SearchJob(load_config(None), "t", None, work, torch.device("cpu"), Reporter())
    assert job.device(DeviceConfig(name="board")).name == "board"
    for file in (digest_path(path), digest_path(meta_path(path)), meta_path(path)):
        file.unlink()  # as an hwnas older than digests imported it
    refused(lambda: job.device(DeviceConfig(name="board")), path, LookupTableError,
            match="no recorded sha256 digest.*import it again")


# =================================================================================================
# 4. Sample caches (rewritten whole at every flush: FILE.sha256 follows each flush)
# =================================================================================================
def _sample_job(tmp_path):
    from hwnas.job.runner import SearchJob
    from hwnas.utils.progress import Reporter

    return SearchJob(load_config(None), "t", None, tmp_path, torch.device("cpu"), Reporter())


@pytest.fixture
def samples(tmp_path):
    from hwnas.spaces.dims import Arch

    archs = [Arch.from_dict({"depth": d}) for d in (1, 2, 3)]
    path = tmp_path / "accuracy_samples.csv"
    job = _sample_job(tmp_path)
    job.measure_resumably(archs, path, "val_accuracy", lambda a: 0.5 + a.to_dict()["depth"] / 100, "s")
    return job, archs, path


def test_an_intact_sample_cache_resumes(samples):
    job, archs, path = samples
    measured = []
    out = job.measure_resumably(archs, path, "val_accuracy", measured.append, "s")
    assert list(out) == [0.51, 0.52, 0.53] and measured == []


@pytest.mark.parametrize("damage", ["truncate", "flip", "alter-digest", "remove-digest"])
def test_a_damaged_sample_cache_is_refused_before_measuring(samples, damage):
    job, archs, path = samples
    {"truncate": truncate, "flip": change_a_digit, "alter-digest": alter_digest_file,
     "remove-digest": lambda p: digest_path(p).unlink()}[damage](path)
    measured = []
    message = refused(lambda: job.measure_resumably(archs, path, "val_accuracy", measured.append, "s"), path,
                      match="delete it to measure again")
    assert not measured
    if damage != "truncate":
        assert "sha256" in message


# =================================================================================================
# 5. A kill between a file and its digest
# =================================================================================================
class Killed(BaseException):
    pass


@pytest.mark.parametrize("at", ["pending digest", "data rename", "digest"])
def test_a_kill_between_a_file_and_its_digest_leaves_them_agreeing(tmp_path, monkeypatch, at):
    """The digest goes to a pending file first, then the data is renamed into place, then the
    digest file is replaced: a kill at any step leaves data that matches a recorded digest."""
    path = tmp_path / "cache.csv"
    with atomic_path_with_digest(path) as tmp:
        tmp.write_text("old\n")
    real_write, real_replace = hio.write_text_atomic, os.replace

    def write(target, text):
        if (at == "pending digest" and target.name.endswith(".pending")) or (at == "digest" and target.name ==
                                                                             digest_path(path).name):
            raise Killed
        real_write(target, text)

    def replace(src, dst):
        if at == "data rename" and Path(dst) == path:
            raise Killed
        real_replace(src, dst)

    monkeypatch.setattr(hio, "write_text_atomic", write)
    monkeypatch.setattr(hio.os, "replace", replace)
    with pytest.raises(Killed):
        with atomic_path_with_digest(path) as tmp:
            tmp.write_text("new\n")
    monkeypatch.undo()
    assert path.read_text() == ("new\n" if at == "digest" else "old\n")
    assert verify_digest(path, what="cache", remedy="-")
    with atomic_path_with_digest(path) as tmp:  # the next write tidies up
        tmp.write_text("newer\n")
    assert verify_digest(path, what="cache", remedy="-") and not list(tmp_path.glob(".*pending"))


# =================================================================================================
# 6. A resumed job stops with the one-line error
# =================================================================================================
@pytest.fixture(scope="module")
def finished_job(tmp_path_factory):
    """One tiny job through the CLI (one epoch, no correction samples): a work directory to copy."""
    from hwnas.cli.app import main

    tree = copy.deepcopy(TINY)
    tree["train"]["epochs"] = 1
    tree["device"]["correction_samples"] = 0
    tree["predictor"]["samples"] = 12
    tree["search"].update(population=8, generations=2, evaluate=2)
    base = tmp_path_factory.mktemp("integrity-job")
    cfg = base / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tree))
    assert main(["search", str(cfg), "--workdir", str(base / "w"), "--quiet"]) == 0
    return base


def _reopen(finished_job, tmp_path) -> tuple[Path, Path]:
    """A copy of the finished job, marked interrupted (as a kill leaves it) so a rerun resumes it."""
    from hwnas.job.store import JobStore, default_store_url

    work = tmp_path / "w"
    shutil.copytree(finished_job / "w", work)
    store = JobStore(default_store_url(work))
    store.open("tiny").set_user_attr("status", "interrupted")
    store.storage.engine.dispose()
    return work, finished_job / "tiny.yaml"


@pytest.mark.parametrize("artifact", ["supernet.safetensors", "accuracy_samples.csv", "luts"])
def test_a_resumed_job_after_damage_stops_with_one_clear_line(finished_job, tmp_path, capsys, artifact):
    from hwnas.cli.app import main

    work, cfg = _reopen(finished_job, tmp_path)
    path = next((work / "luts").glob("*.csv")) if artifact == "luts" else work / "tiny" / artifact
    if artifact.endswith(".csv") or artifact == "luts":
        change_a_digit(path)
    else:
        flip_byte(path)
    capsys.readouterr()
    code = main(["search", str(cfg), "--workdir", str(work), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("error: ") and str(path) in err and "truncated or altered" in err
    path.unlink()  # what the message says to do; the rerun then recomputes it and finishes
    assert main(["search", str(cfg), "--workdir", str(work), "--quiet"]) == 0


def test_a_resumed_training_after_damage_stops_with_one_clear_line(finished_job, tmp_path, capsys):
    from hwnas.cli.app import main

    work, cfg = _reopen(finished_job, tmp_path)
    (work / "tiny" / "supernet.safetensors").unlink()  # training resumes from the checkpoint
    ckpt = work / "tiny" / "checkpoint.pt"
    _rewrite_checkpoint(ckpt, lambda s: s.update(epoch=s["epoch"] - 1))  # well formed, altered
    capsys.readouterr()
    assert main(["search", str(cfg), "--workdir", str(work), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(ckpt) in err and "delete it to retrain" in err, err


# =================================================================================================
# 7. One process per job
# =================================================================================================
HOLDER = """
import sys, time
from hwnas.utils.io import file_lock
with file_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


@pytest.fixture
def holder():
    """Start a process holding the lock at a path; yield a function starting it."""
    procs = []

    def start(path: Path) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        line = proc.stdout.readline()
        assert line.strip() == "locked", proc.stderr.read()
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_second_run_of_a_running_job_is_refused_then_proceeds_after_a_kill(finished_job, tmp_path, holder,
                                                                              capsys):
    import hwnas
    from hwnas.cli.app import main

    work, cfg = _reopen(finished_job, tmp_path)
    lock = work / "tiny" / ".lock"
    proc = holder(lock)
    message = refused(lambda: hwnas.launch(str(cfg), workdir=work), None, JobLockedError)
    assert message == (f"job 'tiny' is running in another process (pid {proc.pid}, since {_since(lock)}); "
                       "wait for it to finish, or pass --name for a new job")
    capsys.readouterr()
    assert main(["search", str(cfg), "--workdir", str(work), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: job 'tiny' is running in another process") and len(err.splitlines()) == 1
    assert hwnas.open_job("tiny", workdir=work).status == "interrupted"  # the refused run changed nothing

    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    job = hwnas.launch(str(cfg), workdir=work)  # the kernel dropped the dead holder's lock
    assert job.status == "done"
    assert lock.read_text() == ""  # released, and nobody named any more


def _since(lock: Path) -> str:
    import json

    return json.loads(lock.read_text())["since"]


def test_other_job_names_are_not_held_up(tmp_path, holder):
    holder(tmp_path / "job-a" / ".lock")
    with file_lock(tmp_path / "job-b" / ".lock"):
        pass
    with pytest.raises(LockBusy) as info:  # the same name, even from the same process
        with file_lock(tmp_path / "job-a" / ".lock"):
            pass
    assert info.value.holder["pid"] != os.getpid()


def test_a_lock_is_released_when_its_block_ends_or_fails(tmp_path):
    path = tmp_path / ".lock"
    with pytest.raises(RuntimeError):
        with file_lock(path):
            raise RuntimeError
    with file_lock(path):
        with pytest.raises(LockBusy):
            with file_lock(path):
                pass
    with file_lock(path):
        pass


def test_two_processes_racing_to_create_one_job_get_a_clear_error(tmp_path):
    """What the job lock prevents in one work directory, the store reports across two sharing one
    store: the loser of the race to create the study gets a JobError, not optuna's traceback."""
    from hwnas.errors import JobError
    from hwnas.job.store import JobStore

    store = JobStore(f"sqlite:///{tmp_path / 'hwnas.db'}")
    store.create("same", ["accuracy"], {})
    with pytest.raises(JobError, match="just created .* by another process"):
        store.create("same", ["accuracy"], {})
    store.storage.engine.dispose()


def test_warnings_module_is_quiet_for_verified_files(saved_table):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LookupTable.load(saved_table, require_digest=True)


def test_a_running_job_whose_lock_is_free_shows_as_killed(tmp_path, holder):
    """``hwnas jobs`` must not call a job running forever after its process died by SIGKILL."""
    from hwnas.job.store import live_status
    from hwnas.utils.io import lock_held

    job_dir = tmp_path / "tiny"
    attrs = {"status": "running", "job_dir": str(job_dir)}
    assert lock_held(job_dir / ".lock") is None and live_status(attrs) == "running"  # cannot tell: say so
    proc = holder(job_dir / ".lock")
    assert lock_held(job_dir / ".lock") is True and live_status(attrs) == "running"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert lock_held(job_dir / ".lock") is False and live_status(attrs) == "killed"
    assert live_status({**attrs, "status": "done"}) == "done"


def test_a_status_probe_never_makes_a_starting_run_look_busy(tmp_path):
    """``hwnas jobs`` probes a job's lock with an instant shared lock; a run starting at that
    moment waits the instant out instead of being refused (a probe names no holder)."""
    import fcntl
    import threading

    lock = tmp_path / "job" / ".lock"
    lock.parent.mkdir()
    lock.touch()
    fd = os.open(lock, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)  # a probe caught holding it
    threading.Timer(0.2, lambda: os.close(fd)).start()
    with file_lock(lock):
        pass
