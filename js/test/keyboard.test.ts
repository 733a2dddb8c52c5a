// @vitest-environment happy-dom
import { afterEach, describe, expect, it, vi } from "vitest";
import widget from "../index";
import { FakeModel } from "../dev/fake-model";
import { makeState } from "../dev/fake-data";
import { guardKeys, moveCell, stepIndex, SUPPRESS_SHORTCUTS, widgetOwnsKey } from "../keyboard";
import { sliderToTau, stepTau, TAU_LADDER, TAU_MAX, TAU_MIN, tauToSlider } from "../tau";
import { watchTheme } from "../theme";

afterEach(() => {
  document.body.replaceChildren();
  vi.useRealTimers();
});

const key = (el: Element, k: string, init: KeyboardEventInit = {}) => {
  const ev = new KeyboardEvent("keydown", { key: k, bubbles: true, cancelable: true, ...init });
  el.dispatchEvent(ev);
  return ev;
};

function mountExplorer() {
  const st = makeState({ L: 4, H: 3, T: 8, K: 4 });
  delete st._dense;
  st.panes = ["prompt", "graph", "heads", "neurons", "vocab"];
  const model = new FakeModel(st);
  const el = document.createElement("div");
  document.body.appendChild(el);
  const cleanup = widget.render({ model, el });
  return { model, el, cleanup };
}

describe("the τ ladder", () => {
  it("spans the protocol's range in round steps of about x1.25, each a different value", () => {
    expect(TAU_LADDER[0]).toBe(TAU_MIN);
    expect(TAU_LADDER.at(-1)).toBe(TAU_MAX);
    expect(TAU_LADDER).toContain(0.04); // Python's default threshold is a rung
    for (let i = 1; i < TAU_LADDER.length; i++) {
      const r = TAU_LADDER[i] / TAU_LADDER[i - 1];
      expect(r).toBeGreaterThan(1.15);
      expect(r).toBeLessThan(1.4);
    }
    for (let i = 0; i < TAU_LADDER.length; i++) expect(tauToSlider(sliderToTau(i))).toBe(i);
  });

  it("arrows move one rung from any τ (never back to where it was), Page keys double, Home/End the ends", () => {
    expect(stepTau(0.04, "ArrowUp")).toBe(0.05);
    expect(stepTau(0.04, "ArrowRight")).toBe(0.05);
    expect(stepTau(0.04, "ArrowDown")).toBe(0.03);
    expect(stepTau(0.04, "PageUp")).toBe(0.08);
    expect(stepTau(0.04, "PageDown")).toBe(0.02);
    expect(stepTau(0.04, "Home")).toBe(TAU_MIN);
    expect(stepTau(0.04, "End")).toBe(TAU_MAX);
    expect(stepTau(0.04, "a")).toBeNull();
    // a τ set from Python between rungs
    for (const tau of [0.033, 0.037, 0.0101, 0.099]) {
      expect(stepTau(tau, "ArrowUp")!).toBeGreaterThan(tau);
      expect(stepTau(tau, "ArrowDown")!).toBeLessThan(tau);
    }
    expect(stepTau(TAU_MAX, "ArrowUp")).toBe(TAU_MAX);
    expect(stepTau(TAU_MIN, "ArrowDown")).toBe(TAU_MIN);
  });
});

describe("key stepping", () => {
  it("stepIndex and moveCell clamp and know arrows, Page keys, Home/End", () => {
    expect(stepIndex(3, "ArrowDown", 10)).toBe(4);
    expect(stepIndex(0, "ArrowUp", 10)).toBe(0);
    expect(stepIndex(3, "PageDown", 30)).toBe(13);
    expect(stepIndex(3, "End", 30)).toBe(29);
    expect(stepIndex(3, "Home", 30)).toBe(0);
    expect(stepIndex(3, "x", 30)).toBeNull();
    expect(moveCell({ row: 4, col: 2 }, "ArrowDown", 30, 9)).toEqual({ row: 5, col: 2 });
    expect(moveCell({ row: 4, col: 2 }, "PageDown", 30, 9)).toEqual({ row: 9, col: 2 });
    expect(moveCell({ row: 2, col: 2 }, "PageUp", 30, 9)).toEqual({ row: 0, col: 2 });
    expect(moveCell({ row: 4, col: 2 }, "End", 30, 9)).toEqual({ row: 4, col: 8 });
    expect(moveCell({ row: 4, col: 2 }, "Home", 30, 9)).toEqual({ row: 4, col: 0 });
    expect(moveCell({ row: 4, col: 2 }, "Enter", 30, 9)).toBeNull();
  });

  it("the widget owns plain keys; Tab and Ctrl/Meta/Alt combinations are the host's", () => {
    const k = (key: string, m: Partial<KeyboardEvent> = {}) => ({ key, ctrlKey: false, metaKey: false, altKey: false, ...m });
    for (const x of ["ArrowDown", "j", "0", "Enter", " ", "Escape", "PageUp"]) expect(widgetOwnsKey(k(x))).toBe(true);
    expect(widgetOwnsKey(k("Tab"))).toBe(false);
    expect(widgetOwnsKey(k("s", { ctrlKey: true }))).toBe(false);
    expect(widgetOwnsKey(k("Enter", { metaKey: true }))).toBe(false);
  });
});

