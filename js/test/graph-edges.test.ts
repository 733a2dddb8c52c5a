import { describe, expect, it } from "vitest";
import { fitView } from "../geometry";
import { graphLayout } from "../graph-layout";
import { encodeArray } from "../codec";
import { binCenter, edgeStyle, WEIGHT_BINS } from "../draw";
import { dashSegments, HAIRLINE_MAX, paintEdges, WIDE_BATCH } from "../panes/graph-edges";
import { decodeGraph } from "../state";
import { tinyGraph } from "./tiny-graph";
import { lightTheme, recordingContext } from "./recording-context";

const theme = lightTheme;

const recorder = recordingContext;

describe("dashes cut in script", () => {
  it("starts with a dash, alternates on / off along the segment and cuts the last dash at the end", () => {
    const out: number[] = [];
    dashSegments(0, 0, 12, 0, 3, 2, out);
    expect(out).toEqual([0, 0, 3, 0, 5, 0, 8, 0, 10, 0, 12, 0]);
  });

  it("follows the segment's direction and restarts the pattern for each segment", () => {
    const out: number[] = [];
    dashSegments(0, 10, 0, 0, 4, 4, out); // upwards, length 10: dashes [0, 4] and [8, 10]
    expect(out).toEqual([0, 10, 0, 6, 0, 2, 0, 0]);
    dashSegments(5, 5, 5, 5, 4, 4, out); // zero length: nothing
    expect(out.length).toBe(8);
  });
});

describe("edge painter", () => {
  const g = tinyGraph();
  const lay = graphLayout(g);
  const size = { w: 300, h: 200 };
  const v = fitView(2, 1, size);
  const nx = new Float32Array(g.n);
  const ny = new Float32Array(g.n);
  for (let i = 0; i < g.n; i++) {
    nx[i] = v.tx + lay.col[i] * v.sx;
    ny[i] = v.ty - lay.row[i] * v.sy;
  }

  it("fills vertical residual edges as rectangles between their nodes, strokes no dash pattern", () => {
    const { ctx, calls } = recorder();
    paintEdges(ctx, { v, size, theme, g }, lay, nx, ny);
    const rects = calls.filter((c) => c[0] === "rect");
    // residual edges 1 (node 1 -> 2) and 4 (node 2 -> 4), both in token 1's column
    expect(rects.length).toBe(2);
    for (const [, x, y, w, hh] of rects as [string, number, number, number, number][]) {
      expect(x + w / 2).toBeCloseTo(nx[2]);
      expect(hh).toBeGreaterThan(0);
    }
    // each spans its two nodes (upper node's y to lower node's y)
    const r2 = (q: number) => Math.round(q * 100) / 100;
    const spans = (rects as [string, number, number, number, number][]).map(([, , y, , hh]) => [r2(y), r2(y + hh)]);
    expect(spans).toContainEqual([r2(ny[2]), r2(ny[1])]);
    expect(spans).toContainEqual([r2(ny[4]), r2(ny[2])]);
    // no dash effect left on the context (the MLP dashes are segments of the path)
    const dashes = calls.filter((c) => c[0] === "setLineDash").map((c) => c[1] as number[]);
    expect(dashes.every((d) => d.length === 0)).toBe(true);
    expect(calls.filter((c) => c[0] === "quadraticCurveTo").length).toBe(1); // the one attention edge
  });

  it("fills residual edges of one weight bin stacked in a column as one rectangle over both", () => {
    const g2 = tinyGraph();
    g2.edgeWeight[1] = g2.edgeWeight[4]; // residual 1 -> 2 and 2 -> 4 now share a bin
    const lay2 = graphLayout(g2);
    const { ctx, calls } = recorder();
    paintEdges(ctx, { v, size, theme, g: g2 }, lay2, nx, ny);
    const rects = calls.filter((c) => c[0] === "rect") as [string, number, number, number, number][];
    expect(rects.length).toBe(1);
    const [, , y, , hh] = rects[0];
    expect(y).toBeCloseTo(ny[4]); // the upper end of the upper edge
    expect(y + hh).toBeCloseTo(ny[1]); // the lower end of the lower edge
  });

  it("cuts each MLP edge into dashes of the style's pattern", () => {
    const { ctx, calls } = recorder();
    paintEdges(ctx, { v, size, theme, g }, lay, nx, ny);
    // path segments between the fill of the residual bucket(s) and the attention curve: the MLP dashes
    const moves = calls.filter((c) => c[0] === "moveTo" || c[0] === "lineTo");
    const lines = calls.filter((c) => c[0] === "lineTo").length;
    expect(lines).toBeGreaterThanOrEqual(2); // at least one dash per MLP edge
    // dashes lie on the segment from node 2 to node 3 or from node 3 to node 4
    for (let q = 0; q + 1 < moves.length; q++) {
      if (moves[q][0] !== "moveTo" || moves[q + 1][0] !== "lineTo") continue;
      const [, ax, ay] = moves[q] as [string, number, number];
      const [, bx, by] = moves[q + 1] as [string, number, number];
      const onSeg = (s: number, d: number) => {
        const cross = (nx[d] - nx[s]) * (by - ay) - (ny[d] - ny[s]) * (bx - ax);
        return Math.abs(cross) < 1e-3 && Math.min(nx[s], nx[d]) - 1e-3 <= Math.min(ax, bx) && Math.max(ax, bx) <= Math.max(nx[s], nx[d]) + 1e-3;
      };
      if (ax === bx) continue; // the attention edge's start (moveTo before a curve) is not a dash
      expect(onSeg(2, 3) || onSeg(3, 4)).toBe(true);
    }
  });
});

