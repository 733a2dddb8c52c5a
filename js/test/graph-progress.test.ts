import { describe, expect, it } from "vitest";
import { WEIGHT_BINS } from "../draw";
import { fitView } from "../geometry";
import { EDGE_KINDS, graphLayout } from "../graph-layout";
import { edgeChunks, paintChunk, paintEdges } from "../panes/graph-edges";
import { EDGE_LAYERS, EdgeChunk, edgeLayer, EdgeProgress, HEAVY_FROM_BIN, narrowLayer, orderChunks, sliceEnd, splitByCost, THIN_ATTENTION } from "../panes/graph-progress";
import { lightTheme, recordingContext } from "./recording-context";
import { denseGraph } from "./tiny-graph";

const theme = lightTheme;

/** Path calls only (property sets are not recorded). */
const recorder = (calls: [string, ...unknown[]][] = []) => recordingContext(calls, { setters: false });

const chunk = (layer: number, bucket: number, from: number, cost = 1): EdgeChunk => ({ layer, bucket, bin: bucket % WEIGHT_BINS, from, to: from + 1, cost });

describe("cutting a bucket by cost", () => {
  it("covers the range once, in order, each chunk within the limit unless one item alone is over it", () => {
    const costs = [3, 0, 4, 9, 1, 1, 1, 0, 2];
    const parts = splitByCost(costs, 10, 19, 5);
    expect(parts.map(([f, t]) => [f, t])).toEqual([[10, 12], [12, 13], [13, 14], [14, 19]]);
    expect(parts.map((p) => p[2])).toEqual([3, 4, 9, 5]);
    expect(splitByCost([], 4, 4, 5)).toEqual([]);
  });
});

describe("order and slices", () => {
  it("maps buckets to layers back to front: each kind light then heavy, attention's wide curves on top", () => {
    expect(edgeLayer(0, 0, true)).toBe(0);
    expect(edgeLayer(0, HEAVY_FROM_BIN, false)).toBe(1);
    expect(edgeLayer(1, HEAVY_FROM_BIN - 1, true)).toBe(2);
    expect(edgeLayer(1, 15, false)).toBe(3);
    expect(edgeLayer(2, 0, true)).toBe(THIN_ATTENTION);
    expect(edgeLayer(2, HEAVY_FROM_BIN, true)).toBe(THIN_ATTENTION + 1);
    expect(edgeLayer(2, 2, false)).toBe(EDGE_LAYERS - 1); // zoomed in, a light curve can be wide: under the heavier wide ones
    expect([0, 1, 2, 3, 4, 5, 6].filter(narrowLayer)).toEqual([THIN_ATTENTION, THIN_ATTENTION + 1]);
  });

  it("puts the heavy layers first, attention curves leading, and keeps every layer lightest bucket first", () => {
    const chunks = [chunk(THIN_ATTENTION, 2 * WEIGHT_BINS + 1, 0), chunk(0, 3, 0), chunk(5, 2 * WEIGHT_BINS + 10, 0), chunk(6, 2 * WEIGHT_BINS + 14, 0), chunk(1, 20, 5), chunk(1, 20, 0), chunk(0, 1, 0), chunk(2, WEIGHT_BINS + 2, 0), chunk(3, WEIGHT_BINS + 25, 0)];
    const order = orderChunks(chunks);
    // the heavy layers (1, 3, 5, 6) before any light one
    const heavy = (c: EdgeChunk) => [1, 3, 5, 6].includes(c.layer);
    const firstLight = order.findIndex((c) => !heavy(c));
    expect(firstLight).toBe(5);
    expect(order.slice(firstLight).every((c) => !heavy(c))).toBe(true);
    // among the heavy ones, the attention curves first (thin, then wide), then residual lines and MLP dashes
    expect(order.slice(0, firstLight).map((c) => c.layer)).toEqual([5, 6, 1, 1, 3]);
    // the light attention curves (the bulk of the work) last
    expect(order[order.length - 1].layer).toBe(THIN_ATTENTION);
    // within a layer: bucket ascending, then the bucket's own order (chunk(1, 20, 5) was given before chunk(1, 20, 0))
    for (let l = 0; l < EDGE_LAYERS; l++) {
      const mine = order.filter((c) => c.layer === l);
      for (let i = 1; i < mine.length; i++) expect(mine[i].bucket).toBeGreaterThanOrEqual(mine[i - 1].bucket);
    }
    expect(order.filter((c) => c.layer === 1).map((c) => c.from)).toEqual([5, 0]);
  });

  it("takes chunks while they fit the budget, always at least one", () => {
    const cs = [4, 4, 4, 10, 1].map((cost, i) => ({ ...chunk(0, 0, i), cost }));
    expect(sliceEnd(cs, 0, 8)).toBe(2);
    expect(sliceEnd(cs, 2, 8)).toBe(3); // 4 + 10 > 8
    expect(sliceEnd(cs, 3, 8)).toBe(4); // one chunk over the budget alone
    expect(sliceEnd(cs, 4, 8)).toBe(5);
    expect(sliceEnd(cs, 5, 8)).toBe(5);
    expect(sliceEnd(cs, 0, Infinity)).toBe(5);
  });
});

