"""Processes the launcher started: spawn, pid records, liveness, stop, memory.

Each component runs in a session of its own (pid == process group id == session id). Its processes
are its descendants plus its session's members: postgres' children start sessions of their own, and a
child whose parent has died is found through the session. A pid record keeps the process's start time
as well, so a pid the kernel later reuses for another process is never mistaken for ours.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
# Popen objects of the processes this launcher run spawned: polling them reaps the zombies.
_children: dict[int, subprocess.Popen] = {}


@dataclass
class PidRecord:
    pid: int
    start_ticks: int  # /proc/<pid>/stat field 22 (start time since boot, in clock ticks)
    log_offset: int = 0  # where this run's output starts in the component's log
    command: list[str] = field(default_factory=list)
    started_at: float = 0.0  # time.time()

    def alive(self) -> bool:
        child = _children.get(self.pid)
        if child is not None:
            child.poll()
        stat = proc_stat(self.pid)
        return stat is not None and stat.state not in "ZX" and stat.start_ticks == self.start_ticks


@dataclass
class ProcStat:
    state: str
    ppid: int
    session: int
    start_ticks: int
    rss_pages: int

    @property
    def live(self) -> bool:
        return self.state not in "ZX"


def proc_stat(pid: int) -> ProcStat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("ascii", "replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) is in parentheses and may contain spaces: split after the last ')'.
    rest = raw[raw.rindex(")") + 2:].split()
    return ProcStat(state=rest[0], ppid=int(rest[1]), session=int(rest[3]), start_ticks=int(rest[19]),
                    rss_pages=int(rest[21]))


def all_stats() -> dict[int, ProcStat]:
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = proc_stat(int(entry))
            if stat:
                stats[int(entry)] = stat
    return stats


def members(record: PidRecord) -> dict[int, int]:
    """The component's live processes, pid -> start ticks: the leader, its descendants and its session.
    Empty when the recorded pid now names another process (whose session would carry the same id)."""
    stats = all_stats()
    leader = stats.get(record.pid)
    if leader is not None and leader.start_ticks != record.start_ticks:
        return {}
    children: dict[int, list[int]] = defaultdict(list)
    for pid, stat in stats.items():
        children[stat.ppid].append(pid)
    found: dict[int, int] = {}
    todo = [record.pid] if leader is not None else []
    while todo:
        pid = todo.pop()
        if stats[pid].live:
            found[pid] = stats[pid].start_ticks
        todo.extend(c for c in children[pid] if c not in found)
    for pid, stat in stats.items():
        if stat.session == record.pid and stat.live:
            found[pid] = stat.start_ticks
    return found


def pss_bytes(pid: int) -> int | None:
    """Proportional set size: shared pages divided among the processes sharing them, so
    PostgreSQL's shared buffers are not counted once per backend. None if unreadable."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_bytes(record: PidRecord) -> int:
    """Memory of a component and its children: PSS where the kernel offers it, else RSS."""
    if not record.alive():
        return 0
    total = 0
    for pid in members(record):
        pss = pss_bytes(pid)
        if pss is not None:
            total += pss
            continue
        stat = proc_stat(pid)
        total += stat.rss_pages * PAGE_SIZE if stat else 0
    return total


# --- records ------------------------------------------------------------------------------------
def record_path(run_dir: Path, name: str) -> Path:
    return run_dir / f"{name}.pid"


def read_record(run_dir: Path, name: str) -> PidRecord | None:
    try:
        data = json.loads(record_path(run_dir, name).read_text())
        return PidRecord(**data)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):
        return None  # a torn or foreign file: treated as no record


def write_record(run_dir: Path, name: str, record: PidRecord) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = record_path(run_dir, name)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(record)))
    tmp.replace(path)


def remove_record(run_dir: Path, name: str) -> None:
    record_path(run_dir, name).unlink(missing_ok=True)


def recorded_names(run_dir: Path) -> list[str]:
    return sorted(p.stem for p in run_dir.glob("*.pid")) if run_dir.exists() else []


