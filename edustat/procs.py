"""Small process helpers shared by the CLI (`edustat server`), the screenshots script and the
tests that start a real Prefect server or kill a run: wait for a server's health endpoint,
stop a process group politely then for good."""
from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request


def wait_healthy(url: str, seconds: float) -> bool:
    """True once `<url>/health` answers 200, False after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            time.sleep(0.5)
    return False


def stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Send `sig` to the process group of `proc` (started with start_new_session=True), then
    SIGKILL it if it has not ended after `timeout` seconds."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)
