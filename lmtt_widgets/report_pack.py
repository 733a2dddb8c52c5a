"""The report's state as one compressed binary container, gzip members framed by their lengths (js/reportcodec.ts
reads it back).

Layout before compression: a 4-byte little-endian length, the JSON text (UTF-8), zero padding to a multiple of
8, then the arrays' bytes, each starting at a multiple of 8. In the JSON every array is
``{"dtype", "shape", "data": {"at": offset in the array part, "n": bytes, "enc": ...}}``; ``dtype`` and ``shape``
are what the widget's wire format says (docs/widget-protocol.md, "Arrays"), ``enc`` how the bytes store it:

- ``raw``: the wire dtype's own bytes;
- ``f16``: float32 stored as IEEE float16 (about 3 significant digits: probabilities and neuron scores; NaN
  and ±inf kept); ``delta``: each float16's 16 bits minus those of the number before it along the last axis
  (mod 2**16; the first of each row as it is). Exact either way; for sorted rows (top-k logits, probabilities)
  the differences are small, since float16 bit patterns of one sign are ordered like the numbers;
- ``f16lo``: float32 whose values at most ``below`` are float16 (never rounded above it, within 2**-10, none in
  float16's subnormal range) and the others float32, exact (route scores: τ, never under the floor, compares only those; the small ones show only in an edge's
  breakdown by head, with 3 digits); the float16 plane list then the float32 plane list, a NaN float16 marking
  where the next float32 goes;
- ``u16`` / ``i16``: uint32 / int32 whose values fit in 16 bits (token ids of a vocabulary under 65,536); ``u16``
  of an int32 array: its values plus ``offset`` (1: ranks of a vocabulary under 65,535, -1 for "none"); ``u16``
  with ``delta``: each as the difference from the one before it along the last axis, mod 2**16 (the first of each
  row as it is; ascending indices and offsets: small differences); ``cols``: a matrix stored column by column (the
  differences then down each column: sorted keys such as (layer, head, token));
- ``next``: int32 row indices (-1: none) that mostly count up, as rows are added in the order they are first used
  (the neuron table's ``index``): each as 1 where it is one past the largest before it, 0 for -1, else itself plus
  2, in 16 bits (byte planes);
- ``prev``: integers under 2**16 in rows along the last axis (at most 254 a row), each stored as the place (one
  byte) of the same value in the row before it, or 255 and the value in a list of literals (16 bits, byte planes)
  after the codes: the logit lens's rows (at 128 tokens on SmolLM2 87 % of a row's tokens are in the row before),
  a head's projections at adjacent tokens;
- ``fixed``: float32 in steps of ``2**-bits`` (off by at most ``2**-(bits+1)``: logits of vocabulary projections,
  shown with 2 decimals, at ``bits`` 8: 0.002), each as the difference from the one before it along the last axis
  in 16 bits (sorted rows: small differences); a row holding a value under 0.001 but not 0 (which the panes show
  with 3 significant digits) in steps as fine as 16 bits allow, ``row_bits`` (a byte a row before the
  differences), which must keep it to 3 significant digits; only where every difference fits;
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

Compression: the arrays are laid out section by section (``SECTIONS``, ``layout``: the rest, the attention
patterns, the contribution maps), in a section field by field (``_field``: every target's lens ids together...),
and the head (length and JSON) and each section are one gzip member of their own
(``Packer``), deflated by libdeflate at its level 12 where the ``deflate`` package is installed (4-10 % smaller than
zlib's best: 0.11 MB less at 128 tokens), else by zlib at level 9. The container is ``FRAME`` (4 bytes), the number
of members and each member's length (4 bytes each, little-endian), then the members: browsers' DecompressionStream
reads one gzip member only, so the page inflates each on its own and joins them (js/reportcodec.ts
``readContainer``). A section that did not change since the last pack is not compressed again, so trying a size
ladder costs one deflate of the part that changed.

Text form (``to_text``): the page holds the container as text inside a ``<script type="text/plain">`` block. Base64
spends 8 bits of the file on 6 of data; here each character carries 7 bits (``_SEVEN``): every 7-bit group is
written as the ASCII character of that code, except the three the HTML parser would change or that could end the
block (NUL becomes U+FFFD, CR becomes LF, ``<``), which are written together with the group after them as one
two-byte UTF-8 character, so those carry 14 bits in 2 bytes too. The file is 8/7 of the compressed container, not
4/3; the text holds no ``<``, no CR, no NUL and nothing past U+0282 (js/reportcodec.ts ``textBytes`` reads it).
"""

