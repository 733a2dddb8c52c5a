"""An entropy coder for the report's attention patterns: rANS with one static frequency table per context
(js/reportrans.ts decodes it in the page).

The patterns are stored as one byte per weight (report_pack ``sqrt``: a level of the heatmap's square-root colour
scale), lower triangle only, column by column. Most of those bytes are the small weights' noise, which deflate
codes at about 4.9 bits a weight at 255 levels. A weight is close to the one above it (the same key token read by
the previous query) and to the one left of it (the same query reading the key before), so each byte is coded with a
frequency table chosen by both (``contexts``): the range the byte above falls in and the range the byte left of it
falls in (``contexts_for``: finer where the bytes are small, where most are), a column's first byte (the row
above does not read that key) and column 0's bytes (no key before) in ranges of their own. At 127 levels on a
128-token SmolLM2 prompt that takes about 3.0 bits a weight, tables included (the byte above alone: 3.14 bits;
deflate: 4.0). Lossless: the page gets back exactly the bytes ``sqrt`` stored.

Coder: 32-bit rANS with 16-bit renormalisation (Duda's asymmetric numeral systems, in the word-wise form of
Giesen's ryg_rans), probabilities in ``PROB_BITS`` bits. Each map is one stream (its own state), so the maps are
encoded side by side, one numpy step per position for all of them at once. A stream is its final state (two
16-bit words, high first) then the words emitted while encoding, in the order the decoder reads them.
"""

from __future__ import annotations

import numpy as np

PROB_BITS = 12
M = 1 << PROB_BITS
RANS_L = 1 << 16  # the state's lower bound: it stays in [RANS_L, 2**32)
SYMBOLS = 256
# The ranges of the byte above and of the byte left of a weight (their lower ends) at 127 levels, scaled to others
# by ``contexts_for``: measured on SmolLM2's patterns at 128 tokens, the tables' own size counted (more ranges
# code the bytes in fewer bits but cost more in tables)
ABOVE_127 = (0, 1, 2, 3, 5, 7, 10, 14, 19, 26, 35, 47, 63, 85, 110)
LEFT_127 = (0, 1, 2, 4, 7, 12, 20, 35, 60, 95)


