/** Paints the flow graph on a 2D canvas: layer grid, edges batched by kind and weight, nodes, rings, layer labels. */
import { importanceColor, rgbString, Theme } from "../color";
import { binCenter, edgeGeometry, edgeStyle, nodeGeometry, nodeImportance, WEIGHT_BINS, weightBin } from "../draw";
import { findEdge } from "../graph-select";
import { Hit, mlpHalf, MLP_DX, nodeRadius, Size, toScreen, View } from "../geometry";
import { routesFrom } from "../routes";
import { Cursor, selectionToCursor } from "../selection";
import type { GraphData } from "../state";
import type { Selection } from "../types";

// Marks a node whose update cancelled (every part farther from the sum than 0): its importances are an even split.
const CANCEL_COLOR = "#e08a00";
// Marks a node whose update holds an external edit (code outside the model's modules changed the stream).
const EXTERNAL_COLOR = "#c2185b";

export interface PaintInput {
  c: CanvasRenderingContext2D;
  v: View;
  size: Size;
  theme: Theme;
  g: GraphData;
  T: number;
  L: number;
  target: number;
  sel: Selection;
  hover: Hit;
  /** the keyboard cursor, when the graph has focus */
  cursor: Cursor | null;
}

/** Paint everything; returns the MLP blocks drawn (`${layer}:${token}`), which hit testing needs. */
export function paintGraph(p: PaintInput): Set<string> {
  const { c, v, size, theme, g, T, L, target, sel, hover, cursor } = p;
  const rows = 2 * L + 1;
  c.fillStyle = theme.bg;
  c.fillRect(0, 0, size.w, size.h);
  // target column band
  const [txc] = toScreen(v, target, 0);
  c.fillStyle = theme.accent;
  c.globalAlpha = 0.09;
  c.fillRect(txc - v.sx / 2, 0, v.sx, size.h);
  c.globalAlpha = 1;
  // layer bands + labels
  c.font = `10px ${theme.font}`;
  c.textBaseline = "middle";
  const layerStep = Math.max(1, Math.ceil(13 / (2 * v.sy)));
  c.strokeStyle = theme.grid;
  c.lineWidth = 1;
  c.beginPath();
  for (let l = 0; l <= L; l++) {
    const [, y] = toScreen(v, 0, 2 * l + 0.5);
    if (y < -2 || y > size.h + 2) continue;
    c.moveTo(0, Math.round(y) + 0.5);
    c.lineTo(size.w, Math.round(y) + 0.5);
  }
  c.stroke();
  // faint grid of all residual nodes when there is room
  if (v.sx >= 4 && v.sy >= 3) {
    c.fillStyle = theme.grid;
    const lo = Math.max(0, Math.floor(-v.tx / v.sx) - 1);
    const hi = Math.min(T - 1, Math.ceil((size.w - v.tx) / v.sx) + 1);
    const rlo = Math.max(0, Math.floor((v.ty - size.h) / v.sy) - 1);
    const rhi = Math.min(rows - 1, Math.ceil(v.ty / v.sy) + 1);
    const d = Math.max(1, Math.min(3, Math.min(v.sx, v.sy) * 0.16));
    for (let r = rlo; r <= rhi; r++) {
      const y = v.ty - r * v.sy;
      for (let t = lo; t <= hi; t++) c.fillRect(v.tx + t * v.sx - d / 2, y - d / 2, d, d);
    }
  }
  // edges batched by kind and weight bin
  const zoom = Math.min(v.sx, v.sy) / 8;
  const kinds = ["residual", "mlp", "attention"];
  const bins = new Map<string, number[]>();
  for (let i = 0; i < g.e; i++) {
    const k = g.edgeKind[i];
    const b = weightBin(g.maxWeight > 0 ? Math.sqrt(Math.max(0, g.edgeWeight[i]) / g.maxWeight) : 0);
    const key = `${k}|${b}`;
    let arr = bins.get(key);
    if (!arr) bins.set(key, (arr = []));
    arr.push(i);
  }
  c.lineCap = "round";
  for (const k of kinds) {
    for (let b = 0; b < WEIGHT_BINS; b++) {
      const idx = bins.get(`${k}|${b}`);
      if (!idx) continue;
      const tt = binCenter(b);
      const st = edgeStyle(k, tt, theme, zoom);
      c.strokeStyle = st.color;
      c.lineWidth = st.width;
      c.setLineDash(st.dash);
      c.globalAlpha = k === "residual" ? 0.35 + 0.6 * tt : 0.55 + 0.45 * tt;
      c.beginPath();
      for (const i of idx) {
        const e = edgeGeometry(v, g, i);
        c.moveTo(e.x0, e.y0);
        if (e.curved) c.quadraticCurveTo(e.cx, e.cy, e.x1, e.y1);
        else c.lineTo(e.x1, e.y1);
      }
      c.stroke();
    }
  }
  c.setLineDash([]);
  c.globalAlpha = 1;
  // a selected input token (embedding node): the routes that start at it
  if (sel && sel.kind === "node" && sel.node_kind === "embedding") {
    c.strokeStyle = theme.accent;
    c.globalAlpha = 0.5;
    for (const i of routesFrom(g, sel.token)) {
      const e = edgeGeometry(v, g, i);
      c.lineWidth = edgeStyle(e.kind, e.t, theme, zoom).width + 2;
      c.beginPath();
      c.moveTo(e.x0, e.y0);
      if (e.curved) c.quadraticCurveTo(e.cx, e.cy, e.x1, e.y1);
      else c.lineTo(e.x1, e.y1);
      c.stroke();
    }
    c.globalAlpha = 1;
  }
  // selected / hovered edge highlight
  const selEdge = findEdge(g, sel);
  const hovEdge = hover && hover.kind === "edge" ? hover.index : -1;
  for (const [i, col, w] of [
    [hovEdge, theme.fg, 1.5],
    [selEdge, theme.accent, 2.5],
  ] as [number, string, number][]) {
    if (i < 0) continue;
    const e = edgeGeometry(v, g, i);
    c.strokeStyle = col;
    c.lineWidth = edgeStyle(e.kind, e.t, theme, zoom).width + w * 2;
    c.globalAlpha = 0.45;
    c.beginPath();
    c.moveTo(e.x0, e.y0);
    c.quadraticCurveTo(e.cx, e.cy, e.x1, e.y1);
    c.stroke();
    c.globalAlpha = 1;
  }
  // nodes
  const mlpNodes = new Set<string>();
  const imp = nodeImportance(g);
  const nodes = nodeGeometry(v, g, imp);
  c.lineWidth = 0.75;
  c.strokeStyle = theme.fg;
  for (const n of nodes) {
    if (n.kind === "mlp") mlpNodes.add(`${n.layer}:${n.token}`);
    if (n.x < -10 || n.x > size.w + 10 || n.y < -10 || n.y > size.h + 10) continue;
    c.fillStyle = rgbString(importanceColor(n.t, theme.dark));
    c.beginPath();
    if (n.kind === "mlp") c.rect(n.x - n.r, n.y - n.r, 2 * n.r, 2 * n.r);
    else c.arc(n.x, n.y, n.r, 0, Math.PI * 2);
    c.fill();
    if (n.r >= 2.5) c.stroke();
  }
  // cancelling updates (importances split evenly): a dashed ring; external edits (a hook changed the stream):
  // a solid ring
  c.lineWidth = 1.5;
  for (const [flags, color, dash] of [
    [g.nodeCancelling, CANCEL_COLOR, [2, 2]],
    [g.nodeExternal, EXTERNAL_COLOR, []],
  ] as [Uint8Array, string, number[]][]) {
    c.strokeStyle = color;
    c.setLineDash(dash);
    for (const n of nodes) {
      if (!flags[n.i]) continue;
      c.beginPath();
      c.arc(n.x, n.y, n.r + 2, 0, Math.PI * 2);
      c.stroke();
    }
  }
  c.setLineDash([]);
  if (sel && (sel.kind === "mlp" || sel.kind === "neuron")) mlpNodes.add(`${sel.layer}:${sel.token}`);
  // selection ring, hover ring, keyboard cursor
  const ring = (kind: "node" | "mlp", token: number, row: number, color: string, width: number, dash: number[] = []) => {
    c.strokeStyle = color;
    c.lineWidth = width;
    c.setLineDash(dash);
    c.beginPath();
    if (kind === "mlp") {
      const [x, y] = toScreen(v, token + MLP_DX, row);
      const s = mlpHalf(v) + 3;
      c.rect(x - s, y - s, 2 * s, 2 * s);
    } else {
      const [x, y] = toScreen(v, token, row);
      c.arc(x, y, nodeRadius(v) + 3, 0, Math.PI * 2);
    }
    c.stroke();
    c.setLineDash([]);
  };
  if (hover && hover.kind === "node") ring("node", hover.token, hover.row, theme.fg, 1);
  if (hover && hover.kind === "mlp") ring("mlp", hover.token, 2 * hover.layer + 1.5, theme.fg, 1);
  if (sel) {
    if (sel.kind === "node") {
      const cur = selectionToCursor(sel, target, L);
      ring("node", cur.token, cur.row, theme.accent, 2.5);
    } else if (sel.kind === "mlp" || sel.kind === "neuron") {
      ring("mlp", sel.token, 2 * sel.layer + 1.5, theme.accent, 2.5);
    } else if (sel.kind === "head") {
      ring("node", sel.token, 2 * sel.layer + 1, theme.accent, 2.5);
    }
  }
  if (cursor) ring("node", cursor.token, cursor.row, theme.accent, 1.5, [3, 2]);
  // layer labels (drawn last, on an opaque gutter)
  c.fillStyle = theme.bg;
  c.globalAlpha = 0.85;
  c.fillRect(0, 0, 34, size.h);
  c.globalAlpha = 1;
  c.fillStyle = theme.muted;
  for (let l = 0; l < L; l += layerStep) {
    const [, y] = toScreen(v, 0, 2 * l + 1.5);
    if (y < 6 || y > size.h - 6) continue;
    c.fillText(`L${l}`, 4, y);
  }
  const [, ye] = toScreen(v, 0, 0);
  if (ye > 6 && ye < size.h - 4) c.fillText("emb", 4, ye);
  return mlpNodes;
}
