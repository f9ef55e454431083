"""edustat.formfast: a workbook made from its form's prerendered template has every XML part of
the one reports.render_form writes (docProps/core.xml aside: it holds the time), for every
built-in form and the shipped ad-hoc reports, several scopes from one template in a row, with
failed checks on KiemTra; the cases the template cannot reproduce (a school named like one of
the form's labels, an empty scope, a value that is not a number) are rendered the ordinary
way, and the fast path is really taken where it can be (stats)."""
from __future__ import annotations

import random
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from edustat import formfast
from edustat.reports import CHECK_COLUMNS, ReportHeader, data_rows, list_forms, load_form, render_form

YEAR = "2022-2023"
ROOT = Path(__file__).resolve().parents[1]
FORMS = list_forms() + [str(ROOT / "reports" / "hoc-sinh-khuyet-tat.yaml"), str(ROOT / "reports" / "giao-vien-mon-trinh-do.yaml")]


def values_of(form: dict, seed: int) -> dict:
    rnd = random.Random(seed)
    out = {}
    for sheet, row in data_rows(form):
        for key in sheet.get("columns", []):
            r = rnd.random()
            if r < 0.7:  # some cells absent (written as 0), some fractional or large
                out[(row["code"], key)] = float(rnd.choice([rnd.randint(0, 400), rnd.randint(0, 10**9), 2.5, 1 / 3]))
    return out


def checks_of(form: dict, scope: str, failed: int) -> pd.DataFrame:
    codes = [row["code"] for _, row in data_rows(form)][:5]
    rows = [[YEAR, "dau_nam", form["form_code"], scope, "total_equals_groups", c, "tong_so", 10.0, 10.0 + (i < failed),
             i >= failed, "x"] for i, c in enumerate(codes)]
    return pd.DataFrame(rows, columns=CHECK_COLUMNS)


def header(unit: str, label: str, recipient: str = "Phòng GD&ĐT Quận Ba Đình") -> ReportHeader:
    return ReportHeader(unit=unit, recipient=recipient, school_year=YEAR, scope_label=label)


def parts(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist() if n != "docProps/core.xml"}


def both(tmp: Path, code: str, values: dict, checks: pd.DataFrame, scope: str, head: ReportHeader) -> tuple[dict, dict]:
    form = load_form(code)
    slow = render_form(form, None, checks, scope, tmp / "slow" / f"{scope}.xlsx", head, values=values)
    fast = formfast.render(code, form, values, checks, scope, tmp / "fast" / f"{scope}.xlsx", head)
    return parts(slow), parts(fast)


@pytest.mark.parametrize("code", FORMS, ids=lambda c: Path(c).stem)
def test_template_workbooks_are_the_same_parts(tmp_path, code):
    formfast.reset()
    before = dict(formfast.stats)
    scopes = [("city", header("Phòng GD&ĐT Quận Ba Đình", "Toàn Quận Ba Đình", "Sở GD&ĐT Hà Nội"), 0),
              ("01000001", header("Trường Mầm non Hoa Sen <A&B>", "Trường Mầm non Hoa Sen <A&B> (01000001)"), 3),
              ("01000002", header("Trường Tiểu học Kim Đồng", "Trường Tiểu học Kim Đồng (01000002)"), 0)]
    for i, (scope, head, failed) in enumerate(scopes):
        slow, fast = both(tmp_path, code, values_of(load_form(code), i), checks_of(load_form(code), scope, failed), scope, head)
        assert slow.keys() == fast.keys()
        assert [n for n in slow if slow[n] != fast[n]] == [], scope
    assert formfast.stats["fast"] - before["fast"] == 3  # all three from the template
    assert formfast.stats["templates"] - before["templates"] == 1


@pytest.mark.filterwarnings("ignore:Footer string cannot be longer")  # the s3 case, on purpose
def test_what_the_template_cannot_make_is_rendered_the_ordinary_way(tmp_path):
    code = "02-TH-DN"
    form = load_form(code)
    formfast.reset()
    label = next(row["label"] for _, row in data_rows(form) if row.get("label"))
    cases = [("s1", header(label, f"{label} (s1)")),  # a school named like a row of the form: its string index is shared
             ("s2", header("Trường A", "")),  # an empty header string: refused by the template ("" is written as a blank cell)
             ("s3", header("Trường B", "x" * 240)),  # a footer over Excel's 255 characters is dropped
             ("s4", header("Phòng GD&ĐT Quận Ba Đình", "Trường C (s4)"))]  # unit = recipient: one string index
    for scope, head in cases:
        before = formfast.stats["fallback"]
        slow, fast = both(tmp_path, code, values_of(form, 1), checks_of(form, scope, 1), scope, head)
        assert formfast.stats["fallback"] == before + 1, scope
        assert [n for n in slow if slow[n] != fast.get(n)] == [] and slow.keys() == fast.keys(), scope
    cell = next((r["code"], k) for sh, r in data_rows(form) for k in sh["columns"] if k not in r.get("na", []))
    bad = {**values_of(form, 2), cell: float("nan")}
    for render in (lambda p: render_form(form, None, checks_of(form, "s5", 0), "s5", p, header("C", "C (s5)"), values=bad),
                   lambda p: formfast.render(code, form, bad, checks_of(form, "s5", 0), "s5", p, header("C", "C (s5)"))):
        with pytest.raises(TypeError, match="NAN/INF"):
            render(tmp_path / "nan.xlsx")


