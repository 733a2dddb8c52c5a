/** NeuronView pane: top-K neurons of the selected MLP block with importance bars and activation sign. */
import { at, lastAxis, NDArray } from "../codec";
import { dims, getBlockImportance, getNeurons, getSelection, getTarget, getTokens } from "../state";
import { detailKey } from "../selection";
import { displayToken, fmt, h, truncate } from "../text";
import type { Pane, PaneContext, WidgetModel } from "../types";
import { detailStatus } from "./common";
import { listKeys, rerenderKeepingFocus } from "../keyboard";
import { frameThrottle } from "../frame";

/** 1 when the top-K rows of MLP block (layer, token) are in the `neurons` trait (no `available` array: all are). */
export function neuronsAvailable(nr: Record<string, NDArray>, layer: number, token: number): boolean {
  const av = nr.available;
  if (!av || av.shape.length !== 2) return true;
  if (layer < 0 || token < 0 || layer >= av.shape[0] || token >= av.shape[1]) return false;
  return at(av, layer, token) !== 0;
}

/**
 * Which MLP block the pane shows: the selected block, or the layer of a selected node or head, else the most
 * important block at the target above layer 0 (layer 0's MLP rewrites the token embeddings, so it takes most of
 * its update at every position in most models and would always win).
 */
export function neuronBlock(model: WidgetModel): { layer: number; token: number; reason: string } | null {
  const s = getSelection(model);
  const { L } = dims(model);
  if (s && (s.kind === "mlp" || s.kind === "neuron")) return { layer: s.layer, token: s.token, reason: "selected" };
  if (s && s.kind === "node" && s.layer >= 0) return { layer: s.layer, token: s.token, reason: "layer of the selected node" };
  if (s && s.kind === "head") return { layer: s.layer, token: s.token, reason: "layer of the selected head" };
  const t = s && "token" in s ? s.token : getTarget(model);
  const mlp = getBlockImportance(model).mlp;
  if (mlp && mlp.shape.length === 2 && t < mlp.shape[1]) {
    // prefer blocks whose rows are precomputed (no fetch for the default view)
    const nr = getNeurons(model);
    let best = -1;
    let bv = -Infinity;
    for (const onlyAvailable of [true, false]) {
      for (let l = mlp.shape[0] > 1 ? 1 : 0; l < mlp.shape[0]; l++) {
        if (onlyAvailable && !neuronsAvailable(nr, l, t)) continue;
        const v = at(mlp, l, t);
        if (v > bv) {
          bv = v;
          best = l;
        }
      }
      if (best >= 0) break;
    }
    return { layer: Math.max(0, best), token: t, reason: mlp.shape[0] > 1 ? "most important MLP block above layer 0" : "most important MLP block" };
  }
  return L > 0 ? { layer: L - 1, token: t, reason: "last layer" } : null;
}

type NeuronRow = [number, number, number]; // id, importance, activation

/** `neurons` of an `mlp:` details result as rows (malformed entries skipped). */
export function neuronRowsFromResult(result: any): NeuronRow[] {
  const arr = result && Array.isArray(result.neurons) ? (result.neurons as unknown[]) : [];
  const out: NeuronRow[] = [];
  for (const r of arr) {
    if (!Array.isArray(r) || r.length < 2) continue;
    const id = Number(r[0]);
    if (!Number.isFinite(id)) continue;
    out.push([id, Number(r[1]) || 0, Number(r[2]) || 0]);
  }
  return out;
}

