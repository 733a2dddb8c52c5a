// @vitest-environment happy-dom
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import widget from "../index";

const render = widget.render;
import { FakeModel } from "../dev/fake-model";
import { buildGraph, fakeDetailsReply, makeState } from "../dev/fake-data";
import { DetailsClient, DETAILS_TIMEOUT_MS } from "../details";
import { buildGraphSvg, serializeSvg } from "../svg";
import { fitView } from "../geometry";
import { readTheme } from "../color";
import { getGraph } from "../state";

const HOSTILE = "<img src=x onerror=alert(1)>";

function smallModel(panes: string[] = ["prompt", "graph", "heads", "neurons", "vocab"]) {
  const st = makeState({ L: 4, H: 3, T: 8, K: 4 });
  delete st._dense;
  st.panes = panes;
  return new FakeModel(st);
}

function mount(model: FakeModel) {
  const el = document.createElement("div");
  document.body.appendChild(el);
  const cleanup = render({ model, el });
  return { el, cleanup };
}

afterEach(() => {
  document.body.replaceChildren();
  vi.useRealTimers();
});

describe("render()", () => {
  it("default export follows the AFM shape", () => {
    expect(typeof widget.render).toBe("function");
  });

  it("is idempotent and cleanup removes every model listener", () => {
    const model = smallModel();
    const el = document.createElement("div");
    document.body.appendChild(el);
    const c1 = render({ model, el });
    const n1 = model.listenerCount();
    expect(n1).toBeGreaterThan(5);
    const c2 = render({ model, el });
    expect(el.querySelectorAll(".lmtt-root").length).toBe(1);
    expect(model.listenerCount()).toBe(2 * n1);
    c1();
    expect(model.listenerCount()).toBe(n1);
    c2();
    expect(model.listenerCount()).toBe(0);
    expect(el.querySelectorAll(".lmtt-root").length).toBe(0);
  });

  it("rebuilds panes on change:panes without leaking listeners", () => {
    const model = smallModel(["graph"]);
    const { el, cleanup } = mount(model);
    const n = model.listenerCount();
    model.pySet("panes", ["heads", "vocab"]);
    expect(el.querySelector(".lmtt-graph")).toBeNull();
    expect(el.querySelector(".lmtt-heads")).not.toBeNull();
    model.pySet("panes", ["graph"]);
    expect(model.listenerCount()).toBe(n);
    cleanup();
    expect(model.listenerCount()).toBe(0);
  });

  it("cleanup removes window/document listeners and observers", () => {
    const added: string[] = [];
    const removed: string[] = [];
    const origAdd = window.addEventListener.bind(window);
    const spyA = vi.spyOn(window, "addEventListener").mockImplementation((t: any, l: any, o?: any) => {
      added.push(t);
      origAdd(t, l, o);
    });
    const spyR = vi.spyOn(window, "removeEventListener").mockImplementation((t: any) => {
      removed.push(t);
    });
    const model = smallModel();
    const { cleanup } = mount(model);
    cleanup();
    spyA.mockRestore();
    spyR.mockRestore();
    // we never attach to window; if we ever do, it must be removed again
    for (const t of added) expect(removed).toContain(t);
  });

  it("builds only the panes listed", () => {
    for (const [panes, cls] of [
      [["graph"], ".lmtt-graph"],
      [["heads"], ".lmtt-heads"],
      [["neurons"], ".lmtt-neurons-pane"],
      [["vocab"], ".lmtt-vocab"],
    ] as [string[], string][]) {
      const model = smallModel(panes);
      const { el, cleanup } = mount(model);
      expect(el.querySelectorAll(".lmtt-pane").length).toBe(1);
      expect(el.querySelector(cls)).not.toBeNull();
      cleanup();
    }
  });

  it("hostile tokens stay text everywhere", () => {
    const model = smallModel();
    const toks = model.get("tokens").slice();
    toks[2] = HOSTILE;
    model.pySet("tokens", toks);
    model.pySet("target", 2);
    model.pySet("error", `bad <script>alert(1)</script>`);
    const { el, cleanup } = mount(model);
    expect(el.querySelector("img")).toBeNull();
    expect(el.querySelector("script")).toBeNull();
    expect(el.textContent).toContain("<img␣src=x␣onerror=alert(1)>");
    expect(el.querySelector(".lmtt-error-text")!.textContent).toBe("bad <script>alert(1)</script>");
    cleanup();
  });

  it("one save_changes per user action; Python changes redraw", () => {
    const model = smallModel(["graph"]);
    const { el, cleanup } = mount(model);
    const sel = el.querySelector("select.lmtt-select") as HTMLSelectElement;
    sel.value = "3";
    sel.dispatchEvent(new Event("change"));
    expect(model.get("target")).toBe(3);
    expect(model.saves).toBe(1);
    const slider = el.querySelector("input.lmtt-slider") as HTMLInputElement;
    slider.value = "1000";
    slider.dispatchEvent(new Event("change"));
    expect(model.get("threshold")).toBeCloseTo(0.5);
    expect(model.saves).toBe(2);
    (el.querySelector('.lmtt-seg[data-value="edge"]') as HTMLButtonElement).click();
    expect(model.get("granularity")).toBe("edge");
    expect(model.saves).toBe(3);
    // keyboard: Esc clears selection, Enter selects the cursor node
    const wrap = el.querySelector(".lmtt-canvas-wrap") as HTMLElement;
    wrap.dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowDown", bubbles: true }));
    wrap.dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowLeft", bubbles: true }));
    expect(model.saves).toBe(3);
    wrap.dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", bubbles: true }));
    expect(model.get("selection")).toEqual({ kind: "node", layer: 3, token: 2, node_kind: "after_attention" });
    expect(model.saves).toBe(4);
    wrap.dispatchEvent(new KeyboardEvent("keydown", { key: "Escape", bubbles: true }));
    expect(model.get("selection")).toBeNull();
    expect(model.saves).toBe(5);
    // Python side sets the threshold: slider follows
    model.pySet("threshold", 0.005);
    expect(slider.value).toBe("0");
    cleanup();
  });

  it("token label click sets target", () => {
    const model = smallModel(["graph"]);
    const { el, cleanup } = mount(model);
    (el.querySelector(".lmtt-graph") as any).__lmtt.draw();
    const lbl = el.querySelector('.lmtt-tok[data-token="1"]') as HTMLElement;
    expect(lbl).not.toBeNull();
    lbl.click();
    expect(model.get("target")).toBe(1);
    expect(model.saves).toBe(1);
    cleanup();
  });

  it("heads pane: selecting a head fetches details and shows the matrices", () => {
    vi.useFakeTimers();
    const model = smallModel(["heads"]);
    model.onSend = (c: any) => {
      const { msg, buffers } = fakeDetailsReply(c.key, 8);
      setTimeout(() => model.emit("msg:custom", { type: "details", id: c.id, key: c.key, ...msg }, buffers), 100);
    };
    const { el, cleanup } = mount(model);
    model.set("selection", { kind: "head", layer: 1, head: 2, token: 7 });
    vi.advanceTimersByTime(0); // requests go out after the event that asked for them (coalesced)
    expect(model.sent.at(-1)!.content).toMatchObject({ type: "details", key: "head:1:2:7" });
    expect(el.querySelector(".lmtt-loading")).not.toBeNull();
    vi.advanceTimersByTime(150);
    expect(el.querySelector(".lmtt-loading")).toBeNull();
    expect(el.querySelectorAll("canvas.lmtt-matrix").length).toBe(2);
    cleanup();
  });

  it("vocab pane shows promoted/suppressed as text and neuron click selects", () => {
    vi.useFakeTimers();
    const model = smallModel(["vocab", "neurons"]);
    model.onSend = (c: any) => {
      const { msg, buffers } = fakeDetailsReply(c.key, 8);
      model.emit("msg:custom", { type: "details", id: c.id, key: c.key, ...msg }, buffers);
    };
    const { el, cleanup } = mount(model);
    model.set("selection", { kind: "mlp", layer: 2, token: 7 });
    vi.advanceTimersByTime(0);
    expect(el.querySelector(".lmtt-vocab")!.textContent).toContain("<script>alert(1)");
    expect(el.querySelector("script")).toBeNull();
    const first = el.querySelector(".lmtt-neuron") as HTMLElement;
    first.click();
    expect(model.get("selection")).toMatchObject({ kind: "neuron", layer: 2, token: 7, neuron: Number(first.dataset.neuron) });
    cleanup();
  });

  it("prompt pane: Run sends run, disabled while running", () => {
    const model = smallModel(["prompt"]);
    const { el, cleanup } = mount(model);
    const ta = el.querySelector("textarea") as HTMLTextAreaElement;
    const btn = el.querySelector(".lmtt-primary") as HTMLButtonElement;
    ta.value = "Hello <b>world</b>";
    btn.click();
    expect(model.get("prompt")).toBe("Hello <b>world</b>");
    expect(model.saves).toBe(1);
    expect(model.sent.at(-1)!.content).toEqual({ type: "run", prompt: "Hello <b>world</b>" });
    model.pySet("status", { state: "running", message: "layer 3", progress: 0.5 });
    expect(btn.disabled).toBe(true);
    expect(el.querySelector(".lmtt-status-msg")!.textContent).toBe("layer 3");
    model.pySet("status", { state: "error", message: "boom" });
    expect(btn.disabled).toBe(false);
    expect(el.querySelector(".lmtt-status-msg")!.classList.contains("is-error")).toBe(true);
    cleanup();
  });

  it("error bar shows the error trait and is dismissable", () => {
    const model = smallModel(["vocab"]);
    const { el, cleanup } = mount(model);
    const bar = el.querySelector(".lmtt-errorbar") as HTMLElement;
    expect(bar.hidden).toBe(true);
    model.pySet("error", "selection refused");
    expect(bar.hidden).toBe(false);
    (el.querySelector(".lmtt-close") as HTMLButtonElement).click();
    expect(bar.hidden).toBe(true);
    model.pySet("error", "another");
    expect(bar.hidden).toBe(false);
    cleanup();
  });
});

