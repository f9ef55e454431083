import datetime as dt

import pandas as pd
import pytest

from transforms.cast import cast_key_values, cast_table, parse_dates


@pytest.mark.parametrize("text, expected", [
    ("05/09/2014", dt.date(2014, 9, 5)),
    ("5/9/2014", dt.date(2014, 9, 5)),
    ("05-09-2014", dt.date(2014, 9, 5)),
    ("2014-09-05", dt.date(2014, 9, 5)),
    ("2014-09-05 00:00:00", dt.date(2014, 9, 5)),  # a real Excel date as the reader renders it
    ("41887", dt.date(2014, 9, 5)),  # an Excel serial
    ("41887.0", dt.date(2014, 9, 5)),
    ("31/02/2015", None),
    ("2015", None),
    ("abc", None),
    ("", None),
])
def test_parse_dates(text, expected):
    got = parse_dates(pd.Series([text], dtype="string")).iloc[0]
    assert (None if pd.isna(got) else got.date()) == expected


def test_bare_year_only_where_allowed():
    got = parse_dates(pd.Series(["1975"], dtype="string"), allow_year=True).iloc[0]
    assert got.date() == dt.date(1975, 1, 1)


def _cast(contract, **cols):
    n = len(next(iter(cols.values())))
    raw = pd.DataFrame({"excel_row": range(2, 2 + n), **cols}).astype({k: "string" for k in cols})
    return cast_table(raw, contract.sheet("learners").fields)


def test_ids_keep_zeros_and_lost_zero_is_repadded_with_a_notice(contract):
    typed, probs = _cast(contract, personal_id=["074215012345", "74215012345", "74215012345.0", "0742 1501 2345", "123", None])
    assert typed["personal_id"].tolist()[:4] == ["074215012345"] * 4
    assert typed["personal_id"].iloc[4] == "123"  # left for the format rule to report
    assert pd.isna(typed["personal_id"].iloc[5])
    padded = probs[probs.kind == "id_padded"]
    assert padded["excel_row"].tolist() == [3, 4]


def test_codes_accept_code_or_label_and_report_unknowns(contract):
    typed, probs = _cast(contract, sex=["01", "2", "Nữ", "nam", "NỮ", "X", None], ethnicity=["01", "Kinh", "kinh", "Khơ-me", "Khome", "99", None])
    assert typed["sex"].tolist()[:5] == ["01", "02", "02", "01", "02"]
    assert typed["ethnicity"].tolist()[:4] == ["01", "01", "01", "05"]
    bad = probs[probs.kind == "code_unknown"].sort_values(["field", "excel_row"])
    assert bad[["field", "excel_row", "value"]].values.tolist() == [["ethnicity", 7, "99"], ["sex", 7, "X"]]
    # a near miss of one entry is read as it, and said: "Khome" is "Khơ-me" without a space
    near = probs[probs.kind == "code_near"]
    assert near[["field", "value"]].values.tolist() == [["ethnicity", "Khome"]]
    assert typed["ethnicity"].tolist()[4] == "05" and "Khơ-me" in near["detail"].iloc[0]


def test_flags_ints_and_blank_flags(contract):
    typed, probs = _cast(contract, two_sessions=["1", "0", "x", "có", None, "2"])
    # blank stays NA (the template reads it as "không"; reports test `= 1`), and so does an
    # unreadable value, whose text the format rule then reports
    got = [None if pd.isna(v) else int(v) for v in typed["two_sessions"]]
    assert got == [1, 0, 1, 1, None, None]
    assert probs[["excel_row", "kind"]].values.tolist() == [[7, "flag_invalid"]]


def test_text_is_nfc_and_trimmed(contract):
    decomposed = "Nguye\u0302\u0303n  Thi\u0323"  # NFD input, double space
    typed, _ = _cast(contract, full_name=[decomposed, "  ", None])
    assert typed["full_name"].iloc[0] == "Nguyễn Thị"
    assert pd.isna(typed["full_name"].iloc[1])


def test_invalid_dates_are_reported_not_dropped(contract):
    typed, probs = _cast(contract, birth_date=["31/02/2015", "05/09/2014"])
    assert pd.isna(typed["birth_date"].iloc[0]) and len(typed) == 2
    assert probs[["excel_row", "field", "value", "kind"]].values.tolist() == [[2, "birth_date", "31/02/2015", "date_invalid"]]


def test_key_values(contract):
    sheet = contract.sheet("school")
    values, probs = cast_key_values(
        {"school_code": "74718001", "school_year": "2022 - 2023", "ownership": "Công lập", "satellite_sites": "2", "region": "Thành phố"},
        sheet, {"school_code": 3, "school_year": 5, "ownership": 6, "satellite_sites": 7, "region": 8})
    assert values == {"school_code": "74718001", "school_year": "2022-2023", "ownership": "01", "satellite_sites": 2, "region": "dong_bang"}
    assert probs.empty
