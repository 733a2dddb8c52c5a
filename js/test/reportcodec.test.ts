import { describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { decodeArray } from "../codec";
import { halfToFloat, inflateArray, inflateMembers, inflateTree, members, readContainer, textBytes } from "../reportcodec";
import { fromLensTable } from "../static";
import { ransDecode, ransTables } from "../reportrans";

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

  it("inflates a square-root map stored as its lower triangle, column by column, back to float32 [T, T]", () => {
    // levels 255, max 4: q = 255 -> 4, q = 0 -> 0, q = 128 -> (128/255)^2 * 4; column 0 is rows 0..2, then 1..2, 2
    const a = inflateArray(
      { dtype: "float32", shape: [3, 3], data: { enc: "sqrt", at: 1, n: 6, max: 4, levels: 255, tril: "cols" } },
      bytes([9, 255, 128, 1, 0, 255, 128]),
    );
    const v = new Float32Array((a.data as DataView).buffer);
    const q = (x: number) => Math.fround((x / 255) ** 2 * 4);
    expect(Array.from(v)).toEqual([4, 0, 0, q(128), 0, 0, q(1), 4, q(128)]);
    expect(() =>
      inflateArray({ dtype: "float32", shape: [1, 1], data: { enc: "sqrt", at: 0, n: 1, max: 1, levels: 1, tril: true as any } }, bytes([1])),
    ).toThrow(/triangle layout/);
  });

  it("reads 16-bit ids stored byte plane by byte plane", () => {
    // [1, 258, 65535]: low bytes 1, 2, 255, then high bytes 0, 1, 255
    const ids = inflateArray({ dtype: "uint32", shape: [3], data: { enc: "u16", at: 0, n: 6, planes: 2 } }, bytes([1, 2, 255, 0, 1, 255]));
    expect(Array.from(new Uint32Array((ids.data as DataView).buffer))).toEqual([1, 258, 65535]);
  });

  it("reads int32 ranks stored as 16 bits plus an offset (-1 for none, ranks past 32,767)", () => {
    // [-1, 0, 49151] + 1 = [0, 1, 49152]: low bytes 0, 1, 0, then high bytes 0, 0, 192
    const ranks = inflateArray(
      { dtype: "int32", shape: [3], data: { enc: "u16", at: 0, n: 6, planes: 2, offset: 1 } },
      bytes([0, 1, 0, 0, 0, 192]),
    );
    expect(Array.from(new Int32Array((ranks.data as DataView).buffer))).toEqual([-1, 0, 49151]);
  });

  it("widens 16-bit ids and float16 scores to the wire dtype", () => {
    const ids = inflateArray({ dtype: "uint32", shape: [2], data: { enc: "u16", at: 0, n: 4 } }, bytes([1, 0, 0xff, 0xff]));
    expect(Array.from(new Uint32Array((ids.data as DataView).buffer))).toEqual([1, 65535]);
    const f = inflateArray({ dtype: "float32", shape: [1], data: { enc: "f16", at: 0, n: 2 } }, bytes([0x00, 0x3c]));
    expect(Array.from(new Float32Array((f.data as DataView).buffer))).toEqual([1]);
    expect(() => inflateArray({ dtype: "float32", shape: [1], data: { enc: "zip" as any, at: 0, n: 1 } }, bytes([0]))).toThrow(/unknown array encoding/);
  });
});

describe("float16 rows stored as differences", () => {
  it("adds each row's 16-bit differences back up (mod 2^16), row by row", () => {
    // rows [1, 0.5] and [-2, 1]: bits 0x3c00, 0x3800 (diff 0xfc00), then 0xc000, 0x3c00 (diff 0x7c00)
    const a = inflateArray(
      { dtype: "float32", shape: [2, 2], data: { enc: "f16", at: 0, n: 8, delta: true } },
      bytes([0x00, 0x3c, 0x00, 0xfc, 0x00, 0xc0, 0x00, 0x7c]),
    );
    expect(Array.from(new Float32Array((a.data as DataView).buffer))).toEqual([1, 0.5, -2, 1]);
  });
});

