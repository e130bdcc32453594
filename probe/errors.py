"""The one exception type users see: a single line naming the problem and the fix."""


class ProbeError(Exception):
    """A user-facing error. The CLI prints ``error: <message>`` and exits with status 2."""
