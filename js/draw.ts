/** Shared drawing model of the flow graph, used by the canvas renderer and the SVG export. */
import { importanceColor, rgbString, Theme } from "./color";
import { edgeControl, edgeEnds, mlpHalf, nodeRadius, nodeWorld, toScreen, View } from "./geometry";
import type { GraphData } from "./state";

export const WEIGHT_BINS = 16;

export interface EdgeStyle {
  color: string;
  width: number;
  dash: number[];
}

export function edgeStyle(kind: string, t: number, theme: Theme, zoom: number): EdgeStyle {
  const z = Math.max(0.6, Math.min(2.5, zoom));
  const width = (0.5 + 3 * t) * z;
  if (kind === "residual") {
    return { color: theme.residual, width: width * 0.9, dash: [] };
  }
  const color = rgbString(importanceColor(t, theme.dark));
  if (kind === "mlp") return { color, width, dash: [Math.max(2, 3 * z), Math.max(1.5, 2 * z)] };
  return { color, width, dash: [] };
}

/** Bin index (0..WEIGHT_BINS-1) of a normalised weight. */
export function weightBin(t: number): number {
  return Math.max(0, Math.min(WEIGHT_BINS - 1, Math.floor(t * WEIGHT_BINS)));
}
export function binCenter(b: number): number {
  return (b + 0.5) / WEIGHT_BINS;
}

/** Residual-node importance = max weight of incident edges, normalised. */
export function nodeImportance(g: GraphData): Float32Array {
  const imp = new Float32Array(g.n);
  const m = g.maxWeight || 1;
  for (let i = 0; i < g.e; i++) {
    const w = Math.sqrt(Math.max(0, g.edgeWeight[i]) / m);
    const s = g.edgeSrc[i];
    const d = g.edgeDst[i];
    if (s < g.n && w > imp[s]) imp[s] = w;
    if (d < g.n && w > imp[d]) imp[d] = w;
  }
  return imp;
}

export interface EdgeGeom {
  i: number;
  kind: string;
  t: number;
  x0: number;
  y0: number;
  cx: number;
  cy: number;
  x1: number;
  y1: number;
  curved: boolean;
}

export function edgeGeometry(v: View, g: GraphData, i: number): EdgeGeom {
  const [x0, y0, x1, y1] = edgeEnds(v, g, i);
  const kind = g.edgeKind[i];
  const t = g.maxWeight > 0 ? Math.sqrt(Math.max(0, g.edgeWeight[i]) / g.maxWeight) : 0;
  if (kind === "attention") {
    const [cx, cy] = edgeControl(x0, y0, x1, y1, v.sx);
    return { i, kind, t, x0, y0, cx, cy, x1, y1, curved: true };
  }
  return { i, kind, t, x0, y0, cx: (x0 + x1) / 2, cy: (y0 + y1) / 2, x1, y1, curved: false };
}

export interface NodeGeom {
  i: number;
  kind: string;
  layer: number;
  token: number;
  x: number;
  y: number;
  r: number;
  t: number;
}

export function nodeGeometry(v: View, g: GraphData, imp: Float32Array): NodeGeom[] {
  const out: NodeGeom[] = [];
  const r = nodeRadius(v);
  const m = mlpHalf(v);
  for (let i = 0; i < g.n; i++) {
    const kind = g.nodeKind[i];
    const [c, row] = nodeWorld(kind, g.nodeLayer[i], g.nodeToken[i]);
    const [x, y] = toScreen(v, c, row);
    out.push({ i, kind, layer: g.nodeLayer[i], token: g.nodeToken[i], x, y, r: kind === "mlp" ? m : r, t: imp[i] });
  }
  return out;
}
