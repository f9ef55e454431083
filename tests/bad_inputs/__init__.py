"""The bad-input corpus: every kind of hostile or broken submission the collection has met (or
would meet), built deterministically into an inbox next to good files. Nothing binary is
committed: each file is generated from a synthetic school (`edustat synth`) or from bytes
written here; the zip bombs and the million-row sheet are built on the fly, bounded so the
whole corpus builds in a few seconds.

`EXPECTED` is the table the test checks and the closing note prints: kind → outcome in the
register, the rule that names the problem, a fragment of its message, and what the release
before issue 9 did with it.

Outcomes: "unreadable" / "rejected" — a register row with that status and the rule's message;
"accepted" — loaded (accepted or accepted with warnings); "copy" — no register row of its own,
named in its twin's `file_duplicate_submission` notice.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path

import openpyxl

from transforms.text import fold


@dataclass(frozen=True)
class Expect:
    kind: str
    outcome: str  # unreadable | rejected | accepted | copy
    rule_id: str | None  # the file's rule naming the problem (None: no message expected)
    says: str | None  # fragment of that rule's message
    before: str  # what the release before issue 9 did


# fmt: off
EXPECTED: tuple[Expect, ...] = (
    Expect("zero_byte", "unreadable", "file_unreadable", "tệp rỗng", "unreadable, message (kept)"),
    Expect("empty_workbook", "rejected", "file_school_code_missing", "Không xác định được trường", "rejected (kept)"),
    Expect("not_a_zip", "unreadable", "file_unreadable", "không phải tệp Excel", "unreadable (kept)"),
    Expect("truncated_zip", "unreadable", "file_unreadable", "tải về không trọn vẹn", "unreadable, said 'not an Excel file'"),
    Expect("ole_encrypted_or_xls", "unreadable", "file_unreadable", "mật khẩu", "unreadable (kept)"),
    Expect("zip_bomb", "unreadable", "file_unreadable", "giải nén ra quá lớn", "testzip() inflated all of it (74 MB → 5 GB: minutes, disk/CPU)"),
    Expect("zip_bomb_forged_sizes", "unreadable", "file_unreadable", "bị hỏng", "unreadable (testzip stopped at the declared size)"),
    Expect("huge_dimension", "accepted", None, None, "accepted (calamine ignores <dimension>)"),
    Expect("dense_million_rows", "unreadable", "file_unreadable", "quá nhiều dòng", "OOM (rc 137), run lost, orphaned Prefect server"),
    Expect("undecodable_name", "accepted", None, None, "traceback (surrogates in the register / messages)"),
    Expect("symlink", "unreadable", "file_unreadable", "liên kết", "followed; 0600 target copied world-readable into quarantine"),
    Expect("fifo", "unreadable", "file_unreadable", "không phải tệp thường", "silently skipped (not a file)"),
    Expect("directory_named_xlsx", "unreadable", "file_unreadable", "thư mục", "silently skipped"),
    Expect("identical_unreadable", "unreadable", "file_duplicate_submission", "giống hệt nhau", "traceback: duplicate key in submission, nothing loaded"),
    Expect("identical_good", "copy", "file_duplicate_submission", "giống hệt nhau", "one kept, notice (kept)"),
    Expect("code_abs_path", "rejected", "school_school_code_format", "phải gồm 8 chữ số", "raw copy + feedback written at the absolute path (outside the data dir)"),
    Expect("code_dotdot", "rejected", "school_school_code_format", "phải gồm 8 chữ số", "feedback written one directory up"),
    Expect("code_dot_other_school", "rejected", "school_school_code_format", "phải gồm 8 chữ số", "overwrote another school's feedback workbook with this school's learners"),
    Expect("code_with_space", "accepted", None, None, "accepted (space removed by the cast)"),
    Expect("code_zero_width", "accepted", "file_invisible_chars", "ký tự ẩn", "zero-width kept in the code: rejected, and the code named a directory"),
    Expect("duplicate_learner_sheets", "rejected", "file_sheet_duplicate", "'Học sinh', 'HocSinh'", "first sheet silently used: 10 of 684 learners, 'accepted'"),
    Expect("duplicate_school_sheets", "rejected", "file_sheet_duplicate", "'Truong', 'Trường'", "last Truong sheet silently used"),
    Expect("formula_and_error_cells", "rejected", None, None, "rejected, messages at the cells (kept)"),
    Expect("merged_title_above_header", "accepted", None, None, "accepted (kept)"),
    Expect("hidden_sheet", "accepted", None, None, "accepted (kept)"),
    Expect("only_feedback_sheet", "rejected", "file_school_code_missing", "Không xác định được trường", "rejected (kept)"),
    Expect("csv_renamed", "unreadable", "file_unreadable", "văn bản/CSV", "unreadable, said 'not an Excel file'"),
    Expect("pdf_renamed", "unreadable", "file_unreadable", "PDF", "unreadable, said 'not an Excel file'"),
    Expect("html_renamed", "unreadable", "file_unreadable", "HTML", "unreadable, said 'not an Excel file'"),
    Expect("xlsm_with_macros", "accepted", None, None, "accepted (macros never run) (kept)"),
    Expect("no_extension", "unreadable", "file_unreadable", "không phải tệp Excel", "unreadable (kept)"),
    Expect("wrong_year", "rejected", "file_year_mismatch", "không phải năm học đang thu thập", "rejected (kept)"),
    Expect("wrong_period", "rejected", "file_period_mismatch", "không phải kỳ đang thu thập", "rejected (kept)"),
    Expect("lock_file", "unreadable", "file_unreadable", "tệp khóa tạm", "silently skipped"),
    Expect("name_255_chars", "accepted", None, None, "accepted (kept)"),
    Expect("nfd_name", "accepted", None, None, "accepted; name stored NFD"),
    Expect("header_only_learners", "rejected", "file_sheet_empty", "không có dòng dữ liệu nào", "accepted with 0 learners"),
    Expect("malformed_sheet_xml", "unreadable", "file_unreadable", "bị hỏng", "unreadable (kept)"),
)
# fmt: on
BY_KIND = {e.kind: e for e in EXPECTED}
# kinds whose file is loaded (or could be) and so needs a population of its own: two files
# sharing learners would trip the city-wide uniqueness rules against each other
NEEDS_OWN_SCHOOL = tuple(e.kind for e in EXPECTED if e.outcome == "accepted") + (
    "code_abs_path", "code_dotdot", "code_dot_other_school", "formula_and_error_cells", "header_only_learners")
ZIP_BOMB_BYTES = 120 * 1024 * 1024  # declared (and real) inflated size: over the 100 MB default
DENSE_ROWS = 1_048_575


@dataclass
class Built:
    kind: str
    names: list[str]  # display names (NFC, undecodable bytes as U+FFFD) of the files created
    path: Path | None = None  # the main entry created (for checks on it)
    code: str | None = None  # the school code written into it, when any


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------

def _set_school(wb: openpyxl.Workbook, **by_label: str) -> None:
    ws = wb["Truong"]
    wanted = {fold(k): v for k, v in by_label.items()}
    for row in ws.iter_rows(min_col=1, max_col=2):
        key = fold(str(row[0].value or ""))
        if key in wanted:
            row[1].value = wanted[key]


# Where `_edit` keeps what it wrote, for the test session (build_corpus_city sets it): three test
# files build the corpus on the same city, and openpyxl loading and saving school workbooks was
# ~90 % of a build (~15 CPU s).
EDITS: Path | None = None


def _edit(src: Path, dest: Path, mutate, memo: str | None = None) -> Path:
    """`mutate` applied to `src`'s workbook, saved as `dest`. With `memo` — every input of the
    edit but `src`'s bytes (none may come from outside the call: a school code is passed in, not
    popped inside) — and EDITS set, an edit of the same bytes made earlier in the session is
    copied: the same workbook, but docProps/core.xml's save time."""
    if memo is None or EDITS is None:
        wb = openpyxl.load_workbook(src)
        mutate(wb)
        wb.save(dest)
        return dest
    key = hashlib.sha256(Path(src).read_bytes() + b"\0" + f"{Path(dest).name}\0{memo}".encode()).hexdigest()[:24]
    kept = EDITS / f"{key}.xlsx"
    if not kept.is_file():
        EDITS.mkdir(parents=True, exist_ok=True)
        part = EDITS / f"{key}.{os.getpid()}.partial"
        _edit(src, part, mutate)
        os.replace(part, kept)  # whole or absent, whichever worker writes it
    shutil.copyfile(kept, dest)
    return dest


