import { describe, expect, it } from "vitest";
import { WEIGHT_BINS } from "../draw";
import { clampTokens, fitView, keepColumnInView, MAX_TOKEN_PX, MLP_DX, zoomTokensAt } from "../geometry";
import { bucketEdges, colorBin, EDGE_KINDS, edgeBucket, graphLayout, NODE_BINS } from "../graph-layout";
import { cellSprites, stampCell } from "../node-sprites";
import { tinyGraph as graph } from "./tiny-graph";


// edges of tinyGraph: 0 attention 0->2 (w .6), 1 residual 1->2 (.4), 2 mlp 2->3 (.3), 3 mlp 3->4 (.3), 4 residual 2->4 (.7)
describe("edge buckets (one stroke per kind × weight bin)", () => {
  it("sorts edges by drawing order (residual, mlp, attention) then weight bin, keeping each edge once", () => {
    const g = graph();
    const { order, start } = bucketEdges(g);
    expect(start.length).toBe(EDGE_KINDS.length * WEIGHT_BINS + 1);
    expect([...order].sort()).toEqual([0, 1, 2, 3, 4]);
    // every edge sits in the bucket its kind and weight name
    for (let b = 0; b < start.length - 1; b++) {
      for (let j = start[b]; j < start[b + 1]; j++) {
        const i = order[j];
        const t = Math.sqrt(g.edgeWeight[i] / g.maxWeight);
        expect(edgeBucket(g.edgeKind[i], t)).toBe(b);
      }
    }
    const kinds = [...order].map((i) => g.edgeKind[i]);
    expect(kinds).toEqual(["residual", "residual", "mlp", "mlp", "attention"]);
    // within residual: the lighter edge (0.4) before the heavier (0.7); the equal mlp edges keep their order
    expect([...order]).toEqual([1, 4, 2, 3, 0]);
  });

  it("leaves out edges of an unknown kind instead of drawing them in a wrong style", () => {
    const g = graph();
    g.edgeKind[0] = "mystery";
    const { order, start } = bucketEdges(g);
    expect([...order]).not.toContain(0);
    expect(start[start.length - 1]).toBe(4);
    expect(edgeBucket("mystery", 0.5)).toBe(-1);
  });

  it("node colour bins cover [0, 1] and the layout knows the MLP blocks", () => {
    expect(colorBin(0)).toBe(0);
    expect(colorBin(1)).toBe(NODE_BINS - 1);
    expect(colorBin(0.5)).toBe(NODE_BINS / 2);
    const g = graph();
    const lay = graphLayout(g);
    expect(graphLayout(g)).toBe(lay); // computed once per graph
    expect([...lay.mlpNodes]).toEqual(["0:1"]);
    expect(lay.col[3]).toBeCloseTo(1 + MLP_DX);
    expect(lay.row[4]).toBe(2);
    expect(lay.importance[4]).toBeCloseTo(1);
  });
});