describe("details client", () => {
  beforeEach(() => vi.useFakeTimers());

  it("times out after 20 s into an error with retry, shown in the heads pane", () => {
    const model = smallModel(["heads"]);
    const { el, cleanup } = mount(model);
    model.set("selection", { kind: "head", layer: 0, head: 1, token: 3 });
    expect(el.querySelector(".lmtt-loading")).not.toBeNull();
    vi.advanceTimersByTime(DETAILS_TIMEOUT_MS - 1);
    expect(el.querySelector(".lmtt-detail-error")).toBeNull();
    vi.advanceTimersByTime(2);
    const err = el.querySelector(".lmtt-detail-error");
    expect(err).not.toBeNull();
    expect(err!.textContent).toContain("20 s");
    const sent = model.sent.length;
    (err!.querySelector("button") as HTMLButtonElement).click();
    expect(model.sent.length).toBe(sent + 1);
    expect(el.querySelector(".lmtt-loading")).not.toBeNull();
    cleanup();
    // after cleanup no timer fires into a dead view
    expect(vi.getTimerCount()).toBe(0);
  });

  it("uses the details trait first and ignores replies after dispose", () => {
    const model = smallModel();
    const d = new DetailsClient(model);
    const st = d.get("lens:8:7");
    expect(st).toMatchObject({ status: "ok" });
    expect(model.sent.length).toBe(0);
    d.get("mlp:1:2");
    expect(model.sent.length).toBe(0); // sent after the current event, with whatever else it asked for
    vi.advanceTimersByTime(0);
    expect(model.sent.length).toBe(1);
    const id = model.sent[0].content.id;
    model.emit("msg:custom", { type: "details", id, key: "mlp:1:2", ok: false, error: "nope" }, []);
    expect(d.get("mlp:1:2")).toMatchObject({ status: "error", error: "nope" });
    d.dispose();
    expect(model.listenerCount()).toBe(0);
    expect(vi.getTimerCount()).toBe(0);
  });
});

