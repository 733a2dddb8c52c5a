// @vitest-environment happy-dom
/**
 * What each frame of a dense graph's progressive drawing does to which canvas (happy-dom has no canvas: every
 * canvas gets a recording context): the first frame draws the heavy edges straight onto the picture, with no edge
 * layer to composite; the later frames draw edges out of sight and touch neither the picture nor the nodes; the
 * last one shows the complete edges bitmap.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { fitView } from "../geometry";
import { edgesPending, newPaintCache, paintGraph, PaintInput } from "../panes/graph-paint";
import { lightTheme, recordingContext } from "./recording-context";
import { denseGraph } from "./tiny-graph";

type Calls = [string, ...unknown[]][];
const contexts = new Map<HTMLCanvasElement, Calls>();

beforeEach(() => {
  contexts.clear();
  vi.spyOn(HTMLCanvasElement.prototype, "getContext").mockImplementation(function (this: HTMLCanvasElement) {
    const calls: Calls = contexts.get(this) ?? [];
    contexts.set(this, calls);
    const { ctx } = recordingContext(calls, { setters: false });
    const image = (w: number, h: number) => ({ width: w, height: h, data: new Uint8ClampedArray(w * h * 4) });
    Object.assign(ctx, { canvas: this, getImageData: (_x: number, _y: number, w: number, h: number) => image(w, h), createImageData: image });
    return ctx as any;
  });
});
afterEach(() => vi.restoreAllMocks());

const count = (calls: Calls | undefined, name: string) => (calls ?? []).filter((c) => c[0] === name).length;

describe("a progressive drawing's frames", () => {
  const T = 24;
  const g = denseGraph(T);
  const size = { w: 600, h: 300 };
  const v = fitView(T, 1, size);
  const main: Calls = [];
  const input = (): PaintInput => ({
    c: recordingContext(main, { setters: false }).ctx,
    v, size, theme: lightTheme, g, T, L: 1, target: T - 1, sel: null, hover: null, cursor: null, dpr: 1,
    budget: [1, 1], // one chunk a frame
  });

  it("composite no edge layer in the first frame and nothing at all in the later ones, then show the complete edges", () => {
    const cache = newPaintCache();
    paintGraph(input(), cache);
    expect(edgesPending(cache)).toBe(true);
    const nodes = contexts.get(cache.nodes as HTMLCanvasElement);
    const edges = () => contexts.get(cache.edges as HTMLCanvasElement) ?? [];
    // first frame: the background and the nodes composited, the preview's edges stroked onto the picture itself
    expect(main.filter((c) => c[0] === "drawImage").map((c) => c[1])).toEqual([cache.bg, cache.nodes]);
    expect(count(main, "stroke") + count(main, "fill")).toBeGreaterThan(0);
    expect(count(nodes, "putImageData")).toBe(1);
    expect(edges().length).toBe(0);
    // later frames with nothing new: edges go into the edges bitmap; the picture and the nodes are left alone
    let frames = 0;
    const mainBefore = main.length;
    while (frames < 3 && edgesPending(cache)) {
      paintGraph(input(), cache);
      frames++;
    }
    expect(frames).toBe(3);
    expect(edgesPending(cache)).toBe(true);
    expect(main.length).toBe(mainBefore);
    expect(count(nodes, "putImageData")).toBe(1);
    expect(count(edges(), "stroke") + count(edges(), "fill")).toBeGreaterThan(0);
    // the last frame shows the edges bitmap: no stroke on the picture, the bitmap and the nodes composited
    while (edgesPending(cache)) paintGraph(input(), cache);
    const last = main.slice(mainBefore);
    expect(last.filter((c) => c[0] === "drawImage").map((c) => c[1])).toEqual([cache.edges, cache.nodes]);
    expect(count(last, "stroke") + count(last, "fill")).toBe(0); // no edge (nor ring: nothing selected) on the picture
    expect(count(nodes, "putImageData")).toBe(1);
  });

  it("redraw the preview under a new hover while the edges are pending, and carry on", () => {
    const cache = newPaintCache();
    paintGraph(input(), cache);
    const n0 = main.length;
    paintGraph({ ...input(), hover: { kind: "node", token: 1, row: 1 } as any }, cache);
    expect(edgesPending(cache)).toBe(true);
    // the picture is redrawn: background, preview edges, nodes from their bitmap (not stamped again)
    const redraw = main.slice(n0);
    expect(redraw.filter((c) => c[0] === "drawImage").map((c) => c[1])).toEqual([cache.bg, cache.nodes]);
    expect(count(contexts.get(cache.nodes as HTMLCanvasElement), "putImageData")).toBe(1);
    while (edgesPending(cache)) paintGraph({ ...input(), hover: { kind: "node", token: 1, row: 1 } as any }, cache);
  });
});
