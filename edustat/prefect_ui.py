"""The Prefect UI bundle edustat serves: Prefect's own, with Vietnamese letters in the run graph.

Prefect's V1 UI draws the run graph's task labels with pixi.js BitmapText in a bitmap font built
from the ASCII characters only (`chars:P$.ASCII` in the pinned build), so every Vietnamese letter
of a task name is dropped there ("phản hồi" is drawn "phn hi"). The V2 UI builds its font on
demand from the text it draws and needs nothing.

`ui_static_env(home)` prepares, under the Prefect home, a UI static directory for the server
(`PREFECT_SERVER_UI_STATIC_DIRECTORY`): `v1/` is Prefect's V1 bundle prepared exactly as
Prefect prepares it (copied, the serve-base placeholder replaced, the `UI_SERVE_BASE`
reference file written with Prefect's cache key), with the font's character set extended by
the Vietnamese letters; `v2/` is left to Prefect, which copies its V2 bundle there itself.

Why it is safe:
- the patch is applied only when the exact expected text occurs once in the bundle (the pinned
  Prefect build); otherwise nothing is prepared, the server serves Prefect's own UI and one
  warning goes to the developer log;
- Prefect re-copies its own bundle over `v1/` whenever the reference file does not hold the
  cache key it expects (another version, another serve base): a mismatch gives the unpatched UI,
  never a broken one;
- the directory is built beside the old one and renamed into place, under the lock file Prefect
  itself takes for that directory; it lives inside the Prefect home (proven; a symlink there is
  refused, not followed);
- it is built once per Prefect version, source file hash and serve base (a marker file beside
  it); later starts only hash the source file.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import unicodedata
from pathlib import Path

log = logging.getLogger("edustat")

DIR_NAME = "ui-edustat"
ENV_KEY = "PREFECT_SERVER_UI_STATIC_DIRECTORY"
# Prefect's own names (prefect/server/api/server.py, 3.9.1): the placeholder its build leaves in
# the bundle, the reference file holding the cache key, its lock file beside the bundle.
PLACEHOLDER = "/PREFECT_UI_SERVE_BASE_REPLACE_PLACEHOLDER"
REFERENCE_FILE = "UI_SERVE_BASE"
PLACEHOLDER_EXTENSIONS = (".txt", ".html", ".css", ".js", ".json")
# The V1 run graph's font options, exactly as the pinned build has them.
FONT_OPTIONS = "A3={resolution:lG,chars:P$.ASCII}"
PATCH_ID = "vi-1"  # bump when the patch changes: prepared directories are rebuilt
_VI_VOWELS = "aăâeêioôơuưy"
_VI_TONES = ("", "\u0300", "\u0301", "\u0309", "\u0303", "\u0323")  # none, grave, acute, hook, tilde, dot below


def vietnamese_letters() -> str:
    """Every precomposed (NFC) Vietnamese letter outside ASCII, both cases: the 12 vowels with
    each of the 5 tone marks (ă â ê ô ơ ư also bare) and đ/Đ; 134 characters."""
    out: list[str] = []
    for vowel in _VI_VOWELS + _VI_VOWELS.upper():
        for tone in _VI_TONES:
            ch = unicodedata.normalize("NFC", vowel + tone)
            if len(ch) != 1:
                raise ValueError(f"no precomposed letter for {vowel!r} + U+{ord(tone):04X}")
            if not ch.isascii():
                out.append(ch)
    return "".join(out) + "đĐ"


def patched_font_options() -> str:
    """`FONT_OPTIONS` with the Vietnamese letters added (a JS string of \\u escapes: pixi's
    resolveCharacters takes ranges and strings alike)."""
    letters = "".join(f"\\u{ord(c):04x}" for c in vietnamese_letters())
    return f'A3={{resolution:lG,chars:[...P$.ASCII,"{letters}"]}}'


def v1_base_url(serve_base: str) -> str:
    """Prefect's V1 base URL for a `PREFECT_UI_SERVE_BASE` (its `_resolve_ui_base_urls`, whose
    module takes ~5 s to import; tests/test_prefect_ui.py checks they agree)."""
    base = serve_base or "/"
    if not base.startswith("/"):
        base = f"/{base}"
    if base != "/":
        base = base.rstrip("/") or "/"
    if base == "/v2":
        return "/"
    if base.endswith("/v2"):
        return base[: -len("/v2")] or "/"
    return base


def find_font_source(source: Path) -> tuple[Path, str] | None:
    """The bundle's file holding `FONT_OPTIONS` and its text, when the text occurs exactly once
    in the bundle's entry chunks; None otherwise."""
    hits = []
    for path in sorted((source / "assets").glob("index-*.js")):
        text = path.read_text(encoding="utf-8")
        n = text.count(FONT_OPTIONS)
        if n:
            hits.append((path, text, n))
    if len(hits) != 1 or hits[0][2] != 1:
        return None
    return hits[0][0], hits[0][1]


