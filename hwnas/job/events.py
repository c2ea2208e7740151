"""A job's journal: ``WORKDIR/JOB/events.jsonl``, one JSON object a line, only ever appended.

The store and the artifacts say what a job has committed, not what happened to it. A job that
runs for a day may be killed, resumed and killed again; the journal says when each run started
and what it found, which stage each run was in, and when every real evaluation and supernet sample
started and was committed. That answers the questions a user asks after a crash (where did it
die, how often has it resumed, was any work done twice) and is what the reliability suite and
``experiments/bench_reliability.py`` count kills, lost work and repeated evaluations from.

Each event is written with one ``write`` call on a file opened for appending, so a process
killed at any point leaves at most one torn last line (never a gap); readers skip a torn line,
and a writer that finds one starts on a fresh line. Events are not fsynced: a kill cannot lose
what was written, only a power cut can, and that costs the tail of a journal, never an artifact.
The journal is advisory: a job's results never depend on it, and a write to it that fails (a full
disk) is ignored rather than failing the job.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

EVENTS_FILE = "events.jsonl"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


class EventLog:
    """Appends events to one journal file (created on first use)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._checked_tail = False

    def _starts_clean(self) -> bool:
        """Whether the file is empty or ends with a newline (False after a kill mid-line)."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                if fh.tell() == 0:
                    return True
                fh.seek(-1, os.SEEK_END)
                return fh.read(1) == b"\n"
        except FileNotFoundError:
            return True

    def write(self, event: str, **fields: Any) -> None:
        record = {"t": _now(), "pid": os.getpid(), "event": event, **fields}
        line = json.dumps(record, default=str, separators=(",", ":")) + "\n"
        try:
            if not self._checked_tail:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                if not self._starts_clean():
                    line = "\n" + line  # end the torn line a killed writer left
                self._checked_tail = True
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                os.write(fd, line.encode("utf-8"))
            finally:
                os.close(fd)
        except OSError:
            pass  # advisory: a full disk must fail the artifact being written, not the journal


class NullLog:
    """An :class:`EventLog` that records nothing (code run outside a job)."""

    def write(self, event: str, **fields: Any) -> None:
        pass


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """Every whole event in ``path`` (none when it does not exist); torn lines are skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    events = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("event"), str):
            events.append(record)
    return events


def repeated(events: Iterable[dict[str, Any]], event: str, key: str = "arch") -> int:
    """How many ``event`` records repeat a ``key`` an earlier one had: committed work done again."""
    counts = Counter(e.get(key) for e in events if e["event"] == event)
    return sum(n - 1 for n in counts.values() if n > 1)


def unfinished(events: list[dict[str, Any]], started: str, finished: str, key: str = "arch") -> int:
    """Work a killed run started and never committed (``started`` with no later ``finished`` of
    the same key in the same run): what the next run had to do again."""
    lost = 0
    open_: dict[Any, dict[Any, int]] = {}
    for e in events:
        runs = open_.setdefault(e.get("pid"), {})
        if e["event"] == started:
            runs[e.get(key)] = runs.get(e.get(key), 0) + 1
        elif e["event"] == finished and runs.get(e.get(key)):
            runs[e.get(key)] -= 1
    for runs in open_.values():
        lost += sum(runs.values())
    return lost


def summary(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Runs, resumptions and where each earlier run stopped, for ``hwnas jobs JOB``."""
    runs: list[dict[str, Any]] = []
    for e in events:
        if e["event"] == "run_started":
            runs.append({"pid": e.get("pid"), "started": e.get("t"), "stage": None, "ended": None})
        elif runs and e.get("pid") == runs[-1]["pid"]:
            if e["event"] == "stage_started":
                runs[-1]["stage"] = e.get("stage")
            elif e["event"] == "run_finished":
                runs[-1]["ended"] = e.get("status")
    return {"runs": len(runs), "resumed": max(0, len(runs) - 1),
            "killed_in": [r["stage"] for r in runs[:-1] if r["ended"] is None]}
