// @vitest-environment happy-dom
import { afterEach, describe, expect, it, vi } from "vitest";
import widget, { renderStatic } from "../index";

const render = widget.render;
import { decodeArray, decodeTree, encodeArray } from "../codec";
import { FakeModel } from "../dev/fake-model";
import { fakeDetailsReply, fakeNeurons, makeState, makeVariants, toBase64Tree } from "../dev/fake-data";
import {
  base64ToDataView, findVariant, fromScoreMerges, fromStateBlocks, fromStateColumns, inflateState, parseVariants, STATIC_DETAILS_ERROR, STATIC_RUN_ERROR, StaticModel,
} from "../static";
import { getGraph } from "../state";
import { tauToSlider } from "../panes/graph";

const L = 4, H = 3, T = 8, K = 4;
const flush = () => new Promise((r) => setTimeout(r, 0));

/** A report state as Python would write it: plain JSON, base64 arrays, variants for two targets. */
function reportState(panes = ["prompt", "graph", "heads", "neurons", "vocab"]) {
  const st = makeState({ L, H, T, K });
  const dense = st._dense;
  delete st._dense;
  st.panes = panes;
  st.static = true;
  st.graph_variants = makeVariants(dense, [T - 1, 3], [0.02, 0.04, 0.08]);
  st.details["head:1:2:7"] = {
    promoted: [[" Paris", 2]],
    suppressed: [[" London", -1]],
    importance: 0.1,
    pattern: encodeArray(new Float32Array(T * T).fill(0.5), [T, T]),
    contribution: encodeArray(new Float32Array(T * T).fill(0.25), [T, T]),
  };
  st.details["mlp:1:6"] = { promoted: [[" x", 1]], suppressed: [], neurons: [[42, 0.5, -1.5], [7, 0.25, 2]] };
  return JSON.parse(JSON.stringify(toBase64Tree(st))) as Record<string, any>;
}

function mountStatic(state: object) {
  const el = document.createElement("div");
  document.body.appendChild(el);
  const cleanup = renderStatic(el, state);
  return { el, cleanup };
}

function mountModel(state: Record<string, any>) {
  const model = new StaticModel(inflateState(state));
  const el = document.createElement("div");
  document.body.appendChild(el);
  const cleanup = render({ model, el });
  return { model, el, cleanup };
}

const infoText = (el: HTMLElement) => el.querySelector(".lmtt-info")!.textContent ?? "";
const edgesOf = (g: any) => (g.edge_src.data as DataView).byteLength / 4;

afterEach(() => {
  document.body.replaceChildren();
  vi.useRealTimers();
});

describe("base64 state", () => {
  it("decodes base64 into aligned DataViews, any padding or whitespace", () => {
    const f = new Float32Array([1.5, -2, 3.25]);
    const b64 = btoa(String.fromCharCode(...new Uint8Array(f.buffer)));
    const dv = base64ToDataView(b64);
    expect(dv.byteLength).toBe(12);
    expect(Array.from(decodeArray({ dtype: "float32", shape: [3], data: dv })!.data)).toEqual([1.5, -2, 3.25]);
    const u8 = base64ToDataView(" AQID\n/w== ");
    expect(Array.from(new Uint8Array(u8.buffer))).toEqual([1, 2, 3, 255]);
    expect(base64ToDataView("").byteLength).toBe(0);
  });

  it("inflates array dicts nested anywhere (details results, lists) and leaves other strings alone", () => {
    const st = reportState();
    expect(typeof st.graph.edge_src.data).toBe("string");
    const inf = inflateState(st);
    expect(inf.graph.edge_src.data).toBeInstanceOf(DataView);
    expect(inf.neurons.available.data).toBeInstanceOf(DataView);
    expect(inf.graph_variants[`3|0.08|edge`].edge_heads.data).toBeInstanceOf(DataView);
    const head = decodeTree(inf.details["head:1:2:7"]);
    expect(head.pattern.shape).toEqual([T, T]);
    expect(head.contribution.data[5]).toBeCloseTo(0.25);
    expect(inf.prompt).toBe(st.prompt);
    expect(inf.tokens).toEqual(st.tokens);
    const nested = inflateState({ a: [{ b: { dtype: "int32", shape: [2], data: btoa("\xff\xff\xff\xff\x07\x00\x00\x00") } }] });
    expect(Array.from(decodeArray(nested.a[0].b)!.data)).toEqual([-1, 7]);
    // the inflated state decodes exactly like the live one
    const live = makeState({ L, H, T, K });
    expect(getGraph(new FakeModel({ ...inf })).e).toBe(getGraph(new FakeModel(live)).e);
  });
});

