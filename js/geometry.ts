/** Grid geometry of the flow graph: world (token, row) <-> screen px, hit testing by grid arithmetic. */
import type { GraphData } from "./state";
import { rowOf } from "./state";

export const PAD = { left: 44, right: 14, top: 12, bottom: 10 };
/** Horizontal offset (in columns) of the MLP squares from their residual column. */
export const MLP_DX = 0.34;

export interface View {
  sx: number; // px per column
  sy: number; // px per row
  tx: number; // screen x of column 0
  ty: number; // screen y of row 0
}

export interface Size {
  w: number;
  h: number;
}

export function fitView(T: number, L: number, size: Size): View {
  const rows = 2 * L + 1;
  const sx = Math.max(1, (size.w - PAD.left - PAD.right) / Math.max(1, T));
  const sy = Math.max(1, (size.h - PAD.top - PAD.bottom) / Math.max(1, rows));
  return { sx, sy, tx: PAD.left + sx / 2, ty: size.h - PAD.bottom - sy / 2 };
}

export function toScreen(v: View, col: number, row: number): [number, number] {
  return [v.tx + col * v.sx, v.ty - row * v.sy];
}

export function toWorld(v: View, x: number, y: number): [number, number] {
  return [(x - v.tx) / v.sx, (v.ty - y) / v.sy];
}

/** Zoom by factor k around screen point (x, y). */
export function zoomAt(v: View, k: number, x: number, y: number, minScale = 0.5, maxScale = 400): View {
  const sx = Math.min(maxScale, Math.max(minScale, v.sx * k));
  const kk = sx / v.sx;
  const sy = v.sy * kk;
  return { sx, sy, tx: x - (x - v.tx) * kk, ty: y - (y - v.ty) * kk };
}

export function panBy(v: View, dx: number, dy: number): View {
  return { ...v, tx: v.tx + dx, ty: v.ty + dy };
}

export function nodeWorld(kind: string, layer: number, token: number): [number, number] {
  return [kind === "mlp" ? token + MLP_DX : token, rowOf(kind, layer)];
}

/** Radius (px) of a residual node dot and half-size of an MLP square at this zoom. */
export function nodeRadius(v: View): number {
  return Math.max(1.5, Math.min(7, Math.min(v.sx, v.sy) * 0.28));
}
export function mlpHalf(v: View): number {
  return Math.max(1.5, Math.min(6, Math.min(v.sx, v.sy) * 0.22));
}

/** Control point of the quadratic curve of an edge from s to d (screen px). */
export function edgeControl(sx: number, sy: number, dx: number, dy: number, colPx: number): [number, number] {
  if (Math.abs(sx - dx) < 0.5) return [sx - Math.max(3, colPx * 0.35), (sy + dy) / 2];
  return [dx, sy];
}

export function quadPoint(x0: number, y0: number, cx: number, cy: number, x1: number, y1: number, t: number): [number, number] {
  const u = 1 - t;
  return [u * u * x0 + 2 * u * t * cx + t * t * x1, u * u * y0 + 2 * u * t * cy + t * t * y1];
}

export function distToSegment(px: number, py: number, ax: number, ay: number, bx: number, by: number): number {
  const dx = bx - ax;
  const dy = by - ay;
  const L2 = dx * dx + dy * dy;
  let t = L2 > 0 ? ((px - ax) * dx + (py - ay) * dy) / L2 : 0;
  t = t < 0 ? 0 : t > 1 ? 1 : t;
  const qx = ax + t * dx - px;
  const qy = ay + t * dy - py;
  return Math.sqrt(qx * qx + qy * qy);
}

export function distToQuad(px: number, py: number, x0: number, y0: number, cx: number, cy: number, x1: number, y1: number, steps = 12): number {
  let best = Infinity;
  let [ax, ay] = [x0, y0];
  for (let i = 1; i <= steps; i++) {
    const [bx, by] = quadPoint(x0, y0, cx, cy, x1, y1, i / steps);
    const d = distToSegment(px, py, ax, ay, bx, by);
    if (d < best) best = d;
    ax = bx;
    ay = by;
  }
  return best;
}

export type Hit =
  | { kind: "node"; token: number; row: number }
  | { kind: "mlp"; token: number; layer: number }
  | { kind: "edge"; index: number; layer: number; source: number; token: number }
  | null;

export interface HitOptions {
  T: number;
  L: number;
  graph: GraphData;
  /** MLP blocks present in the drawing, key `${layer}:${token}`. */
  mlpNodes: Set<string>;
  tolerance?: number;
}

/** Screen endpoints of edge i. */
export function edgeEnds(v: View, g: GraphData, i: number): [number, number, number, number] {
  const s = g.edgeSrc[i];
  const d = g.edgeDst[i];
  const [sc, sr] = nodeWorld(g.nodeKind[s], g.nodeLayer[s], g.nodeToken[s]);
  const [dc, dr] = nodeWorld(g.nodeKind[d], g.nodeLayer[d], g.nodeToken[d]);
  const [x0, y0] = toScreen(v, sc, sr);
  const [x1, y1] = toScreen(v, dc, dr);
  return [x0, y0, x1, y1];
}

