"""Strategy registry: id -> strategy instance.

Built-ins are registered explicitly below (importing their modules is cheap:
no torch, no numba at import time). Third-party strategies come from the
``bie_cli.strategies`` entry-point group and are looked up only when an id is
not built in, so a broken plugin cannot break ``bie --help``.
"""

from __future__ import annotations

from importlib import import_module

from ..errors import BadInputError, UnknownStrategyError
from .base import Strategy

ENTRY_POINT_GROUP = "bie_cli.strategies"

# id -> "module:Class"; modules are imported on first use.
_BUILTIN: dict[str, str] = {
    "raw": "bie_cli.strategies.raw:RawStrategy",
    "zstd": "bie_cli.strategies.zstd:ZstdStrategy",
    "gzip": "bie_cli.strategies.gzip:GzipStrategy",
    "quant": "bie_cli.strategies.quant:QuantStrategy",
    "nf4": "bie_cli.strategies.nf4:NF4Strategy",
    "ternary": "bie_cli.strategies.ternary:TernaryStrategy",
    "tcq": "bie_cli.strategies.tcq:TcqStrategy",
    "sdr": "bie_cli.strategies.sdr:SdrStrategy",
    "bie-binary": "bie_cli.strategies.bie_binary:BinaryStrategy",
    "bie-bitplane": "bie_cli.strategies.bie_bitplane:BitplaneStrategy",
    "bie-blocked": "bie_cli.strategies.bie_blocked:BlockedStrategy",
    "float-split": "bie_cli.strategies.float_split:FloatSplitStrategy",
    "rle": "bie_cli.strategies.rle:RleStrategy",
    "delta": "bie_cli.strategies.delta:DeltaStrategy",
}

_instances: dict[str, Strategy] = {}


def register(strategy: Strategy) -> None:
    """Register an instance under its id (used by tests and plugins)."""
    _instances[strategy.id] = strategy


def _load(target: str) -> Strategy:
    module_name, _, class_name = target.partition(":")
    cls = getattr(import_module(module_name), class_name)
    return cls()


def _entry_points():
    # imported here: importlib.metadata costs ~30 ms, and only plugin lookups need it
    from importlib.metadata import entry_points

    return entry_points(group=ENTRY_POINT_GROUP)


def _plugin(strategy_id: str) -> Strategy | None:
    for ep in _entry_points():
        if ep.name == strategy_id:
            try:
                obj = ep.load()
            except Exception as exc:  # a broken plugin is the user's problem to see
                raise BadInputError(f"strategy plugin {strategy_id!r} failed to load: {exc}") from None
            strategy = obj() if isinstance(obj, type) else obj
            if getattr(strategy, "id", None) != strategy_id:
                raise BadInputError(
                    f"strategy plugin {ep.value!r} has id {getattr(strategy, 'id', None)!r}, "
                    f"registered as {strategy_id!r}"
                )
            return strategy
    return None


def get(strategy_id: str) -> Strategy:
    """The strategy for an id; :class:`UnknownStrategyError` names it when absent."""
    found = _instances.get(strategy_id)
    if found is not None:
        return found
    if strategy_id in _BUILTIN:
        found = _load(_BUILTIN[strategy_id])
    else:
        found = _plugin(strategy_id)
    if found is None:
        raise UnknownStrategyError(strategy_id, known_ids())
    _instances[strategy_id] = found
    return found


def known_ids() -> list[str]:
    ids = set(_BUILTIN) | set(_instances)
    ids |= {ep.name for ep in _entry_points()}
    return sorted(ids)


def all_strategies() -> list[Strategy]:
    return [get(strategy_id) for strategy_id in known_ids()]
