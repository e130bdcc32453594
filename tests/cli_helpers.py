"""Run the `probe` command line in-process, as the console script does (``probe.cli.main``)."""

from __future__ import annotations

import contextlib
import io
import sys
from unittest import mock


def run_cli(*args: str) -> tuple[int, str, str]:
    """``probe ARGS...`` through :func:`probe.cli.main`: ``(exit code, stdout, stderr)``."""
    from probe.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    code = 0
    with mock.patch.object(sys, "argv", ["probe", *args]), contextlib.redirect_stdout(stdout), \
            contextlib.redirect_stderr(stderr):
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code, stdout.getvalue(), stderr.getvalue()