export function createNeuronsPane(ctx: PaneContext): Pane {
  const { model } = ctx;
  const title = h("div", { class: "lmtt-pane-title" });
  const sub = h("div", { class: "lmtt-hint" });
  const statusBox = h("div", { class: "lmtt-neurons-status" });
  const list = h("ol", { class: "lmtt-neurons", role: "listbox", "aria-label": "Top neurons" });
  const el = h("div", { class: "lmtt-pane lmtt-neurons-pane" }, title, sub, statusBox, list);
  const ac = new AbortController();
  ctx.onCleanup(() => ac.abort());
  /** details key the pane waits for (fallback), or "" */
  let fetchKey = "";

  let builtSig = "";

  function renderRows(rows: NeuronRow[], blk: { layer: number; token: number }) {
    let max = 0;
    for (const r of rows) max = Math.max(max, Math.abs(r[1]));
    max = max || 1;
    const s = getSelection(model);
    const isSel = (id: number) => !!s && s.kind === "neuron" && s.layer === blk.layer && s.token === blk.token && s.neuron === id;
    const sig = `${blk.layer}:${blk.token}:${rows.map((r) => r.join(",")).join(";")}`;
    if (sig === builtSig && list.childElementCount === rows.length) {
      // same rows: a selection change only moves the mark (no re-render, the focus stays where it is)
      for (const li of Array.from(list.children) as HTMLElement[]) {
        const on = isSel(Number(li.dataset.neuron));
        li.classList.toggle("is-selected", on);
        li.setAttribute("aria-selected", String(on));
      }
      return;
    }
    builtSig = sig;
    rerenderKeepingFocus(list, "data-neuron", () => list.replaceChildren(
      ...rows.map(([id, v, a]) => {
        const selected = isSel(id);
        const bar = h("span", { class: `lmtt-bar ${v < 0 ? "neg" : ""}` });
        bar.style.width = `${Math.max(1, Math.round((Math.abs(v) / max) * 100))}%`;
        return h(
          "li",
          { class: `lmtt-neuron${selected ? " is-selected" : ""}`, role: "option", tabindex: 0, "aria-selected": String(selected), "data-neuron": id },
          h("span", { class: "lmtt-nid" }, `N${id}`),
          h("span", { class: "lmtt-barwrap" }, bar),
          h("span", { class: "lmtt-num" }, fmt(v, 3)),
          h("span", { class: `lmtt-sign ${a >= 0 ? "pos" : "neg"}`, title: `activation ${fmt(a, 3)}` }, `${a >= 0 ? "+" : "−"}${fmt(Math.abs(a), 2)}`),
        );
      }),
    ));
  }

  function empty(msg: string) {
    title.textContent = "Neurons";
    sub.textContent = msg;
    statusBox.replaceChildren();
    list.replaceChildren();
    fetchKey = "";
  }

  function draw() {
    const nr = getNeurons(model);
    const blk = neuronBlock(model);
    const toks = getTokens(model);
    if (!blk || !nr.ids || nr.ids.shape.length !== 3) return empty("No neuron data.");
    const [L, T] = nr.ids.shape;
    if (blk.layer < 0 || blk.layer >= L || blk.token < 0 || blk.token >= T) return empty("Selection is outside the neuron data.");
    title.textContent = `Top neurons · MLP L${blk.layer} at “${truncate(displayToken(toks[blk.token] ?? ""), 20)}” (#${blk.token})`;
    sub.textContent = blk.reason === "selected" ? "" : `Showing the ${blk.reason}; click an MLP square in the graph to choose.`;
    if (!neuronsAvailable(nr, blk.layer, blk.token)) {
      // not precomputed: the `mlp:` details result carries the top-K neurons
      fetchKey = detailKey("mlp", blk);
      const st = ctx.details.get(fetchKey);
      if (!detailStatus(statusBox, st, ctx.details, "neurons") || !st || st.status !== "ok") {
        list.replaceChildren();
        return;
      }
      const rows = neuronRowsFromResult(st.result);
      statusBox.replaceChildren(...(rows.length ? [] : [h("div", { class: "lmtt-hint" }, "No neurons in the result for this block.")]));
      renderRows(rows, blk);
      return;
    }
    fetchKey = "";
    statusBox.replaceChildren();
    const ids = lastAxis(nr.ids, blk.layer, blk.token);
    const imp = nr.importance ? lastAxis(nr.importance, blk.layer, blk.token) : null;
    const act = nr.activation ? lastAxis(nr.activation, blk.layer, blk.token) : null;
    renderRows(Array.from(ids, (id, k) => [id, imp ? imp[k] : 0, act ? act[k] : 0] as NeuronRow), blk);
  }

  const pick = (li: HTMLElement) => {
    const blk = neuronBlock(model);
    if (!blk) return;
    const neuron = Number(li.dataset.neuron);
    ctx.commit({ selection: { kind: "neuron", layer: blk.layer, neuron, token: blk.token } });
  };
  list.addEventListener("click", (ev) => {
    const li = (ev.target as HTMLElement).closest?.(".lmtt-neuron") as HTMLElement | null;
    if (li) pick(li);
  }, { signal: ac.signal });
  listKeys(list, ".lmtt-neuron", pick, ac.signal); // arrows / Page keys / Home / End move, Enter or Space selects
  ctx.listen("change:selection", frameThrottle(draw, ac.signal)); // once a frame during a burst of selections
  for (const n of ["neurons", "target", "tokens", "block_importance"]) ctx.listen(`change:${n}`, draw);
  const unsub = ctx.details.subscribe((key) => {
    if (fetchKey && (key === fetchKey || key === "*")) draw();
  });
  ctx.onCleanup(unsub);
  draw();
  return { el, destroy: () => ac.abort() };
}
