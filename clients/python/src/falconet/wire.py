"""The wire format, standard msgpack only: a frame is a msgpack array of messages, each a map
with a type field ``t``. A client that does not announce the ``records`` capability receives no
extension types, so the decoder here refuses any (``ext_hook`` raises)."""
from __future__ import annotations

import re
import struct
from typing import Any, Iterable, Iterator, Sequence
from urllib.parse import urlsplit

import msgpack

from .errors import FalconetError

__all__ = ["PROTOCOL_VERSION", "MAX_MESSAGES_PER_FRAME", "pack", "frames", "decode", "dispatcher_url"]

#: The protocol version this client speaks (checked by the dispatcher at hello).
PROTOCOL_VERSION = 1
#: Messages per frame at most (as the dispatcher's own encoder does).
MAX_MESSAGES_PER_FRAME = 4096
#: Bytes an array header takes at most (0xdd + 4 bytes).
FRAME_HEADER_MAX = 5


def pack(message: Any) -> bytes:
    """One message as standard msgpack (str as str, bytes as bin, no extension types)."""
    return msgpack.packb(message, use_bin_type=True)


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 0x10000:
        return b"\xdc" + struct.pack(">H", n)
    return b"\xdd" + struct.pack(">I", n)


def frames(encoded: Iterable[bytes], max_frame_bytes: int) -> Iterator[bytes]:
    """Joins already-encoded messages into frames (msgpack arrays) of at most ``max_frame_bytes``
    and :data:`MAX_MESSAGES_PER_FRAME` messages. Each message must fit a frame on its own (the
    caller checks with :func:`fits`)."""
    batch: list[bytes] = []
    size = FRAME_HEADER_MAX
    for m in encoded:
        if batch and (size + len(m) > max_frame_bytes or len(batch) >= MAX_MESSAGES_PER_FRAME):
            yield _array_header(len(batch)) + b"".join(batch)
            batch, size = [], FRAME_HEADER_MAX
        batch.append(m)
        size += len(m)
    if batch:
        yield _array_header(len(batch)) + b"".join(batch)


def fits(encoded: bytes, max_frame_bytes: int) -> bool:
    """True when one encoded message fits a frame on its own."""
    return len(encoded) + FRAME_HEADER_MAX <= max_frame_bytes


def _no_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} received; this client did not announce any")


def decode(data: bytes) -> list[Any]:
    """One received frame as its list of messages. Raises ValueError for anything that is not a
    standard-msgpack array (an extension type included)."""
    if not isinstance(data, (bytes, bytearray)):
        raise ValueError("text frame received; the protocol is binary msgpack")
    value = msgpack.unpackb(data, raw=False, ext_hook=_no_ext, strict_map_key=False)
    if not isinstance(value, list):
        raise ValueError("a frame must be a msgpack array of messages")
    return value


_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})(/.*)?$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def dispatcher_url(value: str) -> str:
    """``host:port`` becomes ``ws://host:port``; ws:// and wss:// URLs pass as they are; anything
    else raises FalconetError('USAGE') at once rather than dialing what can never answer."""
    if not isinstance(value, str):
        raise FalconetError("USAGE", f"{value!r} is not a dispatcher address: give ws://HOST:PORT, wss://HOST:PORT or HOST:PORT")
    text = value.strip()
    if _SCHEME.match(text):
        url = text
    elif _HOST_PORT.match(text):
        url = "ws://" + text
    else:
        raise FalconetError("USAGE", f"{value!r} is not a dispatcher address: give ws://HOST:PORT, wss://HOST:PORT or HOST:PORT")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise FalconetError("USAGE", f"{value!r} is not a valid URL: {e}") from None
    if parts.scheme not in ("ws", "wss"):
        raise FalconetError("USAGE", f"{value!r}: a dispatcher is dialed over ws:// or wss://, not {parts.scheme}://")
    if not parts.hostname:
        raise FalconetError("USAGE", f"{value!r}: no host")
    if port is not None and port > 65535:
        raise FalconetError("USAGE", f"{value!r}: port out of range")
    return url


#: Dispatcher URLs in one list at most (the same bound as the TypeScript clients).
MAX_DISPATCHER_URLS = 64


def dispatcher_urls(value: "str | Sequence[str]") -> list[str]:
    """A list of dispatchers: a comma-separated string or a sequence, each entry as
    :func:`dispatcher_url` takes it. Duplicates are dropped, order is kept (the client dials the
    first first). An empty list, an empty entry or a bad one raises ``FalconetError('USAGE')``
    naming the entry and its place."""
    entries = value.split(",") if isinstance(value, str) else list(value)
    if not entries or (len(entries) == 1 and str(entries[0]).strip() == ""):
        raise FalconetError("USAGE", "no dispatcher address given: give ws://HOST:PORT, wss://HOST:PORT or HOST:PORT (several separated by commas)")
    if len(entries) > MAX_DISPATCHER_URLS:
        raise FalconetError("USAGE", f"{len(entries)} dispatcher addresses: at most {MAX_DISPATCHER_URLS} in one list")
    out: list[str] = []
    for i, entry in enumerate(entries):
        where = f"dispatcher list entry {i + 1} of {len(entries)}: " if len(entries) > 1 else ""
        if not isinstance(entry, str) or entry.strip() == "":
            raise FalconetError("USAGE", f"{where}empty address ({value!r}): give ws://HOST:PORT, wss://HOST:PORT or HOST:PORT separated by commas")
        try:
            url = dispatcher_url(entry)
        except FalconetError as e:
            raise FalconetError("USAGE", where + e.message) from None
        if url not in out:
            out.append(url)
    return out