def _sheet_members(z: zipfile.ZipFile) -> dict[str, str]:
    """Sheet name → its XML member, from workbook.xml and its relationships."""
    wb = z.read("xl/workbook.xml").decode("utf-8")
    rels = z.read("xl/_rels/workbook.xml.rels").decode("utf-8")
    targets = {m.group(1): m.group(2) for m in re.finditer(r'<Relationship[^>]*Id="([^"]+)"[^>]*Target="([^"]+)"', rels)}
    targets.update({m.group(2): m.group(1) for m in re.finditer(r'<Relationship[^>]*Target="([^"]+)"[^>]*Id="([^"]+)"', rels)})
    out = {}
    for m in re.finditer(r'<sheet [^>]*name="([^"]+)"[^>]*r:id="([^"]+)"', wb):
        t = targets[m.group(2)].lstrip("/")
        out[m.group(1)] = t if t.startswith("xl/") else "xl/" + t
    return out


def _rezip(src: Path, dest: Path, replace: dict[str, object], add: dict[str, bytes] | None = None) -> Path:
    """Copy a zip, replacing members (bytes, or a callable writing into an open member)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            new = replace.get(item.filename)
            if new is None:
                zout.writestr(item, zin.read(item.filename))
            elif callable(new):
                with zout.open(zipfile.ZipInfo(item.filename, item.date_time), "w", force_zip64=True) as fh:
                    new(fh)
            else:
                zout.writestr(item, new)
        for name, data in (add or {}).items():
            zout.writestr(name, data)
    return dest


def _dense_sheet(fh) -> None:
    fh.write(b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
             b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>')
    step = 20_000
    for start in range(1, DENSE_ROWS + 1, step):
        stop = min(start + step, DENSE_ROWS + 1)
        fh.write("".join(f'<row r="{i}"><c r="A{i}" t="inlineStr"><is><t>x</t></is></c></row>'
                         for i in range(start, stop)).encode())
    fh.write(b"</sheetData></worksheet>")


def _bomb(dest: Path, size: int) -> Path:
    """A real zip bomb: one sheet of `size` bytes of blanks (deflates ~1000:1)."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("xl/workbook.xml", "<workbook/>")
        with z.open(zipfile.ZipInfo("xl/worksheets/sheet1.xml", (2022, 9, 30, 0, 0, 0)), "w", force_zip64=True) as fh:
            block = b" " * (1 << 20)
            for _ in range(size // len(block)):
                fh.write(block)
    return dest


def _forge_sizes(src: Path, dest: Path, member: str, declared: int) -> Path:
    """The same zip with `member`'s uncompressed size rewritten (local header and central
    directory) to `declared`: a bomb that lies about its size."""
    data = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as z:
        info = z.getinfo(member)
    name = member.encode()
    lh = info.header_offset
    assert data[lh:lh + 4] == b"PK\x03\x04"
    data[lh + 22:lh + 26] = declared.to_bytes(4, "little")
    cd = data.index(b"PK\x01\x02", lh + 30)
    while data[cd + 46:cd + 46 + len(name)] != name:
        cd = data.index(b"PK\x01\x02", cd + 4)
    data[cd + 24:cd + 28] = declared.to_bytes(4, "little")
    dest.write_bytes(bytes(data))
    return dest


def _pdf() -> bytes:
    return (b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
            b"2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\n"
            b"trailer << /Root 1 0 R >>\n%%EOF\n")


# ------------------------------------------------------------------------------------------
# the corpus
# ------------------------------------------------------------------------------------------

def build_corpus(inbox: Path, *, donors: list[Path], good: Path, good_code: str, spare_codes: list[str],
                 outside: Path) -> dict[str, Built]:
    """Write every kind of EXPECTED into `inbox`.

    donors: one school workbook per kind in NEEDS_OWN_SCHOOL (each used once, then removed
    from the inbox if it was there); good: a good school's workbook left in the inbox (copied
    for `identical_good`, its code borrowed by `code_dot_other_school`); spare_codes: 8-digit
    codes no school of the city uses; outside: a directory outside the inbox and data dir
    (symlink target, the absolute-path school code's victim)."""
    inbox, outside = Path(inbox), Path(outside)
    outside.mkdir(parents=True, exist_ok=True)
    donors = list(donors)
    spare = list(spare_codes)
    own: dict[str, Path] = {}
    for kind in NEEDS_OWN_SCHOOL:
        own[kind] = donors.pop(0)
    shared = good  # blocked / unreadable variants never reach the loader: any school will do
    out: dict[str, Built] = {}

    def add(kind, path, code=None, name=None):
        out[kind] = Built(kind, [name or unicodedata.normalize("NFC", Path(path).name)], Path(path), code)

    def take(kind: str, dest: Path) -> Path:
        """Move a donor school's file to `dest` (its own, unique population)."""
        src = own[kind]
        shutil.move(src, dest)
        return dest

    # -- bytes that are not a workbook -------------------------------------------------
    p = inbox / "rong_0_byte.xlsx"; p.write_bytes(b""); add("zero_byte", p)
    p = inbox / "trong_tron.xlsx"; wb = openpyxl.Workbook(); wb.save(p); add("empty_workbook", p)
    p = inbox / "khong_phai_zip.xlsx"; p.write_bytes(bytes(range(256)) * 16); add("not_a_zip", p)
    p = inbox / "tai_do_dang.xlsx"; p.write_bytes(good.read_bytes()[:3000]); add("truncated_zip", p)
    p = inbox / "co_mat_khau.xlsx"; p.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(4088)); add("ole_encrypted_or_xls", p)
    p = _bomb(inbox / "bom_nen.xlsx", ZIP_BOMB_BYTES); add("zip_bomb", p)
    small = _bomb(outside / "bom_nho.xlsx", 8 << 20)
    p = _forge_sizes(small, inbox / "bom_gia_kich_thuoc.xlsx", "xl/worksheets/sheet1.xml", 4096)
    add("zip_bomb_forged_sizes", p)
    p = inbox / "danh_sach.xlsx"; p.write_text("Họ và tên,Ngày sinh\nNguyễn Văn A,01/02/2015\n", encoding="utf-8"); add("csv_renamed", p)
    p = inbox / "cong_van.xlsx"; p.write_bytes(_pdf()); add("pdf_renamed", p)
    p = inbox / "trang_web.xlsx"; p.write_text("<!DOCTYPE html><html><body>Đăng nhập</body></html>", encoding="utf-8"); add("html_renamed", p)
    p = inbox / "bao_cao_khong_duoi"; p.write_bytes(good.read_bytes() + b"\n"); add("no_extension", p)
    p = inbox / "~$74718001.xlsx"; p.write_bytes(b"\x0bNguoi dung" + bytes(154)); add("lock_file", p)

    # -- entries that are not regular files -------------------------------------------
    secret = outside / "bi_mat.xlsx"
    secret.write_bytes(b"BI MAT - chi chu so huu doc duoc\n" * 64)
    os.chmod(secret, 0o600)
    p = inbox / "lien_ket.xlsx"; p.symlink_to(secret); add("symlink", p)
    p = inbox / "ong_dan.xlsx"; os.mkfifo(p); add("fifo", p)
    p = inbox / "thu_muc.xlsx"; p.mkdir(); (p / "[Content_Types].xml").write_text("<Types/>"); add("directory_named_xlsx", p)

    # -- two identical files -------------------------------------------------------------
    junk = b"PK\x03\x04" + bytes(range(200)) * 5
    a, b = inbox / "hong_1.xlsx", inbox / "hong_2.xlsx"
    a.write_bytes(junk); b.write_bytes(junk)
    out["identical_unreadable"] = Built("identical_unreadable", [a.name, b.name], a)
    p = inbox / "ban_sao_giong_het.xlsx"; shutil.copyfile(good, p)
    out["identical_good"] = Built("identical_good", [good.name, p.name], p, good_code)

    # -- school codes that look like paths --------------------------------------------
    victim = outside / "victim"
    for kind, code in (("code_abs_path", str(victim)), ("code_dotdot", "../../x"),
                       ("code_dot_other_school", f"./{good_code}")):
        p = inbox / f"ma_{kind}.xlsx"
        _edit(own[kind], p, lambda wb, c=code: _set_school(wb, **{"Mã trường": c}),
              memo=None if kind == "code_abs_path" else f"code {code}")  # the path is the caller's
        own[kind].unlink()
        add(kind, p, code)
    code = spare.pop(0)
    p = inbox / "ma_co_dau_cach.xlsx"
    _edit(own["code_with_space"], p, lambda wb: _set_school(wb, **{"Mã trường": f"{code[:4]} {code[4:]}"}),
          memo=f"code with space {code}")
    own["code_with_space"].unlink()
    add("code_with_space", p, code)
    code = spare.pop(0)
    p = inbox / "ma_ky_tu_an.xlsx"
    _edit(own["code_zero_width"], p, lambda wb: _set_school(wb, **{"Mã trường": f"\ufeff{code[:5]}\u200b{code[5:]}\u00ad"}),
          memo=f"code zero width {code}")
    own["code_zero_width"].unlink()
    add("code_zero_width", p, code)

    # -- sheets ----------------------------------------------------------------------------
    dup_code = spare.pop(0)

    def dup_learners(wb):
        src = wb["HocSinh"]
        ws = wb.create_sheet("Học sinh", index=wb.sheetnames.index("HocSinh"))
        for row in src.iter_rows(min_row=1, max_row=11, values_only=True):
            ws.append(list(row))
        _set_school(wb, **{"Mã trường": dup_code})
    p = _edit(shared, inbox / "hai_trang_hoc_sinh.xlsx", dup_learners, memo=f"two learner sheets {dup_code}")
    add("duplicate_learner_sheets", p)

    dup_code_2 = spare.pop(0)

    def dup_school(wb):
        _set_school(wb, **{"Mã trường": dup_code_2})
        ws = wb.copy_worksheet(wb["Truong"])
        ws.title = "Trường"
    p = _edit(shared, inbox / "hai_trang_truong.xlsx", dup_school, memo=f"two school sheets {dup_code_2}")
    add("duplicate_school_sheets", p)

    def formulas(wb):
        ws = wb["HocSinh"]
        ws["D2"] = "#REF!"  # an error cell where a birth date should be
        ws["E3"] = "=IF(1>0,\"02\",\"01\")"  # a formula without a cached value (written by openpyxl)
        ws.cell(row=1, column=ws.max_column + 1, value="Ghi chú")
        ws.cell(row=2, column=ws.max_column, value="=1/0")
    p = _edit(own["formula_and_error_cells"], inbox / "cong_thuc_loi.xlsx", formulas, memo="formulas")
    own["formula_and_error_cells"].unlink()
    add("formula_and_error_cells", p)

    def merged_title(wb):
        ws = wb["HocSinh"]
        ws.insert_rows(1)
        ws["A1"] = "DANH SÁCH HỌC SINH NĂM HỌC 2022-2023"
        ws.merge_cells(start_row=1, start_column=1, end_row=1, end_column=8)
    p = _edit(own["merged_title_above_header"], inbox / "tieu_de_gop_o.xlsx", merged_title, memo="merged title")
    own["merged_title_above_header"].unlink()
    add("merged_title_above_header", p)

    def hidden(wb):
        ws = wb.create_sheet("Nháp")
        ws.append(["ghi chú riêng", "không phải dữ liệu"])
        ws.sheet_state = "hidden"
    p = _edit(own["hidden_sheet"], inbox / "co_trang_an.xlsx", hidden, memo="hidden sheet")
    own["hidden_sheet"].unlink()
    add("hidden_sheet", p)

    p = inbox / "chi_trang_phan_hoi.xlsx"
    wb = openpyxl.Workbook(); wb.active.title = "PhanHoi"; wb.active.append(["Phản hồi của Phòng GD&ĐT"]); wb.save(p)
    add("only_feedback_sheet", p)

    def header_only(wb):
        ws = wb["HocSinh"]
        ws.delete_rows(2, ws.max_row)
    p = _edit(own["header_only_learners"], inbox / "chi_co_tieu_de.xlsx", header_only, memo="header only")
    own["header_only_learners"].unlink()
    add("header_only_learners", p)

    with zipfile.ZipFile(shared) as z:
        members = _sheet_members(z)
    p = _rezip(shared, inbox / "xml_hong.xlsx", {members["CanBo"]: b"<worksheet><sheetData><row r=\"1\"><c r=\"A1\" t=\"s\"><v>0</v"})
    add("malformed_sheet_xml", p)

    # -- dimension, rows -------------------------------------------------------------
    src = own["huge_dimension"]
    with zipfile.ZipFile(src) as z:
        members = _sheet_members(z)
        xml = z.read(members["HocSinh"]).decode("utf-8")
    if "<dimension" in xml:
        xml = re.sub(r'<dimension ref="[^"]+"\s*/>', '<dimension ref="A1:XFD1048576"/>', xml)
    else:
        xml = xml.replace("<sheetViews>", '<dimension ref="A1:XFD1048576"/><sheetViews>', 1)
    p = _rezip(src, inbox / "kich_thuoc_khai_lon.xlsx", {members["HocSinh"]: xml.encode("utf-8")})
    src.unlink()
    add("huge_dimension", p)
    dense_src = inbox / "trieu_dong.tmp"
    dense_code = spare.pop(0)
    _edit(shared, dense_src, lambda wb: _set_school(wb, **{"Mã trường": dense_code}), memo=f"code {dense_code}")
    with zipfile.ZipFile(dense_src) as z:
        members = _sheet_members(z)
    p = _rezip(dense_src, inbox / "trieu_dong.xlsx", {members["HocSinh"]: _dense_sheet})
    dense_src.unlink()
    add("dense_million_rows", p)

    # -- names ----------------------------------------------------------------------------
    raw = os.path.join(os.fsencode(inbox), b"Tr\xb0\xeaong_TH_" + b"\xc5\xe0" + b".xlsx")  # cp1258 bytes
    shutil.move(own["undecodable_name"], os.fsdecode(raw))
    out["undecodable_name"] = Built("undecodable_name", [os.path.basename(raw).decode("utf-8", "replace")],
                                    Path(os.fsdecode(raw)))
    long = "truong_" + "a" * (255 - len("truong_") - len(".xlsx")) + ".xlsx"
    p = take("name_255_chars", inbox / long); add("name_255_chars", p)
    nfd = unicodedata.normalize("NFD", "Trường Mầm non Hoa Sen (đã sửa).xlsx")
    p = take("nfd_name", inbox / nfd); add("nfd_name", p)
    p = inbox / (Path(own["xlsm_with_macros"]).stem + ".xlsm")
    _rezip(own["xlsm_with_macros"], p, {}, add={"xl/vbaProject.bin": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504)})
    own["xlsm_with_macros"].unlink()
    add("xlsm_with_macros", p)

    # -- year, period ----------------------------------------------------------------------
    old_code = spare.pop(0)
    p = _edit(shared, inbox / "nam_hoc_cu.xlsx", lambda wb: _set_school(wb, **{"Mã trường": old_code, "Năm học": "2021-2022"}),
              memo=f"code {old_code} year 2021-2022")
    add("wrong_year", p)
    end_code = spare.pop(0)
    p = _edit(shared, inbox / "ky_cuoi_nam.xlsx", lambda wb: _set_school(wb, **{"Mã trường": end_code, "Kỳ báo cáo": "cuoi_nam"}),
              memo=f"code {end_code} period cuoi_nam")
    add("wrong_period", p)
    missing = [e.kind for e in EXPECTED if e.kind not in out]
    assert not missing, missing
    return out


