"""`./stack chaos`: orders under open-loop load while instances and servers fail, then the auditor.

The stack runs with `--replicas N` (two instances of every service but the gateway by default).
`orders-bench` (tools/bench) places orders through the gateway at a constant rate with the usual mix
(some over credit, some over stock, some cancelled) and follows each to its final status; meanwhile
this controller works through a schedule drawn from the seed:

- every `kill_every` seconds it SIGKILLs a random service instance and starts it again a few seconds
  later (`./stack restart`);
- once, it SIGSTOPs an instance for twice the consumer session timeout (its partitions move to the
  other instance, its registration lapses), then lets it run on (SIGCONT);
- once each, it SIGKILLs and restarts PostgreSQL, Kafka and the MongoDB-wire server;
- once, it cuts one second instance off the network for `CUT_FOR_S` (see `faultproxy`: that
  instance runs behind TCP forwarders from the start, and the cut stops every byte both ways).

When the load ends and every order has had its time to finish, the auditor (tools/audit) reads every
store — event stores, topics, saga table, read models, Mailpit — and the clients' promises (each
order that got a 202), and judges. The whole run, its events and the verdict go to a JSON file
(`bench-results/chaos.json` by default); the exit status is 1 on any violation.

`--ci` is the short, bounded form `./stack test` runs: the stack's current build, one SIGKILL of one
instance of each of order, product, payment, saga-orchestrator and projectors, no server restarts.
"""

from __future__ import annotations

import datetime
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tools.stack import bench, faultproxy, ports, procs
from tools.stack.components.base import StackError

# The consumers' session timeout (messaging/src/consumer.rs): a stopped instance keeps its
# partitions this long before the group gives them to another member.
SESSION_TIMEOUT_S = 10.0
# A killed instance stays down this long before it is started again.
DOWN_FOR_S = 4.0
# How long the cut instance stays cut off: past the session timeout and the registry's lease.
CUT_FOR_S = 30.0
# The services whose second instance may be cut off: those that call no other service over HTTP
# (the forwarders carry the instance's connections to the servers, not to other services).
CUT_CANDIDATES = ("product", "payment", "saga-orchestrator", "projectors", "notification")
# The servers restarted once each in a full soak, in this order.
SERVERS = ("postgres", "kafka", "mongo")
# The services the CI form kills one instance of each.
CI_KILLS = ("order", "product", "payment", "saga-orchestrator", "projectors")
# Orders must be final within this after the load ends (saga step timeouts are 8 s locally, and a
# restarted server or a rebalance delays them further).
DRAIN_TIMEOUT_S = 240
# The auditor waits this long for a quiet stack (outboxes empty, consumers caught up).
AUDIT_SETTLE_S = 240


@dataclass(order=True)
class Action:
    at: float  # seconds from the start of the load
    kind: str = field(compare=False)  # kill, start, stop, resume, cut, heal, restart
    target: str = field(compare=False)


# What undoes a fault, and the fault it undoes: the undoing waits as long after the fault as the plan
# says, also when the fault itself came late (the controller acts one thing at a time).
UNDOES = {"start": "kill", "resume": "stop", "heal": "cut"}


def due(action: Action, plan: list[Action], done_at: dict[tuple[str, str], float]) -> float:
    """When `action` is due, in seconds from the start of the load."""
    fault = UNDOES.get(action.kind)
    if fault is None or (fault, action.target) not in done_at:
        return action.at
    before = max((a for a in plan if a.kind == fault and a.target == action.target and a.at <= action.at),
                 key=lambda a: a.at)
    return max(action.at, done_at[(fault, action.target)] + action.at - before.at)


def schedule(rng: random.Random, duration: float, instances: list[str], kill_every: float,
             servers: bool, stop: bool, cut: str | None = None) -> list[Action]:
    """The soak's plan: a kill (and the start that follows it) every `kill_every` seconds, one long
    stop, one restart of each server, one cut of `cut` off the network, spread over the run and
    none in its last 15 seconds."""
    plan: list[Action] = []
    last = duration - 15
    t = min(kill_every, 15.0)
    while t < last:
        target = rng.choice(instances)
        plan += [Action(t, "kill", target), Action(t + DOWN_FOR_S, "start", target)]
        t += kill_every
    if stop and last > 2 * SESSION_TIMEOUT_S + 10:
        at = rng.uniform(0.2, 0.35) * duration
        target = rng.choice(instances)
        plan += [Action(at, "stop", target), Action(at + 2 * SESSION_TIMEOUT_S, "resume", target)]
    if cut and last > CUT_FOR_S + 10:
        at = rng.uniform(0.08, 0.15) * duration
        plan += [Action(at, "cut", cut), Action(at + CUT_FOR_S, "heal", cut)]
    if servers:
        for i, server in enumerate(SERVERS):
            plan.append(Action((0.45 + 0.15 * i) * duration, "restart", server))
    return sorted(plan)