def test_another_xlsxwriter_version_renders_the_ordinary_way(tmp_path, monkeypatch):
    """The template replays xlsxwriter's internals, proven for the pinned version only."""
    import xlsxwriter

    code = "03-THCS-DN"
    form = load_form(code)
    head = header("Trường THCS Lê Lợi", "Trường THCS Lê Lợi (01000003)")
    monkeypatch.setattr(xlsxwriter, "__version__", "9.9.9")
    before = dict(formfast.stats)
    slow, fast = both(tmp_path, code, values_of(form, 4), checks_of(form, "01000003", 1), "01000003", head)
    assert formfast.stats["fallback"] == before["fallback"] + 1 and formfast.stats["fast"] == before["fast"]
    assert [n for n in slow if slow[n] != fast.get(n)] == [] and slow.keys() == fast.keys()


def test_forked_workers_render_each_job_its_own_workbook(tmp_path):
    """reports._render_all over two worker processes (the jobs inherited, only indexes sent):
    each path in job order, each workbook the one rendered in this process."""
    from edustat.reports import _render_all

    code = "02-TH-DN"
    form = load_form(code)
    jobs = {d: [(code, values_of(form, i), checks_of(form, f"s{i}", i % 2), f"s{i}", tmp_path / d / f"s{i}.xlsx",
                 header(f"Trường {i}", f"Trường {i} (s{i})")) for i in range(6)] for d in ("one", "two")}
    assert _render_all(jobs["one"], 1) == [j[4] for j in jobs["one"]]
    assert _render_all(jobs["two"], 2) == [j[4] for j in jobs["two"]]
    for a, b in zip(jobs["one"], jobs["two"]):
        assert parts(a[4]) == parts(b[4])
    assert len({parts(j[4])["xl/worksheets/sheet1.xml"] for j in jobs["one"]}) == 6  # the values differ


def _freeze_count(job) -> int:
    import gc

    return gc.get_freeze_count()


def test_forked_render_workers_freeze_what_they_inherit(monkeypatch):
    """Each render worker starts by freezing the objects it inherited (gc.freeze), so its
    collections never walk (and copy) the parent's heap; the parent's own generations are left
    as they were."""
    import gc

    from edustat import reports

    monkeypatch.setattr(reports, "_render_job", _freeze_count)  # the forked workers inherit the patch
    parent = gc.get_freeze_count()
    counts = reports._render_all([("job", i) for i in range(6)], 2)
    assert gc.get_freeze_count() == parent
    assert len(counts) == 6 and min(counts) > parent


def test_a_template_is_kept_from_one_build_to_the_next_for_the_same_definition(tmp_path):
    """A template depends on the form's definition only (the school year is a placeholder like
    the other header strings): a later build — another school year too — reuses it, and each
    workbook still has the ordinary render's parts; a definition edited in between (same
    code) gets a template of its own, and so does one holding anything but plain values."""
    import copy

    from edustat.reports import _render_all

    code = "03-THCS-DN"
    form = load_form(code)
    formfast.reset()
    made = formfast.stats["templates"]
    for build, year in enumerate(("2022-2023", "2023-2024", "2022-2023")):
        head = ReportHeader(unit=f"Trường {build}", recipient="Phòng GD&ĐT Quận Ba Đình", school_year=year,
                            scope_label=f"Trường {build} (s{build})")
        job = (code, values_of(form, build), checks_of(form, f"s{build}", 1), f"s{build}", tmp_path / f"b{build}.xlsx", head)
        assert _render_all([job], 1) == [job[4]]
        slow = render_form(form, None, job[2], job[3], tmp_path / f"slow{build}.xlsx", head, values=job[1])
        assert parts(slow) == parts(job[4]), (build, year)
    assert formfast.stats["templates"] - made == 1  # made once, for three builds and two school years

    edited = copy.deepcopy(form)
    first = next(row for _, row in data_rows(edited) if row.get("label"))
    first["label"] = first["label"] + " (sửa)"
    head = header("Trường D", "Trường D (s9)")
    formfast.new_build()
    fast = formfast.render(code, edited, values_of(edited, 9), checks_of(edited, "s9", 0), "s9", tmp_path / "e.xlsx", head)
    slow = render_form(edited, None, checks_of(edited, "s9", 0), "s9", tmp_path / "e-slow.xlsx", head,
                       values=values_of(edited, 9))
    assert parts(fast) == parts(slow)
    assert formfast.stats["templates"] - made == 2  # the edited definition: a template of its own

    class Text(str):
        pass

    odd = copy.deepcopy(form)
    odd["number"] = Text(odd["number"])  # not a plain value: its template lives for one build
    assert formfast._definition_key(odd) is None
    for build in range(2):
        formfast.new_build()
        fast = formfast.render(code, odd, values_of(odd, 3), checks_of(odd, "s3", 0), "s3", tmp_path / f"o{build}.xlsx", head)
        assert parts(fast) == parts(render_form(odd, None, checks_of(odd, "s3", 0), "s3", tmp_path / "o-slow.xlsx", head,
                                                values=values_of(odd, 3)))
    assert formfast.stats["templates"] - made == 4
    formfast.new_build()
    formfast.render(code, form, {}, checks_of(form, "s1", 0), "s1", tmp_path / "again.xlsx", head)
    assert formfast.stats["templates"] - made == 5  # one kept per form code: the edited one had replaced it
