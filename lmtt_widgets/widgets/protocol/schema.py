"""The vocabulary the wire protocol is written in: arrays with named dimensions, JSON values, structs and maps.

A schema both checks a value (Python refuses a payload that drifted from the protocol, instead of the browser
showing an empty pane) and describes it (the TypeScript types and the doc tables are generated from it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

DTYPES = {"float32": np.float32, "uint32": np.uint32, "int32": np.int32, "uint8": np.uint8}

# Named dimensions: one letter per size that several arrays share (checked equal within one struct value).
DIMS = {
    "L": "layers (`meta.n_layers`)",
    "H": "attention heads per layer (`meta.n_heads`)",
    "T": "prompt tokens (`meta.n_tokens`)",
    "R": "residual rows, 2L+1 (see the row mapping)",
    "K": "top-k entries (10)",
    "N": "nodes of the shown graph",
    "E": "edges of the shown graph",
    "G": "generated tokens with a matrix row",
    "W": "words of the prompt (`attribution.words.spans`)",
}


class ProtocolError(ValueError):
    """A value that does not have the shape the protocol gives it."""


@dataclass(frozen=True)
class Array:
    """A numeric array; on the wire ``{"dtype", "shape", "data"}`` (C order, ``data`` bytes / buffer index / base64)."""

    dtype: str
    dims: tuple[str, ...]
    doc: str = ""
    optional: bool = False
    nullable: bool = False

    def spelled(self) -> str:
        return f"{self.dtype}[{', '.join(self.dims)}]"


@dataclass(frozen=True)
class Value:
    """A plain JSON value. ``ts`` is its TypeScript type, ``py`` the Python types accepted (None: anything)."""

    ts: str
    doc: str = ""
    py: tuple[type, ...] | None = None
    optional: bool = False
    nullable: bool = False


@dataclass(frozen=True)
class Struct:
    """A JSON object with known fields. ``empty_ok``: ``{}`` stands for "not computed" (the reason is in `error`)."""

    name: str
    fields: dict
    doc: str = ""
    empty_ok: bool = False
    extra_ok: bool = False  # other keys allowed (report-only additions, older payloads)
    base: "Struct | None" = None  # the struct whose fields come first (the TypeScript interface extends it)

    def __post_init__(self):
        if self.base is not None:
            object.__setattr__(self, "fields", {**self.base.fields, **self.fields})

    @property
    def optional(self) -> bool:
        return False


@dataclass(frozen=True)
class MapOf:
    """A JSON object whose keys are free text and whose values all follow ``value``."""

    value: object
    key: str = "string"
    doc: str = ""
    optional: bool = False
    nullable: bool = False
    by_prefix: dict | None = None  # key "<prefix>:..." -> that value's schema (the others follow ``value``)

    def value_for(self, key) -> object:
        if self.by_prefix and isinstance(key, str):
            return self.by_prefix.get(key.split(":", 1)[0], self.value)
        return self.value


@dataclass(frozen=True)
class Trait:
    """One synced trait: its schema, who writes it ("py": Python only, "both"; "report": only in a report's
    state) and what it means."""

    name: str
    schema: object
    writer: str
    doc: str
    default: object = field(default=None)


# ---- checking (and normalising: numpy / torch arrays become wire array dicts)

def _where(path: str) -> str:
    return path or "the value"


def encode(x, dtype: str) -> dict:
    """A numpy / torch / nested-list array as a wire array dict of ``dtype``; refuses lossy integer casts."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    src = np.asarray(x)
    want = np.dtype(DTYPES[dtype])
    if want.kind in "iu" and src.size:
        if src.dtype.kind not in "iub":
            raise ProtocolError(f"{dtype} data given as {src.dtype}: integer ids must be integers")
        info = np.iinfo(want)
        if src.min() < info.min or src.max() > info.max:
            raise ProtocolError(f"values {src.min()}..{src.max()} do not fit {dtype}")
    arr = np.ascontiguousarray(src, dtype=want)
    return {"dtype": dtype, "shape": list(arr.shape), "data": arr.tobytes()}


def check_array(spec: Array, value, path: str, sizes: dict) -> dict:
    """``value`` as a wire array dict matching ``spec``; named dimensions are bound in ``sizes`` (shared)."""
    if isinstance(value, (np.ndarray, torch.Tensor, list, tuple)):
        value = encode(value, spec.dtype)
    if not (isinstance(value, dict) and set(value) == {"dtype", "shape", "data"}):
        raise ProtocolError(f"{_where(path)} must be an array ({spec.spelled()}), not {type(value).__name__}")
    if value["dtype"] != spec.dtype:
        raise ProtocolError(f"{_where(path)} must be {spec.spelled()}, got dtype {value['dtype']!r}")
    shape = value["shape"]
    if not isinstance(shape, (list, tuple)) or len(shape) != len(spec.dims):
        raise ProtocolError(f"{_where(path)} must be {spec.spelled()}, got shape {shape!r}")
    for dim, n in zip(spec.dims, shape):
        if sizes.setdefault(dim, n) != n:
            raise ProtocolError(f"{_where(path)} has {dim} = {n}, but another array of the same value has "
                                f"{dim} = {sizes[dim]}")
    data = value["data"]
    if isinstance(data, (bytes, bytearray, memoryview)):
        need = int(np.prod(shape, dtype=np.int64)) * np.dtype(DTYPES[spec.dtype]).itemsize
        if len(memoryview(data).cast("B")) != need:
            raise ProtocolError(f"{_where(path)}: {len(data)} bytes for shape {list(shape)} of {spec.dtype} "
                                f"(needs {need})")
    return {"dtype": spec.dtype, "shape": list(shape), "data": data}


def check(schema, value, path: str = "", sizes: dict | None = None):
    """``value`` checked against ``schema`` and normalised; ProtocolError says where it differs."""
    if value is None and getattr(schema, "nullable", False):
        return None
    if isinstance(schema, Array):
        return check_array(schema, value, path, {} if sizes is None else sizes)
    if isinstance(schema, Value):
        if schema.py is not None and not isinstance(value, schema.py):
            raise ProtocolError(f"{_where(path)} must be {schema.ts}, not {type(value).__name__}")
        return value
    if isinstance(schema, MapOf):
        if not isinstance(value, dict):
            raise ProtocolError(f"{_where(path)} must be an object, not {type(value).__name__}")
        return {k: check(schema.value_for(k), v, f"{path}[{k!r}]") for k, v in value.items()}
    if isinstance(schema, Struct):
        return _check_struct(schema, value, path)
    raise TypeError(f"not a schema: {schema!r}")


def _check_struct(schema: Struct, value, path: str) -> dict:
    if not isinstance(value, dict):
        raise ProtocolError(f"{_where(path)} must be an object ({schema.name}), not {type(value).__name__}")
    if not value and schema.empty_ok:
        return {}
    unknown = [k for k in value if k not in schema.fields]
    if unknown and not schema.extra_ok:
        raise ProtocolError(f"{_where(path)} ({schema.name}) has fields the protocol does not define: "
                            f"{', '.join(map(str, unknown[:5]))}; add them to widgets/protocol")
    missing = [k for k, f in schema.fields.items() if k not in value and not f.optional]
    if missing:
        raise ProtocolError(f"{_where(path)} ({schema.name}) lacks {', '.join(missing)}")
    sizes: dict = {}
    out = dict(value)
    for k, f in schema.fields.items():
        if k in value:
            out[k] = check(f, value[k], f"{path}.{k}" if path else k, sizes)
    return out
