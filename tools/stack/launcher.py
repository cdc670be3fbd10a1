"""The commands of `./stack`, over the components and the processes they run as."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tools.stack import apifuzz, browser, demo, ports, preflight, procs
from tools.stack.components import load
from tools.stack.components.base import Component, Context, StackError, merged_env, tail, tcp_ok, user_ids

# cargo-machete, which finds dependencies a Cargo.toml declares and the code does not use.
CARGO_MACHETE_VERSION = "0.9.2"

POLL = 0.5
# How long a start waits for a dependency that does not answer its health check.
DEPENDENCY_PATIENCE = 20.0
# What the launcher and the stack's own tools (bench, browser and API tests) keep in the data
# folder besides the components' folders: a wipe removes these and nothing it does not know.
OWN_ENTRIES = {"run", "logs", ".lock", "bench", "chaos", "browser", "schemathesis", "schemathesis.toml", ".schemathesis",
               ".hypothesis"}


class Launcher:
    def __init__(self, ctx: Context, components: list[Component] | None = None):
        self.ctx = ctx
        self.run_dir = ctx.data / "run"
        self.declare(components if components is not None else load(ctx, warn=ctx.say))

    def declare(self, components: list[Component]) -> None:
        self.components = components
        self.by_name = {c.name: c for c in self.components}
        for c in self.components:
            record = self.record(c)
            if record:
                c.log_offset = record.log_offset

    # --- queries ------------------------------------------------------------------------------------
    def get(self, name: str) -> Component:
        if name not in self.by_name:
            raise StackError(f"unknown component {name!r}; known: {', '.join(self.by_name)}")
        return self.by_name[name]

    def record(self, c: Component) -> procs.PidRecord | None:
        return procs.read_record(self.run_dir, c.name)

    def enabled(self, kind: str | None = None) -> list[Component]:
        return [c for c in self.components if c.enabled and (kind is None or c.kind == kind)]

    def health(self, c: Component) -> str:
        """up / down / dead / starting (alive, not healthy yet) / the disabled note."""
        if not c.enabled:
            return c.disabled_note
        record = self.record(c)
        if record is None:
            return "down"
        if not record.alive():
            return "dead"
        return "up" if c.health() else "starting"

    def any_running(self) -> bool:
        return any(r.alive() for r in map(self.record, self.components) if r)

    # --- up -----------------------------------------------------------------------------------------
    def up(self, infra_only: bool = False, demo_data: bool = True, release: bool = False,
           tests: bool = False, replicas: int = 1) -> None:
        self.ctx.data.mkdir(parents=True, exist_ok=True)
        preflight.check(self.ctx, tests=tests, services=not infra_only)
        infra = self.enabled("infra")
        self.install(infra)
        self.start_all(infra)
        if not infra_only:
            self.use_profile("release" if release else "debug")
            self.use_replicas(replicas)
            services = self.build_services()
            self.stop_stale(services)
            self.start_all(services)
            if demo_data and services:
                gateway = self.by_name.get("gateway")
                if gateway in services:
                    demo.load(f"http://127.0.0.1:{gateway.port}", say=self.ctx.say)
                else:
                    self.ctx.say("demo data skipped: no gateway running")
        self.print_urls()

    def install(self, components: list[Component]) -> None:
        todo = [c for c in components if not c.installed()]
        if not todo:
            return
        self.ctx.say(f"installing: {', '.join(c.name for c in todo)} (first run; logs in "
                     f"{self.ctx.data / 'logs'})")
        errors: list[str] = []

        def one(c: Component) -> None:
            t0 = time.monotonic()
            try:
                c.install()
                if not c.installed():
                    raise StackError(f"{c.name}: install finished but the component is still missing; "
                                     f"log {c.log_path}:\n{c.log_tail()}")
                self.ctx.say(f"  {c.name}: installed in {time.monotonic() - t0:.0f}s")
            except StackError as e:
                errors.append(str(e))
            except Exception as e:  # noqa: BLE001 - reported with the component's name
                errors.append(f"{c.name}: install failed: {e!r}")

        # apt, mvn and go each take their lock: in effect one of each runs at a time.
        with ThreadPoolExecutor(max_workers=len(todo)) as pool:
            list(pool.map(one, todo))
        if errors:
            raise StackError("\n".join(errors))

    def use_profile(self, profile: str) -> None:
        """Run the services from `profile`'s binaries; services running from the other profile's are
        stopped first (they are started again after the build)."""
        if profile != self.ctx.profile:
            running = [c for c in self.enabled("service") if (r := self.record(c)) and r.alive()]
            if running:
                self.ctx.say(f"services run {self.ctx.profile} builds: stopping them to start {profile} ones")
                self._stop(running, [])
        self.ctx.set_profile(profile)

    def use_replicas(self, n: int) -> None:
        """Run `n` instances of each replicated service (ports.REPLICATED): the components are declared
        again, and running instances beyond `n` are stopped."""
        if not 1 <= n <= ports.MAX_REPLICAS:
            raise StackError(f"--replicas must be between 1 and {ports.MAX_REPLICAS}, not {n}")
        if n != self.ctx.replicas:
            self.ctx.set_replicas(n)
            self.declare(load(self.ctx, warn=lambda _msg: None))
        beyond = [name for name in procs.recorded_names(self.run_dir)
                  if (replica := ports.replica_of(name)) and replica[1] > n]
        if beyond:
            self.ctx.say(f"running {n} instance(s) of each service: stopping {', '.join(beyond)}")
            self._stop([], beyond)

    def stop_stale(self, services: list[Component]) -> None:
        """Stop running services whose binary was rebuilt after they started, so the start that
        follows runs the code just built (a benchmark or a test never measures a stale process)."""
        stale = []
        for s in services:
            record = self.record(s)
            if record and record.alive() and s.executable.stat().st_mtime > record.started_at:
                stale.append(s)
        if stale:
            self.ctx.say(f"rebuilt since they started: {', '.join(s.name for s in stale)}; restarting them")
            self._stop(stale, [])

    def build_services(self) -> list[Component]:
        services = self.enabled("service")
        if not (self.ctx.repo / "Cargo.toml").exists():
            self.ctx.say("warning: no Cargo workspace yet (Cargo.toml): services skipped")
            return []
        argv = ["cargo", "build", "--workspace", "--bins"] + (["--release"] if self.ctx.profile == "release" else [])
        self.ctx.say(f"building services: {' '.join(argv)}")
        t0 = time.monotonic()
        code = subprocess.run(argv, cwd=self.ctx.repo).returncode
        if code != 0:
            raise StackError(f"cargo build failed (exit {code})")
        self.ctx.say(f"  built in {time.monotonic() - t0:.0f}s")
        built = [s for s in services if s.installed()]
        for s in services:
            if s not in built:
                self.ctx.say(f"warning: {s.name}: no binary {s.executable} after the build: skipped")
        return built

    def start_all(self, components: list[Component]) -> None:
        """Start what is not running, in dependency order (independent ones together), and wait until
        each is healthy. Healthy ones are left alone; dead ones are reported and started again."""
        batch = {c.name for c in components}
        healthy: set[str] = set()
        waiting: dict[str, float] = {}  # name -> deadline
        pending: list[Component] = []
        for c in components:
            state = self.health(c)
            record = self.record(c)
            if state == "up":
                self.ctx.say(f"{c.name}: already up (pid {record.pid})")
                healthy.add(c.name)
                continue
            if state == "dead":
                self.ctx.say(f"{c.name}: had died (pid {record.pid}); last log lines:\n"
                             f"{indent(c.log_tail(15))}\n{c.name}: starting it again")
                procs.remove_record(self.run_dir, c.name)
            pending.append(c)

        def dependency_ready(dep: str) -> bool:
            if dep in batch:
                return dep in healthy
            other = self.by_name.get(dep)
            return other is None or not other.enabled or self.health(other) == "up"

        t_start: dict[str, float] = {}
        # A dependency that is up may miss a health check now and then (a loaded machine): only
        # one down this long stops the start.
        patience = time.monotonic() + DEPENDENCY_PATIENCE
        while pending or waiting:
            for c in list(pending):
                if all(dependency_ready(d) for d in c.depends_on):
                    pending.remove(c)
                    self.start_or_adopt(c, waiting, t_start)
            if pending and not waiting:
                missing = {c.name: [d for d in c.depends_on if not dependency_ready(d)] for c in pending}
                if time.monotonic() < patience or not any(missing.values()):
                    time.sleep(POLL)
                    continue
                names = "; ".join(f"{name} needs {', '.join(deps)}" for name, deps in missing.items() if deps)
                raise StackError(f"cannot start: {names} (not up; ./stack up starts everything)")
            for name, deadline in list(waiting.items()):
                c = self.by_name[name]
                record = self.record(c)
                if record is None or not record.alive():
                    how = procs.exit_status(record) if record else ""
                    raise StackError(f"{name} exited during start-up{f' ({how})' if how else ''}; "
                                     f"log {c.log_path}:\n{indent(c.log_tail())}")
                if c.health():
                    c.post_start()
                    del waiting[name]
                    healthy.add(name)
                    self.ctx.say(f"{name}: up on port {c.port} (pid {record.pid}, "
                                 f"{time.monotonic() - t_start[name]:.1f}s)")
                elif time.monotonic() > deadline:
                    raise StackError(f"{name} not healthy after {c.start_timeout:.0f}s (pid {record.pid}"
                                     f" still running); log {c.log_path}:\n{indent(c.log_tail())}")
            if waiting:
                time.sleep(POLL)

    def start_or_adopt(self, c: Component, waiting: dict[str, float], t_start: dict[str, float]) -> None:
        """Start `c`, or wait for it when a live process of ours is still within its start-up time
        (an earlier `up` that was interrupted, say); one past it and still unhealthy is restarted."""
        record = self.record(c)
        t_start[c.name] = time.monotonic()
        if record and record.alive():
            left = record.started_at + c.start_timeout - time.time()
            if left > 0 or c.health():
                self.ctx.say(f"{c.name}: running (pid {record.pid}), waiting until healthy")
                waiting[c.name] = time.monotonic() + max(left, POLL)
                return
            self.ctx.say(f"{c.name}: running (pid {record.pid}) but unhealthy: starting it again")
            procs.kill(record)
            procs.remove_record(self.run_dir, c.name)
        self.start(c)
        waiting[c.name] = time.monotonic() + c.start_timeout

    def start(self, c: Component) -> None:
        c.data_dir.mkdir(parents=True, exist_ok=True)
        marker = c.data_dir / ".prepared"
        if not marker.exists():
            if type(c).prepare_once is not Component.prepare_once:
                self.ctx.say(f"{c.name}: preparing {c.data_dir}")
            c.prepare_once()
            marker.touch()
        c.configure()
        if tcp_ok(c.port):
            raise StackError(f"{c.name}: port {c.port} is already taken by a process this stack did not "
                             f"start (see `ss -ltnp 'sport = :{c.port}'`)")
        command = c.command()
        if c.niceness:
            command = ["nice", "-n", str(c.niceness), *command]
        record = procs.spawn(command, env=merged_env(c.env()), cwd=c.cwd(), log_path=c.log_path,
                             user_ids=user_ids(c.run_as()))
        if c.niceness:  # `nice` ranks the process within its session; this ranks the session
            procs.set_priority(record.pid, c.niceness)
        c.log_offset = record.log_offset
        procs.write_record(self.run_dir, c.name, record)
        self.ctx.say(f"{c.name}: started (pid {record.pid})")

    # --- down / restart -----------------------------------------------------------------------------
    def down(self, wipe: bool = False) -> None:
        known = set(self.by_name)
        # Records of components no longer declared (a module removed) are stopped too.
        strays = [n for n in procs.recorded_names(self.run_dir) if n not in known]
        services = [c for c in self.components if c.kind == "service"]
        self._stop(services, [])
        for layer in stop_layers([c for c in self.components if c.kind != "service"]):
            self._stop(layer, [])
        self._stop([], strays)
        if wipe:
            self.wipe()

    def _stop(self, components: list[Component], stray_names: list[str]) -> None:
        targets: list[tuple[str, procs.PidRecord, int, float]] = []
        for c in components:
            record = self.record(c)
            if record:
                targets.append((c.name, record, c.stop_signal, c.stop_grace))
        for name in stray_names:
            record = procs.read_record(self.run_dir, name)
            if record:
                targets.append((name, record, Component.stop_signal, Component.stop_grace))
        live = []
        for target in targets:
            name, record = target[:2]
            if record.alive():
                live.append(target)
            else:
                self.ctx.say(f"{name}: was not running (pid {record.pid} gone)")
        if live:
            self.ctx.say(f"stopping {', '.join(n for n, *_ in live)}")
            killed = procs.stop([(r, s, g) for _n, r, s, g in live])
            for name, record, _s, grace in live:
                if record in killed:
                    self.ctx.say(f"{name}: did not stop within {grace:.0f}s: killed")
        for name, *_ in targets:
            procs.remove_record(self.run_dir, name)

    def wipe(self) -> None:
        data = self.ctx.data.resolve()
        if not data.exists():
            return
        if self.any_running():
            raise StackError("not wiping: some components are still running")
        looks_ours = all(p.name in OWN_ENTRIES or p.name in self.by_name or ports.replica_of(p.name)
                         for p in data.iterdir())
        if data in (Path("/"), Path.home().resolve(), self.ctx.repo.resolve()) or not looks_ours:
            raise StackError(f"not wiping {data}: it holds files the stack did not make")
        shutil.rmtree(data)
        self.ctx.say(f"wiped {data}")

    def restart(self, name: str) -> None:
        c = self.get(name)
        if not c.enabled:
            raise StackError(f"{name}: {c.disabled_note}")
        record = self.record(c)
        if record and record.alive():
            procs.kill(record)
            self.ctx.say(f"{name}: killed (pid {record.pid})")
        procs.remove_record(self.run_dir, name)
        if not c.installed():
            self.install([c])
        self.start_all([c])

    # --- status / logs / urls -----------------------------------------------------------------------
    def status(self) -> int:
        rows = [("NAME", "PID", "PORT", "HEALTH", "MEM (PSS)")]
        total = 0
        for c in self.components:
            record = self.record(c)
            state = self.health(c)
            if state == "down" and c.kind == "service" and not c.installed():
                state = "down (not built)"
            if state == "down" and c.enabled and tcp_ok(c.port):
                state = "down (port taken by another process)"
            rss = procs.rss_bytes(record) if record else 0
            total += rss
            alive = record is not None and record.alive()
            rows.append((c.name, str(record.pid) if record else "-", str(c.port), state,
                         mib(rss) if alive else "-"))
        print_table(rows)
        print(f"\ntotal memory (PSS, shared pages counted once): {mib(total)}")
        return 0

    def logs(self, name: str, follow: bool, lines: int) -> None:
        c = self.get(name)
        if not c.log_path.exists():
            raise StackError(f"{name}: no log yet ({c.log_path})")
        if follow:
            os.execvp("tail", ["tail", "-n", str(lines), "-F", str(c.log_path)])
        print(tail(c.log_path, lines) if lines > 0 else c.log_path.read_text(errors="replace"))

    def print_urls(self) -> None:
        rows = [("NAME", "STATE", "URL")]
        for c in self.components:
            state = self.health(c)
            if not c.enabled or (c.kind == "service" and state == "down"):
                continue
            for label, url in c.urls():
                rows.append((c.name, state, f"{label + ': ' if label else ''}{url}"))
        print()
        print_table(rows)
        print(f"\ndata: {self.ctx.data}    logs: ./stack logs NAME [-f]    stop: ./stack down")

    # --- test ---------------------------------------------------------------------------------------
    def test(self, keep: bool = False) -> int:
        started_here = not self.any_running()
        results: list[tuple[str, str, float]] = []
        # The fault tests find the components' pid records here (tests/faults/stack.rs).
        os.environ["SHOP_STACK_DATA"] = str(self.ctx.data)

        def step(label: str, fn) -> bool:
            t0 = time.monotonic()
            try:
                outcome = fn()
            except StackError as e:
                print(f"error: {e}", file=sys.stderr)
                outcome = "FAILED"
            results.append((label, outcome, time.monotonic() - t0))
            return outcome in ("ok", "skipped")

        counts = {"passed": 0, "failed": 0}

        def cargo_test() -> str:
            if not (self.ctx.repo / "Cargo.toml").exists():
                print("cargo test skipped: no Cargo workspace yet")
                return "skipped"
            code, out = run_teed(["cargo", "test", "--workspace", "--no-fail-fast", "--", "--include-ignored"], self.ctx.repo)
            passed, failed = count_cargo_results(out)
            counts["passed"] += passed
            counts["failed"] += failed
            return "ok" if code == 0 else f"FAILED (exit {code})"

        def unit_tests() -> str:
            code, out = run_teed([sys.executable, "-m", "unittest", "discover", "-s", "tools/stack/tests", "-t", "."],
                                 self.ctx.repo)
            passed, failed = count_unittest_results(out)
            counts["passed"] += passed
            counts["failed"] += failed
            return "ok" if code == 0 else f"FAILED (exit {code})"

        def up() -> str:
            self.up(demo_data=False, tests=True)
            return "ok"

        def schemas_check() -> str:
            # BACKWARD compatibility of every .avsc against its earlier committed versions.
            code = subprocess.run(["cargo", "run", "-q", "-p", "schemas", "--bin", "schemas", "--", "check"],
                                  cwd=self.ctx.repo).returncode
            return "ok" if code == 0 else f"FAILED (exit {code})"

        def unused_dependencies() -> str:
            # Every dependency a Cargo.toml declares is used; cargo-machete installs once (~1 min).
            if shutil.which("cargo-machete") is None:
                code = subprocess.run(["cargo", "install", "cargo-machete", "--locked", "--version",
                                       CARGO_MACHETE_VERSION], cwd=self.ctx.repo).returncode
                if code != 0:
                    return f"FAILED (cargo install cargo-machete: exit {code})"
            code = subprocess.run(["cargo", "machete"], cwd=self.ctx.repo).returncode
            return "ok" if code == 0 else f"FAILED (exit {code}: remove what it lists)"

        def k8s_manifests() -> str:
            # kustomize + kubeconform over deploy/k8s, offline once its tools are cached; 77: no Go.
            code = subprocess.run([str(self.ctx.repo / "deploy/k8s/validate.sh")], cwd=self.ctx.repo).returncode
            return {0: "ok", 77: "skipped"}.get(code, f"FAILED (exit {code})")

        def api_fuzz() -> str:
            gateway = self.by_name.get("gateway")
            if gateway is None:
                return "skipped"
            code = apifuzz.run(self.ctx, f"http://127.0.0.1:{gateway.port}")
            counts["passed" if code == 0 else "failed"] += 1
            return "ok" if code == 0 else f"FAILED (exit {code})"

        def browser_tests() -> str:
            gateway = self.by_name.get("gateway")
            if gateway is None:
                return "skipped"
            code, out = browser.run(self.ctx, f"http://127.0.0.1:{gateway.port}")
            passed, failed = count_unittest_results(out)
            counts["passed"] += passed
            counts["failed"] += failed
            return "ok" if code == 0 else f"FAILED (exit {code})"

        def chaos_ci() -> str:
            # First, on the fresh stack: the auditor then judges the chaos run's orders alone (some
            # tests below leave records on the topics on purpose, e.g. from a database of their own).
            # The tests after it run with one instance of each service again.
            from tools.stack import chaos
            try:
                code = chaos.run(self, minutes=0, rate=None, replicas=2, kill_every=0, seed=1, servers=False,
                                 release=False, ci=True, out=None)
            finally:
                self.use_replicas(1)
            counts["passed" if code == 0 else "failed"] += 1
            return "ok" if code == 0 else f"FAILED (exit {code})"

        try:
            step("stack up --no-demo", up)
            step("two instances of each service, one of each SIGKILLed under load, audited (chaos --ci)", chaos_ci)
            step("cargo test --workspace --no-fail-fast -- --include-ignored", cargo_test)
            step("launcher unit tests", unit_tests)
            step("schemas check", schemas_check)
            step("unused dependencies (cargo-machete)", unused_dependencies)
            step("kubernetes manifests (kubeconform)", k8s_manifests)
            step(f"browser tests (Chromium, playwright {browser.VERSION})", browser_tests)
            step(f"schemathesis {apifuzz.VERSION} on /api/openapi.json", api_fuzz)
        finally:
            if started_here and not keep:
                step("stack down", lambda: self.down() or "ok")
            elif started_here:
                print("stack left running (--keep): ./stack down to stop it")
        print()
        print_table([("STEP", "RESULT", "TIME")] + [(l, o, f"{t:.0f}s") for l, o, t in results])
        print(f"tests: {counts['passed']} passed, {counts['failed']} failed")
        return 0 if all(o in ("ok", "skipped") for _l, o, _t in results) else 1


def run_teed(argv: list[str], cwd: Path) -> tuple[int, str]:
    """Run a command, streaming its output (stdout and stderr merged) and keeping a copy."""
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace")
    kept = []
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        kept.append(line)
    return proc.wait(), "".join(kept)


def count_cargo_results(output: str) -> tuple[int, int]:
    """Sum the `test result: ... N passed; M failed` lines of a cargo test run."""
    passed = failed = 0
    for m in re.finditer(r"^test result: \w+\. (\d+) passed; (\d+) failed", output, re.M):
        passed += int(m.group(1))
        failed += int(m.group(2))
    return passed, failed


def count_unittest_results(output: str) -> tuple[int, int]:
    """From unittest's `Ran N tests` and `FAILED (failures=a, errors=b, skipped=c)` lines."""
    ran = sum(int(m.group(1)) for m in re.finditer(r"^Ran (\d+) tests?", output, re.M))
    failed = sum(int(m.group(1)) for m in re.finditer(r"(?:failures|errors)=(\d+)", output))
    skipped = sum(int(m.group(1)) for m in re.finditer(r"skipped=(\d+)", output))
    return max(ran - failed - skipped, 0), failed


def stop_layers(components: list[Component]) -> list[list[Component]]:
    """Stop order: a component stops only after every component that depends on it."""
    remaining = list(components)
    layers = []
    while remaining:
        needed = {d for c in remaining for d in c.depends_on}
        layer = [c for c in remaining if c.name not in needed] or remaining  # a cycle: stop the rest
        layers.append(layer)
        remaining = [c for c in remaining if c not in layer]
    return layers


def mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


def indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


def print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