describe("graph variants", () => {
  it("parses keys and snaps to the nearest threshold (log scale) for target and granularity", () => {
    const vs = parseVariants({ "7|0.02|head": 1, "7|0.04|head": 1, "7|0.08|edge": 1, "3|0.1|head": 1, "bad": 1, "x|0.1|head": 1 });
    expect(vs.length).toBe(4);
    expect(findVariant(vs, 7, 0.04, "head")!.key).toBe("7|0.04|head");
    expect(findVariant(vs, 7, 0.5, "head")!.threshold).toBe(0.04);
    expect(findVariant(vs, 7, 0.005, "head")!.threshold).toBe(0.02);
    expect(findVariant(vs, 7, 0.03, "head")!.threshold).toBe(0.04); // log-nearer than 0.02
    expect(findVariant(vs, 7, 0.02, "edge")!.threshold).toBe(0.08);
    expect(findVariant(vs, 5, 0.04, "head")).toBeNull();
    expect(findVariant(vs, 3, 0.04, "edge")).toBeNull();
  });

  it("target / threshold / granularity changes swap in the precomputed graph and snap the threshold", () => {
    const state = reportState(["graph"]);
    const { model, el, cleanup } = mountModel(state);
    const variants = model.get("graph_variants");
    const sel = el.querySelector("select.lmtt-select") as HTMLSelectElement;
    sel.value = "3";
    sel.dispatchEvent(new Event("change"));
    expect(model.get("target")).toBe(3);
    expect(model.get("graph")).toBe(variants["3|0.04|head"]);
    expect(infoText(el)).toContain(`${edgesOf(variants["3|0.04|head"])} edges`);
    // slider to the max: nearest available is 0.08, shown as such
    const slider = el.querySelector("input.lmtt-slider") as HTMLInputElement;
    slider.value = "1000";
    slider.dispatchEvent(new Event("change"));
    expect(model.get("threshold")).toBe(0.08);
    expect(slider.value).toBe(String(tauToSlider(0.08)));
    expect(el.querySelector(".lmtt-graph .lmtt-num")!.textContent).toBe("0.080");
    expect(model.get("graph")).toBe(variants["3|0.08|head"]);
    (el.querySelector('.lmtt-seg[data-value="edge"]') as HTMLButtonElement).click();
    expect(model.get("graph")).toBe(variants["3|0.08|edge"]);
    expect(model.get("error")).toBe("");
    cleanup();
  });

  it("a route that is not in the report keeps the graph, restores the control and sets error", () => {
    const { model, el, cleanup } = mountModel(reportState(["graph"]));
    const before = model.get("graph");
    const sel = el.querySelector("select.lmtt-select") as HTMLSelectElement;
    sel.value = "5";
    sel.dispatchEvent(new Event("change"));
    expect(model.get("graph")).toBe(before);
    expect(model.get("target")).toBe(T - 1);
    expect(sel.value).toBe(String(T - 1));
    const bar = el.querySelector(".lmtt-errorbar") as HTMLElement;
    expect(bar.hidden).toBe(false);
    expect(bar.textContent).toContain("precomputed routes");
    expect(bar.textContent).toContain("#5");
    // a later successful change clears that error
    sel.value = "3";
    sel.dispatchEvent(new Event("change"));
    expect(model.get("error")).toBe("");
    expect(bar.hidden).toBe(true);
    // no variants at all: threshold goes back too
    const m2 = new StaticModel(inflateState({ ...reportState(["graph"]), graph_variants: undefined }));
    m2.set("threshold", 0.3);
    m2.save_changes();
    expect(m2.get("threshold")).toBe(0.04);
    expect(m2.get("error")).toContain("precomputed");
    cleanup();
  });

  it("selection changes stay local with one change event and no messages", () => {
    const m = new StaticModel(inflateState(reportState()));
    const send = vi.spyOn(m, "send");
    const seen = vi.fn();
    m.on("change:selection", seen);
    m.set("selection", { kind: "mlp", layer: 1, token: 6 });
    m.save_changes();
    m.set("selection", { kind: "mlp", layer: 1, token: 6 }); // same value, new object: no event
    m.save_changes();
    expect(seen).toHaveBeenCalledTimes(1);
    expect(send).not.toHaveBeenCalled();
  });
});

