/**
 * Reading the offline report's container (lmtt_widgets/report_pack.py): its text, 7 bits a character (`textBytes`)
 * -> gzip (the browser's own DecompressionStream, no library, no network) -> a 4-byte JSON length, the JSON, then
 * the arrays' bytes. Every
 * array comes back as a wire array dict `{dtype, shape, data: DataView}` of its wire dtype, whatever reduced form
 * (`f16`, `u16`, `i16`, `sqrt`, `fixed`) stored it, so the panes read a report exactly like a kernel's traits.
 */
import type { ArrayDict } from "./codec";
import { ransDecode, ransTables, type RansTables } from "./reportrans";

export interface Stored {
  enc: "raw" | "f16" | "u16" | "i16" | "sqrt" | "fixed" | "f16lo" | "prev" | "next";
  at: number;
  n: number;
  max?: number;
  levels?: number;
  /** lower triangle only, stored column by column ("cols": column c's rows c..R-1) */
  tril?: "cols";
  /** f16 (its 16 bits), u16: each number stored as the difference from the one before it along the last axis (mod 2^16) */
  delta?: boolean;
  /** fixed: values in steps of 2^-bits, each stored as an int16 difference from the one before it in its row */
  bits?: number;
  /** fixed: each row's own bits, a byte a row, before the differences */
  row_bits?: boolean;
  /** f16lo: how many values are float32 (after the float16 planes, in planes too; a NaN float16 marks each) */
  high?: number;
  /** prev: how many values are literals (16 bits, in byte planes after the one-byte codes) */
  lit?: number;
  /** u16 of a matrix: stored column by column */
  cols?: boolean;
  /** u16 of an int32 array: what was added to each value to store it */
  offset?: number;
  /** bytes per number when stored byte plane by byte plane */
  planes?: number;
  /** sqrt triangle, rANS-coded (js/reportrans.ts): its frequency table's place, the contexts' ranges and bits */
  rans?: { table: { at: number; n: number; planes?: number }; above: number[]; left: number[]; bits: number };
}

// The frequency tables already built, by the array part they are in and their place there.
const tablesCache = new WeakMap<Uint8Array, Map<number, RansTables>>();

function tablesFor(r: NonNullable<Stored["rans"]>, bytes: Uint8Array): RansTables {
  let byAt = tablesCache.get(bytes);
  if (!byAt) tablesCache.set(bytes, (byAt = new Map()));
  let t = byAt.get(r.table.at);
  if (!t) {
    const table = bytes.subarray(r.table.at, r.table.at + r.table.n);
    byAt.set(r.table.at, (t = ransTables(r.table.planes ? unplane(table, r.table.planes) : table, r.above, r.left, r.bits)));
  }
  return t;
}

/** Undo the byte-plane order of `n` bytes of `size`-byte numbers (report_pack.py `_planes`). */
function unplane(src: Uint8Array, size: number): Uint8Array {
  const count = src.length / size;
  const out = new Uint8Array(src.length);
  for (let p = 0; p < size; p++) for (let i = 0; i < count; i++) out[i * size + p] = src[p * count + i];
  return out;
}

export interface Container {
  body: any;
  bytes: Uint8Array;
}

// report_pack.py `to_text`: a character below 128 is one 7-bit group; U+0100 + 128 i + g is the special group
// SEVEN[i] (a code the HTML parser would change or that could end the script block) followed by the group g;
// U+0280 + i is SEVEN[i] as the last group. The bytes are the groups' bits, the last partial byte dropped.
const SEVEN = [0x00, 0x0d, 0x3c];
const PAIR = 0x100;
const LONE = 0x280;

/** The container's bytes from the page's text (7 bits a character). */
export function textBytes(text: string): Uint8Array {
  const out = new Uint8Array(Math.ceil((text.length * 14) / 8));
  let o = 0;
  let acc = 0;
  let nbits = 0;
  const put = (g: number) => {
    acc = ((acc << 7) | g) & 0x7fff; // at most 7 + 7 bits pending
    nbits += 7;
    if (nbits >= 8) {
      nbits -= 8;
      out[o++] = (acc >> nbits) & 0xff;
    }
  };
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) put(c);
    else if (c >= PAIR && c < LONE) {
      put(SEVEN[(c - PAIR) >> 7]);
      put((c - PAIR) & 0x7f);
    } else if (c >= LONE && c < LONE + SEVEN.length) put(SEVEN[c - LONE]);
    else {
      const code = c.toString(16).padStart(4, "0");
      throw new Error(`the report's data holds a character outside its alphabet (U+${code} at ${i}): the file was altered`);
    }
  }
  return out.subarray(0, o);
}