describe("token zoom (stretch the tokens, every layer kept)", () => {
  const T = 300, L = 30;
  const size = { w: 1000, h: 600 };
  const fit = fitView(T, L, size);

  it("stretches columns only, around the anchor, rows as fitted", () => {
    const v = zoomTokensAt(fit, 4, 500, fit, T);
    expect(v.sx).toBeCloseTo(fit.sx * 4);
    expect(v.sy).toBe(fit.sy);
    expect(v.ty).toBe(fit.ty);
    // the world column under the anchor stays under it
    expect((500 - v.tx) / v.sx).toBeCloseTo((500 - fit.tx) / fit.sx);
    // rows of all layers on screen
    expect(v.ty).toBeLessThanOrEqual(size.h);
    expect(v.ty - 2 * L * v.sy).toBeGreaterThanOrEqual(0);
  });

  it("resets a both-axes zoom to fitted rows, and stays between the fitted width and MAX_TOKEN_PX", () => {
    const zoomed = { sx: fit.sx * 3, sy: fit.sy * 3, tx: fit.tx - 200, ty: fit.ty + 400 };
    const v = zoomTokensAt(zoomed, 1, 300, fit, T);
    expect(v.sy).toBe(fit.sy);
    expect(v.ty).toBe(fit.ty);
    expect(zoomTokensAt(fit, 1e6, 500, fit, T).sx).toBe(MAX_TOKEN_PX);
    expect(zoomTokensAt(fit, 1e-6, 500, fit, T)).toEqual(fit);
  });

  it("never leaves blank space beside the tokens", () => {
    const v = zoomTokensAt(fit, 5, size.w - 1, fit, T); // anchored at the right edge
    const lastMlp = v.tx + (T - 1 + MLP_DX) * v.sx;
    expect(lastMlp).toBeGreaterThanOrEqual(fit.tx + (T - 1 + MLP_DX) * fit.sx - 1e-9);
    const panned = clampTokens({ ...v, tx: v.tx + 10_000 }, fit, T);
    expect(panned.tx).toBe(fit.tx);
    const far = clampTokens({ ...v, tx: v.tx - 1e6 }, fit, T);
    expect(far.tx + (T - 1 + MLP_DX) * far.sx).toBeCloseTo(fit.tx + (T - 1 + MLP_DX) * fit.sx);
  });

  it("keepColumnInView pans the column inside the margins, and only when it is outside", () => {
    const v = zoomTokensAt(fit, 8, 0, fit, T); // column 299 far right, off screen
    const x = (vv: typeof v) => vv.tx + 299 * vv.sx;
    expect(x(v)).toBeGreaterThan(size.w);
    const k = keepColumnInView(v, 299, 44, size.w - 14, 8);
    expect(x(k)).toBeCloseTo(size.w - 14 - 8);
    expect(k.sx).toBe(v.sx);
    expect(k.sy).toBe(v.sy);
    expect(keepColumnInView(k, 299, 44, size.w - 14, 8)).toBe(k);
    const left = keepColumnInView(v, 0, 44, size.w - 14, 0);
    expect(left.tx).toBe(v.tx); // column 0 was in view already
  });
});

describe("node stamps composited in script", () => {
  // a 2 × 2 cell per bin; bin 0 circle cell: opaque red at (0,0), half-transparent blue at (1,1), empty elsewhere
  const cell = 2;
  const AW = cell * NODE_BINS;
  const pixels = new Uint8ClampedArray(AW * cell * 2 * 4);
  pixels.set([255, 0, 0, 255], 0);
  pixels.set([0, 0, 255, 128], (1 * AW + 1) * 4);
  const atlas = { canvas: null as unknown as HTMLCanvasElement, pixels, cell, key: "t", sprites: cellSprites(pixels, cell) };
  const px = (d: Uint8ClampedArray, W: number, x: number, y: number) => [...d.slice((y * W + x) * 4, (y * W + x) * 4 + 4)];

  it("copies onto clear pixels and blends source-over onto drawn ones", () => {
    const W = 4, H = 3;
    const dst = new Uint8ClampedArray(W * H * 4);
    dst.set([0, 255, 0, 255], (2 * W + 2) * 4); // opaque green under the blue pixel
    stampCell(dst, W, H, atlas, 0, 0, 1, 1);
    expect(px(dst, W, 1, 1)).toEqual([255, 0, 0, 255]);
    const blended = px(dst, W, 2, 2);
    expect(blended[3]).toBe(255);
    expect(blended[2]).toBeCloseTo(128, -1); // half blue
    expect(blended[1]).toBeCloseTo(127, -1); // half the green left
    expect(px(dst, W, 2, 1)).toEqual([0, 0, 0, 0]); // transparent stamp pixels leave the image alone
  });

  it("clips a stamp hanging over any edge", () => {
    const W = 2, H = 2;
    const dst = new Uint8ClampedArray(W * H * 4);
    stampCell(dst, W, H, atlas, 0, 0, -1, -1); // only the blue pixel lands, at (0, 0)
    expect(px(dst, W, 0, 0)).toEqual([0, 0, 255, 128]);
    expect(px(dst, W, 1, 1)).toEqual([0, 0, 0, 0]);
    stampCell(dst, W, H, atlas, 0, 0, 1, 1); // only the red pixel lands, at (1, 1)
    expect(px(dst, W, 1, 1)).toEqual([255, 0, 0, 255]);
  });
});
