/** Decoding of `{dtype, shape, data}` array dicts (see docs/widget-protocol.md, "Arrays"). */
import type { DType } from "./protocol.gen";

export type { DType };
export type TypedArray = Float32Array | Uint32Array | Int32Array | Uint8Array;

export interface ArrayDict {
  dtype: DType;
  shape: number[];
  /** DataView in traits, integer buffer index in custom messages. */
  data: unknown;
}

export interface NDArray {
  dtype: DType;
  shape: number[];
  data: TypedArray;
  strides: number[];
}

const CTORS = {
  float32: Float32Array,
  uint32: Uint32Array,
  int32: Int32Array,
  uint8: Uint8Array,
} as const;

export class CodecError extends Error {}

export function isArrayDict(v: unknown): v is ArrayDict {
  return (
    !!v &&
    typeof v === "object" &&
    typeof (v as any).dtype === "string" &&
    Array.isArray((v as any).shape) &&
    "data" in (v as any)
  );
}

function toBytes(data: unknown, buffers?: readonly unknown[]): { buffer: ArrayBufferLike; byteOffset: number; byteLength: number } | null {
  if (typeof data === "number") {
    if (!buffers || data < 0 || data >= buffers.length) throw new CodecError(`buffer index ${data} out of range`);
    return toBytes(buffers[data]);
  }
  if (data instanceof ArrayBuffer) return { buffer: data, byteOffset: 0, byteLength: data.byteLength };
  if (ArrayBuffer.isView(data)) return { buffer: data.buffer, byteOffset: data.byteOffset, byteLength: data.byteLength };
  return null;
}

/** Decode one array dict. `buffers` resolves integer `data` (custom messages). Returns null for null/undefined. */
export function decodeArray(d: unknown, buffers?: readonly unknown[]): NDArray | null {
  if (d == null) return null;
  if (!isArrayDict(d)) throw new CodecError("not an array dict");
  const Ctor = CTORS[d.dtype];
  if (!Ctor) throw new CodecError(`unsupported dtype ${String(d.dtype)}`);
  const shape = d.shape.map((n) => Number(n));
  const size = shape.reduce((a, b) => a * b, 1);
  let arr: TypedArray;
  if (Array.isArray(d.data)) {
    arr = new Ctor(d.data as number[]);
  } else {
    const b = toBytes(d.data, buffers);
    if (!b) throw new CodecError("array data is not binary");
    const bpe = Ctor.BYTES_PER_ELEMENT;
    const n = Math.floor(b.byteLength / bpe);
    if (b.byteOffset % bpe === 0) {
      arr = new Ctor(b.buffer as ArrayBuffer, b.byteOffset, n);
    } else {
      // unaligned view: copy the bytes first
      const copy = new Uint8Array(n * bpe);
      copy.set(new Uint8Array(b.buffer as ArrayBuffer, b.byteOffset, n * bpe));
      arr = new Ctor(copy.buffer);
    }
  }
  if (arr.length < size) throw new CodecError(`array has ${arr.length} elements, shape ${JSON.stringify(shape)} needs ${size}`);
  if (arr.length > size) arr = arr.subarray(0, size);
  const strides = new Array(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s;
    s *= shape[i];
  }
  return { dtype: d.dtype, shape, data: arr, strides };
}

/** Decode a dict of array dicts (e.g. the `graph` trait). Missing/invalid entries are skipped. */
export function decodeDict(obj: unknown, buffers?: readonly unknown[]): Record<string, NDArray> {
  const out: Record<string, NDArray> = {};
  if (!obj || typeof obj !== "object") return out;
  for (const [k, v] of Object.entries(obj as Record<string, unknown>)) {
    if (isArrayDict(v)) {
      const a = decodeArray(v, buffers);
      if (a) out[k] = a;
    }
  }
  return out;
}

/** Recursively replace every array dict within a JSON value by its decoded NDArray. */
export function decodeTree(v: unknown, buffers?: readonly unknown[]): any {
  if (isArrayDict(v)) return decodeArray(v, buffers);
  if (Array.isArray(v)) return v.map((x) => decodeTree(x, buffers));
  if (v && typeof v === "object" && !ArrayBuffer.isView(v) && !(v instanceof ArrayBuffer)) {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) out[k] = decodeTree(x, buffers);
    return out;
  }
  return v;
}

export function isNDArray(v: unknown): v is NDArray {
  return !!v && typeof v === "object" && ArrayBuffer.isView((v as any).data) && Array.isArray((v as any).strides);
}

/** Element at a multi-index (no bounds check beyond returning undefined). */
export function at(a: NDArray, ...idx: number[]): number {
  let o = 0;
  for (let i = 0; i < idx.length; i++) o += idx[i] * a.strides[i];
  return a.data[o];
}

/** Contiguous last-axis slice a[i, j, :] (or a[i, :] for 2-D). */
export function lastAxis(a: NDArray, ...idx: number[]): TypedArray {
  let o = 0;
  for (let i = 0; i < idx.length; i++) o += idx[i] * a.strides[i];
  const n = a.shape[a.shape.length - 1];
  return a.data.subarray(o, o + n) as TypedArray;
}

/** Encode a typed array as an array dict (used by tests and the dev harness). */
export function encodeArray(data: TypedArray, shape: number[]): ArrayDict {
  const dtype: DType =
    data instanceof Float32Array ? "float32" : data instanceof Uint32Array ? "uint32" : data instanceof Int32Array ? "int32" : "uint8";
  return { dtype, shape, data: new DataView(data.buffer, data.byteOffset, data.byteLength) };
}

/** One array field of the protocol (js/protocol.gen.ts ARRAY_FIELDS): dtype and named dimensions. */
export interface ArraySpec {
  readonly dtype: DType;
  readonly dims: readonly string[];
  readonly optional: boolean;
}

/**
 * Where decoded arrays differ from the protocol: a missing required field, another dtype, another rank, or a named
 * dimension whose size differs from `sizes` (bound on first sight, so pre-bind L, H, T from `meta`). [] = follows it.
 */
export function shapeProblems(
  value: Record<string, unknown>,
  spec: Readonly<Record<string, ArraySpec>>,
  sizes: Record<string, number> = {},
): string[] {
  const out: string[] = [];
  for (const [name, s] of Object.entries(spec)) {
    const a = value[name];
    if (a == null) {
      if (!s.optional) out.push(`${name} is missing`);
      continue;
    }
    if (!isNDArray(a)) {
      out.push(`${name} is not a decoded array`);
      continue;
    }
    if (a.dtype !== s.dtype) out.push(`${name} is ${a.dtype}, not ${s.dtype}`);
    if (a.shape.length !== s.dims.length) {
      out.push(`${name} has shape [${a.shape}], not [${s.dims}]`);
      continue;
    }
    s.dims.forEach((d, i) => {
      if (sizes[d] === undefined) sizes[d] = a.shape[i];
      else if (sizes[d] !== a.shape[i]) out.push(`${name} has ${d} = ${a.shape[i]}, expected ${sizes[d]}`);
    });
  }
  return out;
}
