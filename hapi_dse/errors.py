"""The one exception family of hapi.

The CLI maps every :class:`HapiError` to one line on stderr and exit status 2; anything else
is a bug and keeps its traceback. Messages state the rule, the value and the fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class HapiError(Exception):
    """A user-facing error: bad input, a missing or corrupt file, an unknown name.

    Its text is one line: a message built from a library's multi-line error (a YAML parser's,
    onnxruntime's) has its lines joined, so the CLI's ``hapi: error: ...`` stays one line.
    """

    def __str__(self) -> str:
        # a lone surrogate read from a file (JSON's "\\ud800") is written as \\ud800: printing
        # it raw would raise UnicodeEncodeError instead of the one line
        return one_line(super().__str__()).encode("utf-8", "backslashreplace").decode("utf-8")


def one_line(text: str) -> str:
    """``text`` with its lines stripped and joined by ``" "`` (empty lines dropped); a line
    is what ``str.splitlines`` cuts at (also \\v, \\f, \\x1c-\\x1e, \\x85, \\u2028, \\u2029, which a
    name read from a file may hold)."""
    parts = text.splitlines()
    if parts == [text]:
        return text
    return " ".join(part.strip() for part in parts if part.strip())


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first non-empty line of ``error``'s text, at most ``limit`` characters; its type
    name when the text is empty (a library's exception quoted in a one-line message)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    first = lines[0]
    return first if len(first) <= limit else first[: limit - 3] + "..."


def interrupt_in(error: BaseException) -> KeyboardInterrupt | None:
    """The interrupt (Ctrl-C, or SIGTERM raised as one) that ``error`` was raised while
    handling, if any: a library that catches every exception (torch's ONNX exporter does)
    turns an interrupt into its own error, which must still end the command as an interrupt.
    Follows ``__cause__`` and ``__context__`` (kept by ``raise ... from None`` too)."""
    todo: list[BaseException] = [error]
    seen: set[int] = set()
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, KeyboardInterrupt):
            return e
        todo += [c for c in (e.__cause__, e.__context__) if c is not None]
    return None


class UsageError(HapiError):
    """A malformed option value or an unknown name."""


class SettingError(UsageError):
    """A bad value of one setting, named as the library names it: the field of a config
    dataclass or a keyword argument (``trials must be >= 1, but got 0``). The command line
    names the flag instead (``--trials must be >= 1, but got 0``): the CLI calls
    :meth:`as_flag` with the flags of the command that ran.

    The text is ``FIELD MESSAGE`` (``FIELD: MESSAGE`` when the message starts with ``:``). A
    message that names other settings (a hint: "pass
    {overwrite} to replace it") lists them in ``refs`` and writes each as ``{name}``; they
    are named like the field: ``overwrite`` from the library, ``--overwrite`` from the CLI.
    """

    def __init__(self, field: str, message: str, refs: tuple[str, ...] = ()) -> None:
        self.field = field
        self.message = message
        self.refs = refs
        super().__init__(self._render({name: name for name in (field, *refs)}))

    def _render(self, names: dict[str, str]) -> str:
        text = self.message
        for ref in self.refs:
            text = text.replace("{" + ref + "}", names[ref])
        gap = "" if text[:1] in ":,;" else " "
        return f"{names[self.field]}{gap}{text}"

    def as_flag(self, flags: dict[str, str]) -> SettingError:
        """The same error naming command-line flags: ``flags`` maps a field to its flag
        (``{"trials": "--trials"}``); a field without one keeps its name."""
        names = {n: flags.get(n, n) for n in (self.field, *self.refs)}
        out = SettingError(self.field, self.message, self.refs)
        out.args = (self._render(names),)
        return out


class DataError(HapiError):
    """A dataset file that is missing, truncated or malformed."""


class ArtefactError(HapiError):
    """A run directory, profile table or result file that is missing, corrupt or foreign."""


def unknown_name(kind: str, name: str, known: Iterable[str]) -> UsageError:
    """Build the error for an unknown registry name, listing the known ones and the nearest."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return UsageError(f"unknown {kind} {name!r}: expected one of {', '.join(known)}{hint}")