describe("static details and run", () => {
  it("answers details from the state, refuses the rest without Retry", async () => {
    const m = new StaticModel(inflateState(reportState()));
    const replies: any[] = [];
    m.on("msg:custom", (msg: any) => replies.push(msg));
    m.send({ type: "details", id: "a", key: "head:1:2:7" });
    m.send({ type: "details", id: "b", key: "mlp:0:0" });
    expect(replies.length).toBe(0); // asynchronous, like a kernel
    await flush();
    expect(replies[0]).toMatchObject({ id: "a", key: "head:1:2:7", ok: true });
    expect(decodeTree(replies[0].result).pattern.shape).toEqual([T, T]);
    expect(replies[1]).toEqual({ type: "details", id: "b", key: "mlp:0:0", ok: false, error: STATIC_DETAILS_ERROR });

    const state = reportState(["heads", "vocab"]);
    const m3 = mountModel(state);
    const send = vi.spyOn(m3.model, "send");
    m3.model.set("selection", { kind: "head", layer: 1, head: 2, token: 7 });
    expect(m3.el.querySelectorAll("canvas.lmtt-matrix").length).toBe(2);
    expect(send).not.toHaveBeenCalled();
    m3.model.set("selection", { kind: "mlp", layer: 2, token: 3 });
    await new Promise((r) => setTimeout(r, 50)); // a frame: the coalesced redraw, then its request
    expect(send).toHaveBeenCalledTimes(1);
    const err = m3.el.querySelector(".lmtt-vocab .lmtt-detail-error")!;
    expect(err.textContent).toContain(STATIC_DETAILS_ERROR);
    expect(err.querySelector("button")).toBeNull();
    m3.cleanup();
  });

  it("run is refused: Run hidden, textarea read-only, send(run) sets error", () => {
    const { model, el, cleanup } = mountModel(reportState(["prompt"]));
    const btn = el.querySelector(".lmtt-primary") as HTMLButtonElement;
    const ta = el.querySelector("textarea") as HTMLTextAreaElement;
    expect(btn.hidden).toBe(true);
    expect(btn.disabled).toBe(true);
    expect(ta.readOnly).toBe(true);
    expect((el.querySelector(".lmtt-static-note") as HTMLElement).hidden).toBe(false);
    btn.click();
    expect(model.get("error")).toBe("");
    model.send({ type: "run", prompt: "x" });
    expect(model.get("error")).toBe(STATIC_RUN_ERROR);
    const bar = el.querySelector(".lmtt-errorbar") as HTMLElement;
    (el.querySelector(".lmtt-close") as HTMLButtonElement).click();
    expect(bar.hidden).toBe(true);
    model.send({ type: "run", prompt: "x" }); // shown again
    expect(bar.hidden).toBe(false);
    cleanup();
  });

  it("static is forced on, and a live model keeps Run (static false)", () => {
    const m = new StaticModel(inflateState({ ...reportState(["prompt"]), static: false }));
    expect(m.get("static")).toBe(true);
    const st = makeState({ L, H, T, K });
    delete st._dense;
    st.panes = ["prompt"];
    const live = new FakeModel(st);
    const el = document.createElement("div");
    const c = render({ model: live, el });
    expect((el.querySelector(".lmtt-primary") as HTMLButtonElement).hidden).toBe(false);
    expect((el.querySelector(".lmtt-static-note") as HTMLElement).hidden).toBe(true);
    live.pySet("static", true);
    expect((el.querySelector(".lmtt-primary") as HTMLButtonElement).hidden).toBe(true);
    c();
  });
});

