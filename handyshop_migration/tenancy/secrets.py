"""Keeping secrets out of logs, reprs, metadata and exceptions."""

from __future__ import annotations

import re
from urllib.parse import quote

_MASK = "***"


class Secret:
    """A string that shows itself only through `reveal()`.

    `str()`, `repr()` and f-strings print a mask, so a Secret can be passed around (in dataclasses,
    exceptions, Dagster resources) without leaking by accident.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{_MASK}')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> object:
        raise TypeError("a Secret cannot be pickled; pass the name of its environment variable instead")


def database_url(host: str, port: int, user: str, password: Secret | None, dbname: str) -> Secret:
    """A postgresql:// URL with every part percent-encoded (passwords may hold '@', '/', '#')."""
    auth = quote(user, safe="")
    if password is not None:
        auth += ":" + quote(password.reveal(), safe="")
    return Secret(f"postgresql://{auth}@{host}:{port}/{quote(dbname, safe='')}")


_URL_PASSWORD = re.compile(r"(postgres(?:ql)?(?:\+\w+)?://[^:/@\s]*:)([^@\s]*)(@)")
_KV_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redact(text: str) -> str:
    """Mask passwords in URLs and conninfo strings inside free text (error messages from drivers)."""
    text = _URL_PASSWORD.sub(lambda m: m.group(1) + _MASK + m.group(3), text)
    return _KV_PASSWORD.sub(lambda m: m.group(1) + _MASK, text)


def one_line(error: BaseException | str) -> str:
    """A driver's message on one line (libpq puts its hint on a second) with passwords masked."""
    return redact(" ".join(str(error).split()))
