"""The `edustat` command: a thin layer over the library. Heavy imports (pandas, Great
Expectations, Prefect) happen inside the command that needs them, so `--help` is instant.

Officer-facing errors are one Vietnamese line, never a traceback.
"""
from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(
    name="edustat",
    help="edustat: biểu nhập liệu của trường → dữ liệu đã kiểm tra → báo cáo thống kê TT 24/2018.\n\n"
    "School workbooks in, validated DuckDB and the Circular 24/2018 report forms out.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


class LevelOpt(str, Enum):
    MN = "MN"
    TH = "TH"
    THCS = "THCS"


class PeriodOpt(str, Enum):
    dau_nam = "dau_nam"
    cuoi_nam = "cuoi_nam"


def fail(message: str, code: int = 2) -> None:
    """One clear line on stderr and a non-zero exit."""
    typer.echo(f"Lỗi: {message}", err=True)
    raise typer.Exit(code)


def _check_year(year: str) -> str:
    import re

    m = re.fullmatch(r"(\d{4})-(\d{4})", year)
    if not m or int(m.group(2)) != int(m.group(1)) + 1:
        fail(f"năm học '{year}' không hợp lệ; ví dụ đúng: 2022-2023")
    return year


@app.command()
def template(
    level: Optional[List[LevelOpt]] = typer.Option(None, "--level", "-l", help="Cấp học (MN, TH, THCS); lặp lại cho trường nhiều cấp: --level TH --level THCS."),
    year: Optional[str] = typer.Option(None, "--year", help="Năm học, ví dụ 2022-2023."),
    period: Optional[PeriodOpt] = typer.Option(None, "--period", help="dau_nam (30/9) hoặc cuoi_nam (31/5)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Tệp .xlsx sẽ ghi."),
    school: Optional[str] = typer.Option(None, "--school", help="Mã trường (8 chữ số) để điền sẵn; tỉnh/huyện suy từ mã. Với --from-year: mã trường hoặc 'all' (mọi trường)."),
    from_year: Optional[str] = typer.Option(None, "--from-year", help="Điền sẵn mẫu đầu năm của năm học sau từ số liệu đã tiếp nhận của năm học này (vd 2022-2023)."),
    data_dir: Path = typer.Option(Path("data"), "--data-dir", help="Thư mục dữ liệu (với --from-year)."),
    config: Optional[Path] = typer.Option(None, "--config", help="Tệp cấu hình edustat.yaml (với --from-year)."),
) -> None:
    """Write the blank submission workbook a school fills, or (--from-year) next year's
    start-of-year workbook prefilled from a school's accepted data.

    Example: edustat template --level TH --year 2022-2023 --period dau_nam --school 74718001 -o mau_TH.xlsx
    Example: edustat template --from-year 2022-2023 --school 74718001
    """
    if from_year is not None:
        _template_from_year(from_year, school, output, data_dir, config, bool(level or year or period))
        return
    if not level or year is None or period is None or output is None:
        fail("cần --level, --year, --period và -o (mẫu trống), hoặc --from-year và --school (mẫu điền sẵn)")
    _check_year(year)
    from edustat.workbook import write_submission
    from schemas import load_codelist

    levels = tuple(lv.value for lv in level)
    prefill: dict[str, str] = {}
    if school:
        if not (school.isdigit() and len(school) == 8):
            fail(f"mã trường '{school}' phải gồm 8 chữ số")
        prefill["school_code"] = school
        # Ministry school codes observed as province(2)+district(3)+serial(3) [INF]
        if school[:2] in load_codelist("moet-2020/DM_TINH").codes:
            prefill["province_code"] = school[:2]
            if school[2:5] in load_codelist("moet-2020/DM_HUYEN").codes:
                prefill["district_code"] = school[2:5]
    write_submission(output, levels=levels, period=period.value, school_year=year, school=prefill)
    typer.echo(f"Đã ghi biểu mẫu {'+'.join(levels)} {year} {period.value}: {output}")


def _template_from_year(from_year: str, school: Optional[str], output: Optional[Path], data_dir: Path,
                        config: Optional[Path], other_options: bool) -> None:
    """`template --from-year`: the prefilled workbooks (edustat.rollover); counts only on screen."""
    _check_year(from_year)
    if other_options:
        fail("--from-year tự xác định cấp học, năm học sau và kỳ đầu năm; bỏ --level, --year, --period")
    if not school:
        fail("cần --school <mã trường> hoặc --school all")
    if school != "all" and not (school.isdigit() and len(school) == 8):
        fail(f"mã trường '{school}' phải gồm 8 chữ số (hoặc 'all' cho mọi trường)")
    if school == "all" and output is not None:
        fail("--school all ghi mỗi trường một tệp vào data/curated/templates/<năm học sau>/; bỏ -o")
    cfg = _config(config, data_dir, need_db=True)
    import duckdb

    from edustat.paths import UnsafePath
    from edustat.rollover import RolloverError, rollover

    failed: list[str] = []
    try:
        results = rollover(cfg.db_path, cfg.data_dir, from_year, school, output, cfg.private_group, failed)
    except RolloverError as exc:
        fail(str(exc))
    except UnsafePath:
        fail(f"tệp ghi ra phải nằm trong thư mục dữ liệu {cfg.data_dir} (tệp có thông tin cá nhân)")
    except duckdb.IOException:
        fail("cơ sở dữ liệu đang được ghi; thử lại sau ít phút")
    for r in results:
        typer.echo(f"Đã ghi mẫu điền sẵn {r.summary()}: {r.path}")
    for line in failed:
        typer.echo(f"Không lập được mẫu điền sẵn cho {line}", err=True)
    if failed:
        raise typer.Exit(1)


@app.command()
def synth(
    schools: int = typer.Option(10, "--schools", "-n", min=1, help="Số trường."),
    seed: int = typer.Option(2022, "--seed", help="Hạt giống ngẫu nhiên (cùng hạt giống → cùng dữ liệu)."),
    year: str = typer.Option("2022-2023", "--year", help="Năm học."),
    period: PeriodOpt = typer.Option(PeriodOpt.dau_nam, "--period", help="dau_nam hoặc cuoi_nam (cùng lứa học sinh)."),
    output: Path = typer.Option(..., "--output", "-o", help="Thư mục ghi các tệp của trường."),
    export_share: float = typer.Option(0.0, "--export-share", min=0.0, max=1.0, help="Tỉ lệ tệp giả dạng tệp xuất từ CSDL ngành/vnEdu."),
    error_rate: float = typer.Option(0.0, "--error-rate", min=0.0, max=1.0, help="Xác suất chèn một lỗi vào mỗi dòng (ghi vào manifest.json)."),
    province: str = typer.Option("74", "--province", help="Mã tỉnh GSO (mặc định 74 Bình Dương)."),
    district: str = typer.Option("718", "--district", help="Mã huyện GSO (mặc định 718 TP Thủ Dầu Một)."),
    workers: int = typer.Option(2, "--workers", min=1, help="Số tiến trình song song."),
    clerk_share: float = typer.Option(0.0, "--clerk-share", min=0.0, max=1.0, help="Tỉ lệ tệp gõ theo kiểu nhân viên trường (tiêu đề viết tắt, tên phòng theo biểu, GV, P.HT…)."),
    typo_rate: float = typer.Option(0.0, "--typo-rate", min=0.0, max=1.0, help="Trong tệp kiểu nhân viên: tỉ lệ ô mã có lỗi gõ (thiếu một chữ)."),
    broken: int = typer.Option(0, "--broken", min=0, help="Số tệp thiếu một cột bắt buộc (bị từ chối ở bước kiểm tra cấu trúc)."),
    continues: bool = typer.Option(False, "--continue-previous-year", help="Học sinh, cán bộ, lớp nối tiếp cuối năm học trước của cùng hạt giống (lên lớp giữ nguyên mã học sinh)."),
) -> None:
    """Generate a realistic synthetic city: one workbook per school plus manifest.json.

    Example: edustat synth --schools 10 --seed 7 --year 2022-2023 --period dau_nam --export-share 0.3 --error-rate 0.01 -o data/sample/dau_nam
    Next year, continuing the same cohort: edustat synth --schools 10 --seed 7 --year 2023-2024 --period dau_nam --continue-previous-year -o data/sample/2023-2024_dau_nam
    """
    _check_year(year)
    import time

    from edustat.synth import generate_city

    t0 = time.perf_counter()
    m = generate_city(
        output, schools=schools, seed=seed, school_year=year, period=period.value,
        export_share=export_share, error_rate=error_rate, province_code=province,
        district_code=district, workers=workers, clerk_share=clerk_share, typo_rate=typo_rate,
        broken=broken, continues=continues,
    )
    typer.echo(
        f"Đã tạo {len(m.schools)} trường, {m.total_learners:,} học sinh, {m.total_staff:,} cán bộ, "
        f"{len(m.errors)} lỗi chèn vào → {output} ({time.perf_counter() - t0:.1f} s)"
    )


def _config(config: Optional[Path], data_dir: Path, need_db: bool = False):
    """The typed config, or one Vietnamese line and exit 2."""
    from edustat.config import ConfigError, load_config

    try:
        cfg = load_config(config, data_dir)
    except ConfigError as exc:
        fail(str(exc))
    if need_db and not cfg.db_path.exists():
        fail(f"chưa có dữ liệu: chưa chạy đợt thu thập nào ({cfg.db_path})")
    return cfg


def _prefect_env() -> None:
    """Offline, quiet, reliable Prefect defaults (stack-findings §3); the caller's settings win."""
    import os

    for key, value in {
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "GX_ANALYTICS_ENABLED": "False",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }.items():
        os.environ.setdefault(key, value)


def _log_to_file(data_dir: Path) -> Path:
    """Send every log record (Prefect's included, tracebacks and all) to a file under the data
    dir instead of the console: the officer reads one line, the developer the file. Falls back
    to the temp dir when the data dir cannot be written (read-only, full)."""
    import datetime as dt
    import logging
    import os
    import tempfile

    name = f"edustat-{dt.datetime.now().strftime('%Y%m%d')}.log"
    handler = None
    for folder in (data_dir / "logs", Path(tempfile.gettempdir()) / "edustat-logs"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(folder / name, encoding="utf-8", delay=False)
            os.chmod(folder / name, 0o600)  # messages may name schools and files
            break
        except OSError:
            continue
    logging.raiseExceptions = False  # a log write failing (full disk) never prints to the console
    logging.captureWarnings(True)
    if handler is None:
        handler = logging.NullHandler()
        path = Path(os.devnull)
    else:
        path = Path(handler.baseFilename)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [pid %(process)d] %(message)s"))
    loggers = [logging.getLogger()] + [lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    for lg in loggers:
        for h in list(lg.handlers):
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                lg.removeHandler(h)
    for lg in (logging.getLogger(), logging.getLogger("prefect"), logging.getLogger("prefect._internal")):
        lg.addHandler(handler)
    logging.getLogger("edustat").setLevel(logging.INFO)
    return path


def _run_failed(exc: BaseException, log_path: Path, what: str) -> None:
    """A run that could not complete: one Vietnamese line naming the fault, details in the log."""
    import logging

    from edustat.pipeline import fault_text

    logging.getLogger("edustat").error("%s failed", what, exc_info=exc)
    known = fault_text(exc)
    if known:
        fail(f"{known} (chi tiết: {log_path})")
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    fail(f"không chạy được {what}: {type(exc).__name__}: {text[:300]} (chi tiết: {log_path})")


@app.command()
def run(
    year: str = typer.Option(..., "--year", help="Năm học, ví dụ 2022-2023."),
    period: PeriodOpt = typer.Option(..., "--period", help="dau_nam hoặc cuoi_nam."),
    inbox: Path = typer.Option(..., "--inbox", help="Thư mục chứa các tệp trường đã nộp."),
    data_dir: Path = typer.Option(Path("data"), "--data-dir", help="Thư mục dữ liệu (raw/, curated/)."),
    config: Optional[Path] = typer.Option(None, "--config", help="Tệp cấu hình edustat.yaml."),
    no_publish: bool = typer.Option(False, "--no-publish", help="Không cập nhật bản sao cho phân tích."),
) -> None:
    """Run a collection: read → validate → load → feedback → publish, as one Prefect flow.

    Example: edustat run --year 2022-2023 --period dau_nam --inbox data/sample/2022-2023/dau_nam
    """
    _check_year(year)
    if not inbox.is_dir():
        fail(f"không tìm thấy thư mục tệp nộp '{inbox}'")
    if config is not None and not config.exists():
        fail(f"không tìm thấy tệp cấu hình '{config}'")
    _prefect_env()
    cfg = _config(config, data_dir)
    from edustat.pipeline import format_summary
    from flows.collect import collection_flow, task_runner

    log_path = _log_to_file(cfg.data_dir)
    runner = task_runner(cfg)
    flow_ = collection_flow.with_options(task_runner=runner) if runner else collection_flow
    try:
        summary = flow_(school_year=year, period=period.value, inbox=str(inbox), data_dir=str(data_dir),
                        config_path=str(config) if config else None, publish=not no_publish)
    except Exception as exc:  # the run could not complete: one line, details in the log file
        _run_failed(exc, log_path, "đợt thu thập")
    typer.echo(format_summary(summary))


def _check_forms(forms: Optional[List[str]], period: str) -> Optional[list[str]]:
    """The requested forms: built-in codes of the period, or paths of ad-hoc report
    definitions (YAML, validated here: read, checked, every `where` tried); otherwise one
    Vietnamese line and exit 2. An ad-hoc form is passed on as its absolute path."""
    if not forms:
        return None
    from edustat.reports import AdhocError, is_adhoc_ref, list_forms, load_adhoc

    known = list_forms(period)
    kind = "đầu năm" if period == "dau_nam" else "cuối năm"
    out, codes = [], {}
    for ref in forms:
        if ref.lower().endswith(".sql"):  # an office's SQL report (edustat.sql_reports)
            from edustat.sql_reports import SqlReportError, load_sql_report

            path = Path(ref).expanduser().resolve()
            try:
                sql_report = load_sql_report(path)
            except SqlReportError as exc:
                fail(str(exc))
            if sql_report.period not in (None, period):
                fail(f"{path.name}: báo cáo dành cho kỳ {'đầu năm' if sql_report.period == 'dau_nam' else 'cuối năm'} "
                     f"(period: {sql_report.period}), không lập cho kỳ {kind}")
            if codes.get(sql_report.form_code, path) != path:
                fail(f"{path.name} và {codes[sql_report.form_code].name} cùng mã báo cáo '{sql_report.form_code}'; đặt form_code khác cho một tệp")
            codes[sql_report.form_code] = path
            out.append(str(path))
            continue
        if not is_adhoc_ref(ref):
            if ref not in known:
                fail(f"không có biểu {ref} cho kỳ {kind}; các biểu của kỳ: {', '.join(known)}; "
                     "báo cáo theo yêu cầu: --form <tệp>.yaml hoặc <tệp>.sql")
            out.append(ref)
            continue
        path = Path(ref).expanduser().resolve()
        try:
            definition = load_adhoc(path)
        except AdhocError as exc:
            fail(str(exc))
        if definition.get("period", period) != period:
            other = "đầu năm" if definition["period"] == "dau_nam" else "cuối năm"
            fail(f"{path.name}: báo cáo dành cho kỳ {other} (period: {definition['period']}), không lập cho kỳ {kind}")
        code = definition["form_code"]
        if code in codes and codes[code] != path:
            fail(f"{path.name} và {codes[code].name} cùng mã báo cáo '{code}'; đặt form_code khác cho một tệp")
        codes[code] = path
        out.append(str(path))
    return list(dict.fromkeys(out))


def _check_school(cfg, school: str, year: str, period: str) -> None:
    """A school given by code must have accepted data in this collection."""
    import duckdb

    if not (school.isdigit() and len(school) == 8):
        fail(f"mã trường '{school}' phải gồm 8 chữ số")
    try:
        con = duckdb.connect(str(cfg.db_path), read_only=True)
    except duckdb.IOException:
        fail("cơ sở dữ liệu đang được ghi; thử lại sau ít phút")
    try:
        in_core = con.execute("select count(*) from core_school where school_year = ? and period = ? and school_code = ?",
                              [year, period, school]).fetchone()[0]
        known = con.execute("select status from submission where school_year = ? and period = ? and school_code = ? and is_current",
                            [year, period, school]).fetchone()
    except duckdb.CatalogException:
        in_core, known = 0, None
    finally:
        con.close()
    if in_core:
        return
    kind = "đầu năm" if period == "dau_nam" else "cuối năm"
    if known:
        from edustat.pipeline import STATUS_TEXT

        fail(f"trường {school} chưa có số liệu được tiếp nhận năm học {year}, kỳ {kind} "
             f"(bản nộp mới nhất: {STATUS_TEXT.get(known[0], known[0]).lower()}); không lập biểu")
    fail(f"không có trường mã {school} trong đợt thu thập năm học {year}, kỳ {kind}; "
         f"xem danh sách bằng: edustat status --year {year} --period {period}")


@app.command()
def report(
    year: str = typer.Option(..., "--year", help="Năm học, ví dụ 2022-2023."),
    period: PeriodOpt = typer.Option(..., "--period", help="dau_nam hoặc cuoi_nam."),
    school: Optional[str] = typer.Option(None, "--school", help="Chỉ lập lại biểu của một trường (và biểu toàn thành phố)."),
    form: Optional[List[str]] = typer.Option(None, "--form", help="Chỉ lập biểu này (vd 02-TH-DN) hoặc báo cáo theo yêu cầu định nghĩa trong tệp YAML (vd reports/hoc-sinh-khuyet-tat.yaml) hay SQL (vd reports/lop-theo-khoi.sql); lặp lại cho nhiều biểu."),
    data_dir: Path = typer.Option(Path("data"), "--data-dir", help="Thư mục dữ liệu."),
    config: Optional[Path] = typer.Option(None, "--config", help="Tệp cấu hình edustat.yaml."),
    certified_only: Optional[bool] = typer.Option(None, "--certified-only/--all-schools",
                                                  help="Chỉ tính các trường đã được hiệu trưởng xác nhận số liệu (mặc định: theo cấu hình forms_certified_only)."),
) -> None:
    """Rebuild the Circular 24/2018 report forms from the loaded data (city and per school),
    or an office's ad-hoc report defined in a YAML file (see reports/ and the README).

    Example: edustat report --year 2022-2023 --period dau_nam --school 74718001 --form 02-TH-DN
    Example: edustat report --year 2022-2023 --period dau_nam --form reports/hoc-sinh-khuyet-tat.yaml
    Example: edustat report --year 2022-2023 --period dau_nam --form reports/lop-theo-khoi.sql
    """
    _check_year(year)
    forms = _check_forms(form, period.value)  # first: an office can check its definition before any data
    cfg = _config(config, data_dir, need_db=True)
    if school is not None:
        _check_school(cfg, school, year, period.value)
    sql_forms = [f for f in forms or [] if f.lower().endswith(".sql")]
    forms = [f for f in forms or [] if f not in sql_forms] or (None if not sql_forms else [])
    out = {"files": [], "forms": [], "failed_checks": 0, "reports_dir": str(cfg.reports_dir / year / period.value)}
    if forms != []:
        _prefect_env()
        from flows.collect import reports_flow

        log_path = _log_to_file(data_dir)
        try:
            out = reports_flow(school_year=year, period=period.value, data_dir=str(data_dir),
                               config_path=str(config) if config else None, school=school, forms=forms,
                               certified_only=certified_only)
        except Exception as exc:
            _run_failed(exc, log_path, "việc lập biểu")
    if sql_forms:
        out = _sql_reports(cfg, sql_forms, year, period.value, school, out)
    if not out["files"]:
        fail("không có số liệu đã tiếp nhận cho kỳ này (chưa trường nào được tiếp nhận)")
    bad = out["failed_checks"]
    typer.echo(f"Đã lập {len(out['files'])} tệp biểu ({', '.join(out['forms'])}) → {out['reports_dir']}; "
               + ("các phép kiểm tra nội bộ của biểu đều đạt (biểu chỉ gồm các trường đã tiếp nhận: xem 'edustat status')."
                  if not bad else f"{bad} phép kiểm tra KHÔNG ĐẠT (xem trang KiemTra).")
               + (f" Mã lần lập biểu: {out['build_id']} (lập lại đúng như lần này: edustat rebuild --build {out['build_id']})"
                  if out.get("build_id") else ""))


def _sql_reports(cfg, paths: list[str], year: str, period: str, school: Optional[str], out: dict) -> dict:
    """Run the office's SQL reports (edustat.sql_reports) on a read-only view of the collection."""
    import duckdb

    from edustat.paths import UnsafePath
    from edustat.sql_reports import SqlReportError, load_sql_report, run_sql_report

    out = {**out, "files": list(out["files"]), "forms": list(out["forms"])}
    for ref in paths:
        try:
            res = run_sql_report(cfg.db_path, cfg.reports_dir, cfg.data_dir, load_sql_report(ref), year, period,
                                 school=school, group=cfg.private_group)
        except SqlReportError as exc:
            fail(str(exc))
        except UnsafePath:
            fail(f"thư mục báo cáo nằm ngoài thư mục dữ liệu {cfg.data_dir}; không ghi")
        except duckdb.IOException:
            fail("cơ sở dữ liệu đang được ghi; thử lại sau ít phút")
        out["files"] += [str(p) for p in res.files]
        out["forms"].append(res.form_code)
        out["failed_checks"] += res.failed_checks
        private = [p for p in res.files if "reports_private" in p.parts]
        if private:
            typer.echo(f"{res.form_code}: {len(private)} tệp có thông tin cá nhân (chỉ đọc bởi người quản trị) → "
                       f"{private[0].parent}")
        if res.omitted_in_city:
            typer.echo(f"{res.form_code}: biểu toàn đơn vị không ghi {len(res.omitted_in_city)} cột thông tin cá nhân "
                       "(có trong biểu từng trường; xem personal_in_city trong README).")
    return out


@app.command()
def status(
    year: str = typer.Option(..., "--year", help="Năm học, ví dụ 2022-2023."),
    period: PeriodOpt = typer.Option(..., "--period", help="dau_nam hoặc cuoi_nam."),
    data_dir: Path = typer.Option(Path("data"), "--data-dir", help="Thư mục dữ liệu."),
    config: Optional[Path] = typer.Option(None, "--config", help="Tệp cấu hình edustat.yaml."),
) -> None:
    """Show the submission register of a collection and who is missing.

    Example: edustat status --year 2022-2023 --period dau_nam
    """
    _check_year(year)
    cfg = _config(config, data_dir, need_db=True)
    import duckdb

    from edustat.officer import status_text
    from edustat.pipeline import STATUS_TEXT
    from edustat.store import missing_schools

    try:
        con = duckdb.connect(str(cfg.db_path), read_only=True)
    except duckdb.IOException:
        fail("cơ sở dữ liệu đang được ghi; thử lại sau ít phút")
    rows = con.execute("""
        select s.school_code, coalesce(c.school_name || ' — ' || s.file_name, s.file_name) as name, s.version, s.status, s.in_core,
               s.n_learners, s.n_errors, s.n_warnings, strftime(s.received_at, '%d/%m/%Y %H:%M') as received, s.certified
        from submission s
        left join (select distinct school_code, school_name from stg_school where school_year = ? and period = ?) c using (school_code)
        where s.school_year = ? and s.period = ?
          and (s.is_current or s.status = 'late' or (s.school_code is null and s.run_id = (select max(run_id) from submission
                                where school_year = ? and period = ?)))
        order by s.school_code is null, s.status desc, s.school_code, s.version""", [year, period.value, year, period.value, year, period.value]).fetchall()
    # byte-identical copies have no row of their own: their twin's notice names them
    copies = [r[0] for r in con.execute("""
        select v.message from validation_issue v join submission s using (school_year, period, file_hash)
        where v.school_year = ? and v.period = ? and v.rule_id = 'file_duplicate_submission'
          and (s.is_current or s.run_id = (select max(run_id) from submission where school_year = ? and period = ?))
        order by 1""", [year, period.value, year, period.value]).fetchall()]
    missing = missing_schools(con, year, period.value, cfg.expected_schools)
    lock = None
    if con.execute("select count(*) from duckdb_tables() where table_name = 'period_state'").fetchone()[0]:
        from edustat.period_lock import state_row

        lock = state_row(con, year, period.value)
    con.close()
    if lock and lock["state"] == "closed":
        typer.echo(f"KỲ ĐÃ KHÓA từ {lock['changed_at']:%d/%m/%Y %H:%M} ({lock['changed_by']}): tệp mới được giữ lại là "
                   "nộp muộn; xử lý bằng edustat accept-late hoặc edustat reopen")
    schools = [r for r in rows if r[0]]
    unknown = [r for r in rows if not r[0]]
    typer.echo(f"Năm học {year}, kỳ {'đầu năm' if period.value == 'dau_nam' else 'cuối năm'}: {len(schools)} trường đã nộp, "
               f"{len(missing)} chưa nộp" + (f", {len(unknown)} tệp không rõ trường (không đọc được)" if unknown else ""))
    typer.echo(f"{'Mã trường':<10} {'Trạng thái':<26} {'Bản':>4} {'HS':>6} {'Lỗi':>5} {'C.báo':>6} {'HT x.nhận':<9}  {'Nhận lúc':<16} Tên / tệp")
    for code, name, version, st, in_core, n, e, w, received, certified in rows:
        cert = "có" if certified else ("không" if certified is False else "")
        typer.echo(f"{code or '?':<10} {status_text(st, in_core):<26} {version or '':>4} {n or 0:>6} {e or 0:>5} {w or 0:>6} {cert:<9}  {received or '':<16} {name or ''}")
    for text in copies:
        typer.echo(f"Tệp trùng nội dung: {text}")
    for m in missing.itertuples(index=False):
        typer.echo(f"{m.school_code:<10} {STATUS_TEXT['missing']:<26} {'':>4} {'':>6} {'':>5} {'':>6}  {'':<16} {m.school_name or ''}")


# ---------------------------------------------------------------------------------------
# Issue 11: period lock, late files, audit trail, versioned form builds (edustat.period_lock,
# edustat.formbuild)
# ---------------------------------------------------------------------------------------

def _kind(period: str) -> str:
    return "đầu năm" if period == "dau_nam" else "cuối năm"


def _writer(cfg):
    """The data dir's writer lock (one Vietnamese line when another run holds it)."""
    from edustat.pipeline import WriterBusy, sole_writer

    class _Guard:
        def __enter__(self):
            self.cm = sole_writer(cfg)
            try:
                return self.cm.__enter__()
            except WriterBusy as exc:
                fail(str(exc))

        def __exit__(self, *exc):
            return self.cm.__exit__(*exc)

    return _Guard()


@app.command()
def close(
    year: str = typer.Option(..., "--year", help="Năm học, ví dụ 2022-2023."),
    period: PeriodOpt = typer.Option(..., "--period", help="dau_nam hoặc cuoi_nam."),
    reason: Optional[str] = typer.Option(None, "--reason", help="Lý do (ghi vào nhật ký), vd 'hết hạn nộp 30/10'."),
    by: Optional[str] = typer.Option(None, "--by", help="Người thực hiện (mặc định: tài khoản máy)."),
    data_dir: Path = typer.Option(Path("data"), "--data-dir", help="Thư mục dữ liệu."),
    config: Optional[Path] = typer.Option(None, "--config", help="Tệp cấu hình edustat.yaml."),
) -> None:
    """Khóa kỳ thu thập: tệp đến sau được giữ lại là "nộp muộn", không thay đổi số liệu.

    Close a collection: files arriving afterwards are held as late and change nothing.

    Example: edustat close --year 2022-2023 --period dau_nam --reason "hết hạn nộp 30/10"
    """
    _check_year(year)
    cfg = _config(config, data_dir, need_db=True)
    from edustat import period_lock as period_
    from edustat.store import session

    with _writer(cfg):
        with session(cfg.db_path, cfg.private_group) as con:
            try:
                done = period_.close(con, year, period.value, period_.who(by), reason)
            except period_.PeriodError as exc:
                fail(str(exc))
    typer.echo(f"Đã khóa kỳ {_kind(period.value)} năm học {year} ({done['who']}, {done['at']:%d/%m/%Y %H:%M}). "
               "Tệp đến sau sẽ được giữ lại là 'nộp muộn' và không làm thay đổi số liệu, biểu báo cáo; "
               "mở lại: edustat reopen, nhận tệp muộn: edustat accept-late.")


@app.command()
def reopen(
    year: str = typer.Option(..., "--year", help="Năm học, ví dụ 2022-2023."),
    period: PeriodOpt = typer.Option(..., "--period", help="dau_nam hoặc cuoi_nam."),
    reason: Optional[str] = typer.Option(None, "--reason", help="Lý do mở lại (bắt buộc, ghi vào nhật ký)."),
    by: Optional[str] = typer.Option(None, "--by", help="Người thực hiện (mặc định: tài khoản máy)."),
    data_dir: Path = typer.Option(Path("data"), "--data-dir", help="Thư mục dữ liệu."),
    config: Optional[Path] = typer.Option(None, "--config", help="Tệp cấu hình edustat.yaml."),
) -> None:
    """Mở lại kỳ đã khóa (cần lý do); lần chạy tới xử lý thư mục nộp như thường.

    Reopen a closed collection; the next run processes the inbox as usual (late files too).

    Example: edustat reopen --year 2022-2023 --period dau_nam --reason "Sở gia hạn đến 5/11"
    """
    _check_year(year)
    if not (reason and reason.strip()):
        fail("mở lại kỳ cần ghi lý do: --reason \"…\" (lý do được ghi vào nhật ký)")
    cfg = _config(config, data_dir, need_db=True)
    from edustat import period_lock as period_
    from edustat.store import session

    with _writer(cfg):
        with session(cfg.db_path, cfg.private_group) as con:
            try:
                period_.reopen(con, year, period.value, period_.who(by), reason)
            except period_.PeriodError as exc:
                fail(str(exc))
            late = len(period_.late_files(con, year, period.value))
    typer.echo(f"Đã mở lại kỳ {_kind(period.value)} năm học {year}."
               + (f" {late} tệp nộp muộn sẽ được xử lý ở lần chạy tới (edustat run)." if late else ""))


@app.command("accept-late")
def accept_late(
    year: str = typer.Option(..., "--year", help="Năm học, ví dụ 2022-2023."),
    period: PeriodOpt = typer.Option(..., "--period", help="dau_nam hoặc cuoi_nam."),
    reason: Optional[str] = typer.Option(None, "--reason", help="Lý do nhận tệp nộp muộn (bắt buộc, ghi vào nhật ký)."),
    school: Optional[str] = typer.Option(None, "--school", help="Chỉ nhận tệp muộn của trường này (mã 8 chữ số)."),
    file_hash: Optional[str] = typer.Option(None, "--file", help="Chỉ nhận tệp có mã băm bắt đầu bằng chuỗi này (xem edustat status)."),
    by: Optional[str] = typer.Option(None, "--by", help="Người thực hiện (mặc định: tài khoản máy)."),
    data_dir: Path = typer.Option(Path("data"), "--data-dir", help="Thư mục dữ liệu."),
    config: Optional[Path] = typer.Option(None, "--config", help="Tệp cấu hình edustat.yaml."),
) -> None:
    """Nhận tệp nộp muộn (cần lý do): nạp tệp đang giữ lại, kỳ vẫn khóa.

    Load files held as late (all, one school's or one file) while the collection stays closed.

    Example: edustat accept-late --year 2022-2023 --period dau_nam --school 74718001 --reason "trường báo trước, mất điện"
    """
    _check_year(year)
    if not (reason and reason.strip()):
        fail("nhận tệp nộp muộn cần ghi lý do: --reason \"…\" (lý do được ghi vào nhật ký)")
    if school is not None and not (school.isdigit() and len(school) == 8):
        fail(f"mã trường '{school}' phải gồm 8 chữ số")
    cfg = _config(config, data_dir, need_db=True)
    from edustat import period_lock as period_
    from edustat.pipeline import STATUS_TEXT

    log_path = _log_to_file(cfg.data_dir)
    with _writer(cfg):
        try:
            out = period_.accept_late(cfg, year, period.value, period_.who(by), reason, school, file_hash)
        except period_.PeriodError as exc:
            fail(str(exc))
        except Exception as exc:  # noqa: BLE001
            _run_failed(exc, log_path, "việc nhận tệp nộp muộn")
    for f in out["files"]:
        typer.echo(f"{f['school_code'] or '?'}  {f['file_name']}: {STATUS_TEXT.get(f['status'], f['status'])} (bản {f['version']})")
    typer.echo(f"Đã xử lý {len(out['files'])} tệp nộp muộn; kỳ vẫn khóa. Lập lại biểu: edustat report --year {year} --period {period.value}")


def _read_recorded(cfg, table: str, read):
    """`read(con)` on a read-only connection to the officer's database; None while `table`
    does not exist yet (nothing recorded). A database being written is one line."""
    import duckdb

    try:
        con = duckdb.connect(str(cfg.db_path), read_only=True)
    except duckdb.IOException:
        fail("cơ sở dữ liệu đang được ghi; thử lại sau ít phút")
    try:
        have = con.execute("select count(*) from duckdb_tables() where table_name = ?", [table]).fetchone()[0]
        return read(con) if have else None
    finally:
        con.close()


@app.command("audit")
def audit_cmd(
    year: Optional[str] = typer.Option(None, "--year", help="Năm học (để trống: mọi năm)."),
    period: Optional[PeriodOpt] = typer.Option(None, "--period", help="dau_nam hoặc cuoi_nam."),
    school: Optional[str] = typer.Option(None, "--school", help="Chỉ các dòng của trường này."),
    csv: bool = typer.Option(False, "--csv", help="In dạng CSV."),
    data_dir: Path = typer.Option(Path("data"), "--data-dir", help="Thư mục dữ liệu."),
    config: Optional[Path] = typer.Option(None, "--config", help="Tệp cấu hình edustat.yaml."),
) -> None:
    """Nhật ký: ai khóa, mở lại kỳ, nhận tệp muộn, mọi lần đổi trạng thái (khi nào, vì sao, tệp nào).

    Show the audit trail: who closed, reopened, accepted late files; every status change.

    Example: edustat audit --year 2022-2023 --period dau_nam
    """
    if year:
        _check_year(year)
    cfg = _config(config, data_dir, need_db=True)
    from edustat import period_lock as period_
    from edustat.pipeline import STATUS_TEXT

    rows = _read_recorded(cfg, "audit_log", lambda con: period_.audit_rows(con, year, period.value if period else None, school))
    if rows is None or rows.empty:
        typer.echo("Nhật ký chưa có dòng nào.")
        return
    if csv:
        import csv as csv_mod

        w = csv_mod.writer(sys.stdout)
        w.writerow(rows.columns)
        for r in rows.itertuples(index=False):
            w.writerow(["" if v is None or (isinstance(v, float) and v != v) else v for v in r])
        return

    def st(v):
        return "" if not isinstance(v, str) else {"open": "mở", "closed": "khóa"}.get(v, STATUS_TEXT.get(v, v))

    for r in rows.itertuples(index=False):
        where = f"{r.school_year} {_kind(r.period)}"
        what = period_.ACTION_TEXT.get(r.action, r.action)
        school_ = f" trường {r.school_code}" if isinstance(r.school_code, str) else ""
        file_ = f" tệp {r.file_hash[:12]}" if isinstance(r.file_hash, str) else ""
        change = f": {st(r.old_status) or '—'} → {st(r.new_status)}" if isinstance(r.new_status, str) else ""
        why = f" — lý do: {r.reason}" if isinstance(r.reason, str) and r.reason else ""
        typer.echo(f"{r.seq:>5} {r.happened_at:%d/%m/%Y %H:%M:%S} {r.who}: {what} {where}{school_}{file_}{change}{why}")


@app.command()
def builds(
    year: Optional[str] = typer.Option(None, "--year", help="Năm học (để trống: mọi năm)."),
    period: Optional[PeriodOpt] = typer.Option(None, "--period", help="dau_nam hoặc cuoi_nam."),
    data_dir: Path = typer.Option(Path("data"), "--data-dir", help="Thư mục dữ liệu."),
    config: Optional[Path] = typer.Option(None, "--config", help="Tệp cấu hình edustat.yaml."),
) -> None:
    """Danh sách các lần lập biểu đã ghi lại (cùng phiên bản số liệu của từng trường).

    List the recorded form builds (each with the data versions it used), for `edustat rebuild`.

    Example: edustat builds --year 2022-2023 --period dau_nam
    """
    cfg = _config(config, data_dir, need_db=True)
    from edustat import formbuild

    rows = _read_recorded(cfg, "form_build", lambda con: formbuild.builds(con, year, period.value if period else None))
    if rows is None or rows.empty:
        typer.echo("Chưa có lần lập biểu nào được ghi lại.")
        return
    for r in rows.itertuples(index=False):
        scope = f", trường {r.school}" if isinstance(r.school, str) else ""
        cert = ", chỉ trường đã xác nhận" if r.certified_only else ""
        typer.echo(f"{r.build_id}  {r.built_at:%d/%m/%Y %H:%M}  {r.school_year} {_kind(r.period)}  {r.schools} trường{scope}{cert}  "
                   f"{', '.join(r.forms)}  ({r.built_by})")


@app.command()
def rebuild(
    build_id: str = typer.Option(..., "--build", help="Mã lần lập biểu (xem edustat builds); đủ vài ký tự đầu nếu không trùng."),
    output: Path = typer.Option(..., "--output", "-o", help="Thư mục ghi các biểu lập lại (không ghi đè biểu hiện hành)."),
    data_dir: Path = typer.Option(Path("data"), "--data-dir", help="Thư mục dữ liệu."),
    config: Optional[Path] = typer.Option(None, "--config", help="Tệp cấu hình edustat.yaml."),
) -> None:
    """Lập lại đúng từng ô các biểu của một lần lập biểu đã ghi, từ phiên bản số liệu nó đã dùng.

    Rebuild the forms of a recorded build exactly, from the data versions it used.

    Example: edustat rebuild --build 20221101T080000-ab12cd -o data/curated/rebuilt
    """
    cfg = _config(config, data_dir, need_db=True)
    from edustat import formbuild
    from edustat.store import session

    if output.resolve() == cfg.reports_dir.resolve() or cfg.reports_dir.resolve().is_relative_to(output.resolve()):
        fail(f"thư mục '{output}' chứa các biểu hiện hành; chọn thư mục khác")
    log_path = _log_to_file(cfg.data_dir)
    with _writer(cfg):
        try:
            with session(cfg.db_path, cfg.private_group) as con:
                out = formbuild.rebuild(con, cfg, build_id, output)
        except formbuild.RebuildError as exc:
            fail(str(exc))
        except Exception as exc:  # noqa: BLE001
            _run_failed(exc, log_path, "việc lập lại biểu")
    if not out["identical"]:
        fail(f"đã lập lại {len(out['files'])} tệp biểu vào {output} nhưng số liệu KHÔNG khớp với lần lập biểu "
             f"{out['build_id']} (dữ liệu đã lưu bị thay đổi?)", code=1)
    typer.echo(f"Đã lập lại {len(out['files'])} tệp biểu ({', '.join(out['forms'])}) của lần lập biểu {out['build_id']} "
               f"vào {output}; số liệu khớp từng ô với lần lập biểu gốc.")


def _sql_print(con, query: str, csv: bool) -> None:
    rel = con.sql(query)
    if rel is None:  # a statement without a result
        return
    if csv:
        import csv as csv_mod

        w = csv_mod.writer(sys.stdout)
        w.writerow(rel.columns)
        for row in rel.fetchall():
            w.writerow(["" if v is None else v for v in row])
    else:
        rel.show(max_rows=200, max_width=200)


@app.command()
def sql(
    query: Optional[List[str]] = typer.Option(None, "--command", "-c", help="Câu lệnh SQL chạy rồi thoát; lặp lại cho nhiều câu."),
    snapshot: Path = typer.Option(Path("data/curated/published/edustat.duckdb"), "--snapshot",
                                  help="Tệp bản sao cho phân tích (edustat.duckdb)."),
    csv: bool = typer.Option(False, "--csv", help="In kết quả dạng CSV (cho Excel hoặc công cụ khác)."),
) -> None:
    """Query the analysts' snapshot read-only: `-c "select …"` or an interactive shell.

    In the shell: end a statement with ';'. `.tables` lists tables and views, `.schema NAME` shows
    a table's columns and their meaning, `.quit` leaves. The data dictionary is DATA_DICTIONARY.md
    beside the snapshot.
    Example: edustat sql -c "select sex_label, count(*) from v_learner group by 1"
    """
    import duckdb

    if not snapshot.is_file():
        fail(f"không tìm thấy bản sao cho phân tích '{snapshot}'; chạy một đợt thu thập trước (edustat run)")
    try:
        con = duckdb.connect(str(snapshot), read_only=True)
    except duckdb.Error as exc:
        fail(f"không mở được '{snapshot}': {str(exc).splitlines()[0][:200]}")
    shortcuts = {
        ".tables": "select name, kind, comment from (select table_name as name, 'table' as kind, comment from duckdb_tables() "
                   "union all select view_name, 'view', comment from duckdb_views() where not internal) order by kind desc, name",
    }
    try:
        if query:
            for q in query:
                try:
                    _sql_print(con, shortcuts.get(q.strip(), q), csv)
                except duckdb.Error as exc:
                    fail(str(exc).splitlines()[0][:300], code=1)
            return
        typer.echo(f"edustat sql — {snapshot} (chỉ đọc / read-only). '.tables', '.schema TÊN', '.quit'; kết thúc câu lệnh bằng ';'.")
        buf = ""
        while True:
            try:
                line = input("sql> " if not buf else "...> ")
            except EOFError:
                break
            cmd = line.strip()
            if not buf and cmd in (".quit", ".exit", r"\q"):
                break
            if not buf and cmd.startswith(".schema"):
                name = cmd[len(".schema"):].strip()
                cmd_sql = ("select column_name, data_type, comment from duckdb_columns() where table_name = "
                           + "'" + name.replace("'", "''") + "' order by column_index")
                _safe_sql(con, cmd_sql, csv)
                continue
            if not buf and cmd in shortcuts:
                _safe_sql(con, shortcuts[cmd], csv)
                continue
            buf += line + "\n"
            if cmd.endswith(";"):
                _safe_sql(con, buf, csv)
                buf = ""
    finally:
        con.close()


def _safe_sql(con, query: str, csv: bool) -> None:
    import duckdb

    try:
        _sql_print(con, query, csv)
    except duckdb.Error as exc:
        typer.echo(f"Lỗi: {str(exc).splitlines()[0][:300]}", err=True)


def _wait_healthy(url: str, seconds: float) -> bool:
    from edustat.procs import wait_healthy

    return wait_healthy(url, seconds)


@app.command()
def serve(
    data_dir: Path = typer.Option(Path("data"), "--data-dir", help="Thư mục dữ liệu."),
    config: Optional[Path] = typer.Option(None, "--config", help="Tệp cấu hình edustat.yaml (lịch chạy: schedules)."),
    cold_start: bool = typer.Option(False, "--cold-start", help="Mỗi lần chạy tự nạp lại thư viện (chậm hơn vài giây; để dò lỗi)."),
) -> None:
    """Serve the collection and report flows as Prefect deployments with their schedules.

    Needs a running Prefect server (PREFECT_API_URL=http://127.0.0.1:4200/api); `edustat server` starts both.
    Example: edustat serve --data-dir data
    """
    import os

    if not os.environ.get("PREFECT_API_URL"):
        fail("chưa có máy chủ Prefect: đặt PREFECT_API_URL (ví dụ http://127.0.0.1:4200/api) hoặc dùng 'edustat server'")
    _prefect_env()
    cfg = _config(config, data_dir)
    from flows.deploy import serve as serve_flows

    serve_flows(cfg, str(data_dir.resolve()), str(config.resolve()) if config else None, warm=not cold_start)


@app.command()
def server(
    port: int = typer.Option(4200, "--port", help="Cổng của máy chủ Prefect trên máy này."),
    data_dir: Path = typer.Option(Path("data"), "--data-dir", help="Thư mục dữ liệu."),
    config: Optional[Path] = typer.Option(None, "--config", help="Tệp cấu hình edustat.yaml."),
    cold_start: bool = typer.Option(False, "--cold-start", help="Mỗi lần chạy tự nạp lại thư viện (chậm hơn vài giây; để dò lỗi)."),
) -> None:
    """Start a Prefect server with its dashboard on localhost, then serve the edustat flows.

    Example: edustat server --port 4200   (then open http://127.0.0.1:4200)
    """
    import os
    import subprocess
    import sys

    _prefect_env()
    url = f"http://127.0.0.1:{port}/api"
    env = dict(os.environ, PREFECT_SERVER_ANALYTICS_ENABLED="false")
    os.environ["PREFECT_API_URL"] = url  # Prefect reads its settings once, at import (just below)
    from prefect.settings import get_current_settings

    from edustat.prefect_ui import ui_static_env

    def ui_warning(detail: str) -> None:
        typer.echo("Lưu ý: sơ đồ lần chạy (run graph) của giao diện Prefect sẽ mất dấu tiếng Việt trong tên bước "
                   f"(danh sách bước và nhật ký vẫn đủ dấu). Chi tiết kỹ thuật: {detail}", err=True)

    env.update(ui_static_env(get_current_settings().home, ui_warning))
    # the server in a session of its own: Ctrl+C reaches this process only, whose runner then
    # pauses the schedules through the server (pause_on_shutdown) before the `finally` below
    # stops it; in the terminal's group the server shut down first and the runner retried
    # against a closed connection for minutes
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                             "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        if not _wait_healthy(url, 120):
            fail(f"máy chủ Prefect không khởi động được trên cổng {port}")
        typer.echo(f"Máy chủ Prefect: http://127.0.0.1:{port}  (Deployments → edustat-collection/thu-thap → Run → Custom run)")
        typer.echo("Nhập năm học (vd 2022-2023), kỳ (dau_nam / cuoi_nam) và thư mục tệp nộp; kết quả ở Runs → Artifacts.")
        typer.echo("Nhấn Ctrl+C để dừng.")
        cfg = _config(config, data_dir)
        from flows.deploy import serve as serve_flows

        serve_flows(cfg, str(data_dir.resolve()), str(config.resolve()) if config else None, warm=not cold_start)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@app.command()
def codelists(
    source: Path = typer.Option(
        Path("../shared/reference/moet/mo-ta-du-lieu-dau-nam_2020_sync-spec.xlsx"), "--source",
        help="Tệp đặc tả đồng bộ dữ liệu của Bộ (xlsx).",
    ),
) -> None:
    """Re-extract the official code lists from the ministry's data-sync specification.

    Example: edustat codelists --source ../shared/reference/moet/mo-ta-du-lieu-dau-nam_2020_sync-spec.xlsx
    """
    if not source.exists():
        fail(f"không tìm thấy tệp đặc tả {source}")
    from schemas.extract_codelists import OUT_DIR, extract

    m = extract(source)
    typer.echo(f"Đã trích {len(m['lists'])} danh mục → {OUT_DIR}")


@app.command()
def expectations() -> None:
    """Regenerate the Great Expectations suites in expectations/ from schemas/rules.yaml.

    Example: edustat expectations
    """
    from edustat.expectations import write_suites

    paths = write_suites()
    typer.echo(f"Đã ghi {len(paths)} bộ kiểm tra GX → {paths[0].parent}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("Đã dừng.", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
