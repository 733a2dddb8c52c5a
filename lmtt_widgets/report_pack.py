"""The report's state as one gzip-compressed binary container (js/reportcodec.ts reads it back).

Layout before compression: a 4-byte little-endian length, the JSON text (UTF-8), zero padding to a multiple of
8, then the arrays' bytes, each starting at a multiple of 8. In the JSON every array is
``{"dtype", "shape", "data": {"at": offset in the array part, "n": bytes, "enc": ...}}``; ``dtype`` and ``shape``
are what the widget's wire format says (docs/widget-protocol.md, "Arrays"), ``enc`` how the bytes store it:

- ``raw``: the wire dtype's own bytes;
- ``f16``: float32 stored as IEEE float16 (about 3 significant digits: probabilities and neuron scores; NaN
  and ±inf kept); ``delta``: each float16's 16 bits minus those of the number before it along the last axis
  (mod 2**16; the first of each row as it is). Exact either way; for sorted rows (top-k logits, probabilities)
  the differences are small, since float16 bit patterns of one sign are ordered like the numbers;
- ``u16`` / ``i16``: uint32 / int32 whose values fit in 16 bits (token ids of a vocabulary under 65,536);
- ``sqrt``: a non-negative float32 matrix drawn on a square-root colour scale (js/panes/common.ts drawMatrix),
  stored as ``round(levels * sqrt(v / max))`` in one byte, with ``max`` and ``levels``: off by at most
  ``0.5 / levels`` on the scale the pane colours by, and ``max`` itself exact (the pane scales by it). Exact zeros
  stay 0 (the pane draws them as the background) and every other value reads at least ``max / levels**2`` (it is
  drawn on the ramp's first step, as a float would be near it: off by under ``1 / levels`` there). ``tril``: only the lower triangle (row >= column) is stored, the rest
  is exactly 0 (causal attention), column by column (``cols``: column c's rows c..R-1; deflate finds a column's
  repeats, e.g. a head that keeps reading one token, better than a row's).

``planes`` (float32, float16 and the 16-bit integers): the bytes are stored byte plane by byte plane (deflate
compresses them better: exponents of nearby values and high bytes of small indices repeat).

The browser inflates every array back to its wire dtype, so the panes see exactly what a kernel would send.
"""

from __future__ import annotations

import base64
import gzip
import json
import struct

import numpy as np

from .widgets.codec import DTYPES, wire_safe

ENCODINGS = ("raw", "f16", "u16", "i16", "sqrt")
_F16_MAX = 65504.0


def is_array(obj) -> bool:
    return isinstance(obj, dict) and {"dtype", "shape", "data"} <= set(obj) and isinstance(
        obj["data"], (bytes, bytearray, memoryview))


def _values(a: dict) -> np.ndarray:
    return np.frombuffer(bytes(a["data"]), DTYPES[a["dtype"]]).reshape(a["shape"])


def reduced(a: dict, enc: str, levels: int = 255, *, delta: bool = False) -> dict:
    """Mark the array dict ``a`` to be stored as ``enc`` (``delta``: float16 rows as differences); falls back to ``raw`` whenever ``enc`` would change a
    value more than it says (out of float16's range, ids past 16 bits, negative or non-finite map values)."""
    if enc not in ENCODINGS:
        raise ValueError(f"unknown array encoding {enc!r}; use one of {ENCODINGS}")
    v = _values(a)
    finite = np.isfinite(v).all() if v.dtype.kind == "f" else True
    ok = {
        "raw": True,
        # NaN and ±inf are float16 values too (kept exactly); a finite value past float16's range is not
        "f16": a["dtype"] == "float32" and (v.size == 0 or float(np.abs(np.where(np.isfinite(v), v, 0)).max())
                                            <= _F16_MAX),
        "u16": a["dtype"] == "uint32" and (v.size == 0 or int(v.max()) < 1 << 16),
        "i16": a["dtype"] == "int32" and (v.size == 0 or -(1 << 15) <= int(v.min()) <= int(v.max()) < 1 << 15),
        "sqrt": a["dtype"] == "float32" and finite and (v.size == 0 or float(v.min()) >= 0) and 1 <= levels <= 255,
    }[enc]
    return {**a, "enc": enc if ok else "raw", "levels": levels, "delta": delta and enc == "f16" and ok}


def _planes(data: np.ndarray) -> tuple[bytes, dict]:
    """Numbers of 2 or 4 bytes stored byte plane by byte plane (all first bytes, then all second bytes...): the
    exponent bytes of nearby values repeat, which deflate then finds (10-20 % smaller for float scores)."""
    size = data.dtype.itemsize
    return np.ascontiguousarray(data.view(np.uint8).reshape(-1, size).T).tobytes(), {"planes": size}


