import { describe, expect, it } from "vitest";
import { at, CodecError, decodeArray, decodeDict, decodeTree, encodeArray, lastAxis } from "../codec";

describe("codec", () => {
  it("decodes float32 respecting byteOffset", () => {
    const buf = new ArrayBuffer(64);
    const f = new Float32Array(buf, 16, 6);
    f.set([1, 2, 3, 4, 5, 6]);
    new Float32Array(buf, 0, 4).fill(99); // garbage before the view
    const a = decodeArray({ dtype: "float32", shape: [2, 3], data: new DataView(buf, 16, 24) })!;
    expect(Array.from(a.data)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(a.strides).toEqual([3, 1]);
    expect(at(a, 1, 2)).toBe(6);
    expect(Array.from(lastAxis(a, 1))).toEqual([4, 5, 6]);
  });

  it("handles every dtype", () => {
    const cases: [string, any][] = [
      ["uint32", new Uint32Array([1, 4294967295])],
      ["int32", new Int32Array([-1, 7])],
      ["uint8", new Uint8Array([0, 255])],
      ["float32", new Float32Array([0.5, -2])],
    ];
    for (const [dtype, arr] of cases) {
      const d = decodeArray({ dtype, shape: [2], data: new DataView(arr.buffer) })!;
      expect(d.dtype).toBe(dtype);
      expect(Array.from(d.data)).toEqual(Array.from(arr));
    }
  });

  it("copies unaligned views instead of throwing", () => {
    const buf = new ArrayBuffer(13);
    const src = new Float32Array([1.5, 2.5, 3.5]);
    new Uint8Array(buf, 1, 12).set(new Uint8Array(src.buffer));
    const d = decodeArray({ dtype: "float32", shape: [3], data: new DataView(buf, 1, 12) })!;
    expect(Array.from(d.data)).toEqual([1.5, 2.5, 3.5]);
  });

  it("resolves buffer indices from custom messages", () => {
    const b0 = new Float32Array([1, 2, 3, 4]);
    const b1 = new Uint8Array([9, 8]);
    const res = decodeTree(
      { x: { dtype: "float32", shape: [2, 2], data: 0 }, nested: [{ dtype: "uint8", shape: [2], data: 1 }], s: "<b>" },
      [new DataView(b0.buffer), b1],
    );
    expect(at(res.x, 1, 0)).toBe(3);
    expect(Array.from(res.nested[0].data)).toEqual([9, 8]);
    expect(res.s).toBe("<b>");
  });

  it("rejects bad input", () => {
    expect(() => decodeArray({ dtype: "float64", shape: [1], data: new DataView(new ArrayBuffer(8)) })).toThrow(CodecError);
    expect(() => decodeArray({ dtype: "float32", shape: [4], data: new DataView(new ArrayBuffer(8)) })).toThrow(CodecError);
    expect(() => decodeArray({ dtype: "float32", shape: [1], data: 3 }, [])).toThrow(CodecError);
    expect(decodeArray(null)).toBeNull();
  });

  it("decodeDict round-trips encodeArray and skips non-arrays", () => {
    const d = decodeDict({ a: encodeArray(new Int32Array([5, -6]), [2]), rows: 3 });
    expect(Object.keys(d)).toEqual(["a"]);
    expect(Array.from(d.a.data)).toEqual([5, -6]);
  });
});
