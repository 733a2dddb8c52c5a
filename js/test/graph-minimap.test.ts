import { describe, expect, it } from "vitest";
import { fitView, MLP_DX, PAD, zoomTokensAt } from "../geometry";
import { graphLayout } from "../graph-layout";
import { minimapWindow, panToStrip, stripX, tokenStrength, visibleTokens } from "../panes/graph-minimap";
import { tinyGraph } from "./tiny-graph";

const size = { w: 900, h: 400 };
const T = 200;
const L = 12;
const fit = fitView(T, L, size);
const W = 900;

describe("token minimap", () => {
  it("frames every token at the fitted width and a fraction of them when stretched", () => {
    const [a, b] = minimapWindow(fit, size, T, W);
    expect(a).toBeCloseTo(0, 0);
    expect(b).toBeCloseTo(W, 0);
    const v = zoomTokensAt(fit, 8, size.w / 2, fit, T);
    const [from, to] = visibleTokens(v, size, T);
    // 8× the px per token: an eighth of the tokens in view
    expect(to - from).toBeCloseTo((size.w - PAD.left - PAD.right) / v.sx, 6);
    expect((to - from) / T).toBeCloseTo(1 / 8, 1);
    const [x0, x1] = minimapWindow(v, size, T, W);
    expect(x1 - x0).toBeCloseTo(((to - from) / T) * W, 6);
    expect(x0).toBeCloseTo(stripX(from, T, W), 6);
  });

  it("a click pans the token under it to the middle, same zoom, and stays inside the tokens", () => {
    const v = zoomTokensAt(fit, 8, size.w / 2, fit, T);
    const mid = (PAD.left + size.w - PAD.right) / 2;
    const x = stripX(60, T, W); // token 60's place on the strip
    const p = panToStrip(v, fit, size, T, x, W);
    expect(p.sx).toBe(v.sx);
    expect(p.sy).toBe(v.sy);
    expect(p.tx + 60 * p.sx).toBeCloseTo(mid, 6);
    // the window it frames is centred on token 60
    const [from, to] = visibleTokens(p, size, T);
    expect((from + to) / 2).toBeCloseTo(60, 6);
    // the ends: the first or last token at the canvas edge, never blank beside the tokens
    const left = panToStrip(v, fit, size, T, -50, W);
    expect(left.tx).toBeCloseTo(fit.tx, 6);
    const right = panToStrip(v, fit, size, T, W + 50, W);
    // the last token's MLP squares where the fitted view has them
    expect(right.tx + (T - 1 + MLP_DX) * right.sx).toBeCloseTo(fit.tx + (T - 1 + MLP_DX) * fit.sx, 6);
    expect(right.tx).toBeLessThan(p.tx);
  });

  it("each token's bar is its strongest node in the route", () => {
    const g = tinyGraph();
    const imp = graphLayout(g).importance;
    const s = tokenStrength(g, 3);
    expect(s.length).toBe(3);
    expect(s[0]).toBeCloseTo(imp[0], 6);
    expect(s[1]).toBeCloseTo(Math.max(imp[1], imp[2], imp[3], imp[4]), 6);
    expect(s[1]).toBeGreaterThan(0);
    expect(s[2]).toBe(0); // a token the route does not touch
  });
});
