"""One writer per data directory, proved with real processes: a second writer refuses (or
waits, when configured) while the first holds the lock; the lock of a process that died
(SIGKILL) is taken over; a lock file cannot be a symlink that redirects the write."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edustat.config import ConfigError, load_config
from edustat.pipeline import WriterBusy, WriterLock

HOLD = """
import sys, time
from pathlib import Path
from edustat.pipeline import WriterLock
with WriterLock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _holder(data: Path, seconds: float) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(data), str(seconds)], stdout=subprocess.PIPE, text=True,
                         start_new_session=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_second_writer_refuses_naming_the_first(tmp_path):
    first = _holder(tmp_path, 60)
    try:
        with pytest.raises(WriterBusy) as err:
            with WriterLock(tmp_path):
                pass
        assert err.value.holder["pid"] == first.pid
        text = str(err.value)
        assert f"tiến trình {first.pid}" in text and "đang ghi thư mục dữ liệu" in text
        holder = json.loads((tmp_path / "edustat.lock").read_text(encoding="utf-8"))
        assert {"pid", "user", "host", "started_at", "command"} <= set(holder)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()


def test_a_second_writer_waits_when_told_to_and_then_writes(tmp_path):
    first = _holder(tmp_path, 2)
    said = []
    t0 = time.monotonic()
    with WriterLock(tmp_path, wait=60, say=said.append) as lock:
        waited = time.monotonic() - t0
        assert json.loads((tmp_path / "edustat.lock").read_text(encoding="utf-8"))["pid"] == os.getpid()
    first.wait()
    assert len(said) == 1 and "Đang chờ" in said[0] and str(first.pid) in said[0]
    assert waited > 0.5 and lock.previous == {}  # released cleanly: nothing stale to take over
    assert not (tmp_path / "edustat.lock").exists()


def test_the_lock_of_a_killed_writer_is_stale_and_taken_over(tmp_path):
    first = _holder(tmp_path, 60)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert json.loads((tmp_path / "edustat.lock").read_text(encoding="utf-8"))["pid"] == first.pid
    with WriterLock(tmp_path) as lock:
        assert lock.previous["pid"] == first.pid  # reported (logged by the run)
    assert not (tmp_path / "edustat.lock").exists()


def test_two_writers_never_interleave(tmp_path):
    """Many processes each append start/end marks under the lock (waiting for it): the marks
    never interleave."""
    script = """
import sys, time, os
from pathlib import Path
from edustat.pipeline import WriterLock
d = Path(sys.argv[1])
for _ in range(3):
    with WriterLock(d, wait=60):
        with open(d / "log", "a") as fh:
            fh.write(f"start {os.getpid()}\\n"); fh.flush()
            time.sleep(0.05)
            fh.write(f"end {os.getpid()}\\n")
"""
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path)]) for _ in range(3)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    lines = (tmp_path / "log").read_text().split("\n")[:-1]
    assert len(lines) == 18
    for a, b in zip(lines[::2], lines[1::2]):
        assert a.startswith("start ") and b == "end " + a.split()[1]


def test_a_symlinked_lock_file_is_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep")
    data = tmp_path / "data"
    data.mkdir()
    (data / "edustat.lock").symlink_to(victim)
    with pytest.raises(OSError):
        with WriterLock(data):
            pass
    assert victim.read_text() == "keep"


def test_config_keys_for_the_lock_and_private_files(tmp_path):
    cfg = tmp_path / "edustat.yaml"
    cfg.write_text("lock_wait_seconds: 30\nprivate_group: '0'\n", encoding="utf-8")
    c = load_config(cfg)
    assert c.lock_wait_seconds == 30.0 and c.private_group == "0"
    cfg.write_text("private_group: khong-co-nhom-nay\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="không có nhóm"):
        load_config(cfg)
    cfg.write_text("lock_wait_seconds: -1\n", encoding="utf-8")
    with pytest.raises(ConfigError):
        load_config(cfg)


def test_private_group_files_are_0640_in_that_group(tmp_path):
    from edustat.pipeline import secure_private_files

    c = load_config(None, tmp_path / "data")
    c = type(c)(**{**c.__dict__, "private_group": str(os.getgid())})
    c.db_path.parent.mkdir(parents=True)
    c.db_path.write_bytes(b"x")
    fb = c.feedback_dir / "2022-2023" / "dau_nam" / "74718001.xlsx"
    fb.parent.mkdir(parents=True)
    fb.write_bytes(b"x")
    os.chmod(fb, 0o644)
    secure_private_files(c)
    for p in (c.db_path, fb):
        assert p.stat().st_mode & 0o777 == 0o640 and p.stat().st_gid == os.getgid()
