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


def _oracle(con, run):
    """The cross-school rules computed in Python from every row (no restriction): each run row
    whose key some other school shares, with those schools — the full computation the query's
    shortcuts must equal."""
    out = []
    for rule_id, (sid, field, exprs) in store.CROSS_SCHOOL_SQL.items():
        cols = {"student_code": "student_code", "personal_id": "personal_id",
                "lower(full_name)": "lower(full_name)", "birth_date": "cast(birth_date as varchar)", "sex": "sex"}
        flag = "is_enrolled" if sid == "learners" else "is_active"
        sel = ", ".join(cols[e] for e in exprs)
        rows = [("stg", r) for r in con.execute(
            f"select school_code, file_hash, sheet_name, excel_row, cast({field} as varchar), {sel}, {flag} "
            f"from stg_{sid}").fetchall()]
        rows += [("core", r) for r in con.execute(
            f"select school_code, file_hash, sheet_name, excel_row, cast({field} as varchar), {sel}, {flag} "
            f"from core_{sid}").fetchall()]
        keyed = []
        for layer, (code, fh, sheet, xr, value, *parts, flag_v) in rows:
            if not flag_v or any(p is None for p in parts):
                continue
            is_run = run.get(code) == fh if layer == "stg" else False
            if layer == "core" and code in run:
                continue  # a run school's core rows are not compared
            if layer == "stg" and not is_run:
                continue
            keyed.append((is_run, code, fh, sheet, xr, value, "|".join(parts)))
        schools: dict[str, set] = {}
        for _, code, *_r, k in keyed:
            schools.setdefault(k, set()).add(code)
        for is_run, code, fh, sheet, xr, value, k in keyed:
            others = sorted(schools[k] - {code})
            if is_run and others:
                out.append((code, fh, sheet, xr, rule_id, value, ", ".join(others)))
    return sorted(out)


def test_cross_school_issues_equal_the_full_computation(tmp_path):
    """Only a run row's key can be reported, so the other schools' rows are compared for those
    keys only (issue 12, one school changed): the result must be the full computation's —
    conflicts among unchanged schools alone are not this run's, a name holding the key's '|'
    separator, NULL parts, rows not enrolled."""
    con = duckdb.connect(str(tmp_path / "t.duckdb"))
    store.ensure_tables(con)
    run = {"74700001": "ha", "74700002": "hb"}
    _learner(con, "stg", "74700001", "ha", 5, "HS1", pid="P1")
    _learner(con, "stg", "74700001", "ha", 6, "HS7", pid="P7", name="An|2016-03-04")
    _learner(con, "stg", "74700001", "ha", 7, "HS8", pid=None, name="Bình")
    _learner(con, "stg", "74700002", "hb", 5, "HS2", pid="P1", name="Chi")
    _learner(con, "stg", "74700002", "hb", 6, "HS8", pid="P8", name="Dũng", enrolled=False)
    _learner(con, "core", "74700003", "hc", 9, "HS1", pid="P3", name="Em")
    _learner(con, "core", "74700003", "hc", 10, "HS5", pid="P5", name="Giang")   # shared with D only: not this run's
    _learner(con, "core", "74700004", "hd", 9, "HS5", pid="P5", name="Giang")
    _learner(con, "core", "74700004", "hd", 10, "HS8", pid="P9", name="bình")    # the identity key lowers the name
    _learner(con, "core", "74700004", "hd", 11, "HS2", pid="P2", name="Chi", enrolled=False)
    _learner(con, "core", "74700001", "old", 5, "HS5", pid="P5")                  # A's old core rows: A is in the run
    out = store.cross_school_issues(con, run, Y, P)
    got = sorted(tuple(None if pd.isna(v) else (int(v) if i == 3 else v) for i, v in enumerate(r))
                 for r in out[["school_code", "file_hash", "sheet_name", "excel_row", "rule_id", "value", "detail"]]
                 .itertuples(index=False))
    want = _oracle(con, run)
    assert got == want
    assert ("74700001", "ha", "HocSinh", 7, "student_identity_duplicate_city", "Bình", "74700004") in got
    assert not [r for r in got if "74700003" in r[6] and r[5] == "HS5"]


def test_check_form_identities_with_missing_and_fractional_cells():
    """reports.check_form's identity checks on numpy columns (issue 12): a row whose total or
    a part is missing gives no check, sums are of every part or none, a comparison with a
    missing side is no check, fractions compare within 1e-9. Expected rows written by hand."""
    from edustat.reports import check_form

    form = {"form_code": "T", "school_year": Y, "groups": ["a", "b"],
            "sheets": [{"columns": ["tong_so.tong", "tong_so.nu", "a.tong", "a.nu", "b.tong", "b.nu"],
                        "rows": [{"code": 1}, {"code": 2}]}]}
    v = {("city", 1): [10, 4, 6, 2, 4, 2], ("city", 2): [5, 6, 2.5, None, 2.5000000001, 1],
         ("x", 1): [3, 1, 3, 1, None, 0]}
    keys = form["sheets"][0]["columns"]
    cells = pd.DataFrame([(Y, P, "T", s, r, k, x) for (s, r), vals in v.items() for k, x in zip(keys, vals)],
                         columns=["school_year", "period", "form_code", "scope", "row_code", "column_key", "value"])
    got = check_form(form, cells)
    rows = [(s, r, n, k, e, a, bool(ok)) for s, r, n, k, e, a, ok in
            got[["scope", "row_code", "check_name", "column_key", "expected", "actual", "ok"]].itertuples(index=False)]
    assert rows == [
        ("city", 1, "female_le_total", "a.nu", 6.0, 2.0, True),
        ("city", 1, "female_le_total", "b.nu", 4.0, 2.0, True),
        ("city", 1, "female_le_total", "tong_so.nu", 10.0, 4.0, True),
        ("city", 1, "total_equals_groups", "tong_so.nu", 4.0, 4.0, True),
        ("city", 1, "total_equals_groups", "tong_so.tong", 10.0, 10.0, True),
        ("city", 2, "female_le_total", "b.nu", 2.5000000001, 1.0, True),
        ("city", 2, "female_le_total", "tong_so.nu", 5.0, 6.0, False),
        ("city", 2, "total_equals_groups", "tong_so.tong", 5.0000000001, 5.0, True),
        ("x", 1, "female_le_total", "a.nu", 3.0, 1.0, True),
        ("x", 1, "female_le_total", "tong_so.nu", 3.0, 1.0, True),
        ("x", 1, "total_equals_groups", "tong_so.nu", 1.0, 1.0, True),
    ]
