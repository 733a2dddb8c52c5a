/** VocabView pane: vocabulary projection of the selection (lens / promoted+suppressed) and the logit-lens column. */
import { at } from "../codec";
import { describeSelection, detailsKey } from "../selection";
import { getLens, getMeta, getSelection, getTarget, getTokens, LensData, rowLabel, rowToNode } from "../state";
import { displayToken, h, pct, truncate } from "../text";
import type { Pane, PaneContext, Selection } from "../types";
import { detailStatus, rankChange, tokenList } from "./common";
import { listKeys, rerenderKeepingFocus } from "../keyboard";
import { frameThrottle } from "../frame";

/** `{top: [[str, prob, rank_change]...]}` for (row, target) built from the `lens` trait. */
export function lensFromTrait(lens: LensData | null, row: number): { top: [string, number, number][] } | null {
  if (!lens || !lens.ids || row < 0 || row >= lens.ids.shape[0]) return null;
  const K = lens.ids.shape[1];
  const top: [string, number, number][] = [];
  for (let k = 0; k < K; k++) {
    const id = at(lens.ids, row, k);
    const p = lens.probs ? at(lens.probs, row, k) : NaN;
    const prev = lens.rankPrev ? at(lens.rankPrev, row, k) : -1;
    top.push([lens.strings[String(id)] ?? `#${id}`, p, prev < 0 ? 0 : prev - k]);
  }
  return { top };
}

