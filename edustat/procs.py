"""Small process helpers shared by the CLI (`edustat server`), the screenshots script and the
tests that start a real Prefect server or kill a run: wait for a server's health endpoint,
stop a process group politely then for good."""
from __future__ import annotations

import http.client
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
        except (OSError, http.client.HTTPException):  # not up yet, or not an HTTP server on the port
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
    """A free TCP port on the loopback interface, below the kernel's ephemeral range: a port
    the kernel hands out for `bind(0)` is free again the moment it is tested here, and any
    other program's `bind(0)` (a Dask scheduler or worker in a test beside it) may take it
    before the server binds it — a server's health check then reached a Dask comm. Ports
    below the range are never handed out that way; one is drawn at random and tested."""
    import random
    import socket

    try:
        low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(200):
        port = random.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # nothing free below the range: the kernel's choice
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