def contexts_for(levels: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(above, left): the lower ends of the ranges the byte above and the byte left of a weight fall in, for maps
    of ``levels`` levels (those for 127 levels scaled; ranges that would be empty merged)."""
    def scaled(ends):
        return tuple(sorted({int(round(e * levels / 127)) for e in ends}))

    return scaled(ABOVE_127), scaled(LEFT_127)


def n_contexts(context: tuple) -> int:
    above, left = context
    return (len(above) + 1) * (len(left) + 1)


def range_table(ends) -> np.ndarray:
    """The range of each byte value (index value + 1: 1..len(ends), by the ranges' lower ends ``ends``) and 0 for
    "none" (index 0): what js/reportrans.ts builds from the same ends."""
    return np.concatenate([[0], np.searchsorted(np.asarray(ends), np.arange(SYMBOLS), side="right")]).astype(np.int64)


def column_starts(rows: int) -> np.ndarray:
    """Where each column starts in a lower triangle stored column by column (column c holds rows c..rows-1)."""
    return np.concatenate([[0], np.cumsum(np.arange(rows, 1, -1))]).astype(np.int64)


def left_places(rows: int) -> np.ndarray:
    """Where the byte left of each byte of a triangle stored column by column is (``rows - c`` bytes back in
    column c), -1 in column 0."""
    col = np.repeat(np.arange(rows), np.arange(rows, 0, -1)).astype(np.int64)
    return np.where(col > 0, np.arange(len(col)) - rows + col, -1)


def contexts(codes: np.ndarray, rows: int, context: tuple) -> np.ndarray:
    """The context of each byte of one map's triangle (column order): the range of the byte above it (none for a
    column's first) times the number of left ranges, plus the range of the byte left of it (none in column 0)."""
    codes = codes.astype(np.int64)
    above = np.concatenate([[-1], codes[:-1]])
    above[column_starts(rows)] = -1
    at = left_places(rows)
    left = np.where(at >= 0, codes[np.maximum(at, 0)], -1)
    return range_table(context[0])[above + 1] * (len(context[1]) + 1) + range_table(context[1])[left + 1]


def frequencies(counts: np.ndarray) -> np.ndarray:
    """Counts [C, 256] -> frequencies summing to ``M`` in each used context, at least 1 wherever a count is not 0
    (so every symbol that occurs can be coded), the rest given to the most frequent symbol; unused contexts 0."""
    used = counts > 0
    nnz = used.sum(1, keepdims=True)
    total = np.maximum(counts.sum(1, keepdims=True), 1)
    freq = np.where(used, 1 + (counts * (M - nnz)) // total, 0)
    rest = np.where(nnz[:, 0] > 0, M - freq.sum(1), 0)
    freq[np.arange(len(freq)), counts.argmax(1)] += rest
    return freq.astype(np.uint16 if M < 1 << 16 else np.uint32)


def encode(maps: list[np.ndarray], rows: list[int], context: tuple) -> tuple[np.ndarray, list[np.ndarray]]:
    """(frequency table [C, 256] uint16, one uint16 word stream per map) for the triangles ``maps`` (uint8, column
    order) of ``rows`` rows each, in the contexts ``context`` (``contexts_for``)."""
    C = n_contexts(context)
    ctxs = [contexts(m, r, context) for m, r in zip(maps, rows)]
    counts = np.zeros((C, SYMBOLS), np.int64)
    for m, c in zip(maps, ctxs):
        np.add.at(counts, (c, m.astype(np.int64)), 1)
    freq = frequencies(counts)
    f64 = freq.astype(np.uint64)
    cum = np.concatenate([np.zeros((C, 1), np.uint64), np.cumsum(f64, 1)[:, :-1]], 1)
    n, width = len(maps), max((len(m) for m in maps), default=0)
    fs = np.ones((n, width), np.uint64)  # 1 where a map has ended (never used: those lanes are inactive)
    ss = np.zeros((n, width), np.uint64)
    lengths = np.array([len(m) for m in maps], np.int64)
    for i, (m, c) in enumerate(zip(maps, ctxs)):
        fs[i, :len(m)] = f64[c, m]
        ss[i, :len(m)] = cum[c, m]
    x = np.full(n, RANS_L, np.uint64)
    bound = np.uint64((RANS_L >> PROB_BITS) << 16)
    lanes, words = [], []
    for j in range(width - 1, -1, -1):  # rANS encodes backwards
        active = lengths > j
        f, s = fs[:, j], ss[:, j]
        emit = active & (x >= bound * f)
        lanes.append(np.flatnonzero(emit))
        words.append(x[emit] & np.uint64(0xFFFF))
        x = np.where(emit, x >> np.uint64(16), x)
        x = np.where(active, ((x // f) << np.uint64(PROB_BITS)) + x % f + s, x)
    lane = np.concatenate(lanes) if lanes else np.zeros(0, np.int64)
    word = np.concatenate(words) if words else np.zeros(0, np.uint64)
    # the decoder reads the words in the reverse order of their emission
    order = np.lexsort((-np.arange(len(lane)), lane))
    lane, word = lane[order], word[order]
    bounds = np.searchsorted(lane, np.arange(n + 1))
    streams = [np.concatenate([[x[i] >> np.uint64(16), x[i] & np.uint64(0xFFFF)], word[bounds[i]:bounds[i + 1]]])
               .astype(np.uint16) for i in range(n)]
    return freq, streams


def decode(streams: list[np.ndarray], freq: np.ndarray, rows: list[int], context: tuple) -> list[np.ndarray]:
    """The maps' bytes back (tests, tools; js/reportrans.ts is the page's decoder), side by side as ``encode``."""
    freq = freq.astype(np.int64)
    if freq.shape != (n_contexts(context), SYMBOLS):
        raise ValueError("a report's pattern table does not fit its contexts: the file was altered")
    cum = np.concatenate([np.zeros((len(freq), 1), np.int64), np.cumsum(freq, 1)], 1)
    lookup = np.zeros((len(freq), M), np.int64)  # slot -> symbol, per context
    for c in np.flatnonzero(cum[:, -1]):
        lookup[c] = np.repeat(np.arange(SYMBOLS), freq[c])
    n = len(streams)
    lengths = np.array([r * (r + 1) // 2 for r in rows], np.int64)
    width = int(lengths.max(initial=0))
    words = np.zeros((n, max((len(s) for s in streams), default=2) + 1), np.int64)
    for i, s in enumerate(streams):
        words[i, :len(s)] = s
    starts = np.zeros((n, width + 1), bool)
    left_at = np.full((n, width), -1, np.int64)
    for i, r in enumerate(rows):
        starts[i, column_starts(r)] = True
        left_at[i, :lengths[i]] = left_places(r)
    above_of, left_of, n_left = range_table(context[0]), range_table(context[1]), len(context[1]) + 1
    out = np.zeros((n, width), np.int64)
    x, pos, lanes = (words[:, 0] << 16) | words[:, 1], np.full(n, 2), np.arange(n)
    for j in range(width):
        active = lengths > j
        above = np.where(starts[:, j], -1, out[:, j - 1] if j else -1)
        left = np.where(left_at[:, j] >= 0, out[lanes, np.maximum(left_at[:, j], 0)], -1)
        c = above_of[above + 1] * n_left + left_of[left + 1]
        slot = x & (M - 1)
        sym = lookup[c, slot]
        out[:, j] = np.where(active, sym, 0)
        nx = freq[c, sym] * (x >> PROB_BITS) + slot - cum[c, sym]
        x = np.where(active, nx, x)
        read = active & (x < RANS_L)
        x = np.where(read, (x << 16) | words[lanes, np.minimum(pos, words.shape[1] - 1)], x)
        pos += read
    ends = np.array([len(s) for s in streams])
    if (pos != ends).any() or (x != RANS_L).any():
        raise ValueError("a report's pattern stream did not decode to its end: the file was altered")
    return [out[i, :lengths[i]].astype(np.uint8) for i in range(n)]