# --- spawn and stop -----------------------------------------------------------------------------
def spawn(command: list[str], *, env: dict[str, str], cwd: Path, log_path: Path,
          user_ids: tuple[int, int] | None = None) -> PidRecord:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} start: {' '.join(command)}\n".encode())
        log.flush()
        offset = log.tell()
        proc = subprocess.Popen(
            command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
            user=user_ids[0] if user_ids else None, group=user_ids[1] if user_ids else None,
            extra_groups=[] if user_ids else None)
    _children[proc.pid] = proc
    stat = proc_stat(proc.pid)
    return PidRecord(pid=proc.pid, start_ticks=stat.start_ticks if stat else -1, log_offset=offset,
                     command=list(command), started_at=time.time())


def set_priority(pid: int, niceness: int) -> bool:
    """Give the session that `pid` leads the CPU priority `niceness`. Every component runs in a
    session of its own, and where Linux schedules by session ("autogroup", the default of most
    distributions), it shares the CPU between sessions first: a process's own `nice` then ranks it
    only against its own session. False where the kernel has no autogroup or refuses the value."""
    try:
        Path(f"/proc/{pid}/autogroup").write_text(f"{niceness}\n")
    except OSError:
        return False
    return True


def exit_status(record: PidRecord) -> str:
    """How a process we spawned in this run ended ("exit 1", "signal 9"), or "" when unknown."""
    child = _children.get(record.pid)
    if child is None or child.poll() is None:
        return ""
    code = child.returncode
    return f"signal {-code}" if code < 0 else f"exit {code}"


class _Target:
    """A component being stopped: the processes it had when the stop began, plus any found since."""

    def __init__(self, record: PidRecord):
        self.record = record
        self.known = members(record)

    def remaining(self) -> dict[int, int]:
        if self.record.alive():
            self.known.update(members(self.record))
        left = {}
        for pid, ticks in self.known.items():
            stat = proc_stat(pid)
            if stat and stat.live and stat.start_ticks == ticks:
                left[pid] = ticks
        return left

    def kill(self) -> None:
        for pid in self.remaining():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def wait_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.remaining():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        _wait_reaped(self.record)
        return True


def stop(records: list[tuple[PidRecord, int, float]]) -> list[PidRecord]:
    """Stop processes together: each (record, graceful signal, grace seconds) gets its signal at once,
    to the leader only (it shuts its own children down); whatever of it is still alive after its grace
    is SIGKILLed. Returns the records that needed SIGKILL."""
    start = time.monotonic()
    targets = [(_Target(record), sig, grace) for record, sig, grace in records]
    for target, sig, _grace in targets:
        if target.record.alive():
            try:
                os.kill(target.record.pid, sig)
            except ProcessLookupError:
                pass
    killed: list[PidRecord] = []
    waiting = targets
    while waiting:
        still = []
        for target, sig, grace in waiting:
            if not target.remaining():
                continue
            if time.monotonic() - start > grace:
                target.kill()
                killed.append(target.record)
                if not target.wait_gone(10.0):
                    raise OSError(f"pid {target.record.pid} survived SIGKILL")
                continue
            still.append((target, sig, grace))
        waiting = still
        if waiting:
            time.sleep(0.2)
    for target, _sig, _grace in targets:
        _wait_reaped(target.record)
    return killed


def kill(record: PidRecord) -> None:
    """SIGKILL the process and all of its processes at once (a crash, as far as the component knows)."""
    target = _Target(record)
    target.kill()
    if not target.wait_gone(10.0):
        raise OSError(f"pid {record.pid} survived SIGKILL")


def _wait_reaped(record: PidRecord, timeout: float = 5.0) -> None:
    """Wait a little for the zombie to be reaped (by us, or by init for an earlier run's process): a
    program that checks its old pid (postgres' postmaster.pid) still sees a zombie as running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record.alive()  # reaps our own child
        stat = proc_stat(record.pid)
        if stat is None or stat.start_ticks != record.start_ticks:
            return
        time.sleep(0.1)
