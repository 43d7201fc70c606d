"""bie: compress trained model checkpoints into checksummed, streamable ``.cai`` containers.

Public API (imports are lazy, so ``import bie_cli`` stays cheap)::

    stats = bie_cli.compress_model("model.safetensors", "model.cai", strategy="zstd:level=9")
    container = bie_cli.open_container("model.cai")   # lazy mapping name -> numpy array
    state_dict = bie_cli.load_state_dict("model.cai")  # dict of torch tensors
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = [
    "BieError",
    "__version__",
    "compress_model",
    "decompress_model",
    "load_state_dict",
    "open_container",
    "verify_container",
]


def __getattr__(name: str):
    if name in ("compress_model", "decompress_model", "verify_container"):
        from . import pipeline

        return getattr(pipeline, name)
    if name in ("open_container", "load_state_dict"):
        from . import api

        return getattr(api, name)
    if name == "BieError":
        from .errors import BieError

        return BieError
    raise AttributeError(f"module 'bie_cli' has no attribute {name!r}")