export async function gunzip(data: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([data as BlobPart]).stream().pipeThrough(new DecompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

// report_pack.py `frame`: "LMz1", the number of gzip members and each one's length (uint32, little-endian), then
// the members. DecompressionStream reads a single member, so each is inflated on its own and the parts joined.
const FRAME = [0x4c, 0x4d, 0x7a, 0x31];

/** The gzip members of a container, in order (throws on a container that is not framed as report_pack writes). */
export function members(data: Uint8Array): Uint8Array[] {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  if (data.length < 8 || FRAME.some((b, i) => data[i] !== b)) {
    throw new Error("the report's data does not start with its frame: the file was altered or is from another version");
  }
  const n = view.getUint32(4, true);
  let at = 8 + 4 * n;
  const out: Uint8Array[] = [];
  for (let i = 0; i < n; i++) {
    const len = at <= data.length ? view.getUint32(8 + 4 * i, true) : 0;
    out.push(data.subarray(at, at + len));
    at += len;
  }
  if (at !== data.length) throw new Error("the report's data members do not add up to its length: the file was altered");
  return out;
}

/** A framed container inflated: its members gunzipped (in parallel) and joined. */
export async function inflateMembers(data: Uint8Array): Promise<Uint8Array> {
  const parts = await Promise.all(members(data).map(gunzip));
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** The container's JSON body, its arrays still stored (see `inflateStored`), and the array bytes. */
export async function readContainer(text: string): Promise<Container> {
  const raw = await inflateMembers(textBytes(text));
  const n = new DataView(raw.buffer, raw.byteOffset, raw.byteLength).getUint32(0, true);
  const body = JSON.parse(new TextDecoder().decode(raw.subarray(4, 4 + n)));
  const base = 4 + n + ((8 - ((4 + n) % 8)) % 8);
  return { body, bytes: raw.subarray(base) };
}

export function isStored(v: unknown): v is { dtype: string; shape: number[]; data: Stored } {
  const d = (v as any)?.data;
  return !!v && typeof v === "object" && Array.isArray((v as any).shape) && !!d && typeof d === "object" && typeof d.enc === "string" && typeof d.at === "number";
}

/** float16 bits -> number (IEEE 754 half precision, subnormals and infinities included). */
export function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

// report_pack.py `_PREV_LITERAL`: a `prev` code saying "the next literal", not a place in the row before
const PREV_LITERAL = 255;

const WIRE = { float32: Float32Array, uint32: Uint32Array, int32: Int32Array, uint8: Uint8Array } as const;

/** One stored array back as a wire array dict with a fresh, aligned buffer of its wire dtype. */
export function inflateArray(a: { dtype: string; shape: number[]; data: Stored }, bytes: Uint8Array): ArrayDict {
  const d = a.data;
  const Ctor = WIRE[a.dtype as keyof typeof WIRE];
  if (!Ctor) throw new Error(`unsupported dtype ${a.dtype} in the report`);
  const size = a.shape.reduce((x, y) => x * y, 1);
  const stored = bytes.subarray(d.at, d.at + d.n);
  const src = d.planes ? unplane(stored, d.planes) : d.rans ? ransDecode(stored, tablesFor(d.rans, bytes), a.shape[0]) : stored;
  const view = new DataView(src.buffer, src.byteOffset, src.byteLength);
  const out = new Ctor(size);
  if (d.enc === "raw") {
    new Uint8Array(out.buffer).set(src.subarray(0, out.byteLength));
  } else if (d.enc === "f16" && d.delta) {
    const run = a.shape.length ? a.shape[a.shape.length - 1] : 1;
    let bits = 0;
    for (let i = 0; i < size; i++) {
      bits = ((i % run === 0 ? 0 : bits) + view.getUint16(2 * i, true)) & 0xffff;
      out[i] = halfToFloat(bits);
    }
  } else if (d.enc === "f16lo") {
    const high = Number(d.high) || 0;
    const halves = unplane(stored.subarray(0, 2 * size), 2);
    const wide = new DataView(unplane(stored.subarray(2 * size, 2 * size + 4 * high), 4).buffer);
    const hv = new DataView(halves.buffer);
    let k = 0;
    for (let i = 0; i < size; i++) {
      const bits = hv.getUint16(2 * i, true);
      out[i] = bits === 0xffff ? wide.getFloat32(4 * k++, true) : halfToFloat(bits);
    }
  } else if (d.enc === "fixed") {
    const run = a.shape.length ? a.shape[a.shape.length - 1] : 1;
    const rows = run ? size / run : 0;
    const skip = d.row_bits ? rows : 0; // a byte of bits a row before the differences
    let step = 2 ** -Number(d.bits);
    let acc = 0;
    for (let i = 0; i < size; i++) {
      if (i % run === 0) {
        acc = 0;
        if (d.row_bits) step = 2 ** -src[i / run];
      }
      acc += view.getInt16(skip + 2 * i, true);
      out[i] = acc * step;
    }
  } else if (d.enc === "prev") {
    // each value the one at its code's place in the row before it, or the next literal (report_pack `_store_prev`)
    const run = a.shape.length ? a.shape[a.shape.length - 1] : 1;
    const lit = Number(d.lit) || 0;
    const literals = new DataView(unplane(stored.subarray(size, size + 2 * lit), 2).buffer);
    let k = 0;
    for (let i = 0; i < size; i++) {
      const code = stored[i];
      if (code === PREV_LITERAL) {
        if (k >= lit) throw new Error("the report's array has fewer literals than its codes ask: the file was altered");
        out[i] = literals.getUint16(2 * k++, true);
      } else if (code < run && i >= run) out[i] = out[i - (i % run) - run + ((i + code) % run)];
      else throw new Error("the report's array refers to a place its previous row does not have: the file was altered");
    }
  } else if (d.enc === "next") {
    // row indices: 0 is -1 (none), 1 one past the largest so far, c the index c - 2 (report_pack `_store` "next")
    let top = -1;
    for (let i = 0; i < size; i++) {
      const c = view.getUint16(2 * i, true);
      const v = c === 0 ? -1 : c === 1 ? top + 1 : c - 2;
      out[i] = v;
      if (v > top) top = v;
    }
  } else if (d.enc === "f16") {
    for (let i = 0; i < size; i++) out[i] = halfToFloat(view.getUint16(2 * i, true));
  } else if (d.enc === "u16") {
    const offset = Number(d.offset) || 0; // an int32 array's values were stored plus this
    // cols: a matrix stored column by column; delta: differences along each stored row (a column then), mod 2^16
    const [rows, width] = d.cols ? [a.shape[0], a.shape[1]] : [size, 1];
    const run = d.cols ? rows : a.shape.length ? a.shape[a.shape.length - 1] : 1;
    let acc = 0;
    for (let i = 0; i < size; i++) {
      acc = d.delta ? ((i % run === 0 ? 0 : acc) + view.getUint16(2 * i, true)) & 0xffff : view.getUint16(2 * i, true);
      out[d.cols ? (i % rows) * width + Math.floor(i / rows) : i] = acc - offset;
    }
  } else if (d.enc === "i16") {
    for (let i = 0; i < size; i++) out[i] = view.getInt16(2 * i, true);
  } else if (d.enc === "sqrt") {
    const levels = Number(d.levels) || 255;
    const max = Number(d.max) || 0;
    const lut = new Float32Array(256).map((_, q) => (q / levels) ** 2 * max);
    if (d.tril === "cols") {
      const R = a.shape[0];
      let k = 0;
      for (let c = 0; c < R; c++) for (let r = c; r < R; r++) out[r * R + c] = lut[src[k++]];
    } else if (d.tril) {
      throw new Error(`unknown triangle layout ${String(d.tril)} in the report`);
    } else {
      for (let i = 0; i < size; i++) out[i] = lut[src[i]];
    }
  } else {
    throw new Error(`unknown array encoding ${String(d.enc)} in the report`);
  }
  return { dtype: a.dtype as ArrayDict["dtype"], shape: a.shape, data: new DataView(out.buffer) };
}

/** Recursively inflate every stored array of a JSON value. */
export function inflateTree<T = any>(v: T, bytes: Uint8Array): T {
  if (isStored(v)) return inflateArray(v, bytes) as any;
  if (Array.isArray(v)) return v.map((x) => inflateTree(x, bytes)) as any;
  if (v && typeof v === "object") {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) out[k] = inflateTree(x, bytes);
    return out as T;
  }
  return v;
}
