"""Content-Encoding undone incrementally, with the byte limit on what each layer produces.

httpx decodes a chunk in one call, so a 7 KB body sent as `gzip, gzip` expands
to gigabytes in memory before any limit is looked at. Here every layer is a
`zlib.decompressobj` asked for at most `_STEP` bytes at a time, and the decoded
total is checked as it grows: a bomb stops at the limit, with memory bounded by
the limit plus a few steps, whatever the ratio or the number of layers.
"""

from __future__ import annotations

import zlib

_STEP = 64 * 1024
MAX_LAYERS = 3
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class DecodingError(ValueError):
    """The body cannot be decoded (unknown encoding, too many layers, corrupt data)."""


class DecodedTooLarge(ValueError):
    """Decoding would produce more than the limit."""


class _Layer:
    def __init__(self, name: str):
        self.name = name
        self.wbits = _WBITS[name]
        self.obj = zlib.decompressobj(self.wbits)
        self.started = False

    def decode(self, data: bytes, max_length: int) -> bytes:
        if self.name == "deflate" and not self.started and data:
            # Servers send both zlib-wrapped and raw deflate as "deflate"; the first byte tells which.
            self.started = True
            if data[0] & 0x0F != 8:
                self.wbits = -zlib.MAX_WBITS
                self.obj = zlib.decompressobj(self.wbits)
        if self.obj.eof:
            if not self.obj.unused_data:
                return b""
            data = self.obj.unused_data + data  # a further gzip member
            self.obj = zlib.decompressobj(self.wbits)
        return self.obj.decompress(data, max_length)


class BoundedDecoder:
    """Feed raw body chunks in, get decoded bytes out; never more than `limit` in all."""

    def __init__(self, content_encoding: str, limit: int):
        names = [n.strip().lower() for n in content_encoding.split(",") if n.strip()]
        names = [n for n in names if n != "identity"]
        unknown = [n for n in names if n not in _WBITS]
        if unknown:
            raise DecodingError(f"unsupported Content-Encoding {', '.join(unknown)!r}")
        if len(names) > MAX_LAYERS:
            raise DecodingError(f"Content-Encoding has {len(names)} layers, more than {MAX_LAYERS}")
        # The last encoding listed was applied last, so it is undone first.
        self._layers = [_Layer(n) for n in reversed(names)]
        self.limit = limit
        self.size = 0

    def feed(self, raw: bytes) -> bytes:
        out: list[bytes] = []
        self._push(0, raw, out)
        return b"".join(out)

    def finish(self) -> bytes:
        out: list[bytes] = []
        self._push(0, b"", out)
        return b"".join(out)

    def _push(self, depth: int, data: bytes, out: list[bytes]) -> None:
        if depth == len(self._layers):
            self.size += len(data)
            if self.size > self.limit:
                raise DecodedTooLarge(f"decoded body exceeds {self.limit} bytes")
            if data:
                out.append(data)
            return
        layer = self._layers[depth]
        while True:
            try:
                piece = layer.decode(data, _STEP)
            except zlib.error as exc:
                raise DecodingError(f"corrupt {layer.name} data: {exc}") from None
            data = layer.obj.unconsumed_tail
            self._push(depth + 1, piece, out)
            # A full step may leave output inside zlib even with no input left: ask again.
            if not data and len(piece) < _STEP and not (layer.obj.eof and layer.obj.unused_data):
                return
