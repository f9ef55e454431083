"""The Prefect UI edustat serves (edustat/prefect_ui.py): the V1 run graph's bitmap font has the
Vietnamese letters of the task names, the directory is prepared the way Prefect prepares it (so
Prefect serves it as it is) and only once, and anything unexpected falls back to Prefect's own
UI with one warning."""
from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import prefect
import pytest

from edustat import prefect_ui

ROOT = Path(__file__).resolve().parents[1]


def _task_names() -> list[str]:
    return [name for path in sorted((ROOT / "flows").glob("*.py"))
            for name in re.findall(r'@task\(\s*name="([^"]+)"', path.read_text(encoding="utf-8"))]


def _font_texts(root: Path) -> list[str]:
    return [p.read_text(encoding="utf-8") for p in sorted((root / "v1" / "assets").glob("index-*.js"))]


def test_the_letters_are_every_vietnamese_letter_and_cover_the_task_names():
    letters = prefect_ui.vietnamese_letters()
    assert len(letters) == len(set(letters)) == 134
    assert all(len(unicodedata.normalize("NFC", c)) == 1 and unicodedata.is_normalized("NFC", c) for c in letters)
    assert {"ả", "ồ", "ờ", "ữ", "ỵ", "Ẫ", "đ", "Đ"} <= set(letters) and not any(c.isascii() for c in letters)
    names = _task_names()
    assert "phản hồi cho trường: chờ ghi xong (feedback written)" in names
    needed = {c for name in names for c in unicodedata.normalize("NFC", name) if c.isalpha() and not c.isascii()}
    assert needed and needed <= set(letters), needed - set(letters)
    assert "\\u1edd" in prefect_ui.patched_font_options()  # ờ, as an ASCII-only JS escape


def test_the_prepared_v1_bundle_has_the_vietnamese_font_and_is_prepared_once(tmp_path):
    home = tmp_path / "home"
    root = prefect_ui.prepare(home)
    assert root == home / prefect_ui.DIR_NAME
    texts = _font_texts(root)
    assert sum(t.count(prefect_ui.patched_font_options()) for t in texts) == 1
    assert not any(prefect_ui.FONT_OPTIONS in t for t in texts)
    assert prefect_ui.PLACEHOLDER not in (root / "v1" / "index.html").read_text(encoding="utf-8")
    assert (root / "v1" / prefect_ui.REFERENCE_FILE).read_text() == f"v1:{prefect.__version__}:/"
    before = (root / "v1").stat().st_ino, (root / "v1" / "index.html").stat().st_mtime_ns
    assert prefect_ui.ui_static_env(home) == {prefect_ui.ENV_KEY: str(root)}
    assert ((root / "v1").stat().st_ino, (root / "v1" / "index.html").stat().st_mtime_ns) == before, "not rebuilt"
    (root / "v1" / prefect_ui.REFERENCE_FILE).write_text("v1:0.0:/")  # as if Prefect had recopied its own
    assert prefect_ui.prepare(home) == root
    assert sum(t.count(prefect_ui.patched_font_options()) for t in _font_texts(root)) == 1


def test_the_v1_base_url_is_prefects():
    """Prefect's `_resolve_ui_base_urls(base)[0]` for these bases (3.9.1; its module takes ~5 s
    to import, so the values are written here). That Prefect serves the prepared directory as it
    is (the cache key matches) is shown by tests/test_server.py against a real server."""
    expected = {"": "/", "/": "/", "//": "/", "ui": "/ui", "/ui/": "/ui", "/v2": "/", "v2/": "/", "/ui/v2": "/ui",
                "/ui/v2/": "/ui"}
    assert {base: prefect_ui.v1_base_url(base) for base in expected} == expected


def _fake_bundle(tmp_path, monkeypatch, text: str) -> None:
    fake = tmp_path / "prefect-ui"
    (fake / "assets").mkdir(parents=True)
    (fake / "index.html").write_text("<html></html>")
    (fake / "assets" / "index-x.js").write_text(text)
    monkeypatch.setattr(prefect, "__ui_static_path__", fake)


@pytest.mark.parametrize("text", ["A3={resolution:lG,chars:P$.ALPHANUMERIC}", prefect_ui.FONT_OPTIONS * 2])
def test_another_bundle_falls_back_to_prefects_own_ui(tmp_path, monkeypatch, text):
    _fake_bundle(tmp_path, monkeypatch, text)
    said: list[str] = []
    assert prefect_ui.ui_static_env(tmp_path / "home", said.append) == {}
    assert len(said) == 1 and "not found once" in said[0] and "Prefect's own UI" in said[0]
    assert not (tmp_path / "home" / prefect_ui.DIR_NAME).exists()


def test_a_symlink_in_the_prefect_home_is_refused(tmp_path):
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    (home / prefect_ui.DIR_NAME).symlink_to(elsewhere, target_is_directory=True)
    said: list[str] = []
    assert prefect_ui.prepare(home, said.append) is None
    assert len(said) == 1 and "could not prepare" in said[0]
    assert list(elsewhere.iterdir()) == []


def test_the_callers_static_directory_wins(tmp_path):
    from prefect.settings import PREFECT_UI_STATIC_DIRECTORY, temporary_settings

    with temporary_settings({PREFECT_UI_STATIC_DIRECTORY: str(tmp_path / "theirs")}):
        assert prefect_ui.ui_static_env(tmp_path / "home") == {}
    assert not (tmp_path / "home").exists()