def ci_schedule(duration: float) -> list[Action]:
    """One SIGKILL of one instance of each of CI_KILLS, spread over the run, alternating between
    the first and the second instance."""
    plan = []
    step = (duration - 15) / len(CI_KILLS)
    for i, service in enumerate(CI_KILLS):
        target = ports.instance_name(service, 1 + i % 2)
        at = 5 + i * step
        plan += [Action(at, "kill", target), Action(at + DOWN_FOR_S, "start", target)]
    return sorted(plan)


def sustainable_rate(results_dir: Path) -> float | None:
    """The highest rate of the committed benchmark that finished every order without refusals."""
    try:
        report = json.loads((results_dir / "orders.json").read_text())
    except (OSError, ValueError):
        return None
    good = [r.get("rate") for r in report.get("runs", [])
            if not (r.get("counts") or {}).get("refused") and not (r.get("counts") or {}).get("not_final")
            and (r.get("audit") or {}).get("ok")]
    good = [g for g in good if isinstance(g, (int, float))]
    return max(good) if good else None


def binary(launcher, name: str) -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR") or launcher.ctx.repo / "target")
    path = target / launcher.ctx.profile / name
    if not path.exists():
        raise StackError(f"no {path}: `./stack up` builds it (cargo build --workspace --bins)")
    return path


class Controller:
    def __init__(self, launcher, proxy: faultproxy.Forwarders | None = None):
        self.launcher = launcher
        self.proxy = proxy
        self.events: list[dict] = []
        self.stopped: dict[str, int] = {}

    def log(self, t: float, action: Action, ok: bool, detail: str = "", took: float = 0.0) -> None:
        self.events.append({"t_s": round(t, 1), "action": action.kind, "target": action.target, "ok": ok,
                            "detail": detail, "took_s": round(took, 1)})
        mark = "" if ok else " FAILED"
        print(f"[chaos {t:6.1f}s] {action.kind} {action.target}{mark}{': ' + detail if detail else ''}",
              flush=True)

    def record(self, name: str) -> procs.PidRecord | None:
        record = self.launcher.record(self.launcher.get(name))
        return record if record and record.alive() else None

    def pid(self, name: str) -> int | None:
        record = self.record(name)
        return record.pid if record else None

    def do(self, t: float, action: Action) -> None:
        t0 = time.monotonic()
        try:
            detail = self.act(action)
            self.log(t, action, True, detail, time.monotonic() - t0)
        except (StackError, OSError) as e:
            self.log(t, action, False, str(e).splitlines()[0], time.monotonic() - t0)

    def act(self, action: Action) -> str:
        name = action.target
        if action.kind == "kill":
            record = self.record(name)
            if record is None:
                return "not running"
            procs.kill(record)
            return f"pid {record.pid}"
        if action.kind == "stop":
            pid = self.pid(name)
            if pid is None:
                return "not running"
            os.killpg(pid, signal.SIGSTOP)
            self.stopped[name] = pid
            return f"pid {pid}"
        if action.kind == "resume":
            pid = self.stopped.pop(name, None)
            if pid is None:
                return "was not stopped"
            os.killpg(pid, signal.SIGCONT)
            return f"pid {pid}"
        if action.kind == "cut":
            self.proxy.cut()
            return f"for {CUT_FOR_S:.0f} s"
        if action.kind == "heal":
            self.proxy.heal()
            return f"{self.proxy.counts['reset_by_heal']} connections reset"
        if action.kind in ("start", "restart"):
            self.launcher.restart(name)
            return f"pid {self.pid(name)}"
        raise StackError(f"unknown action {action.kind}")

    def resume_all(self) -> None:
        for name, pid in list(self.stopped.items()):
            try:
                os.killpg(pid, signal.SIGCONT)
            except OSError:
                pass
            self.stopped.pop(name)


