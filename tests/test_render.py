"""What people print: every report form (city and one school, both periods), the blank
templates (3 levels × 2 periods) and a feedback workbook, rendered by LibreOffice to PDF and
measured with `pdftotext -bbox`: the smallest text on each page at print scale (≥ 8 pt), the
page counts, no near-blank page, and no developer note, internal file name, code or English
check id in what a person reads. The openpyxl checks of the rendered layout (title centred,
12 pt, header rows sized, footnote merged, print titles) run without LibreOffice.

The text size is calibrated in the same LibreOffice run (a 10 pt cell of each font), so the
test holds whatever fonts the machine substitutes for Times New Roman and Calibri."""
from __future__ import annotations

import html
import math
import re
import shutil
import subprocess
from pathlib import Path

import openpyxl
import pandas as pd
import pytest
import xlsxwriter

from edustat import pipeline, store
from edustat.submissions import discover
from edustat.config import Config
from edustat.feedback import write_feedback
from edustat.reports import build_reports, check_text, load_form, render_form
from edustat.synth import generate_city
from edustat.workbook import write_submission

YEAR = "2022-2023"
MIN_PT = 8.0
# words a person must never read in a printed form or template
LEAKS = ("[INF", "observed", ".md", "regulations", "report-forms", "§", "dau_nam", "cuoi_nam", "dong_bang",
         "mien_nui", "nha_tre", "mau_giao", "tong_so.", "cong_lap.", "tu_thuc.", "total_equals_groups",
         "female_le_total", "dtts_le_total", "dtts_female_le_min", "rows_sum_to_total", "sub_row_le_parent",
         "core_equals_form", "submission_equals_core", "rooms_total", "contracts_le_total", "reconstruction",
         "no original")