export function createVocabPane(ctx: PaneContext): Pane {
  const { model } = ctx;
  const title = h("div", { class: "lmtt-pane-title" });
  const body = h("div", { class: "lmtt-vocab-body" });
  const lensTitle = h("div", { class: "lmtt-subtitle" });
  const lensList = h("ol", { class: "lmtt-lens" });
  const el = h("div", { class: "lmtt-pane lmtt-vocab" }, title, body, h("div", { class: "lmtt-lens-wrap" }, lensTitle, lensList));
  const ac = new AbortController();
  ctx.onCleanup(() => ac.abort());
  const toks = () => getTokens(model);
  const tokText = (t: number) => `“${truncate(displayToken(toks()[t] ?? ""), 20)}”`;
  /** Position that the `lens` trait and `meta.prediction` describe (normally `target`). */
  const lensToken = () => getLens(model)?.token ?? getTarget(model);

  function drawSelection() {
    const s: Selection = getSelection(model);
    title.textContent = s ? `Vocabulary · ${describeSelection(s, tokText)}` : "Vocabulary · model prediction";
    if (!s) {
      const pred = getMeta(model).prediction;
      if (!pred) {
        body.replaceChildren(h("div", { class: "lmtt-hint" }, "Select a node, head, MLP block or neuron."));
        return;
      }
      const top = Array.isArray(pred.top) && pred.top.length ? pred.top : [[pred.token, pred.prob]];
      // labelled by meta's own position: right after a target click it is still the previous target's
      const at = getMeta(model).position ?? lensToken();
      body.replaceChildren(tokenList(`next token after #${at}`, top, "prob"));
      return;
    }
    const key = detailsKey(s);
    if (!key) {
      body.replaceChildren(h("div", { class: "lmtt-hint" }, "Edges have no vocabulary projection: select a node, head, MLP block or neuron (the heads pane shows the edge's heads)."));
      return;
    }
    let st = ctx.details.get(key, false);
    if (!st && s.kind === "node" && s.token === lensToken()) {
      const row = Number(key.split(":")[1]);
      const fromLens = lensFromTrait(getLens(model), row);
      if (fromLens) st = { status: "ok", key, result: fromLens };
    }
    if (!st) st = ctx.details.get(key);
    if (!detailStatus(body, st, ctx.details, key.split(":")[0] === "lens" ? "logit lens" : "vocabulary projection") || !st || st.status !== "ok") return;
    const r = st.result ?? {};
    if (s.kind === "node") {
      body.replaceChildren(tokenList("logit lens: top tokens (rank change vs previous row)", r.top, "prob"));
    } else if (typeof r.note === "string" && !(Array.isArray(r.promoted) && r.promoted.length)) {
      // an offline report that does not hold this projection says so (js/static.ts)
      body.replaceChildren(h("div", { class: "lmtt-hint lmtt-not-held" }, r.note));
    } else {
      body.replaceChildren(
        h("div", { class: "lmtt-twocol" }, tokenList("promoted", r.promoted, "score", "pos"), tokenList("suppressed", r.suppressed, "score", "neg")),
      );
    }
  }

  let built: { lens: unknown; target: number; tokens: unknown } = { lens: null, target: -1, tokens: null };

  function drawLens() {
    const lens = getLens(model);
    const target = lens?.token ?? getTarget(model);
    if (!lens || !lens.ids) {
      lensTitle.textContent = "";
      built = { lens: null, target: -1, tokens: null };
      lensList.replaceChildren();
      return;
    }
    lensTitle.textContent = `Logit lens at ${target === getTarget(model) ? "target " : ""}${tokText(target)} #${target} (top-1 per row, last layer first)`;
    const R = lens.ids.shape[0];
    const s = getSelection(model);
    const selRow = s && s.kind === "node" && s.token === target ? Number(detailsKey(s)!.split(":")[1]) : -1;
    if (built.lens === lens && built.target === target && built.tokens === toks()) {
      // same rows: a selection change only moves the mark (no re-render, the focus stays where it is)
      for (const li of Array.from(lensList.children) as HTMLElement[]) li.classList.toggle("is-selected", Number(li.dataset.row) === selRow);
      return;
    }
    built = { lens, target, tokens: toks() };
    const items: HTMLElement[] = [];
    for (let r = R - 1; r >= 0; r--) {
      const id = at(lens.ids, r, 0);
      const p = lens.probs ? at(lens.probs, r, 0) : NaN;
      const prev = lens.rankPrev ? at(lens.rankPrev, r, 0) : -1;
      const tok = lens.strings[String(id)] ?? `#${id}`;
      const bar = h("span", { class: "lmtt-bar" });
      bar.style.width = `${Math.max(1, Math.round((Number.isFinite(p) ? p : 0) * 100))}%`;
      const li = h(
        "li",
        { class: `lmtt-lensrow${r === selRow ? " is-selected" : ""}`, "data-row": r, tabindex: 0, title: rowLabel(r) },
        h("span", { class: "lmtt-rowlbl" }, r === 0 ? "emb" : `L${rowToNode(r).layer}${r % 2 === 1 ? "a" : "m"}`),
        h("span", { class: "lmtt-tokname" }, truncate(displayToken(tok), 18)),
        h("span", { class: "lmtt-barwrap" }, bar),
        h("span", { class: "lmtt-num" }, pct(p)),
        r === 0 || prev < 0 ? h("span", { class: "lmtt-rank same" }, "") : rankChange(prev),
      );
      items.push(li);
    }
    rerenderKeepingFocus(lensList, "data-row", () => lensList.replaceChildren(...items));
  }

  const pick = (li: HTMLElement) => {
    const n = rowToNode(Number(li.dataset.row));
    ctx.commit({ selection: { kind: "node", layer: n.layer, token: lensToken(), node_kind: n.node_kind } });
  };
  lensList.addEventListener("click", (ev) => {
    const li = (ev.target as HTMLElement).closest?.(".lmtt-lensrow") as HTMLElement | null;
    if (li) pick(li);
  }, { signal: ac.signal });
  listKeys(lensList, ".lmtt-lensrow", pick, ac.signal); // arrows / Page keys / Home / End move, Enter selects

  const drawAll = () => {
    drawSelection();
    drawLens();
  };
  ctx.listen("change:selection", frameThrottle(drawAll, ac.signal)); // once a frame during a burst of selections
  for (const n of ["target", "lens", "meta", "tokens"]) ctx.listen(`change:${n}`, drawAll);
  const unsub = ctx.details.subscribe(() => drawSelection());
  ctx.onCleanup(unsub);
  drawAll();
  return { el, destroy: () => ac.abort() };
}
