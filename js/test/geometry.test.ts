import { describe, expect, it } from "vitest";
import { encodeArray } from "../codec";
import { fitView, hitTest, labelStride, MLP_DX, nodeRadius, toScreen, toWorld, visibleLabels, zoomAt } from "../geometry";
import { clampCursor, cursorToSelection, detailsKey, moveCursor, sameSelection, selectionToCursor } from "../selection";
import { decodeGraph, rowOf, rowToNode } from "../state";
import { tinyGraph as graph } from "./tiny-graph";


describe("grid geometry", () => {
  const T = 2, L = 1;
  const v = fitView(T, L, { w: 244, h: 322 });
  it("row mapping", () => {
    expect(rowOf("embedding", -1)).toBe(0);
    expect(rowOf("after_attention", 3)).toBe(7);
    expect(rowOf("after_mlp", 3)).toBe(8);
    expect(rowToNode(7)).toEqual({ node_kind: "after_attention", layer: 3 });
    expect(rowToNode(8)).toEqual({ node_kind: "after_mlp", layer: 3 });
    expect(rowToNode(0)).toEqual({ node_kind: "embedding", layer: -1 });
  });
  it("row 0 is at the bottom and screen<->world round-trips", () => {
    const [, y0] = toScreen(v, 0, 0);
    const [, y2] = toScreen(v, 0, 2);
    expect(y0).toBeGreaterThan(y2);
    const [x, y] = toScreen(v, 1.25, 1.5);
    const [c, r] = toWorld(v, x, y);
    expect(c).toBeCloseTo(1.25);
    expect(r).toBeCloseTo(1.5);
  });
  it("zoom keeps the point under the cursor fixed", () => {
    const z = zoomAt(v, 2, 100, 100);
    const a = toWorld(v, 100, 100);
    const b = toWorld(z, 100, 100);
    expect(b[0]).toBeCloseTo(a[0]);
    expect(b[1]).toBeCloseTo(a[1]);
    expect(z.sx).toBeCloseTo(v.sx * 2);
  });
  it("hit tests nodes, MLP squares and attention edges", () => {
    const g = graph();
    const opts = { T, L, graph: g, mlpNodes: new Set(["0:1"]) };
    const [nx, ny] = toScreen(v, 1, 1);
    expect(hitTest(v, nx + 1, ny - 1, opts)).toEqual({ kind: "node", token: 1, row: 1 });
    const [mx, my] = toScreen(v, 1 + MLP_DX, 1.5);
    expect(hitTest(v, mx, my, opts)).toEqual({ kind: "mlp", token: 1, layer: 0 });
    // MLP square not drawn -> not hit
    expect(hitTest(v, mx, my, { ...opts, mlpNodes: new Set() })?.kind).not.toBe("mlp");
    // attention edge emb t0 -> after_attn t1: curve from (x0,y0) with control (x1,y0)
    const [x0, y0] = toScreen(v, 0, 0);
    const [x1, y1] = toScreen(v, 1, 1);
    // point of the quadratic at t = 0.5: 0.25*p0 + 0.5*c + 0.25*p1 with c = (x1, y0)
    const hit = hitTest(v, 0.25 * x0 + 0.75 * x1 - 3, 0.75 * y0 + 0.25 * y1 + 1, opts);
    expect(hit).toMatchObject({ kind: "edge", layer: 0, source: 0, token: 1 });
    // far from everything
    expect(hitTest(v, 2, 2, opts)).toBeNull();
    expect(nodeRadius(v)).toBeGreaterThan(1);
  });
  it("thins labels when dense but keeps the target", () => {
    expect(labelStride(20)).toBe(1);
    expect(labelStride(3)).toBe(5);
    const dense = fitView(128, 30, { w: 700, h: 500 });
    const shown = visibleLabels(128, dense, 700, [127, 63]);
    expect(shown).toContain(127);
    expect(shown).toContain(63);
    expect(shown.length).toBeLessThan(60);
    expect(shown.length).toBeGreaterThan(10);
  });
});

describe("selection logic", () => {
  it("arrow keys move the cursor within bounds", () => {
    const T = 5, L = 2;
    let c = { token: 4, row: 4 };
    c = moveCursor(c, "ArrowRight", T, L)!;
    expect(c).toEqual({ token: 4, row: 4 });
    c = moveCursor(c, "ArrowLeft", T, L)!;
    expect(c).toEqual({ token: 3, row: 4 });
    c = moveCursor(c, "ArrowDown", T, L)!;
    expect(c).toEqual({ token: 3, row: 3 });
    c = moveCursor(c, "ArrowUp", T, L)!;
    c = moveCursor(c, "ArrowUp", T, L)!;
    expect(c.row).toBe(4);
    expect(moveCursor(c, "Home", T, L)).toEqual({ token: 0, row: 4 });
    expect(moveCursor(c, "x", T, L)).toBeNull();
    expect(clampCursor({ token: -3, row: 99 }, T, L)).toEqual({ token: 0, row: 4 });
  });
  it("cursor <-> selection", () => {
    expect(cursorToSelection({ token: 2, row: 3 })).toEqual({ kind: "node", layer: 1, token: 2, node_kind: "after_attention" });
    expect(cursorToSelection({ token: 0, row: 0 })).toEqual({ kind: "node", layer: -1, token: 0, node_kind: "embedding" });
    expect(selectionToCursor(null, 7, 3)).toEqual({ token: 7, row: 6 });
    expect(selectionToCursor({ kind: "mlp", layer: 1, token: 2 }, 7, 3)).toEqual({ token: 2, row: 4 });
    expect(selectionToCursor({ kind: "node", layer: 1, token: 2, node_kind: "after_mlp" }, 7, 3)).toEqual({ token: 2, row: 4 });
  });
  it("details keys follow the protocol", () => {
    expect(detailsKey({ kind: "node", layer: 2, token: 5, node_kind: "after_attention" })).toBe("lens:5:5");
    expect(detailsKey({ kind: "node", layer: -1, token: 5, node_kind: "embedding" })).toBe("lens:0:5");
    expect(detailsKey({ kind: "head", layer: 3, head: 4, token: 9 })).toBe("head:3:4:9");
    expect(detailsKey({ kind: "mlp", layer: 3, token: 9 })).toBe("mlp:3:9");
    expect(detailsKey({ kind: "neuron", layer: 3, neuron: 77, token: 9 })).toBe("neuron:3:77:9");
    expect(detailsKey({ kind: "edge", layer: 3, source: 1, token: 9 })).toBeNull();
    expect(sameSelection({ kind: "mlp", layer: 1, token: 2 }, { token: 2, layer: 1, kind: "mlp" } as any)).toBe(true);
    expect(sameSelection(null, null)).toBe(true);
  });
});

describe("cancelling updates", () => {
  it("decodes node_cancelling, zeros when an older payload has none", () => {
    expect(Array.from(graph().nodeCancelling)).toEqual([0, 0, 0, 0, 0]);
    const raw = {
      node_kind: encodeArray(new Uint8Array([0, 3]), [2]),
      node_layer: encodeArray(new Int32Array([-1, 0]), [2]),
      node_token: encodeArray(new Uint32Array([0, 0]), [2]),
      node_cancelling: encodeArray(new Uint8Array([0, 1]), [2]),
      node_external: encodeArray(new Uint8Array([1, 0]), [2]),
    };
    expect(Array.from(decodeGraph(raw).nodeCancelling)).toEqual([0, 1]);
    expect(Array.from(decodeGraph(raw).nodeExternal)).toEqual([1, 0]);
    expect(Array.from(graph().nodeExternal)).toEqual([0, 0, 0, 0, 0]);
  });
});
