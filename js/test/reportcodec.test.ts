import { describe, expect, it } from "vitest";
import { halfToFloat, inflateArray } from "../reportcodec";

const bytes = (xs: number[]) => Uint8Array.from(xs);

describe("report container arrays", () => {
  it("reads IEEE float16, subnormals and infinities included", () => {
    expect(halfToFloat(0x3c00)).toBe(1);
    expect(halfToFloat(0xc000)).toBe(-2);
    expect(halfToFloat(0x7bff)).toBe(65504);
    expect(halfToFloat(0x0001)).toBe(2 ** -24);
    expect(halfToFloat(0x7c00)).toBe(Infinity);
    expect(Number.isNaN(halfToFloat(0x7e00))).toBe(true);
  });

  it("inflates a square-root map stored as its lower triangle back to float32 [T, T]", () => {
    // levels 255, max 4: q = 255 -> 4, q = 0 -> 0, q = 128 -> (128/255)^2 * 4
    const a = inflateArray({ dtype: "float32", shape: [2, 2], data: { enc: "sqrt", at: 1, n: 3, max: 4, levels: 255, tril: true } }, bytes([9, 255, 128, 255]));
    const v = new Float32Array((a.data as DataView).buffer);
    expect(Array.from(v)).toEqual([4, 0, Math.fround((128 / 255) ** 2 * 4), 4]);
  });

  it("widens 16-bit ids and float16 scores to the wire dtype", () => {
    const ids = inflateArray({ dtype: "uint32", shape: [2], data: { enc: "u16", at: 0, n: 4 } }, bytes([1, 0, 0xff, 0xff]));
    expect(Array.from(new Uint32Array((ids.data as DataView).buffer))).toEqual([1, 65535]);
    const f = inflateArray({ dtype: "float32", shape: [1], data: { enc: "f16", at: 0, n: 2 } }, bytes([0x00, 0x3c]));
    expect(Array.from(new Float32Array((f.data as DataView).buffer))).toEqual([1]);
    expect(() => inflateArray({ dtype: "float32", shape: [1], data: { enc: "zip" as any, at: 0, n: 1 } }, bytes([0]))).toThrow(/unknown array encoding/);
  });
});

describe("byte planes", () => {
  it("reads float32 stored byte plane by byte plane", () => {
    const v = new Float32Array([1, -2, 0.5]);
    const b = new Uint8Array(v.buffer);
    const planes = new Uint8Array(12);
    for (let p = 0; p < 4; p++) for (let i = 0; i < 3; i++) planes[p * 3 + i] = b[i * 4 + p];
    const a = inflateArray({ dtype: "float32", shape: [3], data: { enc: "raw", at: 0, n: 12, planes: 4 } }, planes);
    expect(Array.from(new Float32Array((a.data as DataView).buffer))).toEqual([1, -2, 0.5]);
  });
});
