"""Compression strategies: a registry of id -> :class:`Strategy` (see ``base``)."""

from .base import Strategy
from .registry import all_strategies, get, known_ids, register

__all__ = ["Strategy", "all_strategies", "get", "known_ids", "register"]