WORD = re.compile(r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">(.*?)</word>')
PAGE = re.compile(r'<page width="([\d.]+)" height="([\d.]+)">(.*?)</page>', re.S)
FOOTER_PT = 0.55 * 72  # the bottom margin: words below it are the page footer


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    """A 6-school city (seed 7: public and private TH, THCS, a TH+THCS school, 2 preschools) for
    both periods, loaded through the real read → validate → load steps, its forms rendered for
    the city and one school; plus the collection's issues for a feedback workbook."""
    root = tmp_path_factory.mktemp("render")
    cfg = Config(data_dir=root / "data", load_policy="load_valid_rows", workers=1)
    out = {"root": root, "forms": [], "issues": None}
    for period in ("dau_nam", "cuoi_nam"):
        inbox = root / "inbox" / period
        generate_city(inbox, schools=6, seed=7, school_year=YEAR, period=period, export_share=0.3)
        con = store.connect(cfg.db_path)
        try:
            outcome = pipeline.run_collection(con, discover(inbox), cfg, YEAR, period, f"render-{period}", workers=1)
            th = con.execute("select school_code from core_school where school_year = ? and period = ? "
                             "and list_contains(string_split(levels, ','), 'TH') order by 1 limit 1",
                             [YEAR, period]).fetchone()[0]
            out["forms"] += build_reports(con, cfg.reports_dir, YEAR, period, school=th, workers=1).files
            if period == "dau_nam":
                out["issues"] = outcome.issues
        finally:
            con.close()
    return out


@pytest.fixture(scope="module")
def rendered(city, tmp_path_factory):
    """Every workbook to print, converted by one LibreOffice call; name → measured pages."""
    soffice = shutil.which("soffice") or shutil.which("libreoffice")
    if not soffice:
        pytest.skip("LibreOffice (soffice) is not installed: `make sysdeps` installs it")
    assert shutil.which("pdftotext"), "pdftotext is missing: `make sysdeps` installs poppler-utils"
    work = tmp_path_factory.mktemp("pdf")
    books = {p.stem: p for p in city["forms"]}
    for level in ("MN", "TH", "THCS"):
        for period in ("dau_nam", "cuoi_nam"):
            path = work / f"mau_{level}_{period}.xlsx"
            write_submission(path, levels=(level,), period=period, school_year=YEAR,
                             school={"school_code": "74718001", "province_code": "74", "district_code": "718"})
            books[path.stem] = path
    issues = city["issues"]
    worst = issues["file_hash"].value_counts().index[0]
    for engine in ("fast", "faithful"):
        path = work / f"phanhoi_{engine}.xlsx"
        write_feedback(None, path, school={"school_code": "74718001", "school_name": "Trường Tiểu học Phú Hòa"},
                       issues=issues[issues["file_hash"] == worst].head(150), status="rejected",
                       counts={"learners": 400, "staff": 30, "classes": 12, "errors": 3, "warnings": 9, "notices": 900},
                       school_year=YEAR, period="dau_nam", generated_at=pd.Timestamp("2022-10-03 14:30").to_pydatetime(),
                       engine=engine)
        books[path.stem] = path
    books["kiemtra_failures"] = _form_with_failures(city, work)
    books["calibration"] = _calibration(work)
    profile = work / "lo-profile"
    res = subprocess.run([soffice, "--headless", f"-env:UserInstallation=file://{profile}", "--convert-to", "pdf",
                          "--outdir", str(work / "out"), *map(str, books.values())],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    measured = {name: _pages(work / "out" / f"{path.stem}.pdf") for name, path in books.items()}
    cal = measured.pop("calibration")[0]["words"]
    ratio = max(w["h"] for w in cal) / 10.0  # word box height per point of font size
    return {"pages": measured, "ratio": ratio, "books": books}


def _calibration(work: Path) -> Path:
    path = work / "calibration.xlsx"
    wb = xlsxwriter.Workbook(str(path))
    ws = wb.add_worksheet()
    for r, font in enumerate(("Times New Roman", "Calibri")):
        ws.write(r, 0, "Xin chào Việt Nam", wb.add_format({"font_name": font, "font_size": 10}))
    wb.close()
    return path


def _form_with_failures(city, work: Path) -> Path:
    """The city's 02-TH-ĐN with 120 of its checks turned into failures: KiemTra's list."""
    import duckdb

    db = city["root"] / "data" / "curated" / "edustat.duckdb"
    con = duckdb.connect(str(db), read_only=True)
    try:
        cells = con.execute("select * from rpt_form_cell where form_code = '02-TH-DN' and scope = 'city'").df()
        checks = con.execute("select * from rpt_form_check where form_code = '02-TH-DN' and scope = 'city'").df()
    finally:
        con.close()
    bad = checks.index[checks["check_name"].isin(["sub_row_le_parent", "female_le_total", "total_equals_groups",
                                                  "core_equals_form_learners"])][:120]
    checks.loc[bad, "ok"] = False
    from edustat.reports import ReportHeader

    header = ReportHeader(unit="Phòng GD&ĐT", recipient="Sở GD&ĐT", school_year=YEAR, scope_label="Toàn thành phố")
    return render_form(load_form("02-TH-DN"), cells, checks, "city", work / "kiemtra_failures.xlsx", header)


def _pages(pdf: Path) -> list[dict]:
    assert pdf.exists(), f"LibreOffice did not convert {pdf.name}"
    text = subprocess.run(["pdftotext", "-bbox", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    pages = []
    for width, height, body in PAGE.findall(text):
        h = float(height)
        words = []
        for a, b, c, d, t in WORD.findall(body):
            w = {"x": float(a), "x1": float(c), "y": float(b), "h": float(d) - float(b), "text": html.unescape(t)}
            last = words[-1] if words else None
            # one word in two pieces: a glyph from a fallback font ("KI" + "Ể" + "M") is its own
            # run for pdftotext; pieces that touch on the same line are one word
            if last and abs(last["y"] - w["y"]) < 3 and -1.0 < w["x"] - last["x1"] < 0.6:
                last["text"] += w["text"]
                last["x1"] = w["x1"]
                last["h"] = min(last["h"], w["h"])
                continue
            words.append(w)
        pages.append({"width": float(width), "height": h, "words": words,
                      "body": [w for w in words if w["y"] < h - FOOTER_PT]})
    return pages


def _smallest_pt(rendered, name: str) -> float:
    return min(w["h"] for p in rendered["pages"][name] for w in p["words"]) / rendered["ratio"]


def _text(rendered, name: str) -> str:
    return " ".join(w["text"] for p in rendered["pages"][name] for w in p["words"])


def _report(rendered, names) -> str:
    return "; ".join(f"{n}: {len(rendered['pages'][n])} pages, ≥ {_smallest_pt(rendered, n):.1f} pt" for n in names)


FORMS = ("01-MN-DN", "02-TH-DN", "03-THCS-DN", "01-MN-CN", "02-TH-CN", "03-THCS-CN")


@pytest.mark.libreoffice
def test_every_form_prints_at_8_pt_or_more_on_a4(rendered):
    forms = [n for n in rendered["pages"] if n.split("_")[0] in FORMS]
    assert {n.split("_")[0] for n in forms} == set(FORMS)
    assert any(n.endswith("_city") for n in forms) and any(not n.endswith("_city") for n in forms)
    print("\n" + _report(rendered, sorted(forms)))
    for name in forms:
        assert _smallest_pt(rendered, name) >= MIN_PT, name
        for i, page in enumerate(rendered["pages"][name], start=1):
            # A4, either way round
            assert sorted((round(page["width"]), round(page["height"]))) == [595, 842], (name, i)


@pytest.mark.libreoffice
def test_no_near_blank_pages_and_bounded_page_counts(rendered):
    limits = {"01-MN-DN": 40, "02-TH-DN": 24, "03-THCS-DN": 24, "01-MN-CN": 20, "02-TH-CN": 20, "03-THCS-CN": 20}
    for name, pages in rendered["pages"].items():
        code = name.split("_")[0]
        if code in limits:
            assert len(pages) <= limits[code], (name, len(pages))
            least = 40
        elif name.startswith("phanhoi") or name == "kiemtra_failures":
            least = 40
        else:  # a blank template's data sheets print their header row only
            least = 4
        thin = [i for i, p in enumerate(pages, start=1) if len(p["body"]) < least]
        assert not thin, (name, thin, [len(pages[i - 1]["body"]) for i in thin])


@pytest.mark.libreoffice
def test_templates_and_feedback_print_at_8_pt_or_more(rendered):
    names = [n for n in rendered["pages"] if n.startswith(("mau_", "phanhoi_"))]
    assert len([n for n in names if n.startswith("mau_")]) == 6 and len(names) == 8
    print("\n" + _report(rendered, sorted(names)))
    for name in names:
        assert _smallest_pt(rendered, name) >= MIN_PT, name


@pytest.mark.libreoffice
def test_nothing_for_developers_in_printed_forms_and_templates(rendered):
    for name in rendered["pages"]:
        text = _text(rendered, name)
        leaks = ("[INF", "observed", ".md", "regulations", "report-forms") if name.startswith("phanhoi") else LEAKS
        found = [leak for leak in leaks if leak in text]
        assert not found, (name, found)


@pytest.mark.libreoffice
def test_kiemtra_is_vietnamese_and_lists_about_40_failures_a_page(rendered):
    pages = rendered["pages"]["kiemtra_failures"]
    joined = [" ".join(w["text"] for w in p["words"]) for p in pages]
    mine = [p for p, t in zip(pages, joined) if "KIỂM TRA SỐ LIỆU" in t or "Trên biểu" in t]
    text = " ".join(t for t in joined if "KIỂM TRA SỐ LIỆU" in t or "Trên biểu" in t)
    assert "CÁC PHÉP KIỂM TRA KHÔNG ĐẠT" in text and "không quá" in text and "Tổng số = tổng các loại hình" in text
    # 120 failures + a 13-line summary: 4 pages or fewer (≈ 40 lines a page), none near blank
    assert len(mine) <= math.ceil((120 + 13) / 40) + 1, len(mine)
    assert all(len(p["body"]) >= 40 for p in mine)


@pytest.mark.libreoffice
def test_feedback_section_titles_keep_their_instruction_on_one_line(rendered):
    for engine in ("fast", "faithful"):
        page = rendered["pages"][f"phanhoi_{engine}"][0]
        lines: dict[int, list[str]] = {}
        for w in page["words"]:
            lines.setdefault(round(w["y"]), []).append(w["text"])
        joined = [" ".join(v) for v in lines.values()]
        assert any("DANH SÁCH CHI TIẾT" in j and "để đi tới ô đó)" in j for j in joined), engine
        assert any("TỔNG HỢP THEO QUY TẮC" in j and "Mức" not in j for j in joined), engine


# --- the rendered layout, read back with openpyxl (no LibreOffice needed) ---------------------


def _book(city, stem: str) -> openpyxl.Workbook:
    return openpyxl.load_workbook(next(p for p in city["forms"] if p.stem == stem))


def test_titles_are_centred_12_pt_and_sheet_i_starts_on_the_ministry_row(city, moet_dir):
    wb = _book(city, "02-TH-DN_city")
    real = openpyxl.load_workbook(moet_dir / "bieu-02-th-dn_2020_export.xlsx")
    for ws in (wb["I"], wb["III"], wb["IV"]):
        real_ws = real[ws.title]
        header_row = next(r for r in range(1, 12) if real_ws.cell(r, 4).value in ("Mã Số", "Mã số"))
        assert ws.cell(header_row, 4).value == real_ws.cell(header_row, 4).value, ws.title
        assert ws.cell(header_row, 2).font.sz == 12 and ws.cell(header_row, 2).font.name == "Times New Roman"
    title = wb["I"]["B1"]
    assert title.value == "BÁO CÁO THỐNG KÊ GIÁO DỤC TIỂU HỌC" and title.alignment.horizontal == "center" and title.font.b


def test_header_rows_are_sized_to_their_text(city):
    """The ministry sets 62 pt under "HĐLV không xác định thời hạn"; ours is sized from the text."""
    ws = _book(city, "02-TH-DN_city")["IV"]
    row = next(c.row for c in ws["J"] if c.value == "HĐLV không xác định thời hạn")
    assert ws.row_dimensions[row].height >= 45
    for r in range(1, row + 1):
        assert ws.row_dimensions[r].height, r


def test_footnote_is_merged_across_the_table(city):
    ws = _book(city, "02-TH-DN_city")["IV"]
    note = next(c for c in ws["A"] if isinstance(c.value, str) and c.value.startswith("Ghi chú"))
    ranges = [m for m in ws.merged_cells.ranges if m.min_row == note.row]
    assert ranges and max(m.max_col for m in ranges) == ws.max_column and min(m.min_col for m in ranges) == 1


def test_wide_sheets_repeat_label_columns_and_header_rows(city):
    wb = _book(city, "02-TH-DN_city")
    ws = wb["IV"]
    assert ws.print_title_cols.replace("$", "") == "A:D" and ws.print_title_rows
    assert ws.page_setup.orientation == "landscape" and ws.page_setup.paperSize == 9
    assert ws.page_setup.scale and ws.page_setup.scale >= 74 and ws.col_breaks.brk
    assert wb["I"].print_title_rows  # narrow sheets: one page wide, header repeated


def test_kiemtra_reads_in_vietnamese_with_ids_outside_the_print_area(city):
    ws = _book(city, "02-TH-DN_city")["KiemTra"]
    shown = [str(c.value) for row in ws.iter_rows(max_col=5) for c in row if c.value is not None]
    assert check_text("total_equals_groups", load_form("02-TH-DN")) in shown
    assert not any(re.search(r"[a-z]+_[a-z]+", s) for s in shown), [s for s in shown if re.search(r"[a-z]+_[a-z]+", s)]
    assert not any(leak in s for s in shown for leak in (".md", "§", "real_export"))
    assert "$A$1:$E$" in str(ws.print_area)
    assert all(ws.cell(r, 1).alignment.wrap_text for r in range(6, 10) if ws.cell(r, 1).value)
