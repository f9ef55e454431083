"""Issue 12 (one school changed): the load's cross-school rules and the summary's problem
files give the same result after their speed-ups (store.cross_school_issues,
pipeline._problem_files). A real DuckDB file; expected values written out by hand."""
import duckdb
import pandas as pd

from edustat import store
from edustat.pipeline import RunOutcome, _problem_files

Y, P = "2022-2023", "dau_nam"


def _learner(con, layer, school, fh, row, code, pid=None, name="Nguyễn Văn An", enrolled=True):
    con.execute(f"""insert into {layer}_learners (school_year, period, school_code, file_hash, sheet_name, excel_row,
                    student_code, personal_id, full_name, birth_date, sex, is_enrolled)
                    values (?, ?, ?, ?, 'HocSinh', ?, ?, ?, ?, date '2016-03-04', '1', ?)""",
                [Y, P, school, fh, row, code, pid, name, enrolled])


def test_cross_school_issues_shared_keys_only(tmp_path):
    con = duckdb.connect(str(tmp_path / "t.duckdb"))
    store.ensure_tables(con)
    # run files: A, B, D; C is only in core (not in this run); E in core but also in the run (its core rows ignored)
    run = {"74700001": "ha", "74700002": "hb", "74700004": "hd", "74700005": "he"}
    _learner(con, "stg", "74700001", "ha", 5, "HS1")          # shared with B and C
    _learner(con, "stg", "74700001", "ha", 6, "HS2")          # twice in A only: not cross-school
    _learner(con, "stg", "74700001", "ha", 7, "HS2")
    _learner(con, "stg", "74700002", "hb", 5, "HS1")
    _learner(con, "stg", "74700004", "hd", 5, "HS9", enrolled=False)  # not enrolled: never compared
    _learner(con, "stg", "74700004", "hd", 6, "HS3")          # shared with C only
    _learner(con, "stg", "74700005", "he", 5, "HS5")
    _learner(con, "core", "74700003", "hc", 9, "HS1")
    _learner(con, "core", "74700003", "hc", 10, "HS3")
    _learner(con, "core", "74700003", "hc", 11, "HS9")
    _learner(con, "core", "74700005", "old", 5, "HS2")        # E's old core rows: E is in the run
    _learner(con, "stg", "74700009", "hz", 5, "HS1")          # staged but not a run file: ignored
    out = store.cross_school_issues(con, run, Y, P)
    got = out[out["rule_id"] == "student_code_unique_city"][["school_code", "excel_row", "value", "detail"]]
    assert got.astype({"excel_row": int}).values.tolist() == [
        ["74700001", 5, "HS1", "74700002, 74700003"],
        ["74700002", 5, "HS1", "74700001, 74700003"],
        ["74700004", 6, "HS3", "74700003"],
    ]
    # the same names / birth dates / sex in every row: the identity rule sees every run school
    ident = out[out["rule_id"] == "student_identity_duplicate_city"]
    assert sorted(ident["school_code"].unique()) == ["74700001", "74700002", "74700004", "74700005"]
    assert set(ident.loc[ident["school_code"] == "74700005", "detail"]) == {"74700001, 74700002, 74700003, 74700004"}


def test_problem_files_first_file_level_error_per_file():
    subs = pd.DataFrame({
        "school_code": ["74700001", "74700002", "74700003", None, "74700005"],
        "file_hash": ["h1", "h2", "h3", None, "h5"],
        "file_name": ["a.xlsx", "b.xlsx", "c.xlsx", "d.xlsx", "e.xlsx"],
        "status": ["rejected", "rejected", "accepted", "unreadable", "rejected"],
    })
    issues = pd.DataFrame({
        "file_hash": ["h1", "h1", "h1", "h1", "h2", "h2", "h3", None, "h2"],
        "severity": ["error", "warning", "error", "error", "error", "notice", "error", "error", "error"],
        "rule_id": ["learners_x", "file_w", "file_first", "file_second", "learners_y", "file_n", "file_z", "file_q",
                    "staff_z"],
        "message": ["r1", "w", "Tệp thứ nhất", "Tệp thứ hai", "r2", "n", "z", "q", "r3"],
    })
    got = _problem_files(RunOutcome("r", Y, P, subs, issues))
    assert got == [
        {"file": "a.xlsx", "school_code": "74700001", "status": "rejected", "message": "Tệp thứ nhất"},
        {"file": "b.xlsx", "school_code": "74700002", "status": "rejected", "message": "2 lỗi trong dữ liệu (xem tệp phản hồi)"},
        {"file": "d.xlsx", "school_code": None, "status": "unreadable", "message": "0 lỗi trong dữ liệu (xem tệp phản hồi)"},
        {"file": "e.xlsx", "school_code": "74700005", "status": "rejected", "message": "0 lỗi trong dữ liệu (xem tệp phản hồi)"},
    ]
    empty = issues.iloc[0:0]
    assert _problem_files(RunOutcome("r", Y, P, subs, empty))[0]["message"] == "0 lỗi trong dữ liệu (xem tệp phản hồi)"