from __future__ import annotations

import collections
import gzip
import hashlib
import json
import re
import struct
import zlib

import numpy as np

try:  # libdeflate: smaller deflate streams than zlib's (optional)
    import deflate as _libdeflate
except ImportError:  # pragma: no cover - depends on the environment
    _libdeflate = None

from .widgets.codec import DTYPES, wire_safe

ENCODINGS = ("raw", "f16", "u16", "i16", "sqrt", "fixed", "f16lo", "prev", "next")
_F16_MAX = 65504.0


def is_array(obj) -> bool:
    return isinstance(obj, dict) and {"dtype", "shape", "data"} <= set(obj) and isinstance(
        obj["data"], (bytes, bytearray, memoryview))


def _values(a: dict) -> np.ndarray:
    return np.frombuffer(bytes(a["data"]), DTYPES[a["dtype"]]).reshape(a["shape"])


# ``fixed`` keeps a value under this magnitude (js/text.ts fmt shows it with 3 significant digits, not 2 decimals)
# to 3 significant digits, in a row of finer steps
_FIXED_TINY = 1e-3


def _fixed_row_bits(v: np.ndarray, bits: int) -> np.ndarray | None:
    """Steps of each row (``fixed``): ``bits`` unless the row holds a value under ``_FIXED_TINY`` but not 0 (a
    head that writes almost nothing): then as fine as 16-bit differences allow, which must keep its smallest value
    to 3 significant digits; None when a row cannot (values of very different sizes) or steps of ``bits`` do not
    fit."""
    a = np.abs(v.astype(np.float64)).reshape(-1, v.shape[-1] if v.ndim else 1)
    out = np.full(len(a), bits, np.int64)
    tiny = (a > 0) & (a < _FIXED_TINY)
    rows = tiny.any(1)
    if rows.any():
        out[rows] = np.floor(np.log2((1 << 14) / a[rows].max(1)))  # |q| < 2**14: differences fit 16 bits
        if (np.where(tiny[rows], a[rows], np.inf).min(1) * 2.0 ** out[rows] < 1000).any():
            return None
    if (np.abs(_fixed_rows(v, out)) >= 1 << 15).any():
        return None
    return out


def _fixed_rows(v: np.ndarray, row_bits: np.ndarray) -> np.ndarray:
    """``fixed``: each value in steps of 2**-bits of its row, as the difference from the one before it in the row."""
    rows = v.astype(np.float64).reshape(-1, v.shape[-1] if v.ndim else 1)
    q = np.rint(rows * np.exp2(row_bits.astype(np.float64))[:, None]).astype(np.int64)
    return np.diff(q, axis=1, prepend=0)


def _fixed_fits(v: np.ndarray, bits: int) -> bool:
    return bool(v.size == 0 or _fixed_row_bits(v, bits) is not None)


