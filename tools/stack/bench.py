"""`./stack bench`: the whole system under open-loop order load, measured end to end.

The stack runs exactly as `./stack up --release` runs it (tracing to Zipkin, e-mail to Mailpit, every
service on). For each offered rate, `orders-bench` (tools/bench, a release build) places orders through
the gateway at that constant rate, waits until every order is final, checks the shop's invariants and
measures every process of the stack from /proc. This module runs it once per rate (or searches for the
highest rate that holds the latency goal), then writes `bench-results/orders.json` (every run, whole)
and `bench-results/orders.svg` (latency against offered rate, CPU per order per component).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from tools.stack import profile
from tools.stack.components.base import StackError

# Past saturation the consumers (notification, projectors) trail the orders by tens of seconds:
# the audit waits this long for mail and read models before it calls anything missing.
SETTLE_TIMEOUT_S = 180

# --find-max: a rate holds when p99 POST->final-visible stays within this for the whole run, every
# accepted order became final, nothing was refused and the audit passed.
GOAL_P99_FINAL_MS = 500.0
BINARY = "orders-bench"

# A stack just started is cold: the JVMs (Kafka, Zipkin) still compile their hot paths, PostgreSQL's
# planner has statistics of empty tables and its caches are empty. The measured runs follow rounds
# of this many seconds of load at the first rate, which the results report apart ("warmup").
WARMUP_S = 30.0
# The JVMs (Kafka above all) go on compiling for minutes under load, on a slow machine well past
# one round: a quarter of Kafka's CPU in a measured run after a single 30 s round was its JIT
# compiler. So a round follows another while the JVMs' compiler threads took more than this
# share of their CPU in the last one, at most WARMUP_ROUNDS rounds in all.
JIT_QUIET = 0.05
WARMUP_ROUNDS = 5


# How fast the machine ran during a run: a fixed piece of CPU work (a million additions of squares
# in Python) timed in CPU seconds every 10 s by a process at the lowest priority (it costs about
# 1% of one core). On a shared virtual machine that speed drifts by 20% or more within an hour and
# every CPU-per-order figure moves with it: compare runs of similar `host_loop_s`.
SPEED_LOOP = """
import time
while True:
    started = time.process_time()
    total = 0
    for i in range(1_000_000):
        total += i * i
    print(f"{time.process_time() - started:.4f}", flush=True)
    time.sleep(10)