describe("keys never reach the host", () => {
  it("bubble-phase hosts see no owned key; capture-phase (Lumino) hosts find the suppress attribute on the target", () => {
    const root = document.createElement("div");
    const btn = document.createElement("button");
    root.appendChild(btn);
    document.body.appendChild(root);
    const ac = new AbortController();
    guardKeys(root, ac.signal);
    const heard: string[] = [];
    const marked: boolean[] = [];
    const onDoc = (e: KeyboardEvent) => heard.push(e.key);
    const onCapture = (e: KeyboardEvent) => marked.push((e.target as Element).hasAttribute(SUPPRESS_SHORTCUTS));
    document.addEventListener("keydown", onDoc);
    document.addEventListener("keydown", onCapture, true);
    key(btn, "ArrowDown");
    key(btn, "0");
    key(btn, "s", { ctrlKey: true });
    expect(heard).toEqual(["s"]);
    expect(marked).toEqual([true, true, false]); // Ctrl+S still reaches the host's bindings
    ac.abort(); // view destroyed: nothing is held back any more
    key(btn, "ArrowDown");
    expect(heard).toEqual(["s", "ArrowDown"]);
    document.removeEventListener("keydown", onDoc);
    document.removeEventListener("keydown", onCapture, true);
  });

  it("in the Explorer every control keeps its keys: target select, τ slider, lens and neuron rows", () => {
    const { model, el, cleanup } = mountExplorer();
    const heard: string[] = [];
    const onDoc = (e: KeyboardEvent) => heard.push(e.key);
    document.addEventListener("keydown", onDoc);

    const sel = el.querySelector(".lmtt-graph select") as HTMLSelectElement;
    const t0 = model.get("target");
    expect(key(sel, "Home").defaultPrevented).toBe(true);
    expect(model.get("target")).toBe(0);
    key(sel, "ArrowDown");
    expect(model.get("target")).toBe(1);
    key(sel, "End");
    expect(model.get("target")).toBe(t0);

    const slider = el.querySelector(".lmtt-slider") as HTMLInputElement;
    model.pySet("threshold", 0.04);
    key(slider, "ArrowRight");
    expect(model.get("threshold")).toBe(0.05);
    expect(slider.value).toBe(String(tauToSlider(0.05)));
    key(slider, "PageDown");
    expect(model.get("threshold")).toBe(0.025);
    key(slider, "Home");
    expect(model.get("threshold")).toBe(TAU_MIN);

    expect(heard).toEqual([]);
    document.removeEventListener("keydown", onDoc);
    cleanup();
  });

  it("lens rows: arrows move the focus, Enter selects and the focus stays on the same row after the re-render", async () => {
    const { model, el, cleanup } = mountExplorer();
    const rows = () => Array.from(el.querySelectorAll<HTMLElement>(".lmtt-lensrow"));
    rows()[0].focus();
    expect(document.activeElement).toBe(rows()[0]);
    key(rows()[0], "ArrowDown");
    expect(document.activeElement).toBe(rows()[1]);
    key(rows()[1], "End");
    expect(document.activeElement).toBe(rows().at(-1));
    key(rows().at(-1)!, "PageUp");
    const focused = document.activeElement as HTMLElement;
    const row = focused.dataset.row;
    expect(rows().indexOf(focused)).toBe(Math.max(0, rows().length - 1 - 10));
    key(focused, "Enter");
    expect(model.get("selection")).toMatchObject({ kind: "node" });
    expect((document.activeElement as HTMLElement).dataset.row).toBe(row);
    expect(document.activeElement!.classList.contains("is-selected")).toBe(true);
    // new tokens from Python re-render the list: the focus comes back to the same row
    const before = document.activeElement as HTMLElement;
    model.pySet("tokens", ["renamed", ...model.get("tokens").slice(1)]);
    await new Promise((r) => setTimeout(r, 40));
    expect(before.isConnected).toBe(false);
    expect((document.activeElement as HTMLElement).dataset.row).toBe(row);
    cleanup();
  });

  it("neuron rows: Enter selects and keeps the focus; heatmap Home/End/Page keys move the head", () => {
    const { model, el, cleanup } = mountExplorer();
    const first = el.querySelector<HTMLElement>(".lmtt-neuron")!;
    first.focus();
    key(first, "ArrowDown");
    const second = document.activeElement as HTMLElement;
    expect(second.dataset.neuron).not.toBe(first.dataset.neuron);
    key(second, "Enter");
    expect(model.get("selection")).toMatchObject({ kind: "neuron", neuron: Number(second.dataset.neuron) });
    expect((document.activeElement as HTMLElement).dataset.neuron).toBe(second.dataset.neuron);
    expect(document.activeElement!.classList.contains("is-selected")).toBe(true);

    const heat = el.querySelector("canvas.lmtt-heat") as HTMLCanvasElement;
    model.set("selection", { kind: "head", layer: 0, head: 1, token: 7 });
    key(heat, "End");
    expect(model.get("selection")).toMatchObject({ layer: 0, head: 2 });
    key(heat, "PageDown");
    expect(model.get("selection")).toMatchObject({ layer: 3, head: 2 }); // 4 layers: clamped
    key(heat, "Home");
    expect(model.get("selection")).toMatchObject({ layer: 3, head: 0 });
    cleanup();
  });
});

describe("theme", () => {
  it("a theme attribute change on <body> redraws once, in the next frame", async () => {
    const el = document.createElement("div");
    document.body.appendChild(el);
    const ac = new AbortController();
    const redraw = vi.fn();
    watchTheme(el, redraw, ac.signal);
    document.body.dataset.jpThemeLight = "false";
    document.body.dataset.jpThemeName = "JupyterLab Dark";
    await new Promise((r) => setTimeout(r, 60));
    expect(redraw).toHaveBeenCalledTimes(1);
    ac.abort();
    document.body.dataset.jpThemeLight = "true";
    await new Promise((r) => setTimeout(r, 60));
    expect(redraw).toHaveBeenCalledTimes(1);
  });
});
