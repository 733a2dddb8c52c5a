/**
 * FlowGraph controls: the toolbar (target, τ slider, granularity, zoom and export buttons), the legend and the status
 * line under the graph. Each control commits one user action; `sync()` puts them back on the model's values.
 */
import { graphLayout } from "../graph-layout";
import { selectKeys } from "../keyboard";
import { describeSelection } from "../selection";
import { getGraph, getMeta, getSelection, getTarget, getTokens } from "../state";
import { sliderToTau, stepTau, TAU_LADDER, tauToSlider } from "../tau";
import { displayToken, fmt, h, truncate } from "../text";
import type { PaneContext } from "../types";

/** What the toolbar's view buttons do (the view owns zoom and export). */
export interface ToolbarActions {
  resetView(): void;
  /** Stretch (k > 1) or shrink the token axis, every layer kept in view. */
  zoomTokens(k: number): void;
  exportPng(): void;
  exportSvg(): void;
}

export interface GraphToolbar {
  toolbar: HTMLElement;
  legend: HTMLElement;
  info: HTMLElement;
  /** Put every control back on the model's values (after a change from Python or a refused commit). */
  sync(): void;
}

function setProp<E extends HTMLElement, K extends "value" | "textContent">(el: E, name: K, value: string) {
  if ((el as any)[name] !== value) (el as any)[name] = value;
}

function setAttr(el: Element, name: string, value: string) {
  if (el.getAttribute(name) !== value) el.setAttribute(name, value);
}

function legendEl(): HTMLElement {
  return h(
    "span",
    { class: "lmtt-legend" },
    h("span", { class: "lmtt-key lmtt-key-attn" }),
    "attention ",
    h("span", { class: "lmtt-key lmtt-key-mlp" }),
    "MLP ",
    h("span", { class: "lmtt-key lmtt-key-res" }),
    "residual ",
    h("span", { class: "lmtt-key lmtt-key-scale" }),
    "weight",
  );
}