def _store(a: dict) -> tuple[bytes, dict]:
    """(bytes, data descriptor) of one array."""
    enc = a.get("enc", "raw")
    v = _values(a)
    if enc == "f16":
        bits = v.astype(np.float16).view(np.uint16)
        if a.get("delta") and bits.size:
            bits = np.diff(bits.reshape(-1, bits.shape[-1]), axis=1, prepend=np.uint16(0))  # uint16: mod 2**16
        data, desc = _planes(bits.reshape(-1))
        return data, {"enc": "f16", **desc, **({"delta": True} if a.get("delta") else {})}
    if enc in ("u16", "i16"):
        data, desc = _planes(v.astype(np.uint16 if enc == "u16" else np.int16).reshape(-1))
        return data, {"enc": enc, **desc}
    if enc == "sqrt":
        levels = int(a.get("levels", 255))
        top = float(v.max()) if v.size else 0.0
        q = np.zeros(v.shape, np.uint8)
        if top > 0:  # a value that is not 0 stays off the background: at least level 1
            q = np.where(v > 0, np.maximum(np.rint(levels * np.sqrt(v / top)), 1), 0).astype(np.uint8)
        desc = {"enc": "sqrt", "max": top, "levels": levels}
        if v.ndim == 2 and v.shape[0] == v.shape[1] and not np.triu(v, 1).any():
            q, desc["tril"] = q.T[np.triu_indices(v.shape[0])], "cols"  # q.T's upper triangle: column by column
        return q.tobytes(), desc
    if v.dtype == np.float32 and v.size:
        data, desc = _planes(v.reshape(-1))
        return data, {"enc": "raw", **desc}
    return bytes(a["data"]), {"enc": "raw"}


def pack(obj) -> bytes:
    """The gzip-compressed container of a JSON-like value holding array dicts (strings made wire-safe)."""
    chunks: list[bytes] = []
    size = 0

    def walk(o):
        nonlocal size
        if is_array(o):
            data, desc = _store(o)
            pad = -size % 8
            chunks.append(b"\0" * pad + data)
            size += pad
            desc.update(at=size, n=len(data))
            size += len(data)
            return {"dtype": o["dtype"], "shape": list(o["shape"]), "data": desc}
        if isinstance(o, dict):
            return {k: walk(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [walk(v) for v in o]
        return o

    text = json.dumps(walk(wire_safe(obj)), ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    head = struct.pack("<I", len(text)) + text
    head += b"\0" * (-len(head) % 8)
    return gzip.compress(head + b"".join(chunks), compresslevel=9, mtime=0)


def pack_base64(obj) -> str:
    return base64.b64encode(pack(obj)).decode("ascii")


def unpack(blob: bytes | str) -> object:
    """Read a container back in Python (tests, tools): arrays become numpy arrays of their wire dtype."""
    raw = gzip.decompress(base64.b64decode(blob) if isinstance(blob, str) else blob)
    (n,) = struct.unpack_from("<I", raw)
    body = json.loads(raw[4:4 + n].decode())
    base = 4 + n + (-(4 + n) % 8)

    def walk(o):
        if isinstance(o, dict) and isinstance(o.get("data"), dict) and "enc" in o["data"]:
            return _inflate(o, raw[base + o["data"]["at"]: base + o["data"]["at"] + o["data"]["n"]])
        if isinstance(o, dict):
            return {k: walk(v) for k, v in o.items()}
        if isinstance(o, list):
            return [walk(v) for v in o]
        return o

    return walk(body)


def _inflate(a: dict, data: bytes) -> np.ndarray:
    d, shape, dtype = a["data"], a["shape"], DTYPES[a["dtype"]]
    enc = d["enc"]
    if d.get("planes"):
        data = np.frombuffer(data, np.uint8).reshape(d["planes"], -1).T.tobytes()
    if enc == "raw":
        return np.frombuffer(data, dtype).reshape(shape)
    if enc == "f16" and d.get("delta"):
        bits = np.frombuffer(data, np.uint16).reshape(-1, shape[-1] if shape else 1)
        return np.cumsum(bits, axis=1, dtype=np.uint16).view(np.float16).astype(dtype).reshape(shape)
    if enc in ("f16", "u16", "i16"):
        src = {"f16": np.float16, "u16": np.uint16, "i16": np.int16}[enc]
        return np.frombuffer(data, src).astype(dtype).reshape(shape)
    if enc == "sqrt":
        q = np.frombuffer(data, np.uint8).astype(np.float32)
        v = (q / d["levels"]) ** 2 * np.float32(d["max"])
        if d.get("tril") == "cols":
            out = np.zeros(shape, np.float32)
            out.T[np.triu_indices(shape[0])] = v
            return out
        if d.get("tril"):
            raise ValueError(f"unknown triangle layout {d['tril']!r} in a report")
        return v.reshape(shape)
    raise ValueError(f"unknown array encoding {enc!r} in a report")
