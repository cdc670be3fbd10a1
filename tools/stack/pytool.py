"""Python tools the test steps run (schemathesis, Playwright): each in a virtualenv of its own
under the download cache, installed on first use, never in the repository."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tools.stack.components.base import Context, StackError


def ensure_venv(ctx: Context, venv: Path, requirement: str, module: str) -> None:
    """Create `venv` with `requirement` installed unless `module` already imports there."""
    python = venv / "bin" / "python"
    if python.exists() and subprocess.run([str(python), "-c", f"import {module}"],
                                          capture_output=True).returncode == 0:
        return
    ctx.say(f"installing {requirement} into {venv}")
    for argv in ([sys.executable, "-m", "venv", str(venv)],
                 [str(venv / "bin" / "pip"), "install", "-q", requirement]):
        if subprocess.run(argv).returncode != 0:
            raise StackError(f"{module}: `{' '.join(argv)}` failed")
