"""One typed config that rejects unknown keys. Every path derives from one data root.

`edustat.yaml` (optional, at the data root's parent or given with --config):

    load_policy: reject_school        # or load_valid_rows: load a school's rows without errors
    severity: {student_age_for_grade: notice}   # any rule id → error / warning / notice
    expected_schools: [74718001, …]    # else: the schools of the previous collection
    pseudonymise_published: true
    workers: 2
    task_runner: local                 # or dask (prefect-dask), with dask_address: tcp://host:8786
    feedback_engine: patch             # the school's .xlsx patched in place (formulas, formats
                                       # kept; the fast copy for files it cannot patch); fast: a
                                       # values-only copy; faithful: through openpyxl, slowest
    salt_file: /etc/edustat/pseudonym_salt   # the pseudonymisation salt; never inside data_dir
    max_file_mb: 200                   # per submitted file, checked before it is opened
    max_uncompressed_mb: 100           # sum of the zip's declared sizes, checked before inflating
    max_sheet_rows: 35000              # rows holding values in any one sheet, counted streaming

    private_group: null                # files holding personal data (the DuckDB, feedback
                                       # workbooks) are 0600; with a group name they are 0640
                                       # and belong to that group (e.g. the office's staff)
    lock_wait_seconds: 0               # a second run on the same data dir waits this long for
                                       # the first to finish, then refuses (0: refuse at once)
    require_certification: false       # true: a submission without the principal's confirmation
                                       # (Truong: Hiệu trưởng xác nhận = Có, họ tên, ngày) is rejected
    forms_certified_only: false        # true: the forms count only certified schools
    swing_thresholds: {learners: 0.2, classes: 0.3, staff: 0.2}   # year-over-year change per
                                       # school beyond which the school must confirm (a warning,
                                       # rules school_*_swing); null switches one off
    incremental: true                  # reuse earlier runs' results for unchanged files
                                       # (<data>/cache; see edustat.incremental)
    feedback_full_copy: false          # true: a school with no error/warning also gets a copy
                                       # of its workbook (default: a one-sheet receipt)

Limits (defaults = the largest real school × 10): the largest school the regulations allow is a
combined TH+THCS school of 30 classes × 35 + 45 classes × 45 = 3,075 learners (regulations.md
§4.2, TT 28/2020 and TT 32/2020 Art. 16; TT 13/2020 45 classes max) plus ~250 staff: ×10 ≈ 33,000
rows → 35,000. A learner row of a wide ministry export is ≤ 2 KB of sheet XML (our template
measured 0.86 KB/row: a 1,610-learner THCS school inflates to 1.5 MB), so that school is ≤ 7 MB
inflated → ×10 ≈ 70 MB → 100 MB. Files: a 3,075-learner workbook is ≤ 2 MB zipped; the 200 MB
cap is kept from before (a file this size is refused before any byte is inflated).

The salt: `salt_file`, else the environment variable EDUSTAT_SALT_FILE, else
`<data_dir's parent>/.<data_dir name>.pseudonym_salt` — beside the data tree, not in it, so a
copy of the data folder (or of curated/) never carries the key that reverses the pseudonyms.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

LOAD_POLICIES = ("reject_school", "load_valid_rows")
FEEDBACK_ENGINES = ("patch", "fast", "faithful")


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Config:
    data_dir: Path = Path("data")
    load_policy: Literal["reject_school", "load_valid_rows"] = "reject_school"
    severity: dict[str, str] = field(default_factory=dict)
    expected_schools: tuple[str, ...] | None = None
    pseudonymise_published: bool = True
    workers: int = 2
    deadlines: dict[str, str] = field(default_factory=dict)  # "2022-2023/dau_nam": "2022-10-30"
    schedules: dict[str, object] = field(default_factory=dict)
    task_runner: Literal["local", "dask"] = "local"  # dask: reading fans out over a Dask cluster
    dask_address: str | None = None  # tcp://scheduler:8786; None = a local cluster of `workers`
    # fast: a values-only copy of the school's sheets (fastexcel + xlsxwriter); faithful: its own
    # workbook through openpyxl, formulas and formats kept (see edustat.feedback)
    # patch (default): the school's own .xlsx, PhanHoi, fills and comments added at zip/XML level
    # (edustat.feedback_patch), the fast copy for any file it does not handle
    feedback_engine: Literal["patch", "fast", "faithful"] = "patch"
    salt_file: Path | None = None  # None: $EDUSTAT_SALT_FILE, else beside the data dir (see above)
    max_file_mb: int = 200
    max_uncompressed_mb: int = 100
    max_sheet_rows: int = 35_000
    private_group: str | None = None  # group of the personal-data files (0640); None: 0600
    lock_wait_seconds: float = 0.0  # how long a second writer waits for the data dir's lock
    # issue 11: the principal's confirmation (edustat.certify); when required an uncertified
    # submission is rejected; forms may be limited to certified schools
    require_certification: bool = False
    forms_certified_only: bool = False
    # year-over-year swing per school beyond which the school must confirm (edustat.periods);
    # a share of the previous year's figure; null switches an indicator off
    swing_thresholds: dict[str, float | None] = field(
        default_factory=lambda: {"learners": 0.20, "classes": 0.30, "staff": 0.20})
    # issue 12: reuse what earlier runs computed for unchanged files (<data>/cache, see
    # edustat.incremental); false: every run reads, validates and renders everything again
    incremental: bool = True
    # a school with no error and no warning gets a receipt (one PhanHoi sheet) instead of a
    # copy of its workbook; true: the full copy as for every other school
    feedback_full_copy: bool = False

    @property
    def raw_dir(self) -> Path:
        return self.data_dir / "raw"

    @property
    def curated_dir(self) -> Path:
        return self.data_dir / "curated"

    @property
    def db_path(self) -> Path:
        return self.curated_dir / "edustat.duckdb"

    @property
    def published_dir(self) -> Path:
        return self.curated_dir / "published"

    @property
    def feedback_dir(self) -> Path:
        return self.curated_dir / "feedback"

    @property
    def reports_dir(self) -> Path:
        return self.curated_dir / "reports"

    @property
    def salt_path(self) -> Path:
        """Where the pseudonymisation salt lives: outside the data tree (see the module doc)."""
        if self.salt_file is not None:
            return Path(self.salt_file)
        if os.environ.get("EDUSTAT_SALT_FILE"):
            return Path(os.environ["EDUSTAT_SALT_FILE"])
        root = self.data_dir.resolve()
        return root.parent / f".{root.name}.pseudonym_salt"

    @property
    def legacy_salt_path(self) -> Path:
        """Where releases before issue 9 kept the salt (inside curated/): moved out on first use."""
        return self.curated_dir / ".pseudonym_salt"

    @property
    def read_limits(self):
        from edustat.reader import Limits

        return Limits(max_file_bytes=self.max_file_mb << 20, max_uncompressed_bytes=self.max_uncompressed_mb << 20,
                      max_sheet_rows=self.max_sheet_rows)

    def quarantine_dir(self, school_year: str, period: str) -> Path:
        return self.raw_dir / school_year / period / "_quarantine"


def _swing_thresholds(raw: object) -> dict[str, float | None]:
    """The configured swing thresholds over the defaults: keys learners / classes / staff, each a
    share (0.2 = ±20 %) or null (not checked)."""
    out: dict[str, float | None] = {"learners": 0.20, "classes": 0.30, "staff": 0.20}
    if raw is None:
        return out
    if not isinstance(raw, dict):
        raise ConfigError("swing_thresholds phải là một bảng: learners / classes / staff: tỉ lệ (ví dụ 0.2)")
    unknown = set(raw) - set(out)
    if unknown:
        raise ConfigError(f"swing_thresholds: khóa không hợp lệ {', '.join(sorted(map(str, unknown)))} "
                          "(dùng learners, classes, staff)")
    for key, value in raw.items():
        if value is None:
            out[key] = None
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ConfigError(f"swing_thresholds.{key} phải là một tỉ lệ dương (ví dụ 0.2 cho ±20 %) hoặc null")
        out[key] = float(value)
    return out


def load_config(path: Path | None = None, data_dir: Path | None = None) -> Config:
    """Read the YAML config (unknown keys are an error), then apply `data_dir`."""
    values: dict = {}
    if path is None and os.environ.get("EDUSTAT_CONFIG"):
        path = Path(os.environ["EDUSTAT_CONFIG"])
    if path is not None:
        if not Path(path).exists():
            raise ConfigError(f"không tìm thấy tệp cấu hình {path}")
        values = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"tệp cấu hình {path} phải là một bảng khóa: giá trị")
    known = {f.name for f in dataclasses.fields(Config)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"khóa cấu hình không hợp lệ: {', '.join(sorted(unknown))}")
    if "data_dir" in values:
        values["data_dir"] = Path(values["data_dir"])
    if data_dir is not None:
        values["data_dir"] = Path(data_dir)
    if values.get("load_policy", "reject_school") not in LOAD_POLICIES:
        raise ConfigError(f"load_policy phải là một trong {LOAD_POLICIES}")
    if values.get("task_runner", "local") not in ("local", "dask"):
        raise ConfigError("task_runner phải là 'local' hoặc 'dask'")
    if values.get("feedback_engine", "patch") not in FEEDBACK_ENGINES:
        raise ConfigError(f"feedback_engine phải là một trong {FEEDBACK_ENGINES}")
    if values.get("salt_file") is not None:
        values["salt_file"] = Path(values["salt_file"])
    for key in ("max_file_mb", "max_uncompressed_mb", "max_sheet_rows"):
        if key in values and (not isinstance(values[key], int) or values[key] <= 0):
            raise ConfigError(f"{key} phải là số nguyên dương")
    if values.get("private_group") is not None:
        import grp

        group = str(values["private_group"])
        try:
            grp.getgrgid(int(group)) if group.isdigit() else grp.getgrnam(group)
        except (KeyError, OverflowError):
            raise ConfigError(f"private_group: không có nhóm '{group}' trên máy này") from None
        values["private_group"] = group
    if "lock_wait_seconds" in values:
        try:
            values["lock_wait_seconds"] = float(values["lock_wait_seconds"])
        except (TypeError, ValueError):
            raise ConfigError("lock_wait_seconds phải là một số giây") from None
        if values["lock_wait_seconds"] < 0:
            raise ConfigError("lock_wait_seconds phải là một số giây không âm")
    for key in ("require_certification", "forms_certified_only"):
        if key in values and not isinstance(values[key], bool):
            raise ConfigError(f"{key} phải là true hoặc false")
    if "swing_thresholds" in values:
        values["swing_thresholds"] = _swing_thresholds(values["swing_thresholds"])
    for key in ("incremental", "feedback_full_copy"):
        if key in values and not isinstance(values[key], bool):
            raise ConfigError(f"{key} phải là true hoặc false")
    if values.get("expected_schools") is not None:
        values["expected_schools"] = tuple(str(s) for s in values["expected_schools"])
    cfg = Config(**values)
    salt = cfg.salt_path.resolve()
    if salt.is_relative_to(cfg.data_dir.resolve()):
        raise ConfigError(f"tệp khóa ẩn danh (salt) {cfg.salt_path} không được nằm trong thư mục dữ liệu {cfg.data_dir}")
    if cfg.severity:
        from schemas.rules import load_rules

        try:
            load_rules(cfg.severity)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
    return cfg
