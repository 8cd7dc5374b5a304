"""COPY text formatting of generated values (escapes, timestamps, json, arrays, money, images)."""

from __future__ import annotations

import base64
import json
import random
import struct
import uuid
import zlib
from collections.abc import Iterable
from datetime import date, datetime, timedelta

N = "\\N"  # COPY's NULL
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})

EPOCH = datetime(2020, 1, 1)
BASE = datetime(2025, 6, 1)  # "today" of the generated data: fixed, so output never depends on the clock


def _secs(d: datetime) -> int:
    return int((d - EPOCH).total_seconds())


END = _secs(BASE)
_DAYS: list[str] = [(date(2020, 1, 1) + timedelta(days=d)).isoformat() for d in range(366 * 30)]
HOUR = 3600
DAY = 86400


def _e(value: str) -> str:
    return value.translate(_ESCAPES)


def _ts(t: int) -> str:
    d, s = divmod(t, DAY)
    h, s = divmod(s, HOUR)
    m, s = divmod(s, 60)
    return f"{_DAYS[d]} {h:02d}:{m:02d}:{s:02d}"


def _json(value: object) -> str:
    return _e(json.dumps(value, ensure_ascii=False))


def _text_array(values: Iterable[str]) -> str:
    quoted = ('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return _e("{" + ",".join(quoted) + "}")


def _euro(cents: int) -> str:
    """German money text as the app stores it, e.g. '149,90'."""
    return f"{cents // 100},{cents % 100:02d}"


def _b(flag: bool) -> str:
    return "t" if flag else "f"


def _opt(value: int | None) -> str:
    return N if value is None else str(value)


def _png(rng: random.Random, width: int = 48, height: int = 16) -> bytes:
    """A real (tiny, 1-bit) PNG of a scribbled signature, as a signature pad produces."""
    rows = [bytearray(b"\xff" * (width // 8)) for _ in range(height)]
    y = rng.randrange(height)
    for x in range(width):
        y = max(0, min(height - 1, y + rng.choice((-2, -1, 0, 1, 2))))
        rows[y][x // 8] &= ~(0x80 >> (x % 8)) & 0xFF
    raw = b"".join(b"\x00" + bytes(r) for r in rows)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def _signature(rng: random.Random) -> str:
    return "data:image/png;base64," + base64.b64encode(_png(rng)).decode("ascii")


def _hex(rng: random.Random, chars: int) -> str:
    return f"{rng.getrandbits(chars * 4):0{chars}x}"


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _letters(n: int) -> str:
    """Order-code prefix of a shop: distinct shop numbers give distinct prefixes, so codes stay unique."""
    alphabet = "ABCDEFGHJKLMNPRSTUVWXYZ"
    n += len(alphabet) * 8  # at least two letters, and shop 1 does not start at "AA"
    out = ""
    while n:
        n, r = divmod(n, len(alphabet))
        out = alphabet[r] + out
    return out
