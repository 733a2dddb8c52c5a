"""Numeric arrays between kernel and browser: one wrapper, three carriers.

- in a trait value: ``{"dtype", "shape", "data": bytes}`` (ipywidgets sends the bytes as a binary frame);
- in a custom message: ``data`` is the index of the buffer in the message's buffer list;
- in a static HTML report: ``data`` is base64 text.

Every string that leaves Python goes through :func:`wire_safe` (the widget's trait serialiser and ``send``, the
report's :func:`to_base64`): token text from a tokenizer can hold a lone UTF-16 surrogate (``"\\ud800"``), which
strict UTF-8 (the kernel's JSON packer, an HTML file) cannot encode.
"""

from __future__ import annotations

import base64
import re

import numpy as np
import torch

DTYPES = {"float32": np.float32, "uint32": np.uint32, "int32": np.int32, "uint8": np.uint8}
_SURROGATE = re.compile("[\ud800-\udfff]")


def wire_text(s: str) -> str:
    """``s`` with every surrogate code point (never valid in UTF-8) replaced by U+FFFD."""
    return _SURROGATE.sub("\ufffd", s)


def wire_safe(obj):
    """A copy of a JSON-like value whose strings, dict keys included, are :func:`wire_text`; bytes untouched."""
    if isinstance(obj, str):
        return wire_text(obj)
    if isinstance(obj, dict):
        return {wire_safe(k): wire_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [wire_safe(v) for v in obj]
    return obj


def encode_array(x, dtype: str = "float32") -> dict:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.ascontiguousarray(np.asarray(x), dtype=DTYPES[dtype])
    return {"dtype": dtype, "shape": list(arr.shape), "data": arr.tobytes()}


def decode_array(obj: dict) -> np.ndarray:
    data = obj["data"]
    if isinstance(data, str):
        data = base64.b64decode(data)
    return np.frombuffer(bytes(data), dtype=DTYPES[obj["dtype"]]).reshape(obj["shape"])


def _walk(obj, leaf):
    if isinstance(obj, dict):
        if set(obj) == {"dtype", "shape", "data"} and isinstance(obj["data"], (bytes, bytearray, memoryview)):
            return leaf(obj)
        return {k: _walk(v, leaf) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_walk(v, leaf) for v in obj]
    return obj


def to_message(obj) -> tuple[object, list[bytes]]:
    """Replace every array's bytes by a buffer index; return (json part, buffers)."""
    buffers: list[bytes] = []

    def leaf(a):
        buffers.append(bytes(a["data"]))
        return {**a, "data": len(buffers) - 1}

    return _walk(obj, leaf), buffers


def to_base64(obj):
    """Replace every array's bytes by base64 text (for self-contained HTML)."""
    return _walk(wire_safe(obj), lambda a: {**a, "data": base64.b64encode(bytes(a["data"])).decode("ascii")})
