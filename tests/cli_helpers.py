"""Run the `probe` command line in the test process: no new interpreter, no second torch import."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from unittest import mock

from probe.cli import main


@dataclass(frozen=True)
class CliResult:
    """What `probe <args>` did: its exit status and what it wrote."""

    code: int
    stdout: str
    stderr: str

    def __iter__(self):
        """``code, stdout, stderr = run_cli(...)`` unpacks like a tuple."""
        return iter((self.code, self.stdout, self.stderr))


def run_cli(*args: str, env: Mapping[str, str] | None = None) -> CliResult:
    """``probe *args`` through :func:`probe.cli.main`, as the console script runs it.

    ``env`` is laid over ``os.environ`` for the call; the environment (including what the CLI
    itself sets) is restored afterwards. A normal return is exit status 0; ``sys.exit("message")``
    is status 1 with the message on stderr, as in a shell.
    """
    out, err = io.StringIO(), io.StringIO()
    with (mock.patch.dict(os.environ, dict(env or {})), mock.patch.object(sys, "argv", ["probe", *args]),
          contextlib.redirect_stdout(out), contextlib.redirect_stderr(err)):
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
            if not isinstance(exc.code, int | None):
                print(exc.code, file=sys.stderr)
    return CliResult(code, out.getvalue(), err.getvalue())