/** What is under screen point (x, y)? Nodes (grid arithmetic) win over edges within tolerance. */
export function hitTest(v: View, x: number, y: number, o: HitOptions): Hit {
  const tol = o.tolerance ?? 5;
  const rows = 2 * o.L + 1;
  const [col, row] = toWorld(v, x, y);
  let best: Hit = null;
  let bestD = Infinity;
  // residual node
  const t = Math.round(col);
  const r = Math.round(row);
  if (t >= 0 && t < o.T && r >= 0 && r < rows) {
    const [nx, ny] = toScreen(v, t, r);
    const d = Math.hypot(nx - x, ny - y);
    if (d <= nodeRadius(v) + tol && d < bestD) {
      best = { kind: "node", token: t, row: r };
      bestD = d;
    }
  }
  // MLP square: column = round(col - MLP_DX), layer from row 2l+1.5
  const mt = Math.round(col - MLP_DX);
  const ml = Math.round((row - 1.5) / 2);
  if (mt >= 0 && mt < o.T && ml >= 0 && ml < o.L && o.mlpNodes.has(`${ml}:${mt}`)) {
    const [mx, my] = toScreen(v, mt + MLP_DX, 2 * ml + 1.5);
    const half = mlpHalf(v);
    const d = Math.max(0, Math.max(Math.abs(mx - x), Math.abs(my - y)) - half);
    if (d <= tol && d < bestD) {
      best = { kind: "mlp", token: mt, layer: ml };
      bestD = d;
    }
  }
  if (best) return best;
  // attention edges: nearest curve
  const g = o.graph;
  let ei = -1;
  let ed = Infinity;
  for (let i = 0; i < g.e; i++) {
    if (g.edgeKind[i] !== "attention") continue;
    const [x0, y0, x1, y1] = edgeEnds(v, g, i);
    // quick reject on bounding box
    if (x < Math.min(x0, x1) - v.sx - tol || x > Math.max(x0, x1) + tol + 2) continue;
    if (y < Math.min(y0, y1) - tol || y > Math.max(y0, y1) + tol) continue;
    const [cx, cy] = edgeControl(x0, y0, x1, y1, v.sx);
    const d = distToQuad(x, y, x0, y0, cx, cy, x1, y1);
    if (d < ed || (d === ed && g.edgeWeight[i] > g.edgeWeight[ei])) {
      ed = d;
      ei = i;
    }
  }
  if (ei >= 0 && ed <= tol) {
    const d = g.edgeDst[ei];
    const s = g.edgeSrc[ei];
    return { kind: "edge", index: ei, layer: g.nodeLayer[d], source: g.nodeToken[s], token: g.nodeToken[d] };
  }
  return null;
}

/** Which token labels to show: every k-th so labels are >= minPx apart, plus the always-show set. */
export function labelStride(colPx: number, minPx = 14): number {
  if (colPx >= minPx) return 1;
  const k = Math.ceil(minPx / Math.max(0.01, colPx));
  // round up to a "nice" stride
  for (const n of [2, 4, 5, 8, 10, 16, 20, 25, 32, 50, 64, 100]) if (n >= k) return n;
  return k;
}

export function visibleLabels(T: number, v: View, width: number, always: number[] = [], minPx = 14): number[] {
  const stride = labelStride(v.sx, minPx);
  const out = new Set<number>();
  const lo = Math.max(0, Math.floor((0 - v.tx) / v.sx));
  const hi = Math.min(T - 1, Math.ceil((width - v.tx) / v.sx));
  for (let t = lo; t <= hi; t++) if (t % stride === 0) out.add(t);
  for (const a of always) if (a >= 0 && a < T) out.add(a);
  // drop regular labels colliding with always-shown ones
  for (const a of always) {
    for (let d = 1; d < stride; d++) {
      if (!always.includes(a - d)) out.delete(a - d);
      if (!always.includes(a + d)) out.delete(a + d);
    }
  }
  return [...out].sort((a, b) => a - b);
}

/** Most px per token the token zoom goes to: a label's full width, far past the 14 px that shows every label. */
export const MAX_TOKEN_PX = 120;

/**
 * Keep the tokens covering the width they were fitted to: the first column no further right than when fitted, the
 * last one's MLP squares no further left (no empty space beside the tokens after a stretch or a pan).
 */
export function clampTokens(v: View, fit: View, T: number): View {
  const maxTx = fit.tx;
  // the last column's MLP squares (MLP_DX to its right) where the fitted view has them
  const minTx = fit.tx + (T - 1 + MLP_DX) * (fit.sx - v.sx);
  return { ...v, tx: Math.min(maxTx, Math.max(Math.min(minTx, maxTx), v.tx)) };
}

/**
 * Stretch (k > 1) or shrink the token axis around screen x while every layer stays in view: rows as fitted,
 * columns between the fitted width and MAX_TOKEN_PX.
 */
export function zoomTokensAt(v: View, k: number, x: number, fit: View, T: number): View {
  const sx = Math.min(Math.max(MAX_TOKEN_PX, fit.sx), Math.max(fit.sx, v.sx * k));
  const tx = x - (x - v.tx) * (sx / v.sx);
  return clampTokens({ sx, sy: fit.sy, tx, ty: fit.ty }, fit, T);
}

/** Pan horizontally (only) so that column `col` is inside [left, right] of the screen, `margin` px from the edges. */
export function keepColumnInView(v: View, col: number, left: number, right: number, margin = 0): View {
  const x = v.tx + col * v.sx;
  const lo = left + margin;
  const hi = right - margin;
  if (lo > hi) return { ...v, tx: v.tx + (left + right) / 2 - x };
  if (x < lo) return { ...v, tx: v.tx + lo - x };
  if (x > hi) return { ...v, tx: v.tx - (x - hi) };
  return v;
}
