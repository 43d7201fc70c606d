"""Choosing a strategy for each tensor: ordered rules, then built-in defaults.

Pure: no I/O beyond reading a policy file. Every decision carries the reason
that produced it; the reason is stored with the tensor and ``bie inspect``
shows it.

Rule syntax on the command line: ``GLOB=NAME[:key=value,...]`` (first match
wins, glob matched on the tensor name with ``fnmatch`` semantics, case
sensitive). A TOML policy file can also match on dtype, rank and size::

    strategy = "zstd:level=9"          # the default for unmatched tensors (omit: lossless policy)

    [[rules]]
    match = "*.weight"                 # glob on the name (default "*")
    dtype = ["F32", "BF16"]            # optional
    min_ndim = 2                       # optional; also max_ndim, min_numel, max_numel
    strategy = "zstd"
    options = { level = 19 }           # or inline: strategy = "zstd:level=19"
    reason = "why"                     # optional: stored as the tensor's reason instead of "FILE rule N"

A policy written by ``bie plan`` has one rule per tensor (``match`` is the
exact name, glob characters escaped) and an ``[auto]`` table describing the
budget it was planned for; ``compress`` stores that table in the header.
"""

from __future__ import annotations

import fnmatch
import functools
import tomllib
from dataclasses import dataclass, field
from typing import Any

from .errors import BadInputError
from .formats.base import TensorInfo
from .strategies import registry

#: The built-in lossless policy, used when no default strategy is given and for
#: tensors a lossy default should not touch: floats get ``float-split``; every
#: other dtype gets whichever of these is smallest on the tensor's first chunk.
FLOAT_LOSSLESS = "float-split"
OTHER_LOSSLESS_CANDIDATES = ("zstd", "rle")
#: integer tensors also try delta coding (position ids, index buffers)
INTEGER_LOSSLESS_CANDIDATES = ("zstd", "rle", "delta")
LOSSLESS_POLICY_NAME = "lossless (float-split for floats, else smallest of zstd/rle/delta)"
#: below this many elements a lossy default is not worth it: keep exact
SMALL_TENSOR_ELEMENTS = 1024


@dataclass(frozen=True)
class StrategySpec:
    id: str
    options: dict = field(default_factory=dict)

    def __str__(self) -> str:
        if not self.options:
            return self.id
        return self.id + ":" + ",".join(f"{k}={v}" for k, v in self.options.items())


def parse_strategy(text: str) -> StrategySpec:
    """``NAME[:key=value,...]`` -> StrategySpec (values stay strings; the strategy types them)."""
    text = text.strip()
    strategy_id, _, rest = text.partition(":")
    strategy_id = strategy_id.strip()
    if not strategy_id:
        raise BadInputError(f"empty strategy name in {text!r}; expected NAME[:key=value,...]")
    options: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BadInputError(f"strategy option {item!r} in {text!r} is not key=value")
        options[key.strip()] = value.strip()
    return StrategySpec(strategy_id, options)


@dataclass(frozen=True)
class Rule:
    pattern: str
    spec: StrategySpec
    origin: str  # where the rule came from, for the stored reason
    dtypes: frozenset[str] | None = None
    min_ndim: int | None = None
    max_ndim: int | None = None
    min_numel: int | None = None
    max_numel: int | None = None
    reason: str | None = None  # stored as the tensor's reason (default: the origin)

    def matches(self, info: TensorInfo) -> bool:
        if not fnmatch.fnmatchcase(info.name, self.pattern):
            return False
        ndim, numel = len(info.shape), info.numel
        return (
            (self.dtypes is None or info.dtype in self.dtypes)
            and (self.min_ndim is None or ndim >= self.min_ndim)
            and (self.max_ndim is None or ndim <= self.max_ndim)
            and (self.min_numel is None or numel >= self.min_numel)
            and (self.max_numel is None or numel <= self.max_numel)
        )


