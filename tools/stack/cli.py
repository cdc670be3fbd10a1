"""`./stack`: run the platform's whole local stack as processes on 127.0.0.1, without Docker."""

from __future__ import annotations

import argparse
import fcntl
import os
import sys
from pathlib import Path

from tools.stack.bench import WARMUP_ROUNDS, WARMUP_S
from tools.stack.components.base import Context, StackError

REPO = Path(__file__).resolve().parents[2]


def parser() -> argparse.ArgumentParser:
    # --data is accepted before or after the command.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data", type=Path, default=argparse.SUPPRESS,
                        help="folder for all state: databases, logs, pid files (default <repo>/.stack-data)")
    p = argparse.ArgumentParser(prog="stack", description=__doc__, parents=[common])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", parents=[common],
                        help="install (first run), start, wait healthy, load demo data")
    up.add_argument("--infra-only", action="store_true", help="only the infrastructure, no Rust services")
    up.add_argument("--no-demo", action="store_true", help="do not load demo data")
    up.add_argument("--release", action="store_true",
                    help="build and run the services optimised (cargo --release); the default is the dev build")
    up.add_argument("--replicas", type=int, default=1, metavar="N",
                    help="instances of every service but the gateway (own ports, same databases and consumer "
                         "groups; found through the service registry); default 1")

    down = sub.add_parser("down", parents=[common], help="stop everything the stack started")
    down.add_argument("--wipe", action="store_true", help="also delete the data folder")

    sub.add_parser("status", parents=[common], help="pid, port, health and memory of each component")

    restart = sub.add_parser("restart", parents=[common], help="SIGKILL a component, start it, wait healthy")
    restart.add_argument("name")

    logs = sub.add_parser("logs", parents=[common], help="show a component's log")
    logs.add_argument("name")
    logs.add_argument("-f", "--follow", action="store_true")
    logs.add_argument("-n", "--lines", type=int, default=200, help="last N lines (0: all)")

    test = sub.add_parser("test", parents=[common],
                          help="up --no-demo, cargo test (end-to-end included), launcher unit tests")
    test.add_argument("--keep", action="store_true", help="leave the stack running afterwards")

    bench = sub.add_parser(
        "bench", parents=[common],
        help="the whole system under open-loop order load (release build): latency, CPU and memory per "
             "process, Kafka records per order, an audit of the results; writes bench-results/orders.*")
    bench.add_argument("--rate", type=float, action="append", metavar="R",
                       help="offered orders/s (repeat for several runs; default 10, 50, 100)")
    bench.add_argument("--duration", type=float, default=60.0, help="seconds of load per rate (default 60)")
    bench.add_argument("--warmup", type=float, default=WARMUP_S, metavar="SECONDS",
                       help="load at the first rate before the measured runs, repeated while the JVMs still "
                            f"compile (at most {WARMUP_ROUNDS} rounds), reported apart (default {WARMUP_S:g}; 0: none)")
    bench.add_argument("--find-max", action="store_true",
                       help="raise the rate from --start by --factor until p99 POST->final exceeds 500 ms")
    bench.add_argument("--start", type=float, default=10.0, help="--find-max: first rate (default 10)")
    bench.add_argument("--factor", type=float, default=1.5, help="--find-max: rate step factor (default 1.5)")
    bench.add_argument("--limit", type=float, default=400.0, help="--find-max: highest rate tried (default 400)")
    bench.add_argument("--results", type=Path, default=REPO / "bench-results",
                       help="folder for orders.json and orders.svg (default bench-results/)")
    bench.add_argument("--replicas", type=int, default=1, metavar="N",
                       help="instances of every service but the gateway, as `up --replicas` (default 1)")
    bench.add_argument("--profile", action="store_true",
                       help="sample every CPU with perf during each measured run: where each component's CPU "
                            "went (own code, kernel, allocator, JIT...), in the results as `cpu_profile`")
    bench.add_argument("extra", nargs="*", metavar="-- ARG",
                       help="passed to orders-bench as is (see target/release/orders-bench --help)")
    chaos = sub.add_parser(
        "chaos", parents=[common],
        help="orders under load while instances are killed and stopped and the servers restarted, then the "
             "auditor; writes bench-results/chaos.json, exits 1 on any violation")
    chaos.add_argument("--minutes", type=float, default=20.0, help="minutes of load (default 20)")
    chaos.add_argument("--rate", type=float, default=None,
                       help="offered orders/s (default: a quarter of the highest rate bench-results/orders.json sustained)")
    chaos.add_argument("--replicas", type=int, default=2, metavar="N",
                       help="instances of every service but the gateway (default 2)")
    chaos.add_argument("--kill-every", type=float, default=30.0, metavar="S",
                       help="SIGKILL a random instance every S seconds (default 30)")
    chaos.add_argument("--seed", type=int, default=1, help="draws the targets and the orders (default 1)")
    chaos.add_argument("--no-servers", action="store_true",
                       help="do not restart PostgreSQL, Kafka and the MongoDB-wire server")
    chaos.add_argument("--debug", action="store_true",
                       help="run the dev build (default: release, as the benchmark does)")
    chaos.add_argument("--ci", action="store_true",
                       help="the short form `./stack test` runs: one SIGKILL of one instance of each of order, "
                            "product, payment, saga-orchestrator and projectors, the current build, no server "
                            "restarts")
    chaos.add_argument("--out", type=Path, default=None,
                       help="the results file (default bench-results/chaos.json; with --ci <data>/chaos/ci.json)")
    return p


