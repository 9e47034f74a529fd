"""The one error type users see: a single line naming what is wrong and where."""


class AimccError(Exception):
    """A user-facing error; the CLI prints ``aimcc: error: <message>`` and exits non-zero."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, for one-line reports of library errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