# The soak's default rate, as a share of the highest rate the committed benchmark sustained with one
# instance of each: two instances of everything share the same cores, and the faults cost more (half
# of it, 20/s here, was refused one order in twelve; a quarter, one in twenty, during fault windows).
RATE_SHARE = 0.25
# The CI form: this long, at this rate, on the stack's current build.
CI_DURATION_S = 60.0
CI_RATE = 4.0


def run(launcher, minutes: float, rate: float | None, replicas: int, kill_every: float, seed: int,
        servers: bool, release: bool, ci: bool, out: Path | None) -> int:
    """`./stack chaos` with its options resolved: the CI form keeps the build `./stack test` made."""
    results = launcher.ctx.repo / "bench-results"
    if ci:
        return main(launcher, CI_DURATION_S, rate or CI_RATE, max(replicas, 2), launcher.ctx.profile == "release",
                    kill_every, seed, servers=False, stop=False, ci=True,
                    out=out or launcher.ctx.data / "chaos" / "ci.json", results_dir=results)
    started_here = not launcher.any_running()
    try:
        return main(launcher, minutes * 60, rate, replicas, release, kill_every, seed, servers, stop=True, ci=False,
                    out=out or results / "chaos.json", results_dir=results)
    finally:
        # It cleans up after itself: a stack it started is stopped (its data stays for a look).
        if started_here:
            launcher.down()


def main(launcher, duration: float, rate: float | None, replicas: int, release: bool, kill_every: float,
         seed: int, servers: bool, stop: bool, ci: bool, out: Path, results_dir: Path) -> int:
    ctx = launcher.ctx
    if rate is None:
        found = sustainable_rate(results_dir)
        rate = round(found * RATE_SHARE, 1) if found else 10.0
        print(f"rate: {rate:g} orders/s ({RATE_SHARE:.0%} of the highest rate the committed benchmark sustained"
              f"{'' if found else '; none found, so 10'})")
    if replicas < 2:
        print("warning: --replicas 1: a killed service has no other instance to take over", file=sys.stderr)
    launcher.up(demo_data=False, release=release, replicas=replicas, tests=ci)
    rng = random.Random(seed)
    instances = [c.name for c in launcher.enabled("service") if getattr(c, "service", "") in ports.REPLICATED]
    cut = None if ci or replicas < 2 else ports.instance_name(rng.choice(CUT_CANDIDATES), 2)
    plan = ci_schedule(duration) if ci else schedule(rng, duration, instances, kill_every, servers, stop, cut)
    proxy = None
    if cut:
        proxy = behind_forwarders(launcher, cut)
    work = ctx.data / "chaos"
    work.mkdir(parents=True, exist_ok=True)
    orders_file, load_file, audit_file = work / "orders.jsonl", work / "load.json", work / "audit.json"
    for f in (orders_file, load_file, audit_file):
        f.unlink(missing_ok=True)

    argv = [str(binary(launcher, bench.BINARY)), "--rate", f"{rate:g}", "--duration", f"{duration:g}",
            "--seed", str(seed), "--out", str(load_file), "--orders-out", str(orders_file), "--no-audit",
            "--no-projection-lag", "--drain-timeout", str(DRAIN_TIMEOUT_S)]
    print(f"\n== chaos: {replicas} instance(s) of each service, {rate:g} orders/s for {duration:g} s, "
          f"{len([a for a in plan if a.kind != 'start' and a.kind != 'resume'])} faults, seed {seed}", flush=True)
    controller = Controller(launcher, proxy)
    load = subprocess.Popen(argv, cwd=ctx.repo, stderr=subprocess.PIPE, text=True)
    loading = threading.Event()
    threading.Thread(target=relay_progress, args=(load.stderr, loading), daemon=True).start()
    try:
        # orders-bench signs in and makes its customers and products first: the plan's clock
        # starts with its first progress line, a second into the load.
        while not loading.wait(0.5):
            if load.poll() is not None:
                raise StackError(f"orders-bench exited (code {load.returncode}) before its load began")
        start = time.monotonic() - 1.0
        done_at: dict[tuple[str, str], float] = {}
        for action in plan:
            at = due(action, plan, done_at)
            while (now := time.monotonic()) < start + at:
                if load.poll() is not None:
                    break
                time.sleep(min(0.2, start + at - now))
            if load.poll() is not None:
                print(f"warning: orders-bench ended (exit {load.returncode}) before the plan did", file=sys.stderr)
                break
            done_at[(action.kind, action.target)] = time.monotonic() - start
            controller.do(done_at[(action.kind, action.target)], action)
        code = load.wait()
    finally:
        controller.resume_all()
        if proxy:
            proxy.heal()
        if load.poll() is None:
            load.terminate()
            load.wait()
    # Whatever was killed and not started again (a failed start) is started now, so that the
    # stores can settle.
    down = [c for c in launcher.enabled("service") if launcher.health(c) != "up"]
    if down:
        print(f"starting what is down: {', '.join(c.name for c in down)}", flush=True)
        try:
            launcher.start_all(down)
        except StackError as e:
            print(f"error: {e}", file=sys.stderr)

    if proxy:
        # The cut instance goes back to direct connections (the forwarders end with this process).
        launcher.get(cut).extra_env = {}
        launcher.restart(cut)
        proxy.stop()

    print("\n== audit: every store, and the clients' promises", flush=True)
    audit_argv = [str(binary(launcher, "audit")), "--settle", str(AUDIT_SETTLE_S), "--out", str(audit_file)]
    if orders_file.exists():
        audit_argv += ["--promised", str(orders_file)]
    audit_code = subprocess.run(audit_argv, cwd=ctx.repo).returncode
    report = {
        "chaos": "orders under load while instances and servers fail, judged by the auditor",
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": bench.git_commit(ctx.repo),
        "profile": ctx.profile,
        "machine": bench.machine(),
        "config": {"replicas": replicas, "rate": rate, "duration_s": duration, "seed": seed, "ci": ci,
                   "kill_every_s": None if ci else kill_every, "servers_restarted": servers and not ci,
                   "stop": stop and not ci, "cut_off": cut, "cut_for_s": CUT_FOR_S if cut else None},
        "faults": summarize(controller.events),
        "events": controller.events,
        "load": load_summary(load_file, code),
        "audit": read_json(audit_file),
        "audit_exit": audit_code,
    }
    ok = audit_code == 0 and code in (0, 1) and all(e["ok"] for e in controller.events)
    report["ok"] = ok
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_summary(report)
    print(f"results: {out}")
    return 0 if ok else 1


