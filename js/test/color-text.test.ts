import { describe, expect, it } from "vitest";
import { heatColor, importanceColor, luminance, parseColor, viridis } from "../color";
import { displayToken, truncate } from "../text";

describe("colour scale", () => {
  it("viridis endpoints are close to matplotlib", () => {
    const [r0, g0, b0] = viridis(0);
    expect(r0).toBeLessThan(80);
    expect(b0).toBeGreaterThan(60);
    const [r1, g1, b1] = viridis(1);
    expect(r1).toBeGreaterThan(230);
    expect(g1).toBeGreaterThan(210);
    expect(b1).toBeLessThan(80);
    expect(g0).toBeLessThan(20);
  });
  it("luminance is monotonic in t (sequential scale)", () => {
    let prev = -1;
    for (let i = 0; i <= 50; i++) {
      const l = luminance(viridis(i / 50));
      expect(l).toBeGreaterThanOrEqual(prev - 1e-3);
      prev = l;
    }
  });
  it("importance = contrast: darker with weight on light bg, brighter on dark bg", () => {
    expect(luminance(importanceColor(1, false))).toBeLessThan(luminance(importanceColor(0, false)));
    expect(luminance(importanceColor(1, true))).toBeGreaterThan(luminance(importanceColor(0, true)));
    expect(importanceColor(NaN, true)).toEqual(importanceColor(0, true));
  });
  it("heat cells: zero is the background's end of the ramp (near white / near black), weight goes to contrast", () => {
    expect(luminance(heatColor(0, false))).toBeGreaterThan(0.7); // pale yellow on a light page
    expect(luminance(heatColor(0, true))).toBeLessThan(0.05); // dark purple on a dark page
    for (const dark of [false, true]) {
      let prev = dark ? -1 : 2;
      for (let i = 0; i <= 20; i++) {
        const l = luminance(heatColor(i / 20, dark));
        if (dark) expect(l).toBeGreaterThanOrEqual(prev - 1e-3);
        else expect(l).toBeLessThanOrEqual(prev + 1e-3);
        prev = l;
      }
    }
  });
  it("parses css colours", () => {
    expect(parseColor("#fff")).toEqual([255, 255, 255]);
    expect(parseColor("#1e1e1e")).toEqual([30, 30, 30]);
    expect(parseColor("rgb(1, 2, 3)")).toEqual([1, 2, 3]);
    expect(parseColor("var(--x)")).toBeNull();
  });
});

describe("whitespace display", () => {
  it.each([
    [" the", "␣the"],
    ["\n", "↵"],
    ["a\r\nb", "a↵b"],
    ["\t", "⇥"],
    ["Ġworld", "␣world"],
    ["▁piece", "␣piece"],
    ["Ċ", "↵"],
    ["", "∅"],
    ["<img src=x onerror=alert(1)>", "<img␣src=x␣onerror=alert(1)>"],
    ["\u0001", "\\x01"],
  ])("%j -> %j", (input, out) => {
    expect(displayToken(input)).toBe(out);
  });
  it("truncates on code points", () => {
    expect(truncate("abcdef", 4)).toBe("abc…");
    expect(truncate("😀😀😀", 2)).toBe("😀…");
    expect(truncate("ab", 4)).toBe("ab");
  });
});
