"""Capture: record attention and activations of a variant on knowledge probes into a zarr store."""

from probe.capture.recorder import CaptureView
from probe.capture.spec import CaptureSpec
from probe.capture.store import list_runs, open_run

__all__ = ["CaptureSpec", "CaptureView", "capture", "list_runs", "open_run"]


def capture(*args, **kwargs):
    """See :func:`probe.capture.run.capture` (imported lazily: it loads models)."""
    from probe.capture.run import capture as run

    return run(*args, **kwargs)
