"""``gzip``: DEFLATE over the element bytes, for parity with CortexSDR's archives."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from .base import ByteCodecStrategy

GZIP_WBITS = 31  # zlib's gzip wrapper; its fixed header (mtime 0) keeps bytes deterministic


@dataclass(frozen=True)
class GzipConfig:
    level: int = 6

    def __post_init__(self) -> None:
        if not 0 <= self.level <= 9:
            raise ValueError(f"level must be between 0 and 9, got {self.level}")


class GzipStrategy(ByteCodecStrategy):
    id = "gzip"
    description = "gzip (DEFLATE) over the element bytes (raw when that is smaller)"
    Config = GzipConfig

    def compress_bytes(self, data, config: GzipConfig) -> bytes:
        compressor = zlib.compressobj(config.level, zlib.DEFLATED, GZIP_WBITS)
        return compressor.compress(data) + compressor.flush()

    def decompress_bytes(self, payload, size: int) -> bytes:
        decompressor = zlib.decompressobj(GZIP_WBITS)
        data = decompressor.decompress(payload, size)
        if decompressor.unconsumed_tail or not decompressor.eof:
            raise ValueError("gzip stream is longer than the chunk's shape allows, or truncated")
        return data