describe("renderStatic()", () => {
  it("renders every pane from a JSON state and cleans up", async () => {
    const state = reportState();
    const json = JSON.stringify(state);
    const { el, cleanup } = mountStatic(JSON.parse(json));
    expect(el.querySelectorAll(".lmtt-pane").length).toBe(5);
    expect(infoText(el)).toMatch(/\d+ nodes, \d+ edges/);
    expect(el.querySelector(".lmtt-neuron")).not.toBeNull();
    expect((el.querySelector(".lmtt-primary") as HTMLButtonElement).hidden).toBe(true);
    // interact: a target change through the DOM swaps the graph
    const sel = el.querySelector("select.lmtt-select") as HTMLSelectElement;
    sel.value = "3";
    sel.dispatchEvent(new Event("change"));
    const variant = state.graph_variants["3|0.04|head"];
    const E = atob(variant.edge_src.data).length / 4;
    expect(infoText(el)).toContain(`${E} edges`);
    // the lens column and prediction still say which position they describe (lens.token), not the new target
    expect(el.querySelector(".lmtt-lens-wrap .lmtt-subtitle")!.textContent).toMatch(new RegExp(`^Logit lens at “.*” #${T - 1} `));
    expect(el.querySelector(".lmtt-vocab-body")!.textContent).toContain(`next token after #${T - 1}`);
    // a pending details reply after cleanup is harmless
    (el.querySelector('.lmtt-seg[data-value="edge"]') as HTMLButtonElement).click();
    cleanup();
    expect(el.querySelector(".lmtt-root")).toBeNull();
    await flush();
    // the caller's state object is not modified
    expect(JSON.stringify(state)).toBe(json);
  });

  it("cleanup removes every model listener and timer", async () => {
    vi.useFakeTimers();
    const { model, el, cleanup } = mountModel(reportState());
    expect(model.listenerCount()).toBeGreaterThan(5);
    model.set("selection", { kind: "mlp", layer: 3, token: 2 }); // triggers a (refused) details request
    cleanup();
    expect(model.listenerCount()).toBe(0);
    expect(el.childElementCount).toBe(0);
    await Promise.resolve();
    vi.runAllTimers();
    expect(vi.getTimerCount()).toBe(0);
  });
});

