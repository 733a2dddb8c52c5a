/** FlowGraph tooltip: what a hit node, MLP block or attention edge holds, as DOM built with textContent. */
import { at } from "../codec";
import type { Hit } from "../geometry";
import { getBlockImportance, getGraph, GraphData, rowLabel, rowToNode } from "../state";
import { fmt, h, pct } from "../text";
import type { WidgetModel } from "../types";

export function edgeHeadShares(g: GraphData, i: number): [number, number][] {
  if (!g.edgeHeads || i < 0) return [];
  const H = g.edgeHeads.shape[1];
  const out: [number, number][] = [];
  for (let hh = 0; hh < H; hh++) out.push([hh, at(g.edgeHeads, i, hh)]);
  return out.filter(([, v]) => v !== 0).sort((a, b) => Math.abs(b[1]) - Math.abs(a[1]));
}

function blockValue(model: WidgetModel, name: string, layer: number, token: number): number | null {
  const b = getBlockImportance(model)[name];
  if (!b || layer < 0 || layer >= b.shape[0] || token >= b.shape[1]) return null;
  return at(b, layer, token);
}

/** Rows of the tooltip for `hit`; `tokText` names a token position. */
export function tooltipContent(model: WidgetModel, hit: Hit, tokText: (t: number) => string): (Node | string)[] {
  if (!hit) return [];
  const g = getGraph(model);
  const lines: (Node | string)[] = [];
  const line = (k: string, v: string) => lines.push(h("div", { class: "lmtt-tt-row" }, h("span", { class: "lmtt-tt-k" }, k), h("span", { class: "lmtt-tt-v" }, v)));
  if (hit.kind === "node") {
    const n = rowToNode(hit.row);
    lines.push(h("div", { class: "lmtt-tt-title" }, `${rowLabel(hit.row)} · ${tokText(hit.token)} #${hit.token}`));
    if (n.node_kind === "after_attention") {
      const a = blockValue(model, "attention", n.layer, hit.token);
      const r = blockValue(model, "residual_attention", n.layer, hit.token);
      if (a != null) line("attention block", fmt(a));
      if (r != null) line("residual", fmt(r));
    } else if (n.node_kind === "after_mlp") {
      const a = blockValue(model, "mlp", n.layer, hit.token);
      const r = blockValue(model, "residual_mlp", n.layer, hit.token);
      if (a != null) line("MLP block", fmt(a));
      if (r != null) line("residual", fmt(r));
    }
    let win = 0;
    let cnt = 0;
    for (let i = 0; i < g.e; i++) {
      const d = g.edgeDst[i];
      if (g.nodeToken[d] === hit.token && g.nodeKind[d] === n.node_kind && g.nodeLayer[d] === n.layer) {
        win += g.edgeWeight[i];
        cnt++;
      }
    }
    if (cnt) line("incoming (graph)", `${fmt(win)} over ${cnt} edge${cnt > 1 ? "s" : ""}`);
  } else if (hit.kind === "mlp") {
    lines.push(h("div", { class: "lmtt-tt-title" }, `MLP L${hit.layer} · ${tokText(hit.token)} #${hit.token}`));
    const a = blockValue(model, "mlp", hit.layer, hit.token);
    if (a != null) line("importance", fmt(a));
  } else if (hit.kind === "edge") {
    lines.push(h("div", { class: "lmtt-tt-title" }, `L${hit.layer} attention · ${tokText(hit.source)} → ${tokText(hit.token)}`));
    line("weight", fmt(g.edgeWeight[hit.index]));
    const shares = edgeHeadShares(g, hit.index).slice(0, 6);
    if (shares.length) {
      const maxs = Math.max(...shares.map(([, s]) => Math.abs(s))) || 1;
      const list = h("div", { class: "lmtt-tt-heads" });
      for (const [hh, s] of shares) {
        const bar = h("span", { class: "lmtt-tt-bar" });
        bar.style.width = `${Math.round((Math.abs(s) / maxs) * 60)}px`;
        list.appendChild(h("div", { class: "lmtt-tt-row" }, h("span", { class: "lmtt-tt-k" }, `H${hh}`), bar, h("span", { class: "lmtt-tt-v" }, pct(s))));
      }
      lines.push(list);
    }
  }
  return lines;
}

/** Fill `tooltip` for `hit` and place it next to (x, y), inside a box of `size`; hide it when nothing is hit. */
export function placeTooltip(tooltip: HTMLElement, content: (Node | string)[], x: number, y: number, size: { w: number; h: number }) {
  if (!content.length) {
    tooltip.hidden = true;
    return;
  }
  tooltip.replaceChildren(...content);
  tooltip.hidden = false;
  const tw = tooltip.offsetWidth || 200;
  const th = tooltip.offsetHeight || 60;
  let left = x + 14;
  let top = y + 14;
  if (left + tw > size.w) left = Math.max(0, x - tw - 10);
  if (top + th > size.h) top = Math.max(0, y - th - 10);
  tooltip.style.left = `${left}px`;
  tooltip.style.top = `${top}px`;
}