def context(data: Path | None) -> Context:
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return Context(repo=REPO, data=(data or REPO / ".stack-data").absolute(), cache=cache_home / "shop-stack")


LOCK_OWNER_ENV = "SHOP_STACK_LOCK_OWNER"


def ancestors(pid: int) -> list[int]:
    """The parent chain of `pid` (nearest first), read from /proc."""
    chain = []
    while pid > 1:
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
        chain.append(pid)
    return chain


def lock_held_by_ancestor() -> bool:
    """`./stack test` holds the lock while the tests run; crash tests it runs may still
    `./stack restart` a component: the lock is then held by an ancestor of ours."""
    owner = os.environ.get(LOCK_OWNER_ENV, "")
    return owner.isdigit() and int(owner) in ancestors(os.getpid())


def lock(ctx: Context):
    """One mutating command at a time per data folder."""
    ctx.data.mkdir(parents=True, exist_ok=True)
    handle = open(ctx.data / ".lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise StackError(f"another ./stack command is working on {ctx.data}") from None
    return handle


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from tools.stack.launcher import Launcher  # after parsing: --help needs no component

    ctx = context(getattr(args, "data", None))
    try:
        launcher = Launcher(ctx)
        if args.command == "status":
            return launcher.status()
        if args.command == "logs":
            launcher.logs(args.name, args.follow, args.lines)
            return 0
        if args.command == "restart" and lock_held_by_ancestor():
            launcher.restart(args.name)
            return 0
        held = lock(ctx)
        os.environ[LOCK_OWNER_ENV] = str(os.getpid())  # for children of `test`, see above
        try:
            if args.command == "up":
                launcher.up(infra_only=args.infra_only, demo_data=not args.no_demo, release=args.release,
                            replicas=args.replicas)
            elif args.command == "down":
                launcher.down(wipe=args.wipe)
            elif args.command == "restart":
                launcher.restart(args.name)
            elif args.command == "test":
                return launcher.test(keep=args.keep)
            elif args.command == "bench":
                from tools.stack import bench
                return bench.main(launcher, rates=args.rate or [10.0, 50.0, 100.0], duration=args.duration,
                                  find_max=args.find_max, start=args.start, factor=args.factor,
                                  limit=args.limit, extra=args.extra, results_dir=args.results,
                                  replicas=args.replicas, warmup=args.warmup, sample=args.profile)
            elif args.command == "chaos":
                from tools.stack import chaos
                return chaos.run(launcher, minutes=args.minutes, rate=args.rate, replicas=args.replicas,
                                 kill_every=args.kill_every, seed=args.seed, servers=not args.no_servers,
                                 release=not args.debug, ci=args.ci, out=args.out)
        finally:
            held.close()
        return 0
    except StackError as e:
        print(f"error: {e}", file=sys.stderr)
        if args.command == "up":
            print("what did start keeps running: ./stack status, ./stack down", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into `head` and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