describe("neuron fallback", () => {
  function kernelModel(reply: "ok" | "error" | "none") {
    const st = makeState({ L, H, T, K });
    delete st._dense;
    st.panes = ["neurons"];
    const model = new FakeModel(st);
    model.onSend = (c: any) => {
      if (reply === "none") return;
      const msg = reply === "ok" ? fakeDetailsReply(c.key, T).msg : { ok: false, error: "boom" };
      setTimeout(() => model.emit("msg:custom", { type: "details", id: c.id, key: c.key, ...msg }, []), 50);
    };
    return model;
  }
  /** An MLP block whose rows were not precomputed, and one whose rows were. */
  function blocks(model: FakeModel) {
    const av = decodeArray(model.get("neurons").available)!;
    let missing: [number, number] | null = null, present: [number, number] | null = null;
    for (let l = 0; l < L; l++)
      for (let t = 0; t < T; t++) {
        if (av.data[l * T + t]) present ??= [l, t];
        else missing ??= [l, t];
      }
    return { missing: missing!, present: present! };
  }

  it("fetches mlp:<layer>:<token> where available is 0 and renders its neurons", () => {
    vi.useFakeTimers();
    const model = kernelModel("ok");
    const { missing, present } = blocks(model);
    const el = document.createElement("div");
    document.body.appendChild(el);
    const cleanup = render({ model, el });
    const sends = model.sent.length;
    model.set("selection", { kind: "mlp", layer: present[0], token: present[1] });
    expect(model.sent.length).toBe(sends);
    expect(el.querySelectorAll(".lmtt-neuron").length).toBe(K);
    model.set("selection", { kind: "mlp", layer: missing[0], token: missing[1] });
    vi.advanceTimersByTime(20); // a frame: the coalesced redraw, then its request
    expect(model.sent.at(-1)!.content).toMatchObject({ type: "details", key: `mlp:${missing[0]}:${missing[1]}` });
    expect(el.querySelector(".lmtt-neurons-pane .lmtt-loading")).not.toBeNull();
    expect(el.querySelectorAll(".lmtt-neuron").length).toBe(0);
    vi.advanceTimersByTime(60);
    expect(el.querySelector(".lmtt-loading")).toBeNull();
    const rows = el.querySelectorAll<HTMLElement>(".lmtt-neuron");
    const expected = fakeNeurons(missing[0], missing[1]);
    expect(rows.length).toBe(expected.length);
    expect(rows[0].dataset.neuron).toBe(String(expected[0][0]));
    rows[1].click();
    expect(model.get("selection")).toEqual({ kind: "neuron", layer: missing[0], neuron: expected[1][0], token: missing[1] });
    // the neuron selection keeps the fallback list (no second request)
    expect(el.querySelectorAll(".lmtt-neuron").length).toBe(expected.length);
    expect(el.querySelector(".lmtt-neuron.is-selected")).toBe(el.querySelectorAll(".lmtt-neuron")[1]);
    cleanup();
  });

  it("shows the error with Retry when the request fails or times out", () => {
    vi.useFakeTimers();
    const model = kernelModel("error");
    const { missing } = blocks(model);
    const el = document.createElement("div");
    const cleanup = render({ model, el });
    model.set("selection", { kind: "mlp", layer: missing[0], token: missing[1] });
    vi.advanceTimersByTime(60);
    const err = el.querySelector(".lmtt-neurons-pane .lmtt-detail-error")!;
    expect(err.textContent).toContain("boom");
    const n = model.sent.length;
    (err.querySelector("button") as HTMLButtonElement).click();
    expect(model.sent.length).toBe(n + 1);
    cleanup();
    expect(model.listenerCount()).toBe(0);
  });

  it("the default block prefers precomputed rows (no request on first paint)", () => {
    const model = kernelModel("none");
    const el = document.createElement("div");
    const cleanup = render({ model, el });
    expect(model.sent.length).toBe(0);
    expect(el.querySelectorAll(".lmtt-neuron").length).toBe(K);
    cleanup();
  });

  it("static report: neurons come from the details trait, else the not-in-report error", async () => {
    const state = reportState(["neurons"]);
    state.neurons.available = toBase64Tree(encodeArray(new Uint8Array(L * T), [L, T]));
    const { model, el, cleanup } = mountModel(state);
    model.set("selection", { kind: "mlp", layer: 1, token: 6 });
    const rows = el.querySelectorAll<HTMLElement>(".lmtt-neuron");
    expect(Array.from(rows, (r) => r.dataset.neuron)).toEqual(["42", "7"]);
    expect(rows[0].textContent).toContain("0.500");
    expect(rows[0].querySelector(".lmtt-sign.neg")).not.toBeNull();
    model.set("selection", { kind: "mlp", layer: 2, token: 6 });
    await flush();
    const err = el.querySelector(".lmtt-neurons-pane .lmtt-detail-error")!;
    expect(err.textContent).toContain(STATIC_DETAILS_ERROR);
    expect(err.querySelector("button")).toBeNull();
    cleanup();
  });
});

