"""`./stack bench --profile`: where each process of the stack spent its CPU during a measured run.

`perf record` samples every CPU at a low rate (`HZ`, the `cpu-clock` software event, which needs
no hardware counters and so works on virtual machines) while `orders-bench` runs. Afterwards each
sample is put to the stack's component whose process it ran in (a service, PostgreSQL with all
its backends, Kafka...) and to a kind of code: the process's own, the kernel, the memory
allocator (glibc's or mimalloc), other parts of the C library, a JVM's compiled Java code or the
JVM itself, or another library by name. The run's results get, per component, its share of all
samples, its shares by kind and its busiest functions: what to look at before changing anything.

Without `perf` (or without the right to sample every CPU) the run goes on without a profile and
says so.

A JVM's compiled Java has no symbols perf can read. Before reading the samples, every JVM of the
stack writes its code cache's map (`jcmd <pid> Compiler.perfmap`, JDK 17 and later, with the
`jcmd` of the JVM's own JDK) to `/tmp/perf-<pid>.map`, where `perf script` looks, so Kafka's
busiest functions are Java methods by name. Code compiled and freed again before the run's end is
not in the map and stays unnamed, and so does all of it where the JDK has no `jcmd` (a runtime
only, such as Debian's `openjdk-17-jre-headless`). The maps are removed afterwards.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from collections import Counter
from pathlib import Path

from tools.stack import procs

# Samples per second per CPU: about a hundred a second on two cores, far below what moves the
# figures of a run, enough for the shares of anything above a percent over a minute or two.
HZ = 49
# Functions listed per component, their names cut to this length (Rust's generic ones run long).
TOP = 12
SYMBOL_CHARS = 160

# glibc's allocator (in libc) and mimalloc's (linked into the program).
# Whole names (perf may add `@GLIBC_…` or a `.constprop.0` suffix), so `freeaddrinfo` stays libc.
GLIBC_ALLOCATOR = re.compile(r"^(?:(?:_int_malloc|_int_free|_int_realloc|malloc|free|cfree|calloc|realloc"
                             r"|__libc_(?:malloc|free|calloc|realloc)|malloc_consolidate|unlink_chunk)(?:[@.]|$)"
                             r"|tcache_)")
MIMALLOC = re.compile(r"^_?mi_")
# perf script -F comm,pid,tid,time,ip,sym,dso: "  comm  pid/tid  seconds:  ip  symbol (dso)"
SAMPLE = re.compile(r"^\s*(?P<comm>.*?)\s+(?P<pid>\d+)/(?P<tid>\d+)\s+(?P<time>\d+\.\d+):\s+[0-9a-f]+\s+"
                    r"(?P<sym>.*?)\s+\((?P<dso>[^()]*)\)\s*$")


def kind_of(sym: str, dso: str) -> str:
    """The kind of code a sample ran: kernel, allocator, libc, JIT (a JVM's compiled Java), JVM,
    or the file it ran in (a program or a library)."""
    name = dso.rsplit("/", 1)[-1]
    if "kernel" in name or name.startswith("[k"):
        return "kernel"
    if (name.startswith("libc.so") and GLIBC_ALLOCATOR.match(sym)) or MIMALLOC.match(sym):
        return "allocator"
    if name.startswith("libc.so"):
        return "libc"
    if (name.startswith("perf-") and name.endswith(".map")) or "[JIT]" in name or "[JIT]" in sym:
        return "JIT"
    if name == "libjvm.so":
        return "JVM"
    return name or "?"


def process_parents() -> dict[int, int]:
    """pid -> parent pid of every process now."""
    return {pid: stat.ppid for pid, stat in procs.all_stats().items()}


def component_of(pid: int, components: dict[int, str], parents: dict[int, int]) -> str | None:
    """The component whose process is `pid` or one of its ancestors."""
    seen = set()
    while pid not in components:
        if pid in seen or pid not in parents:
            return None
        seen.add(pid)
        pid = parents[pid]
    return components[pid]


def summarize(lines, components: dict[int, str], parents: dict[int, int],
              window: tuple[float, float] | None = None) -> dict:
    """The profile of `perf script` output lines (those within `window`, in seconds since the
    epoch, if given): per component (or `other: <command>` for the processes outside the stack,
    `idle` for an idle CPU), its share of every sample, its shares by kind of code and its
    busiest functions."""
    total = 0
    samples: Counter = Counter()
    kinds: dict[str, Counter] = {}
    symbols: dict[str, Counter] = {}
    for line in lines:
        m = SAMPLE.match(line)
        if not m or (window and not window[0] <= float(m["time"]) < window[1]):
            continue
        total += 1
        pid, comm, sym, dso = int(m["pid"]), m["comm"], m["sym"], m["dso"]
        if pid == 0:
            name = "idle"
        else:
            name = component_of(pid, components, parents) or f"other: {comm}"
        samples[name] += 1
        kinds.setdefault(name, Counter())[kind_of(sym, dso)] += 1
        symbols.setdefault(name, Counter())[sym[:SYMBOL_CHARS]] += 1
    share = lambda n, of: round(n / of, 4) if of else 0.0  # noqa: E731
    return {
        "hz": HZ,
        "samples": total,
        "window": list(window) if window else None,
        "components": {
            name: {
                "share": share(n, total),
                "by_kind": {k: share(v, n) for k, v in kinds[name].most_common()},
                "top": [[s, share(v, n)] for s, v in symbols[name].most_common(TOP)],
            }
            for name, n in samples.most_common()
        },
    }


class Sampler:
    """`perf record` of every CPU while in use; `profile(components)` says what it saw."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.proc: subprocess.Popen | None = None
        self.parents: dict[int, int] = {}
        self.note: str | None = None

    def __enter__(self) -> "Sampler":
        if shutil.which("perf") is None:
            self.note = "perf not found (Debian: apt-get install linux-perf): no profile"
            return self
        self.parents = process_parents()
        # Wall-clock sample times, to keep the load's own window (see `profile`).
        self.proc = subprocess.Popen(["perf", "record", "-q", "-k", "CLOCK_REALTIME", "-e", "cpu-clock",
                                      "-F", str(HZ), "-a",
                                      "-o", str(self.out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is None:
            return
        # Parents of the processes that started during the run, before any of them ends.
        self.parents |= process_parents()
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if self.proc.returncode not in (0, -signal.SIGINT) or not self.out.exists():
            said = err.decode(errors="replace").strip()[:300]
            self.note = f"perf record failed (exit {self.proc.returncode}): {said}"

    def profile(self, components: dict[str, int], window: tuple[float, float] | None = None) -> dict:
        """The profile of the run (its samples within `window`, in seconds since the epoch: the
        load, without the settling and the audit after it), by component (`{name: pid}`), or
        why there is none."""
        if self.note is not None:
            return {"note": self.note}
        by_pid = {pid: name for name, pid in components.items()}
        # Every process of the stack, so also a JVM its start script runs (Keycloak's `kc.sh`).
        stack = [pid for pid in self.parents if component_of(pid, by_pid, self.parents) is not None]
        maps = [m for m in map(write_jit_map, stack) if m is not None]
        try:
            script = subprocess.run(["perf", "script", "-i", str(self.out), "-F", "comm,pid,tid,time,ip,sym,dso"],
                                    capture_output=True, text=True, errors="replace")
        finally:
            for m in maps:
                m.unlink(missing_ok=True)
        if script.returncode != 0:
            return {"note": f"perf script failed: {script.stderr.strip()[:300]}"}
        return summarize(script.stdout.splitlines(), by_pid, self.parents, window)


def jcmd_beside(java: Path) -> Path | None:
    """The `jcmd` of the JDK of the executable `java`, or None when it is no `java` or its JDK
    has no `jcmd` (a runtime only)."""
    jcmd = java.parent / "jcmd"
    return jcmd if java.name == "java" and jcmd.exists() else None


def jcmd_of(pid: int) -> Path | None:
    """The `jcmd` of the JDK whose `java` runs as `pid`, or None when `pid` is no JVM (or has
    ended, or its JDK has no `jcmd`)."""
    try:
        return jcmd_beside(Path(f"/proc/{pid}/exe").resolve(strict=True))
    except OSError:
        return None


def write_jit_map(pid: int) -> Path | None:
    """Have the JVM `pid` write the map of its compiled code for perf; the map's path, or None
    when `pid` is no JVM or the JVM did not write one (the profile then names no Java method)."""
    jcmd = jcmd_of(pid)
    if jcmd is None:
        return None
    path = Path(f"/tmp/perf-{pid}.map")
    try:
        done = subprocess.run([str(jcmd), str(pid), "Compiler.perfmap"], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return path if done.returncode == 0 and path.exists() else None


def summary_lines(profile: dict, limit: int = 14) -> list[str]:
    """A few lines for the console: each busy component's share and its largest kinds of code."""
    if "note" in profile:
        return [f"profile: {profile['note']}"]
    lines = [f"profile ({profile['samples']} samples at {profile['hz']} Hz per CPU), share of all CPU time:"]
    for name, c in list(profile["components"].items())[:limit]:
        kinds = ", ".join(f"{k} {v:.0%}" for k, v in list(c["by_kind"].items())[:4])
        lines.append(f"  {c['share']:6.1%}  {name:<20} {kinds}")
    return lines

