/** NeuronView pane: top-K neurons of the selected MLP block with importance bars and activation sign. */
import { at, lastAxis } from "../codec";
import { dims, focusToken, getBlockImportance, getNeurons, getSelection, getTarget, getTokens } from "../state";
import { displayToken, fmt, h, truncate } from "../text";
import type { Pane, PaneContext, WidgetModel } from "../types";

/** Which MLP block the pane shows: selected mlp/neuron/node/head layer, else the most important block at the target. */
export function neuronBlock(model: WidgetModel): { layer: number; token: number; reason: string } | null {
  const s = getSelection(model);
  const { L } = dims(model);
  if (s && (s.kind === "mlp" || s.kind === "neuron")) return { layer: s.layer, token: s.token, reason: "selected" };
  if (s && s.kind === "node" && s.layer >= 0) return { layer: s.layer, token: s.token, reason: "layer of the selected node" };
  const t = s && "token" in s ? s.token : getTarget(model);
  const mlp = getBlockImportance(model).mlp;
  if (mlp && mlp.shape.length === 2 && t < mlp.shape[1]) {
    let best = 0;
    let bv = -Infinity;
    for (let l = 0; l < mlp.shape[0]; l++) {
      const v = at(mlp, l, t);
      if (v > bv) {
        bv = v;
        best = l;
      }
    }
    return { layer: best, token: t, reason: "most important MLP block" };
  }
  return L > 0 ? { layer: L - 1, token: t, reason: "last layer" } : null;
}

export function createNeuronsPane(ctx: PaneContext): Pane {
  const { model } = ctx;
  const title = h("div", { class: "lmtt-pane-title" });
  const sub = h("div", { class: "lmtt-hint" });
  const list = h("ol", { class: "lmtt-neurons", role: "listbox", "aria-label": "Top neurons" });
  const el = h("div", { class: "lmtt-pane lmtt-neurons-pane" }, title, sub, list);
  const ac = new AbortController();
  ctx.onCleanup(() => ac.abort());

  function draw() {
    const nr = getNeurons(model);
    const blk = neuronBlock(model);
    const toks = getTokens(model);
    if (!blk || !nr.ids || nr.ids.shape.length !== 3) {
      title.textContent = "Neurons";
      sub.textContent = "No neuron data.";
      list.replaceChildren();
      return;
    }
    const [L, T] = nr.ids.shape;
    if (blk.layer < 0 || blk.layer >= L || blk.token < 0 || blk.token >= T) {
      title.textContent = "Neurons";
      sub.textContent = "Selection is outside the neuron data.";
      list.replaceChildren();
      return;
    }
    title.textContent = `Top neurons · MLP L${blk.layer} at “${truncate(displayToken(toks[blk.token] ?? ""), 20)}” (#${blk.token})`;
    sub.textContent = blk.reason === "selected" ? "" : `Showing the ${blk.reason}; click an MLP square in the graph to choose.`;
    const ids = lastAxis(nr.ids, blk.layer, blk.token);
    const imp = nr.importance ? lastAxis(nr.importance, blk.layer, blk.token) : null;
    const act = nr.activation ? lastAxis(nr.activation, blk.layer, blk.token) : null;
    let max = 0;
    if (imp) for (const v of imp) max = Math.max(max, Math.abs(v));
    max = max || 1;
    const s = getSelection(model);
    const rows = Array.from(ids, (id, k) => {
      const v = imp ? imp[k] : 0;
      const a = act ? act[k] : 0;
      const selected = !!s && s.kind === "neuron" && s.layer === blk.layer && s.token === blk.token && s.neuron === id;
      const bar = h("span", { class: `lmtt-bar ${v < 0 ? "neg" : ""}` });
      bar.style.width = `${Math.max(1, Math.round((Math.abs(v) / max) * 100))}%`;
      const li = h(
        "li",
        { class: `lmtt-neuron${selected ? " is-selected" : ""}`, role: "option", tabindex: 0, "aria-selected": String(selected), "data-neuron": id },
        h("span", { class: "lmtt-nid" }, `N${id}`),
        h("span", { class: "lmtt-barwrap" }, bar),
        h("span", { class: "lmtt-num" }, fmt(v, 3)),
        h("span", { class: `lmtt-sign ${a >= 0 ? "pos" : "neg"}`, title: `activation ${fmt(a, 3)}` }, `${a >= 0 ? "+" : "−"}${fmt(Math.abs(a), 2)}`),
      );
      return li;
    });
    list.replaceChildren(...rows);
  }

  const pick = (ev: Event) => {
    const li = (ev.target as HTMLElement).closest?.(".lmtt-neuron") as HTMLElement | null;
    const blk = neuronBlock(model);
    if (!li || !blk) return;
    const neuron = Number(li.dataset.neuron);
    ctx.commit({ selection: { kind: "neuron", layer: blk.layer, neuron, token: blk.token } });
  };
  list.addEventListener("click", pick, { signal: ac.signal });
  list.addEventListener(
    "keydown",
    (ev) => {
      if (ev.key === "Enter" || ev.key === " ") {
        ev.preventDefault();
        pick(ev);
      }
    },
    { signal: ac.signal },
  );
  for (const n of ["neurons", "selection", "target", "tokens", "block_importance"]) ctx.listen(`change:${n}`, draw);
  draw();
  void focusToken;
  return { el, destroy: () => ac.abort() };
}