describe("narrow layer of the thin attention curves", () => {
  const g = tinyGraph();
  const lay = graphLayout(g);
  const size = { w: 300, h: 200 };
  // zoomed out so that every edge is thin (as in a dense graph)
  const v = { ...fitView(2, 1, size), sx: 6, sy: 6 };
  const nx = new Float32Array(g.n);
  const ny = new Float32Array(g.n);
  for (let i = 0; i < g.n; i++) {
    nx[i] = v.tx + lay.col[i] * v.sx;
    ny[i] = v.ty - lay.row[i] * v.sy;
  }

  it("takes the thin attention curves with x scaled by kx, flushed before the wide curves are drawn over them", () => {
    const g2 = tinyGraph();
    g2.edgeWeight[0] = 0.05; // a light attention edge: thin
    g2.edgeKind[4] = "attention"; // the heaviest edge (node 2 -> 4) as a wide attention curve
    const lay2 = graphLayout(g2);
    const log: [string, ...unknown[]][] = [];
    const main = recorder(log);
    const narrow = recorder([]);
    paintEdges(main.ctx, { v, size, theme, g: g2 }, lay2, nx, ny, { c: narrow.ctx, kx: 0.5, flush: () => log.push(["flush"]) });
    const thin = narrow.calls.filter((c) => c[0] === "quadraticCurveTo") as [string, number, number, number, number][];
    expect(thin.length).toBe(1);
    expect(thin[0][3]).toBeCloseTo(nx[2] * 0.5); // edge 0 ends at node 2: x halved, y kept
    expect(thin[0][4]).toBeCloseTo(ny[2]);
    expect(narrow.calls.some((c) => c[0] === "stroke")).toBe(true);
    // the wide curve is drawn at full width, after the narrow layer was flushed (once)
    const wide = log.findIndex((c) => c[0] === "quadraticCurveTo");
    expect(wide).toBeGreaterThan(-1);
    expect((log[wide] as number[])[3]).toBeCloseTo(nx[4]);
    expect(log.filter((c) => c[0] === "flush").length).toBe(1);
    expect(log.findIndex((c) => c[0] === "flush")).toBeLessThan(wide);
  });

  it("is left alone by a graph without thin attention curves", () => {
    const g2 = tinyGraph();
    g2.edgeKind[0] = "residual"; // the one attention edge gone
    const main = recorder();
    const narrow = recorder();
    let flushed = 0;
    paintEdges(main.ctx, { v, size, theme, g: g2 }, graphLayout(g2), nx, ny, { c: narrow.ctx, kx: 0.5, flush: () => flushed++ });
    expect(narrow.calls.filter((c) => c[0] === "stroke").length).toBe(0);
    expect(flushed).toBe(0);
  });
});