def build_corpus_city(inbox: Path, outside: Path, *, school_year: str, period: str, n_good: int = 4,
                      tmp_path_factory=None):
    """A synthetic city (seed 31, no row errors) whose smallest schools donate their workbooks to
    the corpus's kinds that need a school of their own, the rest staying good: the inbox
    tests/test_bad_inputs.py runs and scripts/compare_ingest.py reads. Returns (what
    `build_corpus` built, the good schools of the manifest). With pytest's `tmp_path_factory`
    the city is generated once per test session (tests/citycache.py) and the corpus built on a
    copy."""
    args = dict(schools=len(NEEDS_OWN_SCHOOL) + n_good, seed=31, school_year=school_year, period=period,
                error_rate=0.0)
    if tmp_path_factory is None:
        from edustat.synth import generate_city

        manifest = generate_city(inbox, **args)
    else:
        from tests.citycache import generate_city

        manifest = generate_city(inbox, tmp_path_factory, **args)
    (Path(inbox) / "manifest.json").unlink()
    by_size = sorted(manifest.schools, key=lambda s: (s.rows["learners"], s.school_code))
    donors = [Path(inbox) / s.file for s in by_size[:len(NEEDS_OWN_SCHOOL)]]
    good = by_size[len(NEEDS_OWN_SCHOOL):]
    codes = {s.school_code for s in manifest.schools}
    spare = [c for c in (f"74718{i:03d}" for i in range(999, 900, -1)) if c not in codes]
    global EDITS
    if tmp_path_factory is not None:
        from tests.citycache import _root

        EDITS = _root(tmp_path_factory) / "corpus-edits"
    built = build_corpus(inbox, donors=donors, good=Path(inbox) / good[0].file, good_code=good[0].school_code,
                         spare_codes=spare, outside=outside)
    return built, good