describe("SVG export", () => {
  it("escapes hostile tokens and model names", () => {
    const st = makeState({ L: 3, H: 2, T: 6, K: 2 });
    const tokens = st.tokens.slice();
    tokens[5] = HOSTILE;
    const model = new FakeModel({ ...st, tokens });
    const g = getGraph(model);
    const svg = buildGraphSvg({
      view: fitView(6, 3, { w: 400, h: 300 }),
      width: 400,
      height: 300,
      graph: g,
      tokens,
      L: 3,
      target: 5,
      theme: readTheme(document.body),
      title: "</title><script>alert(1)</script>",
    });
    const text = serializeSvg(svg);
    expect(text).not.toContain("<img");
    expect(text).not.toContain("<script");
    expect(text).toContain("&lt;img");
    expect(text).toContain("&lt;/title&gt;&lt;script&gt;");
    expect(text.startsWith("<svg")).toBe(true);
    expect((text.match(/<path /g) ?? []).length).toBe(g.e);
    const parsed = new DOMParser().parseFromString(text, "image/svg+xml");
    expect(parsed.querySelector("img")).toBeNull();
  });

  it("graph pane exportSvg uses the same geometry", () => {
    const model = smallModel(["graph"]);
    const { el, cleanup } = mount(model);
    const api = (el.querySelector(".lmtt-graph") as any).__lmtt;
    const svg: string = api.exportSvg();
    expect(svg).toContain("<svg");
    expect(svg).not.toContain("<img");
    cleanup();
  });
});

describe("fake kernel graph builder", () => {
  it("higher threshold gives a smaller graph", () => {
    const st = makeState({ L: 6, H: 3, T: 16 });
    const lo = buildGraph(st._dense, 15, 0.01);
    const hi = buildGraph(st._dense, 15, 0.3);
    expect(hi.edge_src.shape[0]).toBeLessThan(lo.edge_src.shape[0]);
  });
});

describe("neuron pane's default block", () => {
  it("follows a selected head's layer, else skips layer 0 (the embedding rewrite) when ranking blocks", async () => {
    const { neuronBlock } = await import("../panes/neurons");
    const { encodeArray } = await import("../codec");
    const model = smallModel();
    const L = 4, T = 8;
    const mlp = new Float32Array(L * T);
    for (let t = 0; t < T; t++) {
      mlp[0 * T + t] = 0.99; // layer 0 dominates, as in real models
      mlp[2 * T + t] = 0.4;
      mlp[3 * T + t] = 0.1;
    }
    const bi = { ...(model.get("block_importance") as Record<string, unknown>), mlp: encodeArray(mlp, [L, T]) };
    model.set("block_importance", bi);
    model.set("neurons", {}); // nothing precomputed: every block is a candidate
    model.set("selection", null);
    expect(neuronBlock(model as never)).toMatchObject({ layer: 2, reason: "most important MLP block above layer 0" });
    model.set("selection", { kind: "head", layer: 3, head: 1, token: 5 });
    expect(neuronBlock(model as never)).toMatchObject({ layer: 3, token: 5, reason: "layer of the selected head" });
  });
});