describe("wide strokes in batches", () => {
  it("strokes a bin of many wide MLP dashes WIDE_BATCH shapes at a time, every dash drawn once", () => {
    // 40 tokens, each with a heavy MLP edge (after attention -> MLP block) in the same weight bin
    const n = 40;
    const kinds = new Uint8Array(2 * n);
    const layers = new Int32Array(2 * n);
    const tokens = new Uint32Array(2 * n);
    const src = new Uint32Array(n), dst = new Uint32Array(n);
    for (let t = 0; t < n; t++) {
      kinds.set([1, 2], 2 * t);
      tokens.set([t, t], 2 * t);
      src[t] = 2 * t;
      dst[t] = 2 * t + 1;
    }
    const g = decodeGraph({
      node_kind: encodeArray(kinds, [2 * n]),
      node_layer: encodeArray(layers, [2 * n]),
      node_token: encodeArray(tokens, [2 * n]),
      edge_src: encodeArray(src, [n]),
      edge_dst: encodeArray(dst, [n]),
      edge_weight: encodeArray(new Float32Array(n).fill(1), [n]),
      edge_kind: encodeArray(new Uint8Array(n).fill(2), [n]),
      edge_heads: encodeArray(new Float32Array(n * 2), [n, 2]),
    });
    const lay = graphLayout(g);
    const size = { w: 2000, h: 300 };
    const v = { sx: 40, sy: 40, tx: 20, ty: 250 }; // zoomed in: the MLP edges are wide
    const nx = new Float32Array(g.n), ny = new Float32Array(g.n);
    for (let i = 0; i < g.n; i++) {
      nx[i] = v.tx + lay.col[i] * v.sx;
      ny[i] = v.ty - lay.row[i] * v.sy;
    }
    const { ctx, calls } = recorder();
    paintEdges(ctx, { v, size, theme, g }, lay, nx, ny);
    const widths = calls.filter((c) => c[0] === "=lineWidth").map((c) => c[1] as number);
    expect(Math.max(...widths)).toBeGreaterThan(HAIRLINE_MAX);
    // shapes (moveTo) per stroke: none over WIDE_BATCH, more than one stroke, and all the dashes of all edges
    const perStroke: number[] = [];
    let shapes = 0;
    for (const c of calls) {
      if (c[0] === "moveTo") shapes++;
      if (c[0] === "stroke") {
        perStroke.push(shapes);
        shapes = 0;
      }
    }
    expect(Math.max(...perStroke)).toBeLessThanOrEqual(WIDE_BATCH + 1); // a batch closes after the edge that fills it
    expect(perStroke.filter((k) => k > 0).length).toBeGreaterThan(1);
    // every dash of every edge, once: the style's pattern cut along each edge
    const dash = edgeStyle("mlp", binCenter(WEIGHT_BINS - 1), theme, Math.min(v.sx, v.sy) / 8).dash;
    let expected = 0;
    for (let t = 0; t < n; t++) {
      const out: number[] = [];
      dashSegments(nx[src[t]], ny[src[t]], nx[dst[t]], ny[dst[t]], dash[0], dash[1], out);
      expected += out.length / 4;
    }
    expect(expected).toBeGreaterThan(WIDE_BATCH);
    expect(perStroke.reduce((x, y) => x + y, 0)).toBe(expected);
  });
});
