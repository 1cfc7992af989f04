"""The `u2s` command in a process of its own, for tests that kill it (`kill -9`) or watch its files."""

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def u2s(*args, log: Path, env: dict | None = None) -> subprocess.Popen:
    """The command in its own process; its output goes to `log` (a pipe nobody reads would block it)."""
    with open(log, "ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "u2s_hf.cli", *map(str, args)],
            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
            cwd=REPO,
            stdout=output,
            stderr=output,
            start_new_session=True,
        )


def wait_for(condition, seconds=120) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False
