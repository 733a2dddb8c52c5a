/**
 * The page's decoder of the report's entropy-coded attention patterns (lmtt_widgets/report_rans.py says how they
 * are coded): 32-bit rANS with 16-bit words, one static frequency table per context, the context of a byte being
 * the range the byte above it in its column falls in (none for a column's first) and the range the byte left of it
 * (the row's byte in the column before; none in column 0) falls in, by the ranges' lower ends `above` and `left`.
 */

const RANS_L = 1 << 16;
const SYMBOLS = 256;

export interface RansTables {
  bits: number;
  /** range of each byte value by value + 1 (index 0: none), for the byte above and the byte left */
  aboveOf: Uint8Array;
  leftOf: Uint8Array;
  /** left ranges + 1 (none): a context is above range * nLeft + left range */
  nLeft: number;
  freq: Uint16Array; // [contexts * 256]
  cum: Uint32Array; // [contexts * 257]: where each symbol's slots start
  lookup: Uint8Array[]; // per context: slot -> symbol (built when the context is first used)
}

/** Each byte value's range (1..ends.length) by its value + 1, 0 for none (report_rans.py `range_table`). */
function rangeTable(ends: readonly number[]): Uint8Array {
  const out = new Uint8Array(SYMBOLS + 1);
  for (let v = 0; v < SYMBOLS; v++) {
    let r = 0;
    while (r < ends.length && ends[r] <= v) r++;
    out[v + 1] = r;
  }
  return out;
}

/** The tables from a frequency table's bytes ([contexts, 256] uint16, little-endian) and the contexts' ranges. */
export function ransTables(table: Uint8Array, above: readonly number[], left: readonly number[], bits: number): RansTables {
  const view = new DataView(table.buffer, table.byteOffset, table.byteLength);
  const freq = new Uint16Array(table.byteLength / 2);
  for (let i = 0; i < freq.length; i++) freq[i] = view.getUint16(2 * i, true);
  const contexts = freq.length / SYMBOLS;
  if (contexts !== (above.length + 1) * (left.length + 1)) throw new Error("the report's pattern table does not fit its contexts: the file was altered");
  const cum = new Uint32Array(contexts * (SYMBOLS + 1));
  for (let c = 0; c < contexts; c++) {
    for (let s = 0; s < SYMBOLS; s++) cum[c * 257 + s + 1] = cum[c * 257 + s] + freq[c * SYMBOLS + s];
  }
  return { bits, aboveOf: rangeTable(above), leftOf: rangeTable(left), nLeft: left.length + 1, freq, cum, lookup: [] };
}

function lookupOf(t: RansTables, c: number): Uint8Array {
  let l = t.lookup[c];
  if (!l) {
    l = new Uint8Array(1 << t.bits);
    for (let s = 0; s < SYMBOLS; s++) l.fill(s, t.cum[c * 257 + s], t.cum[c * 257 + s + 1]);
    t.lookup[c] = l;
  }
  return l;
}

/**
 * One map's bytes from its stream: the lower triangle of a `rows` x `rows` matrix, column by column (column c's
 * rows c..rows-1). Throws when the stream does not end where the coder ended it (an altered file).
 */
export function ransDecode(stream: Uint8Array, t: RansTables, rows: number): Uint8Array {
  const view = new DataView(stream.buffer, stream.byteOffset, stream.byteLength);
  const nWords = stream.byteLength >> 1;
  const word = (i: number) => (i < nWords ? view.getUint16(2 * i, true) : 0);
  const out = new Uint8Array((rows * (rows + 1)) / 2);
  const mask = (1 << t.bits) - 1;
  let x = word(0) * 65536 + word(1);
  let pos = 2;
  let k = 0;
  for (let col = 0; col < rows; col++) {
    let above = 0; // none: a column's first byte
    for (let r = col; r < rows; r++) {
      // the byte left of this one: `rows - col` bytes back (column col - 1 holds rows col - 1..rows - 1)
      const c = above * t.nLeft + (col > 0 ? t.leftOf[out[k - rows + col] + 1] : 0);
      const slot = x & mask;
      const s = lookupOf(t, c)[slot];
      out[k++] = s;
      x = t.freq[c * SYMBOLS + s] * (x >>> t.bits) + slot - t.cum[c * 257 + s];
      if (x < RANS_L) x = x * 65536 + word(pos++);
      above = t.aboveOf[s + 1];
    }
  }
  if (pos !== nWords || x !== RANS_L) throw new Error("the report's pattern data did not decode to its end: the file was altered");
  return out;
}