describe("a progressive job", () => {
  const chunks = Array.from({ length: 20 }, (_, i) => ({ ...chunk(i % EDGE_LAYERS, i, i), cost: 1 + (i % 3) }));

  it("hands out every chunk exactly once, a budget at a time, in the order given (back to front)", () => {
    const job = new EdgeProgress();
    job.start("a", chunks, 4);
    const seen: EdgeChunk[] = [];
    let slices = 0;
    while (job.pending("a")) {
      const s = job.take("a", 4);
      expect(s.length).toBeGreaterThan(0);
      expect(s.length === 1 || s.reduce((x, c) => x + c.cost, 0) <= 4).toBe(true);
      seen.push(...s);
      slices++;
    }
    expect(slices).toBeGreaterThan(5);
    expect(seen).toEqual(chunks);
    expect(job.take("a", 4)).toEqual([]);
  });

  it("previews the heaviest chunks within the first frame's budget, and still hands them out in their turn", () => {
    const job = new EdgeProgress();
    job.start("a", chunks, 12);
    const chosen = orderChunks(chunks).slice(0, sliceEnd(orderChunks(chunks), 0, 12));
    // the heaviest chunks within the budget, drawn back to front (in the order given)
    expect(job.preview).toEqual(chunks.filter((c) => chosen.includes(c)));
    expect(job.preview).not.toEqual(chosen);
    expect(job.preview.length).toBeGreaterThan(1);
    expect(job.preview.every((c) => [1, 3, 5, 6].includes(c.layer))).toBe(true);
    expect(job.take("a", Infinity)).toEqual(chunks);
    job.start("b", chunks, 0);
    expect(job.preview.length).toBe(1); // always one chunk at least
  });

  it("gives nothing of a job to another picture, and a new picture replaces the pending job", () => {
    const job = new EdgeProgress();
    job.start("old", chunks, 4);
    job.take("old", 4);
    expect(job.pending("old")).toBe(true);
    expect(job.pending("new")).toBe(false);
    expect(job.take("new", Infinity)).toEqual([]); // no edge of the old graph on the new picture
    const fresh = [chunk(0, 0, 100), chunk(1, 40, 200)];
    job.start("new", fresh, 4);
    expect(job.pending("old")).toBe(false);
    expect(job.take("old", Infinity)).toEqual([]);
    const rest = job.take("new", Infinity); // the export's complete picture: all that is left at once
    expect(rest.map((c) => c.from)).toEqual([100, 200]);
    expect(job.pending("new")).toBe(false);
    job.start("x", chunks, 4);
    job.cancel();
    expect(job.pending("x")).toBe(false);
    expect(job.preview).toEqual([]);
  });
});

describe("edges cut into chunks", () => {
  const g = denseGraph();
  const lay = graphLayout(g);
  const size = { w: 400, h: 200 };
  const v = fitView(12, 1, size);
  const nx = new Float32Array(g.n), ny = new Float32Array(g.n);
  for (let i = 0; i < g.n; i++) {
    nx[i] = v.tx + lay.col[i] * v.sx;
    ny[i] = v.ty - lay.row[i] * v.sy;
  }
  const p = { v, size, theme, g };

  it("cover every bucket's edges (residual: runs) exactly once, each in its kind's layer", () => {
    const chunks = edgeChunks(p, lay, nx, ny, 1, 1);
    for (let ki = 0; ki < EDGE_KINDS.length; ki++) {
      for (let b = 0; b < WEIGHT_BINS; b++) {
        const bucket = ki * WEIGHT_BINS + b;
        const mine = chunks.filter((c) => c.bucket === bucket).sort((a, c) => a.from - c.from);
        const [from, to] = EDGE_KINDS[ki] === "residual" ? [lay.runStart[b], lay.runStart[b + 1]] : [lay.start[bucket], lay.start[bucket + 1]];
        if (from === to) {
          expect(mine).toEqual([]);
          continue;
        }
        expect(mine[0].from).toBe(from);
        expect(mine[mine.length - 1].to).toBe(to);
        for (let i = 1; i < mine.length; i++) expect(mine[i].from).toBe(mine[i - 1].to);
        for (const c of mine) expect(Math.min(2, Math.floor(c.layer / 2))).toBe(ki);
        for (const c of mine) expect(c.bin).toBe(b);
      }
    }
    expect(chunks.every((c) => c.cost > 0)).toBe(true);
  });

  it("draw, chunk by chunk as a job hands them out, the same shapes in the same order as the one-shot painter", () => {
    const shapes = (calls: [string, ...unknown[]][]) =>
      calls
        .filter((c) => ["moveTo", "lineTo", "quadraticCurveTo", "rect"].includes(c[0]))
        .map((c) => c.map((x) => (typeof x === "number" ? x.toFixed(3) : x)).join(","));
    const one = recorder();
    paintEdges(one.ctx, p, lay, nx, ny);
    const prog = recorder();
    // small chunks, so that buckets are cut
    const chunks = edgeChunks(p, lay, nx, ny, 1, 1).flatMap((c) => Array.from({ length: c.to - c.from }, (_, i) => ({ ...c, from: c.from + i, to: c.from + i + 1 })));
    expect(chunks.length).toBeGreaterThan(40);
    const job = new EdgeProgress();
    job.start("k", chunks, 1);
    while (job.pending("k")) for (const c of job.take("k", 3)) paintChunk(prog.ctx, p, lay, c, nx, ny, 1);
    expect(shapes(prog.calls)).toEqual(shapes(one.calls));
  });
});
