"""`DashboardSpec`: where `probe dashboard` (and an experiment's ``[dashboard]`` table) serves."""

from __future__ import annotations

from dataclasses import dataclass

from probe.settings import setting


@dataclass(frozen=True)
class DashboardSpec:
    """The read-only Dash app's folder and address."""

    artifacts: str | None = setting(None, "Artifacts folder to browse; nothing outside it is read",
                                    default_text="$PROBE_ARTIFACTS or ./artifacts")
    host: str = setting("127.0.0.1", "Interface to bind; 127.0.0.1 keeps it local to this machine")
    port: int = setting(8050, "Port to serve on", min=1, max=65535)
    debug: bool = setting(False, "Dash debug mode (reloader, tracebacks in the page): local use only")