export function createGraphToolbar(ctx: PaneContext, actions: ToolbarActions, tokText: (t: number) => string): GraphToolbar {
  const { model } = ctx;
  const ac = new AbortController();
  const sig = { signal: ac.signal };
  ctx.onCleanup(() => ac.abort());

  const targetSel = h("select", { class: "lmtt-select", "aria-label": "Target token", title: "Target token (whose route is shown)" });
  const slider = h("input", {
    type: "range", min: 0, max: TAU_LADDER.length - 1, step: 1, class: "lmtt-slider", "aria-label": "Threshold τ",
    title: "Threshold τ: arrows one step, PageUp/PageDown ×2, Home = lowest (largest graph), End = highest",
  }) as HTMLInputElement;
  const tauOut = h("span", { class: "lmtt-num" });
  const granBtns = (["head", "edge"] as const).map((g) =>
    h("button", { type: "button", class: "lmtt-seg", "data-value": g, title: g === "head" ? "Threshold each head, then sum" : "Threshold the head-summed edge" }, g),
  );
  const widerBtn = h("button", { type: "button", class: "lmtt-btn", "aria-label": "Stretch tokens", title: "Stretch the tokens, all layers kept in view (wheel, ])" }, "↔+");
  const narrowerBtn = h("button", { type: "button", class: "lmtt-btn", "aria-label": "Shrink tokens", title: "Shrink the tokens back (wheel, [)" }, "↔−");
  const resetBtn = h("button", { type: "button", class: "lmtt-btn", title: "Reset zoom and pan (0)" }, "Reset");
  const pngBtn = h("button", { type: "button", class: "lmtt-btn", title: "Download PNG" }, "PNG");
  const svgBtn = h("button", { type: "button", class: "lmtt-btn", title: "Download SVG" }, "SVG");
  const toolbar = h(
    "div",
    { class: "lmtt-toolbar" },
    h("label", { class: "lmtt-field" }, h("span", { class: "lmtt-lbl" }, "target"), targetSel),
    h("label", { class: "lmtt-field" }, h("span", { class: "lmtt-lbl" }, "τ"), slider, tauOut),
    h("span", { class: "lmtt-segs", role: "group", "aria-label": "Granularity" }, ...granBtns),
    h("span", { class: "lmtt-spacer" }),
    h("span", { class: "lmtt-actions" }, narrowerBtn, widerBtn, resetBtn, pngBtn, svgBtn),
  );
  const legend = legendEl();
  const info = h("div", { class: "lmtt-info", "aria-live": "polite" });
  let selTokens: string[] | null = null;

  function sync() {
    const toks = getTokens(model);
    const target = getTarget(model);
    if (selTokens !== toks) {
      selTokens = toks;
      targetSel.replaceChildren(...toks.map((t, i) => h("option", { value: i }, `#${i} ${truncate(displayToken(t), 28)}`)));
    }
    // written only where changed: sync runs on every frame of a progressive drawing, and a DOM write (even of the
    // same value) makes the next frame restyle
    setProp(targetSel, "value", String(target));
    const tau = Number(model.get("threshold") ?? 0.04);
    setProp(slider, "value", String(tauToSlider(tau)));
    setAttr(slider, "aria-valuetext", `τ = ${fmt(tau, 3)}`);
    setProp(tauOut, "textContent", fmt(tau, 3));
    const gran = model.get("granularity") === "edge" ? "edge" : "head";
    for (const b of granBtns) setAttr(b, "aria-pressed", String(b.dataset.value === gran));
    const sel = getSelection(model);
    const g = getGraph(model);
    const meta = getMeta(model);
    const parts = [
      `${meta.model ? meta.model + " · " : ""}${g.n} nodes, ${g.e} edges`,
      `selected: ${describeSelection(sel, tokText)}`,
    ];
    // counted once per graph (graph-layout), not per call
    const { cancelling, external } = graphLayout(g);
    if (cancelling) parts.push(`${cancelling} cancelling update${cancelling > 1 ? "s" : ""} (dashed ring: split evenly)`);
    if (external) parts.push(`${external} external edit${external > 1 ? "s" : ""} (pink ring: a hook changed the stream)`);
    setProp(info, "textContent", parts.join("  ·  "));
  }

  resetBtn.addEventListener("click", () => actions.resetView(), sig);
  widerBtn.addEventListener("click", () => actions.zoomTokens(1.5), sig);
  narrowerBtn.addEventListener("click", () => actions.zoomTokens(1 / 1.5), sig);
  pngBtn.addEventListener("click", () => actions.exportPng(), sig);
  svgBtn.addEventListener("click", () => actions.exportSvg(), sig);
  targetSel.addEventListener("change", () => ctx.commit({ target: Number(targetSel.value) }), sig);
  selectKeys(targetSel, () => ctx.commit({ target: Number(targetSel.value) }), ac.signal);
  slider.addEventListener("input", () => (tauOut.textContent = fmt(sliderToTau(Number(slider.value)), 3)), sig);
  slider.addEventListener("change", () => ctx.commit({ threshold: sliderToTau(Number(slider.value)) }), sig);
  slider.addEventListener(
    "keydown",
    (ev) => {
      // the ladder's own steps (the native ones would move from the rung, not from a τ set in Python)
      const tau = stepTau(Number(model.get("threshold") ?? 0.04), ev.key);
      if (tau === null) return;
      ev.preventDefault();
      slider.value = String(tauToSlider(tau));
      tauOut.textContent = fmt(tau, 3);
      if (tau !== model.get("threshold")) ctx.commit({ threshold: tau });
    },
    sig,
  );
  for (const b of granBtns) {
    b.addEventListener(
      "click",
      () => {
        if (model.get("granularity") !== b.dataset.value) ctx.commit({ granularity: b.dataset.value });
      },
      sig,
    );
  }
  return { toolbar, legend, info, sync };
}