describe("fixed-point logits", () => {
  it("adds each row's int16 differences back up and scales by 2^-bits", () => {
    // rows [1.5, 1.25, -0.5] and [3, 3, 3] in steps of 1/256: 384, 320, -128 (differences 384, -64, -448) and
    // 768, 768, 768 (768, 0, 0); int16 little-endian
    const i16 = new Int16Array([384, -64, -448, 768, 0, 0]);
    const a = inflateArray({ dtype: "float32", shape: [2, 3], data: { enc: "fixed", at: 0, n: 12, bits: 8 } }, new Uint8Array(i16.buffer));
    expect(Array.from(new Float32Array((a.data as DataView).buffer))).toEqual([1.5, 1.25, -0.5, 3, 3, 3]);
  });

  it("reads rows of their own bits (a byte a row first) for a row of tiny values", () => {
    // row 0 in steps of 2^-8: [1.5, 1]; row 1 in steps of 2^-20: [3 * 2^-20, 2^-20] (differences 3, -2)
    const bytes = new Uint8Array(2 + 8);
    bytes.set([8, 20]);
    new DataView(bytes.buffer).setInt16(2, 384, true);
    new DataView(bytes.buffer).setInt16(4, -128, true);
    new DataView(bytes.buffer).setInt16(6, 3, true);
    new DataView(bytes.buffer).setInt16(8, -2, true);
    const a = inflateArray({ dtype: "float32", shape: [2, 2], data: { enc: "fixed", at: 0, n: 10, bits: 8, row_bits: true } }, bytes);
    expect(Array.from(new Float32Array((a.data as DataView).buffer))).toEqual([1.5, 1, 3 * 2 ** -20, 2 ** -20]);
  });
});