describe("per-target tables held as state columns", () => {
  it("rebuilds a [L, H] head table from the state's [L, H, T] array at its target", () => {
    const cube = new Float32Array(L * H * T).map((_, i) => i / 7);
    const state = { head_importance: encodeArray(cube, [L, H, T]) };
    const perTarget: Record<string, any> = {
      "3": { method_scores: { importance: { heads: { column_of: "head_importance", token: 3 } } } },
      "5": { method_scores: { logit_attribution: { heads: encodeArray(new Float32Array(L * H).fill(2), [L, H]) } } },
    };
    fromStateColumns(perTarget, state);
    const got = decodeArray(perTarget["3"].method_scores.importance.heads)!;
    expect(got.shape).toEqual([L, H]);
    for (let l = 0; l < L; l++) for (let h = 0; h < H; h++) expect(got.data[l * H + h]).toBe(cube[(l * H + h) * T + 3]);
    // a table stored as an array is left as it is
    expect(decodeArray(perTarget["5"].method_scores.logit_attribution.heads)!.data[0]).toBe(2);
  });

  it("a reference to a column the report does not hold is an error, not an empty pane", () => {
    const state = { head_importance: encodeArray(new Float32Array(L * H * T), [L, H, T]) };
    const bad = { "1": { method_scores: { importance: { heads: { column_of: "head_importance", token: T } } } } };
    expect(() => fromStateColumns(bad, state)).toThrow(/does not hold/);
    const missing = { "1": { method_scores: { importance: { heads: { column_of: "nothing", token: 1 } } } } };
    expect(() => fromStateColumns(missing, state)).toThrow(/does not hold/);
  });
});

describe("route scores held as the state's block importance tables", () => {
  it("puts the state's [L, T] table back as the flow's per-update array, leaving stored arrays as they are", () => {
    const mlp = new Float32Array(L * T).map((_, i) => i / 3);
    const state = { block_importance: { mlp: encodeArray(mlp, [L, T]) } };
    const own = encodeArray(new Float32Array(L * T).fill(1), [L * T]);
    const flow = fromStateBlocks({ mlp: { state_of: "block_importance", key: "mlp" }, resid_attn: own, L }, state);
    expect(Array.from(decodeArray(flow.mlp)!.data)).toEqual(Array.from(mlp));
    expect(flow.resid_attn).toBe(own);
    expect(flow.L).toBe(L);
  });

  it("a reference to a table the report does not hold is an error, not a route traced from nothing", () => {
    const flow = { resid_mlp: { state_of: "block_importance", key: "residual_mlp" } };
    expect(() => fromStateBlocks(flow, { block_importance: {} })).toThrow(/does not hold/);
  });
});

describe("word merges left to the page", () => {
  it("merges each word's token scores by sum, mean and max magnitude, skipping NaN, as granularity.merge", () => {
    const scores = encodeArray(Float32Array.from([1, NaN, -3, 2, 3, NaN]), [6]);
    const att = { scores, words: { spans: [[0, 1], [2, 4], [5, 5]], merges: ["sum", "mean", "max"], merged: "from_scores" } };
    const out = fromScoreMerges({ flow_attribution: { "4": att } });
    const got = (how: string) => Array.from(decodeArray(out.flow_attribution["4"].words.merged[how])!.data);
    expect(got("sum")).toEqual([1, 2, NaN]);
    expect(got("mean")).toEqual([1, Math.fround(2 / 3), NaN]);
    expect(got("max")).toEqual([1, -3, NaN]); // -3 and 3 tie in magnitude: the first, as torch's argmax
  });

  it("leaves stored merges as they are", () => {
    const merged = { sum: encodeArray(Float32Array.from([5]), [1]) };
    const att = { scores: encodeArray(Float32Array.from([5]), [1]), words: { spans: [[0, 0]], merges: ["sum"], merged } };
    expect(fromScoreMerges({ m: { "0": att } }).m["0"].words.merged).toBe(merged);
  });
});
