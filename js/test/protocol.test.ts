// @vitest-environment happy-dom
/// <reference types="node" />
/**
 * Issue 11, point 1: the state Python exports from a tiny model (tests/test_protocol.py writes and checks
 * js/test/fixtures/explorer-state.json) decodes with the real codec into what the protocol says.
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { at, decodeArray, decodeDict, decodeTree, shapeProblems } from "../codec";
import { ARRAY_FIELDS, EDGE_KINDS, NODE_KINDS, PYTHON_ONLY, SELECTION_FIELDS, TRAIT_ARRAYS } from "../protocol.gen";
import { detailsKey } from "../selection";
import widget from "../index";
import { FakeModel } from "../dev/fake-model";
import { makeState } from "../dev/fake-data";
import {
  decodeGraph, dims, getHeadImportance, getLens, getNeurons, getSelection, protocolProblems, rowOf, rowToNode,
} from "../state";
import { inflateState, StaticModel } from "../static";

// vitest runs from the repository root (package.json)
const raw = JSON.parse(readFileSync("js/test/fixtures/explorer-state.json", "utf-8"));
const state = inflateState(raw);
const model = new StaticModel(state);

function sizesFromMeta(): Record<string, number> {
  const { L, H, T } = dims(model);
  return { L, H, T, R: 2 * L + 1 };
}

describe("a tiny model's exported state", () => {
  it("has the dimensions meta announces", () => {
    const { L, H, T } = dims(model);
    expect([L, H, T]).toEqual([2, 4, raw.tokens.length]);
    expect(state.meta.node_kinds).toEqual([...NODE_KINDS]);
    expect(state.meta.edge_kinds).toEqual([...EDGE_KINDS]);
  });

  it("holds every array with the protocol's dtype and named dimensions", () => {
    let checked = 0;
    for (const [trait, where] of Object.entries(TRAIT_ARRAYS)) {
      const value = state[trait];
      if (value == null) continue;
      if ("array" in where) {
        expect(shapeProblems({ [trait]: decodeArray(value) }, { [trait]: where.array }, sizesFromMeta())).toEqual([]);
        checked++;
      } else if ("struct" in where) {
        if (Object.keys(value).length === 0) continue;
        expect(shapeProblems(decodeDict(value), ARRAY_FIELDS[where.struct], sizesFromMeta()), trait).toEqual([]);
        checked++;
      } else {
        for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
          expect(shapeProblems(decodeDict(v), ARRAY_FIELDS[where.mapOf], sizesFromMeta()), `${trait}.${k}`).toEqual([]);
          checked++;
        }
      }
    }
    expect(checked).toBeGreaterThanOrEqual(7); // graph, head_importance, blocks, neurons, lens, 2 method tables, attribution
  });

  it("reports a drifted array instead of decoding it silently", () => {
    const g = decodeDict(state.graph);
    const drifted = { ...g, edge_weight: decodeArray({ ...state.graph.edge_weight, dtype: "int32" }) };
    delete (drifted as Record<string, unknown>).edge_src;
    const problems = shapeProblems(drifted, ARRAY_FIELDS.Graph, sizesFromMeta());
    expect(problems).toContain("edge_src is missing");
    expect(problems).toContain("edge_weight is int32, not float32");
    expect(shapeProblems(g, ARRAY_FIELDS.Graph, { ...sizesFromMeta(), H: 3 })).toContain("edge_heads has H = 4, expected 3");
  });

  it("decodes into a consistent graph: edges between its nodes, kinds the protocol names", () => {
    const { L, H, T } = dims(model);
    const g = decodeGraph(state.graph, state.meta);
    expect(g.n).toBeGreaterThan(0);
    expect(g.e).toBeGreaterThan(0);
    for (let i = 0; i < g.e; i++) {
      expect(g.edgeSrc[i]).toBeLessThan(g.n);
      expect(g.edgeDst[i]).toBeLessThan(g.n);
      expect(EDGE_KINDS).toContain(g.edgeKind[i]);
      expect(g.edgeWeight[i]).toBeGreaterThan(0);
    }
    for (let i = 0; i < g.n; i++) {
      expect(NODE_KINDS).toContain(g.nodeKind[i]);
      expect(g.nodeLayer[i]).toBeGreaterThanOrEqual(-1);
      expect(g.nodeLayer[i]).toBeLessThan(L);
      expect(g.nodeToken[i]).toBeLessThan(T);
      expect(g.nodeLayer[i] === -1).toBe(g.nodeKind[i] === "embedding");
    }
    expect(g.edgeHeads?.shape).toEqual([g.e, H]);
    // the route ends at the target's top node
    const target = state.target as number;
    const top = Array.from({ length: g.n }, (_, i) => i).filter((i) => g.nodeToken[i] === target && g.nodeLayer[i] === L - 1);
    expect(top.some((i) => g.nodeKind[i] === "after_mlp")).toBe(true);
  });

  it("has head importance [L, H, T] and lens rows that map to nodes", () => {
    const { L, H, T } = dims(model);
    const hi = getHeadImportance(model)!;
    expect(hi.shape).toEqual([L, H, T]);
    expect(hi.data.every((v) => Number.isFinite(v) && v >= 0)).toBe(true);
    const lens = getLens(model)!;
    expect(lens.rows).toBe(2 * L + 1);
    expect(lens.ids!.shape[0]).toBe(lens.rows);
    for (let r = 0; r < lens.rows; r++) {
      const n = rowToNode(r);
      expect(rowOf(n.node_kind, n.layer)).toBe(r);
      for (let k = 0; k < lens.ids!.shape[1]; k++) expect(lens.strings[String(at(lens.ids!, r, k))]).toBeTypeOf("string");
    }
    const probs = lens.probs!.data;
    expect(probs.every((p) => p >= 0 && p <= 1)).toBe(true);
    const nr = getNeurons(model);
    expect(nr.ids.shape).toEqual([L, T, nr.ids.shape[2]]);
  });

  it("carries a selection of a protocol kind whose details key holds the head's matrices", () => {
    const { T } = dims(model);
    const sel = getSelection(model)!;
    expect(Object.keys(SELECTION_FIELDS)).toContain(sel.kind);
    expect(Object.keys(sel).sort()).toEqual(["kind", ...SELECTION_FIELDS[sel.kind]].sort());
    const key = detailsKey(sel)!;
    expect(key).toBe("head:1:2:3");
    const result = decodeTree(state.details[key]);
    expect(shapeProblems(result, ARRAY_FIELDS.HeadDetail, { T })).toEqual([]);
    // attention rows of a causal head sum to 1 over the sources up to the row
    const p = result.pattern;
    for (let i = 0; i < T; i++) {
      let s = 0;
      for (let j = 0; j < T; j++) s += at(p, i, j);
      expect(s).toBeCloseTo(1, 4);
    }
  });

  it("holds every Python-only trait the protocol lists", () => {
    for (const name of PYTHON_ONLY) expect(name in raw, name).toBe(true);
  });
});

describe("drift between Python and the bundle", () => {
  it("is none for the exported state and for the dev harness's fake data", () => {
    expect(protocolProblems(model)).toEqual([]);
    const fake = makeState({ L: 4, H: 3, T: 8, K: 4 });
    delete (fake as Record<string, unknown>)._dense;
    expect(protocolProblems(new FakeModel(fake))).toEqual([]);
  });

  it("shows in the error bar when a field is renamed, instead of an empty pane", () => {
    const { edge_src, ...rest } = state.graph;
    const drifted = new StaticModel({ ...state, graph: { ...rest, edge_source: edge_src } });
    expect(protocolProblems(drifted)).toEqual(["graph: edge_src is missing"]);
    const el = document.createElement("div");
    document.body.appendChild(el);
    const cleanup = widget.render({ model: drifted, el });
    const bar = el.querySelector(".lmtt-errorbar") as HTMLElement;
    expect(bar.hidden).toBe(false);
    expect(bar.textContent).toContain("graph: edge_src is missing");
    expect(bar.textContent).toContain("different versions");
    cleanup();
    el.remove();
  });
});
