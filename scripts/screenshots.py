"""Screenshots of what the statistics officer sees in the Prefect UI, checked.

Starts a Prefect server on a loopback port (temporary PREFECT_HOME), runs a small collection
against it (a synthetic city with accepted, warned, partially wrong and unreadable files), then
with headless Chromium:
- dumps the DOM of the flow-run page, its logs and each artifact and checks that the run name,
  the stage logs and the charts (inline SVG images) are there, and that the run graph's font
  has the Vietnamese letters (the server serves edustat/prefect_ui.py's UI, as `edustat server`);
- writes build/screenshots/*.png: the runs list, the flow-run page (logs and run graph; with
  --v2 in the V2 UI too), its artifacts tab, the summary, the per-school table, the charts and
  the deployment's custom-run form.
The API is checked too (run name, INFO logs, artifact kinds). Exit status 1 when a check fails.

    make screenshots        (installs chromium from Debian when absent)
    python scripts/screenshots.py --out build/screenshots
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
YEAR, PERIOD = "2022-2023", "dau_nam"


from edustat.procs import free_port, stop_group, wait_healthy  # noqa: E402


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("chromium not found: run `make screenshots` (installs it) or apt-get install chromium")


class Browser:
    """Headless Chromium driven over the DevTools protocol: navigate, wait until the JS app has
    rendered given texts, click a tab, read the page text, take a PNG."""

    def __init__(self) -> None:
        from websockets.sync.client import connect

        self.profile = tempfile.mkdtemp(prefix="edustat-chromium-")
        self.proc = subprocess.Popen([chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                      "--hide-scrollbars", "--remote-debugging-port=0", "--lang=vi-VN",
                                      f"--user-data-dir={self.profile}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        port = None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            port = int(m.group(1)) if m else None
        if port is None:
            raise RuntimeError("chromium did not start its DevTools endpoint")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=64 * 2**20)
        self.n = 0

    def call(self, method: str, **params):
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=120))
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def js(self, expr: str):
        return self.call("Runtime.evaluate", expression=expr, returnByValue=True).get("result", {}).get("value")

    def text(self) -> str:
        return self.js("document.body ? document.body.innerText : ''") or ""

    def wait_for(self, texts: list[str], seconds: float = 60) -> list[str]:
        """Poll until every text is on the page; returns those still missing."""
        deadline = time.monotonic() + seconds
        while True:
            body = self.text() + (self.js("document.documentElement.outerHTML") if any(t.startswith("data:") for t in texts) else "")
            missing = [t for t in texts if t not in body]
            if not missing or time.monotonic() > deadline:
                return missing
            time.sleep(0.5)

    def open(self, url: str, width: int, height: int) -> None:
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        self.call("Page.navigate", url=url)
        time.sleep(1)

    def click_text(self, label: str) -> bool:
        return bool(self.js(f"""(() => {{
            const el = [...document.querySelectorAll('[role=tab], .p-tab, button, a')].find(e => e.textContent.trim() === {json.dumps(label)});
            if (el) {{ el.click(); return true; }} return false; }})()"""))

    def screenshot(self, png: Path) -> None:
        time.sleep(1.5)  # let charts and fonts settle
        data = self.call("Page.captureScreenshot", format="png")["data"]
        png.write_bytes(__import__("base64").b64decode(data))

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            stop_group(self.proc, timeout=20)
            shutil.rmtree(self.profile, ignore_errors=True)


def make_city(inbox: Path, config: Path) -> None:
    """The demo's city (scripts/demo_faults.py): accepted, warned, partially loaded, rejected
    and unreadable files."""
    from demo_faults import add_faults

    from edustat.synth import generate_city

    generate_city(inbox, schools=6, seed=2022, school_year=YEAR, period=PERIOD, export_share=0.3)
    add_faults(inbox, config)
    (inbox / "manifest.json").unlink()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "screenshots")
    ap.add_argument("--v2", action="store_true", help="also the flow-run page (run graph) in Prefect's V2 UI (~8 s more)")
    ap.add_argument("--keep", action="store_true", help="leave the server running (prints its URL) until Ctrl+C")
    args = ap.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    work = Path(tempfile.mkdtemp(prefix="edustat-screens-"))
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    ui = f"http://127.0.0.1:{port}"
    env = dict(os.environ, PREFECT_HOME=str(work / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               DO_NOT_TRACK="1", PREFECT_API_URL=api, PREFECT_LOGGING_LEVEL="WARNING", PREFECT_UI_API_URL=api)
    env.pop("PREFECT_API_KEY", None)
    # this process's Prefect settings are read once, at its import (just below): set them first
    os.environ.update({k: env[k] for k in ("PREFECT_HOME", "PREFECT_API_URL", "PREFECT_LOGGING_LEVEL",
                                           "PREFECT_SERVER_ANALYTICS_ENABLED", "DO_NOT_TRACK")})
    from edustat.prefect_ui import ui_static_env

    env.update(ui_static_env(work / "prefect"))  # the run graph's Vietnamese letters, as `edustat server` serves them
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    failures: list[str] = []

    def _terminate(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    try:
        if not wait_healthy(api, 180):
            print("prefect server did not start", file=sys.stderr)
            return 1
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
        inbox = work / "inbox"
        config = work / "edustat.yaml"
        make_city(inbox, config)
        from flows.collect import collection_flow

        t0 = time.perf_counter()
        state = collection_flow(school_year=YEAR, period=PERIOD, inbox=str(inbox), data_dir=str(work / "data"),
                                config_path=str(config), return_state=True)
        print(f"collection run: {state.type.value} in {time.perf_counter() - t0:.0f} s")
        run_id = state.state_details.flow_run_id
        facts = api_facts(run_id)
        print(f"run name: {facts['name']!r}; {facts['info_logs']} INFO log lines; artifacts: {sorted(facts['artifacts'])}")
        if not re.match(r"^2022-2023 đầu năm — \d+ trường \(", facts["name"]):
            failures.append(f"run name says what ran: {facts['name']!r}")
        if facts["info_logs"] < 8:
            failures.append(f"stage logs at INFO in the run log: only {facts['info_logs']}")
        if not facts["charts_inline"]:
            failures.append("the charts artifact is markdown with inline SVG images")

        # the deployment the officer starts runs from (flows/deploy.py), registered for its form
        from edustat.config import load_config
        from flows.deploy import deployments

        dep_id = deployments(load_config(config, work / "data"), str(work / "data"), str(config))[0].apply()
        arts = facts["artifacts"]
        key = "2022-2023-dau-nam"
        # (file, url, tab to click, texts that must be on the page, width, height)
        pages = [
            ("1-danh-sach-lan-chay", f"{ui}/runs", None, [facts["name"]], 1440, 900),
            ("2-lan-chay-nhat-ky", f"{ui}/runs/flow-run/{run_id}", None,
             [facts["name"], "Tìm thấy", "Đã đọc", "Đã kiểm tra", "Đã nạp DuckDB", "Đã lập", "Lần chạy"], 1440, 1400),
            ("3-lan-chay-bao-cao", f"{ui}/runs/flow-run/{run_id}", "Artifacts",
             [f"edustat-truong-{key}", f"edustat-tong-ket-{key}", f"edustat-bieu-do-{key}"], 1440, 1300),
            ("4-tong-ket", f"{ui}/artifacts/artifact/{arts[f'edustat-tong-ket-{key}']}", None,
             ["Thu thập số liệu năm học 2022-2023", "nộp sau hạn", "(hạn 30/10/2022)", "Tệp không đọc được"], 1440, 1700),
            ("5-bang-truong", f"{ui}/artifacts/artifact/{arts[f'edustat-truong-{key}']}", None,
             ["Mã trường", "Trạng thái", "Nhận", "Không đọc được", "Nạp một phần", "muộn"], 1440, 1000),
            ("6-bieu-do", f"{ui}/artifacts/artifact/{arts[f'edustat-bieu-do-{key}']}", None,
             ["Trường theo trạng thái", "Học sinh đang học theo khối", "data:image/svg+xml;base64,"], 1440, 1500),
            ("7-chay-tuy-chinh", f"{ui}/deployments/deployment/{dep_id}/run", None,
             ["Năm học, ví dụ 2022-2023", "Kỳ báo cáo: dau_nam = đầu năm", "Thư mục chứa các tệp trường đã nộp"], 1440, 1500),
        ]
        if args.v2:  # the same page in the V2 UI, where `/` sends a browser without a saved preference
            pages.insert(2, ("2b-lan-chay-v2", f"{ui}/v2/runs/flow-run/{run_id}", None, [facts["name"]], 1440, 1100))
        browser = Browser()
        try:
            for name, url, tab, must, width, height in pages:
                browser.open(url, width, height)
                if tab:
                    browser.wait_for([tab])
                    if not browser.click_text(tab):
                        failures.append(f"{name}: no '{tab}' tab to click")
                missing = browser.wait_for(must)
                if name == "2b-lan-chay-v2":
                    time.sleep(5)  # the V2 run graph draws a few seconds after the page's text
                if name == "2-lan-chay-nhat-ky" and not graph_font_has_vietnamese(browser):
                    failures.append("2-lan-chay-nhat-ky: the run graph's font lacks the Vietnamese letters "
                                    "(the served UI is not edustat/prefect_ui.py's)")
                png = out / f"{name}.png"
                browser.screenshot(png)
                (out / f"{name}.txt").write_text(browser.text(), encoding="utf-8")
                if name == "6-bieu-do":
                    shown = browser.js("[...document.images].filter(i => i.src.startsWith('data:image/svg') && i.complete && i.naturalWidth > 0).length")
                    if not shown or shown < 2:
                        failures.append(f"6-bieu-do: the UI shows {shown or 0} of 2 chart images")
                print(f"{png}: {png.stat().st_size:,} bytes" + (f"; MISSING {missing}" if missing else "; checks pass"))
                if missing:
                    failures.append(f"{name}: page lacks {missing}")
        finally:
            browser.close()
        if args.keep:
            print(f"UI: {ui}/runs/flow-run/{run_id} — Ctrl+C to stop")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    finally:
        stop_group(server)
        shutil.rmtree(work, ignore_errors=True)
    for f in failures:
        print(f"CHECK FAILED: {f}", file=sys.stderr)
    return 1 if failures else 0


def graph_font_has_vietnamese(browser: Browser) -> bool:
    """Whether a script the page loaded builds the run graph's bitmap font with the Vietnamese
    letters (the graph is a canvas: its labels are not in the DOM)."""
    from edustat.prefect_ui import patched_font_options

    seen: set[str] = set()
    deadline = time.monotonic() + 10  # the graph's chunk may load after the page's text
    while time.monotonic() < deadline:
        scripts = browser.js("performance.getEntriesByType('resource').map(e => e.name).filter(n => n.endsWith('.js'))")
        for url in set(scripts or []) - seen:
            seen.add(url)
            with urllib.request.urlopen(url, timeout=30) as r:
                if patched_font_options().encode() in r.read():
                    return True
        time.sleep(1)
    return False


def api_facts(run_id) -> dict:
    """What the server holds for the run: its name, INFO log lines, artifacts by key."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, LogFilterFlowRunId
    time.sleep(3)  # the log worker ships the last lines in batches
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])), limit=200)
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    charts = next((a for a in arts if a.key and a.key.startswith("edustat-bieu-do")), None)
    data = charts.data if charts and isinstance(charts.data, str) else json.dumps(charts.data if charts else "")
    return {"name": run.name, "info_logs": sum(1 for lg in logs if lg.level == 20),
            "artifacts": {a.key: a.id for a in arts if a.key},
            "charts_inline": bool(charts and charts.type == "markdown" and "data:image/svg+xml;base64," in data)}


if __name__ == "__main__":
    sys.exit(main())