def reduced(a: dict, enc: str, levels: int = 255, *, delta: bool = False, rans: bool = False,
            bits: int = 8, below: float = 0.0, offset: int = 0, cols: bool = False) -> dict:
    """Mark the array dict ``a`` to be stored as ``enc`` (``delta``: float16 or u16 rows as differences; ``rans``: a
    ``sqrt`` triangle entropy-coded with the others so marked, report_rans.py); falls back to ``raw`` whenever
    ``enc`` would change a value more than it says (out of float16's range, ids past 16 bits, negative or
    non-finite map values)."""
    if enc not in ENCODINGS:
        raise ValueError(f"unknown array encoding {enc!r}; use one of {ENCODINGS}")
    v = _values(a)
    finite = np.isfinite(v).all() if v.dtype.kind == "f" else True
    ok = {
        "raw": True,
        # NaN and ±inf are float16 values too (kept exactly); a finite value past float16's range is not
        "f16": a["dtype"] == "float32" and (v.size == 0 or float(np.abs(np.where(np.isfinite(v), v, 0)).max())
                                            <= _F16_MAX),
        "u16": (a["dtype"] == "uint32" and not offset or a["dtype"] == "int32") and (
            v.size == 0 or 0 <= int(v.min()) + offset <= int(v.max()) + offset < 1 << 16),
        "i16": a["dtype"] == "int32" and (v.size == 0 or -(1 << 15) <= int(v.min()) <= int(v.max()) < 1 << 15),
        "sqrt": a["dtype"] == "float32" and finite and (v.size == 0 or float(v.min()) >= 0) and 1 <= levels <= 255,
        "fixed": a["dtype"] == "float32" and finite and _fixed_fits(v, bits),
        "f16lo": a["dtype"] == "float32" and finite and v.ndim == 1 and below > 0,
        "prev": a["dtype"] in ("uint32", "int32") and v.ndim >= 1 and 0 < v.shape[-1] < _PREV_LITERAL and (
            v.size == 0 or 0 <= int(v.min()) <= int(v.max()) < 1 << 16),
        "next": a["dtype"] == "int32" and (v.size == 0 or -1 <= int(v.min()) <= int(v.max()) < (1 << 16) - 2),
    }[enc]
    return {**a, "enc": enc if ok else "raw", "levels": levels, "delta": delta and enc in ("f16", "u16") and ok,
            "cols": cols and enc == "u16" and ok and v.ndim == 2,
            "rans": rans and enc == "sqrt" and ok, "bits": bits, "below": below, "offset": offset if ok else 0}


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
        offset = int(a.get("offset", 0))
        values = (v.astype(np.int64) + offset).astype(np.uint16 if enc == "u16" else np.int16)
        if a.get("cols"):  # u16 only (``reduced``): column by column
            values = np.ascontiguousarray(values.T)
        if a.get("delta") and values.size:  # u16 only (``reduced``)
            values = np.diff(values.reshape(-1, values.shape[-1]), axis=1, prepend=np.uint16(0))  # mod 2**16
        data, desc = _planes(values.reshape(-1))
        return data, {"enc": enc, **desc, **({"offset": offset} if offset else {}),
                      **({"delta": True} if a.get("delta") else {}), **({"cols": True} if a.get("cols") else {})}
    if enc == "f16lo":
        return _store_f16lo(v, float(a["below"]))
    if enc == "prev":
        return _store_prev(v)
    if enc == "next":
        flat = v.reshape(-1).astype(np.int64)
        seen = np.maximum.accumulate(np.concatenate([[-1], flat[:-1]]))  # the largest before each (-1: none)
        codes = np.where(flat < 0, 0, np.where(flat == seen + 1, 1, flat + 2)).astype(np.uint16)
        data, desc = _planes(codes)
        return data, {"enc": "next", **desc}
    if enc == "fixed":
        bits = int(a.get("bits", 8))
        if v.size == 0:
            return b"", {"enc": "fixed", "bits": bits}
        row_bits = _fixed_row_bits(v, bits)
        diffs = _fixed_rows(v, row_bits).astype(np.int16).reshape(-1)
        if (row_bits == bits).all():
            data, desc = _planes(diffs)
            return data, {"enc": "fixed", "bits": bits, **desc}
        # some rows in finer steps: each row's bits (one byte a row), then the differences (int16 little-endian)
        return row_bits.astype(np.uint8).tobytes() + diffs.astype("<i2").tobytes(), {
            "enc": "fixed", "bits": bits, "row_bits": True}
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


# ``prev``: the code of a value that is in no place of the row before it (it is in the list of literals)
_PREV_LITERAL = 255


