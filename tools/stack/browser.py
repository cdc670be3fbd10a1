"""Browser tests: the UI the gateway serves, driven in real headless Chromium (Debian's package)
by Playwright for Python. Playwright lives in a virtualenv under the download cache, installed on
first use; it never downloads a browser of its own (the tests launch /usr/bin/chromium)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tools.stack import pytool
from tools.stack.components.base import Context, StackError

VERSION = "1.65.2"
TESTS = Path("tests/browser")


def venv(ctx: Context) -> Path:
    return ctx.cache / f"playwright-{VERSION}-venv"


def python(ctx: Context) -> Path:
    return venv(ctx) / "bin" / "python"


def chromium() -> str | None:
    return os.environ.get("SHOP_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def install(ctx: Context) -> None:
    pytool.ensure_venv(ctx, venv(ctx), f"playwright=={VERSION}", "playwright")


def command(ctx: Context) -> list[str]:
    return [str(python(ctx)), "-m", "unittest", "discover", "-s", str(TESTS), "-t", str(TESTS), "-v"]


def run(ctx: Context, gateway: str) -> tuple[int, str]:
    """(exit code, unittest output) of the browser suite against the running gateway."""
    browser = chromium()
    if browser is None:
        raise StackError("browser tests: no Chromium found (apt-get install chromium, or set SHOP_CHROMIUM)")
    install(ctx)
    env = {**os.environ, "SHOP_GATEWAY": gateway, "SHOP_CHROMIUM": browser,
           "SHOP_BROWSER_ARTIFACTS": str(ctx.data / "browser")}
    proc = subprocess.run(command(ctx), cwd=ctx.repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors="replace")
    sys.stdout.write(proc.stdout)
    return proc.returncode, proc.stdout
