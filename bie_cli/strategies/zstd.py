"""``zstd``: Zstandard over the element bytes; stores raw when that is not smaller."""

from __future__ import annotations

from dataclasses import dataclass

import zstandard

from .base import ByteCodecStrategy

# Long-range matching and dictionaries buy nothing on float weights; plain
# levels keep the payload decodable by any zstd.


@dataclass(frozen=True)
class ZstdConfig:
    level: int = 3

    def __post_init__(self) -> None:
        if not -7 <= self.level <= 22:
            raise ValueError(f"level must be between -7 and 22, got {self.level}")


class ZstdStrategy(ByteCodecStrategy):
    id = "zstd"
    description = "Zstandard over the element bytes (raw when that is smaller)"
    Config = ZstdConfig

    def compress_bytes(self, data, config: ZstdConfig) -> bytes:
        return zstandard.ZstdCompressor(level=config.level).compress(data)

    def decompress_bytes(self, payload, size: int) -> bytes:
        return zstandard.ZstdDecompressor().decompress(payload, max_output_size=max(size, 1))
