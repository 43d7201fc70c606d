"""Byte-level codecs shared by strategies (bit packing, entropy coders)."""