def _build(source: Path, target: Path, font_file: Path, font_text: str, base_url: str, cache_key: str) -> None:
    """Prefect's `create_ui_static_subpath` for one bundle (copy, files made writable, every text
    file read and written back with the placeholder replaced, the reference file), plus the font
    patch in `font_file`."""
    shutil.copytree(source, target, symlinks=True)
    font_rel = font_file.relative_to(source)
    for folder, _, files in os.walk(target):
        for name in files:
            path = Path(folder) / name
            if path.is_symlink():
                continue
            os.chmod(path, 0o700)  # as Prefect does: the copies stay writable (Prefect may recopy)
            if not name.endswith(PLACEHOLDER_EXTENSIONS):
                continue
            text = path.read_text(encoding="utf-8")
            if path.relative_to(target) == font_rel:
                if text != font_text:
                    raise OSError(f"{font_file.name} changed while being copied")
                text = text.replace(FONT_OPTIONS, patched_font_options())
            path.write_text(text.replace(PLACEHOLDER, "" if base_url == "/" else base_url), encoding="utf-8")
    (target / REFERENCE_FILE).write_text(cache_key, encoding="utf-8")


def prepare(home: Path, warn=None) -> Path | None:
    """The UI static directory for a Prefect server whose home is `home`, prepared (see the
    module docstring); None when Prefect's own UI is to be served unchanged, after one warning
    (English, for the developer) passed to `warn` (default: the `edustat` logger)."""
    import prefect
    from prefect.settings import PREFECT_UI_SERVE_BASE

    from edustat.paths import UnsafePath, inside

    source = Path(prefect.__ui_static_path__)
    if not source.is_dir():
        return None
    found = find_font_source(source)
    if found is None:
        (warn or log.warning)(f"Prefect UI: the run graph's font options ({FONT_OPTIONS}) were not found once in "
                              f"{source} (Prefect {prefect.__version__}); serving Prefect's own UI, whose run graph "
                              "drops Vietnamese letters")
        return None
    font_file, font_text = found
    base_url = v1_base_url(PREFECT_UI_SERVE_BASE.value())
    cache_key = f"v1:{prefect.__version__}:{base_url}"  # Prefect's UIBundle.cache_key for V1
    digest = hashlib.sha256(font_text.encode("utf-8")).hexdigest()
    marker_text = f"{PATCH_ID} {prefect.__version__} {font_file.name} {digest} {base_url}"
    try:
        from prefect.locking._filelock import FileLock  # the lock Prefect's server takes around its copy

        home = Path(home)
        home.mkdir(parents=True, exist_ok=True)
        root = home / DIR_NAME
        if root.is_symlink() or (root / "v1").is_symlink():
            raise UnsafePath(f"{root} is a symlink")
        inside(home, root)
        root.mkdir(exist_ok=True)
        marker, bundle = root / ".edustat-v1", root / "v1"

        def ready() -> bool:
            try:
                return (marker.read_text(encoding="utf-8") == marker_text
                        and (bundle / REFERENCE_FILE).read_text(encoding="utf-8") == cache_key)
            except OSError:
                return False

        if not ready():
            with FileLock(root / ".v1_ui_static.lock", timeout=90):  # the lock file Prefect uses for v1/
                if not ready():
                    tmp, old = root / f".v1-new-{os.getpid()}", root / f".v1-old-{os.getpid()}"
                    for leftover in [*root.glob(".v1-new-*"), *root.glob(".v1-old-*")]:  # of a build cut short
                        if not leftover.is_symlink():
                            shutil.rmtree(leftover, ignore_errors=True)
                    _build(source, tmp, font_file, font_text, base_url, cache_key)
                    marker.unlink(missing_ok=True)
                    if bundle.exists():
                        bundle.rename(old)
                    tmp.rename(bundle)
                    shutil.rmtree(old, ignore_errors=True)
                    marker.write_text(marker_text, encoding="utf-8")
    except (OSError, UnsafePath, ImportError) as exc:
        (warn or log.warning)(f"Prefect UI: could not prepare the UI directory under the Prefect home "
                              f"({type(exc).__name__}: {exc}); serving Prefect's own UI, whose run graph drops "
                              "Vietnamese letters")
        return None
    return root


def ui_static_env(home, warn=None) -> dict[str, str]:
    """The environment a Prefect server started with `home` as PREFECT_HOME needs to serve the
    prepared UI: {} when the caller set a UI static directory (theirs wins), the UI is off, or
    nothing could be prepared (`warn` as in `prepare`)."""
    from prefect.settings import get_current_settings

    ui = get_current_settings().server.ui
    if ui.static_directory or not ui.enabled:
        return {}
    root = prepare(Path(home), warn)
    return {ENV_KEY: str(root)} if root else {}