def parse_rule(text: str) -> Rule:
    pattern, sep, strategy = text.partition("=")
    if not sep or not pattern.strip() or not strategy.strip():
        raise BadInputError(f"rule {text!r} is not GLOB=NAME[:key=value,...]")
    return Rule(pattern.strip(), parse_strategy(strategy), origin=f"--rule {text}")


def exact_pattern(name: str) -> str:
    """A glob that matches ``name`` and nothing else (``*``, ``?`` and ``[`` escaped)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


@dataclass(frozen=True)
class Policy:
    default: StrategySpec | None
    rules: list[Rule]
    auto: dict | None = None  # the [auto] table of a policy written by ``bie plan``


def load_policy(path: str) -> tuple[StrategySpec | None, list[Rule]]:
    policy = load_policy_file(path)
    return policy.default, policy.rules


def load_policy_file(path: str) -> Policy:
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise BadInputError(f"policy file {path} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BadInputError(f"cannot read policy file {path}: {exc}") from None
    known = {"strategy", "rules", "auto"}
    if set(document) - known:
        raise BadInputError(f"policy {path}: unknown key {sorted(set(document) - known)[0]!r} (expected strategy, rules, auto)")
    auto = document.get("auto")
    if auto is not None and not isinstance(auto, dict):
        raise BadInputError(f"policy {path}: 'auto' must be a table")
    default = document.get("strategy")
    if default is not None and not isinstance(default, str):
        raise BadInputError(f"policy {path}: 'strategy' must be a string like \"zstd:level=9\"")
    rules = []
    raw_rules = document.get("rules", [])
    if not isinstance(raw_rules, list):
        raise BadInputError(f"policy {path}: 'rules' must be an array of tables ([[rules]])")
    for number, raw in enumerate(raw_rules, 1):
        rules.append(_policy_rule(path, number, raw))
    return Policy(parse_strategy(default) if default else None, rules, auto)


def _policy_rule(path: str, number: int, raw: Any) -> Rule:
    where = f"policy {path} rule {number}"
    allowed = {"match", "strategy", "options", "dtype", "min_ndim", "max_ndim", "min_numel", "max_numel", "reason"}
    if not isinstance(raw, dict):
        raise BadInputError(f"{where} is not a table")
    if set(raw) - allowed:
        raise BadInputError(f"{where}: unknown key {sorted(set(raw) - allowed)[0]!r}")
    if not isinstance(raw.get("strategy"), str):
        raise BadInputError(f"{where}: 'strategy' (a string) is required")
    spec = parse_strategy(raw["strategy"])
    options = raw.get("options", {})
    if not isinstance(options, dict):
        raise BadInputError(f"{where}: 'options' must be a table")
    spec = StrategySpec(spec.id, {**spec.options, **options})
    dtype = raw.get("dtype")
    if isinstance(dtype, str):
        dtype = [dtype]
    if dtype is not None and not (isinstance(dtype, list) and all(isinstance(d, str) for d in dtype)):
        raise BadInputError(f"{where}: 'dtype' must be a string or a list of strings")
    limits = {}
    for key in ("min_ndim", "max_ndim", "min_numel", "max_numel"):
        value = raw.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise BadInputError(f"{where}: {key!r} must be a non-negative integer")
        limits[key] = value
    pattern = raw.get("match", "*")
    if not isinstance(pattern, str):
        raise BadInputError(f"{where}: 'match' must be a glob string")
    reason = raw.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise BadInputError(f"{where}: 'reason' must be a string")
    return Rule(pattern, spec, origin=f"{path} rule {number}",
                dtypes=frozenset(dtype) if dtype else None, reason=reason, **limits)


@dataclass(frozen=True)
class Choice:
    """The strategy for one tensor: id, typed config, and why.

    ``candidates`` (when not empty) are alternatives the pipeline tries on the
    tensor's first chunk, keeping the one with the smallest payload; ``strategy``
    is then only the first of them.
    """

    strategy: str
    config: Any
    config_dict: dict
    reason: str
    candidates: tuple[Choice, ...] = ()


@functools.cache
def _default_choice(strategy_id: str, reason: str) -> Choice:
    # one Choice per (strategy, reason), shared by the tensors it applies to (Choice and its
    # config are frozen; nothing writes to config_dict): a dataclasses.asdict per tensor
    # was most of a 2,500-tensor model's planning time
    strategy = registry.get(strategy_id)
    config = strategy.default_config()
    return Choice(strategy.id, config, strategy.config_to_dict(config), reason)


def lossless_choice(info: TensorInfo, why: str) -> Choice:
    """The built-in lossless policy for one tensor."""
    if registry.get(FLOAT_LOSSLESS).supports(info.dtype):
        return _default_choice(FLOAT_LOSSLESS, f"{why}: {FLOAT_LOSSLESS} for floats")
    names = INTEGER_LOSSLESS_CANDIDATES if registry.get("delta").supports(info.dtype) else OTHER_LOSSLESS_CANDIDATES
    candidates = tuple(_default_choice(name, f"{why}: smallest of {'/'.join(names)}") for name in names)
    return Choice(candidates[0].strategy, candidates[0].config, candidates[0].config_dict, candidates[0].reason, candidates)


class Planner:
    """``default`` is a strategy spec, or None for the built-in lossless policy."""

    def __init__(self, default: StrategySpec | str | None = None, rules: list[Rule] | tuple = ()) -> None:
        self.default = parse_strategy(default) if isinstance(default, str) else default
        self.rules = list(rules)
        # Validate every named strategy and its options now, before any work; each spec's
        # (strategy, config, config dict), by the spec's id(), for every tensor it applies to.
        self._resolved: dict[int, tuple] = {}
        if self.default is not None:
            self._resolved_spec(self.default, "--strategy")
        for rule in self.rules:
            self._resolved_spec(rule.spec, rule.origin)

    @property
    def default_name(self) -> str:
        return str(self.default) if self.default is not None else LOSSLESS_POLICY_NAME

    @staticmethod
    def _resolve(spec: StrategySpec, origin: str):
        strategy = registry.get(spec.id)
        try:
            config = strategy.config_from_dict(spec.options)
        except BadInputError as exc:
            raise BadInputError(f"{origin}: {exc}") from None
        return strategy, config

    def _resolved_spec(self, spec: StrategySpec, origin: str) -> tuple:
        resolved = self._resolved.get(id(spec))
        if resolved is None:
            strategy, config = self._resolve(spec, origin)
            resolved = self._resolved[id(spec)] = (strategy, config, strategy.config_to_dict(config))
        return resolved

    def choose(self, info: TensorInfo) -> Choice:
        for rule in self.rules:
            if rule.matches(info):
                strategy, config, config_dict = self._resolved_spec(rule.spec, rule.origin)
                strategy.check_dtype(info.dtype, info.name)
                return Choice(strategy.id, config, config_dict, rule.reason or rule.origin)
        if self.default is None:
            return lossless_choice(info, "default")
        strategy, config, config_dict = self._resolved_spec(self.default, "--strategy")
        fallback_why = None
        if not strategy.supports(info.dtype):
            fallback_why = f"{strategy.id} does not take {info.dtype}"
        elif not strategy.is_lossless(config):
            if info.dtype not in _lossy_dtypes():
                fallback_why = f"{info.dtype} is not a float dtype"
            elif len(info.shape) < 2:
                fallback_why = f"{len(info.shape)}-D tensors stay lossless"
            elif info.numel < SMALL_TENSOR_ELEMENTS:
                fallback_why = f"fewer than {SMALL_TENSOR_ELEMENTS} elements"
        if fallback_why is None:
            return Choice(strategy.id, config, config_dict, f"default ({self.default})")
        return lossless_choice(info, f"built-in: {fallback_why}")


def _lossy_dtypes() -> frozenset[str]:
    from .dtypes import FLOAT_NAMES

    return FLOAT_NAMES