def behind_forwarders(launcher, name: str) -> faultproxy.Forwarders:
    """Start the forwarders of instance `name` and start it again behind them."""
    service = launcher.get(name)
    proxy = faultproxy.Forwarders(list(faultproxy.SERVERS.values()) + [service.port])
    proxy.start()
    service.extra_env = faultproxy.instance_env(service.service, service.port)
    print(f"{name}: started again behind the fault proxy (ports +{ports.CUT_OFFSET})", flush=True)
    launcher.restart(name)
    return proxy


def relay_progress(stream, loading: threading.Event) -> None:
    """Pass orders-bench's stderr on; set `loading` at its first progress line (`[    1s] ...`)."""
    for line in stream:
        if line.startswith("["):
            loading.set()
        sys.stderr.write(line)
        sys.stderr.flush()


def summarize(events: list[dict]) -> dict:
    count = lambda kind: sum(1 for e in events if e["action"] == kind)  # noqa: E731
    return {"kills": count("kill"), "starts": count("start"), "stops": count("stop"), "cuts": count("cut"),
            "server_restarts": count("restart"), "failed_actions": sum(1 for e in events if not e["ok"])}


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def load_summary(path: Path, exit_code: int) -> dict:
    result = read_json(path) or {}
    counts = result.get("counts") or {}
    return {"exit_code": exit_code, "counts": counts, "throughput": result.get("throughput"),
            "latency_ms": result.get("latency_ms")}


def print_summary(report: dict) -> None:
    counts = report["load"]["counts"]
    faults = report["faults"]
    audit = report.get("audit") or {}
    checks = audit.get("checks") or []
    violations = sum(c.get("violations") or 0 for c in checks)
    print("\n== chaos summary")
    print(f"orders: {json.dumps(counts)}")
    print(f"faults: {faults['kills']} kills, {faults['stops']} stops, {faults['cuts']} network cuts, "
          f"{faults['server_restarts']} server restarts, "
          f"{faults['failed_actions']} failed actions")
    print(f"audit: {'ok' if report['audit_exit'] == 0 else 'FAILED'} ({violations} violations)")
