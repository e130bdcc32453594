"""`DashboardSpec`: where `probe dashboard` (and an experiment's ``[dashboard]`` table) serves; `LiveDashboard`:
the dashboard served beside a running experiment (`probe run`, `probe demo`)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from waitress import wasyncore

from probe.settings import setting


@dataclass(frozen=True)
class DashboardSpec:
    """The read-only Dash app's folder and address."""

    artifacts: str | None = setting(None, "Artifacts folder to browse; nothing outside it is read",
                                    default_text="$PROBE_ARTIFACTS or ./artifacts")
    host: str = setting("127.0.0.1", "Interface to bind; 127.0.0.1 keeps it local to this machine")
    port: int = setting(8050, "Port to serve on", min=1, max=65535)
    debug: bool = setting(False, "Dash debug mode (reloader, tracebacks in the page): local use only")


class LiveDashboard:
    """The dashboard on waitress in a thread of this process, started before an experiment's first stage.

    The study runs in the main thread; the server's thread only reads the store (the pages refresh as stage
    states and artifacts change). :meth:`close` stops it from any thread: the listening socket and every open
    connection are closed inside the server's own loop (its trigger), which then ends.
    """

    def __init__(self, root: str | Path, host: str, port: int) -> None:
        from dashboards.app import make_server  # lazily, for start-up time (imports dash)

        logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "task queue depth" lines among the stage bars
        self.server = make_server(root, host=host, port=port)
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.server.effective_port}/"
        self.thread = threading.Thread(target=self.server.run, name="probe-dashboard", daemon=True)

    def start(self) -> LiveDashboard:
        self.thread.start()
        return self

    def wait(self) -> None:
        """Serve until Ctrl-C (the thread ends only when closed)."""
        while self.thread.is_alive():
            self.thread.join(0.5)

    def close(self) -> None:
        if self.thread.is_alive():
            self.server.trigger.pull_trigger(lambda: wasyncore.close_all(self.server._map))
            self.thread.join(5)
        self.server.task_dispatcher.shutdown(timeout=2)
