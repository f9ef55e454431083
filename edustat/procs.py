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


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_prefect_server(home, *, ui: bool = True, drop: tuple[str, ...] = ()) -> tuple[subprocess.Popen, str, dict]:
    """A Prefect server on a free loopback port, in its own process group, with its home in
    `home`: (process, API url, the environment its clients use). Stop it with `stop_group`."""
    import sys

    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
               PREFECT_API_URL=url, PREFECT_UI_API_URL=url, PREFECT_LOGGING_LEVEL="WARNING")
    for k in ("PREFECT_API_KEY", *drop):
        env.pop(k, None)
    if ui:  # the run graph's labels with their Vietnamese letters (edustat/prefect_ui.py)
        from edustat.prefect_ui import ui_static_env

        env.update(ui_static_env(home))
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd + ([] if ui else ["--no-ui"]), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    return proc, url, env
