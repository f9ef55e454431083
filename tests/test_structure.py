"""House rules that keep the codebase honest."""
import ast
from pathlib import Path

from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN_IN_TRANSFORMS = {"openpyxl", "duckdb", "prefect", "fastexcel", "xlsxwriter", "great_expectations", "edustat", "flows"}


def test_transforms_are_pure():
    for path in (ROOT / "transforms").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for n in names:
                assert n.split(".")[0] not in FORBIDDEN_IN_TRANSFORMS, f"{path.name} imports {n}"
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "open":
                raise AssertionError(f"{path.name} opens a file")


def test_every_command_has_help_with_an_example():
    from edustat.cli import app

    runner = CliRunner()
    top = runner.invoke(app, ["--help"])
    assert top.exit_code == 0
    commands = [c.name or c.callback.__name__ for c in app.registered_commands]
    assert commands
    for name in commands:
        res = runner.invoke(app, [name, "--help"])
        assert res.exit_code == 0, name
        assert "Example: edustat " + name in " ".join(res.output.split()), name


def test_cli_errors_are_one_vietnamese_line(tmp_path):
    from edustat.cli import app

    res = CliRunner().invoke(app, ["template", "--level", "TH", "--year", "2022", "--period", "dau_nam", "-o", str(tmp_path / "x.xlsx")])
    assert res.exit_code == 2
    lines = [l for l in res.output.splitlines() if l.strip()]
    assert lines == ["Lỗi: năm học '2022' không hợp lệ; ví dụ đúng: 2022-2023"]