def places_in_row_before(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows [..., R, k]: (the first place of each value in the row before it along axis -2, whether it is there;
    never in a first row)."""
    place = np.zeros(rows.shape, np.int64)
    found = np.zeros(rows.shape, bool)
    if rows.shape[-2] > 1:
        same = rows[..., 1:, :, None] == rows[..., :-1, None, :]  # [..., R - 1, k (this row), k (the row before)]
        found[..., 1:, :] = same.any(-1)
        place[..., 1:, :] = same.argmax(-1)
    return place, found


def prev_codes(rows: np.ndarray) -> np.ndarray:
    """``prev``'s code of each value of ``rows`` [N, k]: how many places after its own (mod k) the row before it
    first holds the same value (0: at the same place, as half a logit lens's tokens are), ``_PREV_LITERAL`` where
    it holds none (and in the first row)."""
    place, found = places_in_row_before(rows)
    codes = np.full(rows.shape, _PREV_LITERAL, np.uint8)
    codes[found] = ((place - np.arange(rows.shape[-1])) % rows.shape[-1])[found]
    return codes


def _store_prev(v: np.ndarray) -> tuple[bytes, dict]:
    """``prev``: the rows (along the last axis) of 16-bit integers such as token ids, each value as the place of
    the same value in the row before it (one byte, ``prev_codes``; adjacent rows of a logit lens or of a head's
    projections at adjacent tokens share most of their tokens), the others in a list of literals (16 bits, byte
    planes) after the codes."""
    rows = v.reshape(-1, v.shape[-1]).astype(np.int64)
    codes = prev_codes(rows)
    literals, _ = _planes(rows[codes == _PREV_LITERAL].astype(np.uint16))
    return codes.tobytes() + literals, {"enc": "prev", "lit": int((codes == _PREV_LITERAL).sum())}


_F16_MARK = 0xFFFF  # a NaN float16: "this value is in the float32 list"


def _store_f16lo(v: np.ndarray, below: float) -> tuple[bytes, dict]:
    """``f16lo``: values at most ``below`` as float16 (never rounded above ``below``: one step toward 0 where the
    nearest would be; within 2**-10 of theirs), the others, and those under float16's normal range (whose
    relative error would be larger), as float32, exact, in a list of their own, marked in the float16 list by
    ``_F16_MARK``."""
    low = (v <= np.float32(below)) & ((v >= np.float32(2.0 ** -14)) | (v == 0))
    half = v.astype(np.float16)
    over = low & (half.astype(np.float32) > np.float32(below))
    half[over] = np.nextafter(half[over], np.float16(0))
    bits = half.view(np.uint16).copy()
    bits[~low] = _F16_MARK
    data16, _ = _planes(bits)
    data32, _ = _planes(v[~low].astype(np.float32))
    return data16 + data32, {"enc": "f16lo", "below": below, "high": int((~low).sum())}


# Sections of the array part, in this order, each deflated on its own (``Packer``): what a size ladder changes
# (pattern precision) apart from what it does not, so only that part is compressed again.
SECTIONS = ("other", "pattern", "contribution")


def _section(path: tuple) -> str:
    """The section of an array at ``path`` (keys from the container's root): head maps by field, the rest
    together."""
    if len(path) >= 3 and path[0] == "details" and str(path[1]).startswith("head:") and path[2] in SECTIONS:
        return path[2]
    return "other"


def _field(path: tuple) -> str:
    """An array's field: its path with every number in it (a target, a list index, a detail key's layer, head
    and token) replaced by "#"."""
    return "/".join(re.sub(r"\d+", "#", str(p)) for p in path)


def layout(obj) -> tuple[bytes, dict[str, bytes]]:
    """(head, sections): the container's uncompressed head (length and JSON) and its array bytes by section. An
    array's ``at`` counts from the start of the array part, sections laid out in ``SECTIONS`` order."""
    stored: list[tuple[str, str, bytes, dict, bool]] = []  # (field, section, bytes, descriptor, rANS)

    def walk(o, path):
        if is_array(o):
            data, desc = _store(o)
            rans = bool(o.get("rans")) and desc.get("tril") == "cols"
            stored.append((_field(path), _section(path), data, desc, rans))
            return {"dtype": o["dtype"], "shape": list(o["shape"]), "data": desc}
        if isinstance(o, dict):
            return {k: walk(v, path + (k,)) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [walk(v, path + (i,)) for i, v in enumerate(o)]
        return o

    body = walk(wire_safe(obj), ())
    # the arrays of one field side by side (every target's lens ids, then every target's probabilities...), in the
    # order they came: deflate's window and its Huffman blocks then see like with like (29 kB less at 128 tokens)
    stored.sort(key=lambda entry: entry[0])
    found = [(section, data, desc) for _, section, data, desc, _ in stored]
    coded = [i for i, entry in enumerate(stored) if entry[4]]  # entries to entropy-code together (``_entropy_code``)
    found = _entropy_code(found, coded)
    sections, size = {}, 0
    for name in SECTIONS:
        chunks = []
        for sec, data, desc in found:
            if sec == name:
                pad = -size % 8
                chunks.append(b"\0" * pad + data)
                desc.update(at=size + pad, n=len(data))
                size += pad + len(data)
        sections[name] = b"".join(chunks)
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    head = struct.pack("<I", len(text)) + text
    return head + b"\0" * (-len(head) % 8), sections


# Below this many bytes of maps to code, the rANS coder is used only where it beats deflate (its tables cost a few
# kB); above it, it always does (on a 128-token SmolLM2 report's patterns 1.10 MB at 255 levels, where deflate
# took 1.37, and 0.83 MB at 127), and that deflate is not worth computing again on each pack.
RANS_ALWAYS = 100_000


_RANS_DONE: "collections.OrderedDict[bytes, tuple]" = collections.OrderedDict()


def _rans_encoded(maps: list[np.ndarray], rows: list[int], context: tuple) -> tuple:
    """report_rans.encode, remembered for the last few sets of maps: the size ladder packs the same maps again
    while it tries other parts (the neurons' projections), and coding 270 maps of 256 tokens takes about 1 s."""
    from . import report_rans

    h = hashlib.blake2b(digest_size=16)
    h.update(np.asarray(rows, np.int64).tobytes() + json.dumps(context).encode())
    for m in maps:
        h.update(m.tobytes())
    key = h.digest()
    if key not in _RANS_DONE:
        _RANS_DONE[key] = report_rans.encode(maps, rows, context)
        while len(_RANS_DONE) > 4:
            _RANS_DONE.popitem(last=False)
    return _RANS_DONE[key]


def _entropy_code(found: list[tuple[str, bytes, dict]], coded: list[int]) -> list[tuple[str, bytes, dict]]:
    """The triangles at ``coded`` (``sqrt`` bytes, column order) rANS-coded (report_rans.py), one stream each, with
    one frequency table per group of maps of the same levels, stored before the group's first map; each map's
    descriptor points to the table (``rans``: its ``at``, ``n``, the contexts' ranges ``above`` and ``left``,
    ``bits``). Left as they are when the coded form would be larger."""
    from . import report_rans

    groups: dict[int, list[int]] = {}
    for i in coded:
        groups.setdefault(int(found[i][2]["levels"]), []).append(i)
    inserts: dict[int, tuple[str, bytes, dict]] = {}
    for levels, members in groups.items():
        context = report_rans.contexts_for(levels)
        maps = [np.frombuffer(found[i][1], np.uint8) for i in members]
        rows = [int(round((np.sqrt(8 * len(m) + 1) - 1) / 2)) for m in maps]
        table, streams = _rans_encoded(maps, rows, context)
        plain = sum(len(m) for m in maps)
        if plain < RANS_ALWAYS:
            size = len(zlib.compress(table.astype("<u2").tobytes(), 9)) + sum(s.nbytes for s in streams)
            if size >= len(zlib.compress(b"".join(m.tobytes() for m in maps), 9)):
                continue
        data, table_desc = _planes(table.astype("<u2").reshape(-1))  # 16-bit frequencies, byte plane by plane
        table_desc = {"enc": "raw", **table_desc}
        inserts[members[0]] = (found[members[0]][0], data, table_desc)
        ref = {"table": table_desc, "above": list(context[0]), "left": list(context[1]), "bits": report_rans.PROB_BITS}
        for i, stream in zip(members, streams):
            section, _, desc = found[i]
            desc["rans"] = ref
            found[i] = (section, stream.astype("<u2").tobytes(), desc)
    out = []
    for i, entry in enumerate(found):
        if i in inserts:
            out.append(inserts[i])
        out.append(entry)
    return out


# The container's first bytes: gzip members framed by their lengths (module docstring)
FRAME = b"LMz1"
# gzip member header (RFC 1952): magic, deflate, no flags, mtime 0 (the same report gives the same page), maximum
# compression, unknown OS
_GZIP_HEAD = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"


def deflate_raw(data: bytes, level: int | None = None) -> bytes:
    """A raw deflate stream of ``data``: libdeflate (level 12 by default) when installed, else zlib (level 9)."""
    if _libdeflate is not None:
        return _libdeflate.deflate_compress(data, 12 if level is None else level)
    z = zlib.compressobj(9 if level is None else min(level, 9), zlib.DEFLATED, -15, 8)  # memLevel 9 gains nothing
    return z.compress(data) + z.flush()


def gzip_member(data: bytes, level: int | None = None) -> bytes:
    """``data`` as one gzip member (its CRC lets the browser check what it inflates)."""
    return _GZIP_HEAD + deflate_raw(data, level) + struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)


def frame(members: list[bytes]) -> bytes:
    """The container: ``FRAME``, the members' count and lengths, the members."""
    return FRAME + struct.pack(f"<{1 + len(members)}I", len(members), *map(len, members)) + b"".join(members)


def unframe(blob: bytes) -> list[bytes]:
    """``frame``'s members back; a clear error for anything else."""
    if blob[:4] != FRAME or len(blob) < 8:
        raise ValueError("not a report container: it does not start with its frame (the file was altered or is "
                         "from another version of lmtt-widgets)")
    (n,) = struct.unpack_from("<I", blob, 4)
    lengths = struct.unpack_from(f"<{n}I", blob, 8)
    ends = np.cumsum((8 + 4 * n, *lengths))
    if ends[-1] != len(blob):
        raise ValueError("a report container's members do not add up to its length: the file was altered")
    return [blob[a:b] for a, b in zip(ends[:-1], ends[1:])]


class Packer:
    """Containers whose parts (the head and each section) are deflated one by one, each a gzip member, and
    remembered: packing again after a change to one section deflates only that one (and the head)."""

    def __init__(self, level: int | None = None):
        self.level = level
        self._done: dict[bytes, bytes] = {}

    def _member(self, data: bytes) -> bytes:
        key = hashlib.blake2b(data, digest_size=16).digest()
        if key not in self._done:
            self._done[key] = gzip_member(data, self.level)
        return self._done[key]

    def pack(self, obj) -> bytes:
        head, sections = layout(obj)
        return frame([self._member(p) for p in (head, *sections.values())])


def pack(obj) -> bytes:
    """The compressed container of a JSON-like value holding array dicts (strings made wire-safe)."""
    return Packer().pack(obj)


# The 7-bit groups written as a two-byte character with the group after them (module docstring), and where those
# characters start: U+0100 + 128 * i + next group; a lone last one is U+0280 + i.
_SEVEN = (0x00, 0x0D, 0x3C)  # NUL, CR, "<"
_PAIR, _LONE = 0x100, 0x280


def to_text(data: bytes) -> str:
    """Bytes as text of 7 bits a character, safe inside an HTML script block (module docstring)."""
    bits = np.unpackbits(np.frombuffer(data, np.uint8))
    n = -(-len(bits) // 7)
    bits = np.concatenate([bits, np.zeros(7 * n - len(bits), np.uint8)]).reshape(n, 7)
    groups = bits.astype(np.int64) @ (1 << np.arange(6, -1, -1))
    special = np.isin(groups, _SEVEN)
    starts = np.ones(n, bool)
    for k in np.flatnonzero(special):  # a special group takes the next one with it (a few % of groups)
        if starts[k] and k + 1 < n:
            starts[k + 1] = False
    index = np.searchsorted(np.array(_SEVEN), groups)
    nxt = np.append(groups[1:], 0)
    cps = np.where(~special, groups, np.where(np.arange(n) + 1 < n, _PAIR + 128 * index + nxt, _LONE + index))
    return cps[starts].astype("<u4").tobytes().decode("utf-32-le")


def text_size(n: int) -> int:
    """Bytes (UTF-8) of ``to_text`` of ``n`` bytes, at most: one per 7-bit group (a two-byte character carries two
    groups), one more when the last group is special and alone."""
    return -(-8 * n // 7) + 1


def from_text(text: str) -> bytes:
    """``to_text``'s bytes back (tests, tools; js/reportcodec.ts ``textBytes`` is the page's reader)."""
    cps = np.frombuffer(text.encode("utf-32-le"), "<u4").astype(np.int64)
    if ((cps >= 128) & (cps < _PAIR)).any() or (cps >= _LONE + len(_SEVEN)).any():
        raise ValueError("not a report container's text: a character outside its alphabet")
    pair, lone = (cps >= _PAIR) & (cps < _LONE), cps >= _LONE
    seven = np.array(_SEVEN)
    first = np.where(pair, seven[np.clip((cps - _PAIR) >> 7, 0, 2)],
                     np.where(lone, seven[np.clip(cps - _LONE, 0, 2)], cps))
    groups = np.stack([first, np.where(pair, (cps - _PAIR) & 127, -1)], 1).reshape(-1)
    groups = groups[groups >= 0]
    bits = ((groups[:, None] >> np.arange(6, -1, -1)) & 1).astype(np.uint8).reshape(-1)
    return np.packbits(bits[: len(bits) // 8 * 8]).tobytes()


def pack_text(obj) -> str:
    """The container as the page's text (``to_text``)."""
    return to_text(pack(obj))


def unpack(blob: bytes | str) -> object:
    """Read a container (its bytes, or the page's text) back in Python (tests, tools): arrays become numpy arrays
    of their wire dtype."""
    raw = b"".join(gzip.decompress(m) for m in unframe(from_text(blob) if isinstance(blob, str) else blob))
    (n,) = struct.unpack_from("<I", raw)
    body = json.loads(raw[4:4 + n].decode())
    base = 4 + n + (-(4 + n) % 8)
    at = lambda d: raw[base + d["at"]: base + d["at"] + d["n"]]  # noqa: E731
    coded = _rans_decoded(body, at)

    def walk(o):
        if isinstance(o, dict) and isinstance(o.get("data"), dict) and "enc" in o["data"]:
            return _inflate(o, coded.get(o["data"]["at"]) if "rans" in o["data"] else at(o["data"]))
        if isinstance(o, dict):
            return {k: walk(v) for k, v in o.items()}
        if isinstance(o, list):
            return [walk(v) for v in o]
        return o

    return walk(body)


def _rans_decoded(body, at) -> dict[int, bytes]:
    """The bytes of every rANS-coded triangle in a container's body, by the ``at`` of its stream (decoded side by
    side, a group per frequency table)."""
    from . import report_rans

    groups: dict[int, list[dict]] = {}

    def walk(o):
        if isinstance(o, dict) and isinstance(o.get("data"), dict) and "rans" in o["data"]:
            groups.setdefault(o["data"]["rans"]["table"]["at"], []).append(o)
        elif isinstance(o, dict):
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    walk(body)
    out = {}
    for arrays in groups.values():
        ref = arrays[0]["data"]["rans"]
        if ref["bits"] != report_rans.PROB_BITS:
            raise ValueError(f"a report's patterns use {ref['bits']}-bit probabilities; this reader knows "
                             f"{report_rans.PROB_BITS}")
        table = np.frombuffer(at(ref["table"]), np.uint8).reshape(2, -1).T.copy().view("<u2")  # byte planes
        table = table.reshape(-1, report_rans.SYMBOLS)
        streams = [np.frombuffer(at(a["data"]), "<u2") for a in arrays]
        maps = report_rans.decode(streams, table, [a["shape"][0] for a in arrays], (ref["above"], ref["left"]))
        out.update({a["data"]["at"]: m.tobytes() for a, m in zip(arrays, maps)})
    return out


def _inflate(a: dict, data: bytes) -> np.ndarray:
    d, shape, dtype = a["data"], a["shape"], DTYPES[a["dtype"]]
    enc = d["enc"]
    if enc == "f16lo":
        n, k = int(np.prod(shape)), d["high"]
        bits = np.frombuffer(data[:2 * n], np.uint8).reshape(2, n).T.copy().view(np.uint16).reshape(-1)
        high = np.frombuffer(data[2 * n:2 * n + 4 * k], np.uint8).reshape(4, k).T.copy().view(np.float32).reshape(-1)
        out = bits.view(np.float16).astype(np.float32)
        out[bits == _F16_MARK] = high
        return out.astype(dtype).reshape(shape)
    if enc == "prev":
        return _inflate_prev(data, int(d["lit"]), shape).astype(dtype)
    if enc == "next":
        codes = np.frombuffer(data, np.uint8).reshape(2, -1).T.copy().view("<u2").reshape(-1).astype(np.int64)
        out, top = np.empty(len(codes), np.int64), -1
        for i, c in enumerate(codes.tolist()):
            out[i] = -1 if c == 0 else top + 1 if c == 1 else c - 2
            top = max(top, out[i])
        return out.astype(dtype).reshape(shape)
    if d.get("planes"):
        data = np.frombuffer(data, np.uint8).reshape(d["planes"], -1).T.tobytes()
    if enc == "raw":
        return np.frombuffer(data, dtype).reshape(shape)
    if enc == "f16" and d.get("delta"):
        bits = np.frombuffer(data, np.uint16).reshape(-1, shape[-1] if shape else 1)
        return np.cumsum(bits, axis=1, dtype=np.uint16).view(np.float16).astype(dtype).reshape(shape)
    if enc == "fixed":
        if not np.prod(shape):
            return np.zeros(shape, dtype)
        n_rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
        row_bits = np.full(n_rows, d["bits"], np.int64)
        if d.get("row_bits"):
            row_bits, data = np.frombuffer(data[:n_rows], np.uint8).astype(np.int64), data[n_rows:]
        rows = np.frombuffer(data, "<i2").astype(np.int64).reshape(n_rows, -1)
        return (np.cumsum(rows, axis=1) / np.exp2(row_bits)[:, None]).astype(dtype).reshape(shape)
    if enc in ("f16", "u16", "i16"):
        src = {"f16": np.float16, "u16": np.uint16, "i16": np.int16}[enc]
        values = np.frombuffer(data, src)
        if enc == "u16" and d.get("delta") and values.size:
            run = shape[0] if d.get("cols") else shape[-1] if shape else 1
            values = np.cumsum(values.reshape(-1, run), axis=1, dtype=np.uint16).reshape(-1)
        if enc == "u16" and d.get("cols"):
            values = np.ascontiguousarray(values.reshape(shape[::-1]).T).reshape(-1)
        if d.get("offset"):
            values = values.astype(np.int64) - d["offset"]
        return values.astype(dtype).reshape(shape)
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


def _inflate_prev(data: bytes, n_literals: int, shape) -> np.ndarray:
    """``prev``'s values back (``_store_prev``), row by row."""
    n = int(np.prod(shape))
    k = shape[-1] if len(shape) else 1
    codes = np.frombuffer(data[:n], np.uint8).reshape(-1, k)
    literals = np.frombuffer(data[n:n + 2 * n_literals], np.uint8).reshape(2, -1).T.copy().view("<u2").reshape(-1)
    out = np.zeros(codes.shape, np.int64)
    at = 0
    for r, row in enumerate(codes):
        lit = row == _PREV_LITERAL
        if r == 0 and not lit.all() or (~lit & (row >= k)).any():
            raise ValueError("a report's array refers to a place its previous row does not have: the file was altered")
        out[r, lit] = literals[at:at + int(lit.sum())]
        at += int(lit.sum())
        if r:
            out[r, ~lit] = out[r - 1, (row[~lit].astype(np.int64) + np.flatnonzero(~lit)) % k]
    return out.reshape(shape)
