"""Errors of the ONNX reader (both exit 2: bad input)."""

from __future__ import annotations

from ...errors import BadInputError


class OnnxModelError(BadInputError):
    """The file is not an ONNX model bie can read (truncated, malformed, not a model)."""


class OnnxExternalDataError(BadInputError):
    """An external data reference is missing, too short, or points outside the model's directory."""