describe("route scores: small ones in float16, the rest float32 (f16lo)", () => {
  it("reads the float16 planes, taking the next float32 where a NaN float16 marks it", () => {
    // [0.5 (float32), 0.00299835205078125 (float16 0x1a24), 0.25 (float32), 0 (float16)]
    const halves = [0xffff, 0x1a24, 0xffff, 0x0000];
    const wide = new Float32Array([0.5, 0.25]);
    const w8 = new Uint8Array(wide.buffer);
    const bytes = new Uint8Array(8 + 8);
    halves.forEach((h, i) => {
      bytes[i] = h & 0xff; // low-byte plane, then high-byte plane
      bytes[4 + i] = h >> 8;
    });
    for (let p = 0; p < 4; p++) for (let i = 0; i < 2; i++) bytes[8 + p * 2 + i] = w8[i * 4 + p];
    const a = inflateArray({ dtype: "float32", shape: [4], data: { enc: "f16lo", at: 0, n: 16, high: 2 } }, bytes);
    expect(Array.from(new Float32Array((a.data as DataView).buffer))).toEqual([0.5, halfToFloat(0x1a24), 0.25, 0]);
    expect(halfToFloat(0x1a24)).toBeCloseTo(0.003, 4);
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

describe("the container's text, 7 bits a character", () => {
  // hand-worked examples, the same as tests/test_report_pack.py writes with report_pack.to_text
  it("reads plain characters as 7-bit groups and drops the last partial byte", () => {
    expect(Array.from(textBytes("\x7f@"))).toEqual([0xff]); // 1111111, 1|000000
    expect(Array.from(textBytes(""))).toEqual([]);
  });

  it("reads a special group (NUL, CR, <) with the group after it from one two-byte character, or alone at the end", () => {
    expect(Array.from(textBytes("\u0100"))).toEqual([0x00]); // NUL + 0
    expect(Array.from(textBytes("\x1e\u0280"))).toEqual([0x3c]); // 0011110, then NUL alone
    expect(Array.from(textBytes("\u01bc\u0280"))).toEqual([0x1a, 0xf0]); // CR with "<", then NUL alone
  });

  it("refuses a character outside its alphabet", () => {
    expect(() => textBytes("ab\u00e9")).toThrow(/outside its alphabet/);
    expect(() => textBytes("\u0283")).toThrow(/outside its alphabet/);
  });

  it("round-trips every byte value at every alignment through its own encoder's rules", () => {
    // the encoder's rules restated (report_pack.py to_text), to check the reader on long, varied data
    const encode = (data: Uint8Array): string => {
      const bits: number[] = [];
      for (const b of data) for (let i = 7; i >= 0; i--) bits.push((b >> i) & 1);
      while (bits.length % 7) bits.push(0);
      const groups: number[] = [];
      for (let i = 0; i < bits.length; i += 7) groups.push(bits.slice(i, i + 7).reduce((a, x) => a * 2 + x, 0));
      let out = "";
      for (let i = 0; i < groups.length; i++) {
        const s = [0x00, 0x0d, 0x3c].indexOf(groups[i]);
        if (s < 0) out += String.fromCharCode(groups[i]);
        else if (i + 1 < groups.length) out += String.fromCharCode(0x100 + 128 * s + groups[++i]);
        else out += String.fromCharCode(0x280 + s);
      }
      return out;
    };
    for (let shift = 0; shift < 8; shift++) {
      const data = Uint8Array.from({ length: 256 + shift }, (_, i) => (i < shift ? 0xff : i - shift));
      expect(Array.from(textBytes(encode(data)))).toEqual(Array.from(data));
    }
  });
});

describe("rANS-coded attention patterns (report_rans.py)", () => {
  // streams and tables written by Python (tests/test_report_pack.py keeps this file current)
  const groups = JSON.parse(readFileSync("js/test/fixtures/rans.json", "utf-8")) as {
    levels: number; above: number[]; left: number[]; bits: number; rows: number[]; table: string; streams: string[]; maps: string[];
  }[];
  const b64 = (s: string) => Uint8Array.from(Buffer.from(s, "base64"));

  it("decodes Python's streams to exactly the bytes Python coded, in the contexts of the byte above and the byte left", () => {
    expect(groups.map((g) => g.levels)).toEqual([255, 127, 45]);
    for (const g of groups) {
      const t = ransTables(b64(g.table), g.above, g.left, g.bits);
      g.streams.forEach((s, i) => expect(Array.from(ransDecode(b64(s), t, g.rows[i]))).toEqual(Array.from(b64(g.maps[i]))));
    }
  });

  it("throws on an altered stream instead of drawing wrong weights", () => {
    const g = groups[0];
    const t = ransTables(b64(g.table), g.above, g.left, g.bits);
    const s = b64(g.streams[0]);
    s[s.length - 1] ^= 1;
    expect(() => ransDecode(s, t, g.rows[0])).toThrow(/altered/);
    expect(() => ransDecode(b64(g.streams[0]).subarray(0, 6), t, g.rows[0])).toThrow(/altered/);
  });

  it("inflates a coded map through its shared table to the same floats as the plain bytes", () => {
    const g = groups[0];
    const table = b64(g.table);
    const stream = b64(g.streams[0]);
    const bytes = new Uint8Array(table.length + stream.length);
    bytes.set(table);
    bytes.set(stream, table.length);
    const rows = g.rows[0];
    const rans = { table: { at: 0, n: table.length }, above: g.above, left: g.left, bits: g.bits };
    const coded = inflateArray(
      { dtype: "float32", shape: [rows, rows], data: { enc: "sqrt", at: table.length, n: stream.length, max: 2, levels: 255, tril: "cols", rans } },
      bytes,
    );
    const plain = b64(g.maps[0]);
    const want = inflateArray({ dtype: "float32", shape: [rows, rows], data: { enc: "sqrt", at: 0, n: plain.length, max: 2, levels: 255, tril: "cols" } }, plain);
    expect(Array.from(new Float32Array((coded.data as DataView).buffer))).toEqual(Array.from(new Float32Array((want.data as DataView).buffer)));
  });
});

describe("the container's gzip members, framed by their lengths (report_pack.py frame)", () => {
  const framed = (parts: Uint8Array[]) => {
    const head = new DataView(new ArrayBuffer(8 + 4 * parts.length));
    [0x4c, 0x4d, 0x7a, 0x31].forEach((b, i) => head.setUint8(i, b));
    head.setUint32(4, parts.length, true);
    parts.forEach((p, i) => head.setUint32(8 + 4 * i, p.length, true));
    const out = new Uint8Array(head.byteLength + parts.reduce((n, p) => n + p.length, 0));
    out.set(new Uint8Array(head.buffer));
    let at = head.byteLength;
    for (const p of parts) (out.set(p, at), (at += p.length));
    return out;
  };
  const texts = ["head and JSON", "", "patterns ".repeat(1000)];
  const gz = texts.map((t) => new Uint8Array(gzipSync(Buffer.from(t))));

  it("inflates each member on its own and joins them in order (one DecompressionStream reads one member)", async () => {
    const raw = await inflateMembers(framed(gz));
    expect(new TextDecoder().decode(raw)).toBe(texts.join(""));
    expect(members(framed(gz)).map((m) => m.length)).toEqual(gz.map((m) => m.length));
  });

  it("refuses a container without its frame or whose members do not add up to its length", () => {
    expect(() => members(gz[0])).toThrow(/frame/);
    const cut = framed(gz).subarray(0, framed(gz).length - 1);
    expect(() => members(cut)).toThrow(/add up/);
  });
});

describe("the logit lens at every target as one table (report.py _lens_table)", () => {
  // a container and the columns it must give back, written by Python (tests/test_report_pack.py keeps it current)
  const fixture = JSON.parse(readFileSync("js/test/fixtures/lens.json", "utf-8")) as {
    text: string; delta: number[][]; cols: number[][]; next: number[][];
    columns: Record<string, { rows: number; token: number; ids: number[]; probs: number[]; rank_prev: number[]; strings: Record<string, string> }>;
  };

  it("gives back every target's lens column exactly as the kernel sends it", async () => {
    const { body, bytes } = await readContainer(fixture.text);
    expect(body.lens.ids.data.enc).toBe("prev");
    const perTarget: Record<string, Record<string, any>> = { "3": { meta: "kept" } };
    fromLensTable(perTarget, inflateTree(body.lens, bytes), body.texts);
    expect(Object.keys(perTarget).sort()).toEqual(Object.keys(fixture.columns).sort());
    expect(perTarget["3"].meta).toBe("kept");
    for (const [t, want] of Object.entries(fixture.columns)) {
      const got = perTarget[t].lens;
      expect([got.rows, got.token]).toEqual([want.rows, want.token]);
      expect(got.ids.dtype).toBe("uint32");
      expect(got.rank_prev.dtype).toBe("int32");
      expect(got.ids.shape).toEqual([want.rows, want.ids.length / want.rows]);
      expect(Array.from(decodeArray(got.ids)!.data)).toEqual(want.ids);
      expect(Array.from(decodeArray(got.rank_prev)!.data)).toEqual(want.rank_prev);
      expect(Array.from(decodeArray(got.probs)!.data)).toEqual(want.probs);
      expect(got.strings).toEqual(want.strings);
    }
  });

  it("reads u16 rows stored as differences (mod 2^16), and matrices stored column by column", async () => {
    const { body, bytes } = await readContainer(fixture.text);
    expect(Array.from(decodeArray(inflateTree(body.delta, bytes))!.data)).toEqual(fixture.delta.flat());
    const cols = inflateTree(body.cols, bytes);
    expect(body.cols.data.cols).toBe(true);
    expect(cols.shape).toEqual([fixture.cols.length, 3]);
    expect(Array.from(decodeArray(cols)!.data)).toEqual(fixture.cols.flat());
  });

  it("reads row indices stored as 'one past the largest so far' (next)", async () => {
    const { body, bytes } = await readContainer(fixture.text);
    expect(body.next.data.enc).toBe("next");
    const next = inflateTree(body.next, bytes);
    expect(next.dtype).toBe("int32");
    expect(Array.from(decodeArray(next)!.data)).toEqual(fixture.next.flat());
  });

  it("throws on a prev code that points past the row before", () => {
    // two rows of two: row 1's first value refers to place 1 of row 0, its second to place 5 (none)
    const stored = bytes([255, 255, 1, 5, 3, 4, 0, 0]);
    expect(() => inflateArray({ dtype: "uint32", shape: [2, 2], data: { enc: "prev", at: 0, n: 8, lit: 2 } }, stored)).toThrow(/altered/);
    // row 1: its first value is at place 0 + 1 of row 0, its second at place (1 + 1) mod 2
    const ok = inflateArray({ dtype: "uint32", shape: [2, 2], data: { enc: "prev", at: 0, n: 8, lit: 2 } }, bytes([255, 255, 1, 1, 3, 4, 0, 0]));
    expect(Array.from(new Uint32Array((ok.data as DataView).buffer))).toEqual([3, 4, 4, 3]);
  });
});
