import csv
import filecmp
import json
import unicodedata

import openpyxl
import pytest

from schemas import load_codelist
from schemas.extract_codelists import OUT_DIR, extract

SYNC_SPEC = "mo-ta-du-lieu-dau-nam_2020_sync-spec.xlsx"


@pytest.fixture(scope="module")
def manifest():
    return json.loads((OUT_DIR / "manifest.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def source_book(moet_dir):
    return openpyxl.load_workbook(moet_dir / SYNC_SPEC, data_only=True)


def _count_in_source(ws) -> int:
    """Independent count: rows under the 'STT' header with a non-blank code cell."""
    rows = list(ws.iter_rows(values_only=True))
    h = next(i for i, r in enumerate(rows) if any(str(c).strip() == "STT" for c in r if c is not None))
    header = [str(c).strip() if c is not None else "" for c in rows[h]]
    code_col = header.index("MOET_CODE") if "MOET_CODE" in header else (
        header.index("Mã") if "Mã" in header else header.index("STT") + 1)
    if ws.title.startswith("TIEU_CHI_"):
        code_col = header.index("CONSTANT_CODE")
    return sum(1 for r in rows[h + 1 :] if len(r) > code_col and r[code_col] not in (None, ""))


def test_every_list_of_the_source_is_extracted_with_its_count(manifest, source_book):
    names = [n for n in source_book.sheetnames if n.startswith("DM_") or n.endswith("_SME") or n.startswith("TIEU_CHI_")]
    assert sorted(names) == sorted(manifest["lists"])
    assert len(names) >= 140
    for name in names:
        assert manifest["lists"][name]["count"] == _count_in_source(source_book[name]), name


def test_committed_lists_equal_a_fresh_extraction(moet_dir, tmp_path):
    extract(moet_dir / SYNC_SPEC, tmp_path)
    committed = sorted(str(p.relative_to(OUT_DIR)) for p in OUT_DIR.rglob("*") if p.is_file())
    assert committed == sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    match, mismatch, errors = filecmp.cmpfiles(OUT_DIR, tmp_path, committed, shallow=False)
    assert not mismatch and not errors, mismatch + errors


def test_key_list_counts(manifest):
    counts = {k: v["count"] for k, v in manifest["lists"].items()}
    assert counts["DM_DAN_TOC"] == 55
    assert counts["DM_GIOI_TINH"] == 2
    assert counts["DM_TINH"] == 63
    assert counts["DM_HUYEN"] > 700 and counts["DM_XA"] > 11000


def test_ethnicity_is_in_ministry_order():
    dt = load_codelist("moet-2020/DM_DAN_TOC")
    assert dt.codes == tuple(f"{i:02d}" for i in range(1, 56))
    assert dt.label("01") == "Kinh" and dt.label("04") == "Hoa" and dt.label("55") == "Người nước ngoài"


def test_labels_are_names_not_neighbouring_code_columns():
    positions = load_codelist("moet-2020/DM_LOAI_CAN_BO")
    assert positions.label("01") == "Hiệu trưởng" and positions.label("02") == "Phó hiệu trưởng"
    assert positions.attributes[1]["ma_nhom_can_bo"] == "01"
    langs = load_codelist("moet-2020/DM_TRINH_DO_NGOAI_NGU")
    assert all(not lab.isdigit() for lab in langs.labels)


def test_thu_dau_mot_and_its_wards():
    huyen = load_codelist("moet-2020/DM_HUYEN")
    i = huyen.codes.index("718")
    assert huyen.labels[i] == "Thành phố Thủ Dầu Một" and huyen.attributes[i]["ma_tp"] == "74"
    xa = load_codelist("moet-2020/DM_XA")
    wards = [c for c, a in zip(xa.codes, xa.attributes) if a["ma_qh"] == "718"]
    assert len(wards) == 14 and all(w.startswith("257") for w in wards)
    assert xa.resolve("Phường Phú Cường") == "25747"


def test_codes_keep_leading_zeros_and_labels_are_nfc():
    for ref in ("moet-2020/DM_XA", "moet-2020/DM_KHOI", "moet-2020/DM_TRANG_THAI_HOC_SINH"):
        cl = load_codelist(ref)
        widths = {len(c) for c in cl.codes}
        assert len(widths) == 1, ref  # ints in the source (10, 11, 12) were re-padded like their neighbours
        assert all(unicodedata.is_normalized("NFC", lab) for lab in cl.labels)


def test_folded_labels_have_no_diacritics():
    for path in OUT_DIR.glob("*.csv"):
        with open(path, encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                folded = row["label_folded"]
                assert folded == folded.casefold(), path.name
                decomposed = unicodedata.normalize("NFD", folded)
                assert not any(unicodedata.combining(ch) for ch in decomposed), (path.name, folded)
                assert "đ" not in folded, (path.name, folded)
