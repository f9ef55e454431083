"""`edustat <command>` run in the test's own process: typer's CliRunner on `edustat.cli.app`.

Why: a subprocess pays a Python start and edustat's imports (3-5 s on 2 busy cores) for each
command. The same typer app in this process parses the same arguments, runs the same command
code, exits with the same code and writes the same stdout and stderr; an exception escaping the
command (a traceback in a real process) is raised here, so the test fails as it would.

What it does not prove is the console script itself and what a fresh interpreter prints outside
the command (an import-time warning on stderr): each test file using it keeps at least one real
`edustat` subprocess of the same kind of command (see each caller).
"""
from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from pathlib import Path


@contextlib.contextmanager
def _logging_restored():
    """A command may set up logging as the `edustat` process does (cli._log_to_file: its file
    handler, console handlers removed, warnings captured): this process's setup is put back."""
    def loggers():
        return [logging.getLogger()] + [lg for lg in logging.Logger.manager.loggerDict.values()
                                        if isinstance(lg, logging.Logger)]

    saved = {lg: (list(lg.handlers), lg.level) for lg in loggers()}
    raise_exceptions, captured = logging.raiseExceptions, logging._warnings_showwarning is not None
    try:
        yield
    finally:
        for lg in loggers():
            handlers, level = saved.get(lg, ([], logging.NOTSET))
            for h in lg.handlers:
                if h not in handlers:
                    h.close()
            lg.handlers[:] = handlers
            lg.setLevel(level)
        logging.raiseExceptions = raise_exceptions
        logging.captureWarnings(captured)


def edustat(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`edustat *args` (in `cwd`, for relative paths such as `--data-dir data`) in this process;
    the result as subprocess.run's, so a test reads it the same way."""
    from typer.testing import CliRunner

    from edustat.cli import app

    here = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with _logging_restored():
            r = CliRunner().invoke(app, list(args))
    finally:
        os.chdir(here)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return subprocess.CompletedProcess(["edustat", *args], r.exit_code, r.stdout, r.stderr)