"""


class SpeedProbe:
    """Times `SPEED_LOOP` while in use; `summary()` says what it saw."""

    def __enter__(self) -> "SpeedProbe":
        self.samples: list[float] = []
        self.proc = subprocess.Popen([sys.executable, "-c", SPEED_LOOP], stdout=subprocess.PIPE, text=True,
                                     preexec_fn=lambda: os.nice(19))
        return self

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            out, _ = self.proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        self.samples = [float(x) for x in out.split()]

    def summary(self) -> dict:
        s = sorted(self.samples)
        if not s:
            return {"samples": 0}
        return {"samples": len(s), "min": s[0], "median": s[len(s) // 2], "max": s[-1],
                "note": "CPU seconds of a fixed Python loop, every 10 s at nice 19: lower is a faster machine"}


def build(repo: Path) -> Path:
    argv = ["cargo", "build", "--release", "-p", "bench", "--bin", BINARY]
    print(f"building the load generator: {' '.join(argv)}", flush=True)
    if subprocess.run(argv, cwd=repo).returncode != 0:
        raise StackError("building orders-bench failed")
    target = Path(os.environ.get("CARGO_TARGET_DIR") or repo / "target")
    return target / "release" / BINARY


def run_once(binary: Path, repo: Path, out: Path, rate: float, duration: float, procs: dict[str, int],
             extra: list[str], profile_to: Path | None = None) -> dict:
    argv = [str(binary), "--rate", f"{rate:g}", "--duration", f"{duration:g}", "--out", str(out),
            "--procs", ",".join(f"{name}={pid}" for name, pid in procs.items())]
    if not any(a.startswith("--settle-timeout") for a in extra):
        argv += ["--settle-timeout", str(SETTLE_TIMEOUT_S)]
    argv += extra
    print(f"\n== {rate:g} orders/s for {duration:g} s: {' '.join(argv[1:])}", flush=True)
    with SpeedProbe() as speed, (profile.Sampler(profile_to) if profile_to else contextlib.nullcontext()) as sampler:
        code = subprocess.run(argv, cwd=repo).returncode
    if not out.exists():
        raise StackError(f"orders-bench wrote no result (exit {code})")
    result = json.loads(out.read_text())
    result["exit_code"] = code
    result["host_loop_s"] = speed.summary()
    if sampler is not None:
        result["cpu_profile"] = sampler.profile(procs, load_window(result))
        print("\n".join(profile.summary_lines(result["cpu_profile"])), flush=True)
    return result


def load_window(run: dict) -> tuple[float, float] | None:
    """When the run offered its load, in seconds since the epoch (from its `started_at` and
    `duration_s`); None if it does not say."""
    try:
        start = datetime.datetime.fromisoformat(run["started_at"].replace("Z", "+00:00")).timestamp()
        return start, start + float(run["duration_s"])
    except (KeyError, TypeError, ValueError):
        return None


def p99_final(run: dict) -> float | None:
    return ((run.get("latency_ms") or {}).get("post_final") or {}).get("p99")


def holds(run: dict) -> bool:
    """The goal of --find-max: sustained, within the latency goal, nothing refused, audit clean."""
    counts = run.get("counts") or {}
    p99 = p99_final(run)
    return (run.get("exit_code") == 0 and p99 is not None and p99 <= GOAL_P99_FINAL_MS
            and not counts.get("not_final") and not counts.get("refused")
            and (run.get("audit") or {}).get("ok", False))


def rates_to_try(start: float, factor: float, limit: float):
    rate = start
    while rate <= limit:
        yield round(rate, 1)
        rate *= factor


def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu": model, "kernel": platform.release(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def git_commit(repo: Path) -> str:
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                           capture_output=True, text=True).stdout.strip()
    return proc.stdout.strip() + ("+changes" if dirty else "")


def main(launcher, rates: list[float], duration: float, find_max: bool, start: float, factor: float,
         limit: float, extra: list[str], results_dir: Path, replicas: int = 1, warmup: float = WARMUP_S,
         sample: bool = False) -> int:
    ctx = launcher.ctx
    launcher.up(demo_data=False, release=True, replicas=replicas)
    binary = build(ctx.repo)
    procs = {c.name: r.pid for c in launcher.components if c.enabled
             and (r := launcher.record(c)) is not None and r.alive()}
    work = ctx.data / "bench"
    work.mkdir(parents=True, exist_ok=True)
    runs: list[dict] = []
    best = None
    plan = list(rates_to_try(start, factor, limit)) if find_max else rates
    warm = None
    jit_shares: list[float | None] = []
    if warmup > 0 and plan:
        print(f"\nwarming the stack up: {warmup:g} s at {plan[0]:g} orders/s, repeated while the JVMs still "
              f"compile more than {JIT_QUIET:.0%} of their CPU (at most {WARMUP_ROUNDS} times), reported apart",
              flush=True)
        while True:
            warm = run_once(binary, ctx.repo, work / f"warmup-{len(jit_shares) + 1}.json", plan[0], warmup, procs,
                            ["--no-audit", "--no-projection-lag", *extra])
            jit_shares.append(jit_share(warm))
            print(f"warm-up {len(jit_shares)}: " + summary_line(warm), flush=True)
            if warm_enough(jit_shares):
                break
    for rate in plan:
        run = run_once(binary, ctx.repo, work / f"orders-{rate:g}.json", rate, duration, procs, extra,
                       profile_to=work / f"perf-{rate:g}.data" if sample else None)
        run["holds_goal"] = holds(run)
        runs.append(run)
        print(summary_line(run), flush=True)
        if find_max:
            if not run["holds_goal"]:
                break
            best = rate
    report = {
        "bench": "orders (whole system, open loop through the gateway)",
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(ctx.repo),
        "profile": "release",
        "replicas": replicas,
        "machine": machine(),
        "goal": {"p99_post_final_ms": GOAL_P99_FINAL_MS},
        "find_max": find_max,
        "max_rate_holding_goal": best,
        "warmup": warmup_summary(warm, jit_shares),
        "runs": runs,
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "orders.json").write_text(json.dumps(report, indent=2) + "\n")
    from tools.stack import benchplot
    (results_dir / "orders.svg").write_text(benchplot.svg(report))
    print(f"\nresults: {results_dir / 'orders.json'}, picture: {results_dir / 'orders.svg'}")
    if find_max:
        print(f"highest rate within p99 POST->final <= {GOAL_P99_FINAL_MS:.0f} ms: "
              f"{best if best is not None else 'none of those tried'} orders/s")
    failed = [r for r in runs if (r.get("audit") or {}).get("ok") is False]
    if failed:
        print(f"audit FAILED in {len(failed)} run(s): see the checks above", file=sys.stderr)
        return 1
    return 0


def summary_line(run: dict) -> str:
    lat = run.get("latency_ms") or {}
    p = lambda name, q: (lat.get(name) or {}).get(q)  # noqa: E731
    cpu = total_cpu_per_order(run)
    return (f"rate {run.get('rate')}: final/s {(run.get('throughput') or {}).get('final_per_s')}, "
            f"POST->202 p99 {p('post_202', 'p99')} ms, POST->final p50 {p('post_final', 'p50')} "
            f"p99 {p('post_final', 'p99')} ms, CPU/order {cpu if cpu is None else round(cpu, 1)} ms, "
            f"audit {audit_word(run.get('audit'))}, host loop {(run.get('host_loop_s') or {}).get('median')} s, "
            f"{'holds' if run.get('holds_goal') else 'misses'} the goal")


def audit_word(audit: dict | None) -> str:
    """ok, FAILED, or skipped (the warm-up runs without an audit)."""
    ok = (audit or {}).get("ok")
    return "skipped" if ok is None else "ok" if ok else "FAILED"


def warmup_summary(run: dict | None, jit_shares: list[float | None]) -> dict | None:
    """What the warm-up did, in brief: its rounds and the JVMs' JIT share in each, then its last
    round's rate and length, what finished, its latencies."""
    if run is None:
        return None
    return {"rounds": len(jit_shares), "jit_share_by_round": jit_shares,
            "rate": run.get("rate"), "duration_s": run.get("duration_s"), "counts": run.get("counts"),
            "throughput": run.get("throughput"), "latency_ms": run.get("latency_ms"),
            "cpu_ms_per_order": total_cpu_per_order(run)}


def jit_share(run: dict) -> float | None:
    """Of the CPU of the run's JVMs, the share their JIT compiler threads took (`jit_cpu_ms`);
    None when no JVM was measured."""
    procs = (run.get("processes") or {}).get("components") or {}
    jvms = [p for p in procs.values() if p.get("jit_cpu_ms") is not None and p.get("cpu_ms")]
    cpu = sum(p["cpu_ms"] for p in jvms)
    return sum(p["jit_cpu_ms"] for p in jvms) / cpu if cpu > 0 else None


def warm_enough(jit_shares: list[float | None]) -> bool:
    """Whether the warm-up rounds so far (their JIT shares, latest last) are enough: the last one
    compiled little, or nothing told, or the rounds are used up."""
    last = jit_shares[-1] if jit_shares else None
    return last is None or last <= JIT_QUIET or len(jit_shares) >= WARMUP_ROUNDS


def total_cpu_per_order(run: dict) -> float | None:
    procs = (run.get("processes") or {}).get("components")
    if not procs:
        return None
    return sum(p.get("cpu_ms_per_order") or 0 for p in procs.values())
