/**
 * The flow graph's edges on a 2D canvas, batched by kind and weight bin, each kind drawn the cheapest way that shows
 * the same picture on a software-rendered canvas (where a low-τ graph spends most of its redraw):
 * - residual edges are vertical, and the edges of one weight bin that stack end to end in a column are drawn as
 *   one (see GraphLayout.runs): a hairline, or where wider a filled rectangle, not a stroke (a stroke with round
 *   caps is turned into a polygon per edge; its caps lie under the nodes at both ends anyway);
 * - MLP edges are dashed: the dashes are cut here, as plain segments of one path, instead of by the canvas's dash
 *   effect, which is applied edge by edge and costs more than drawing the dashes;
 * - attention edges are quadratic curves stroked as hairlines up to HAIRLINE_MAX px;
 * - wider strokes (the heaviest edges) are stroked a few dozen at a time (see WIDE_BATCH).
 */
import type { Theme } from "../color";
import { binCenter, edgeStyle, WEIGHT_BINS } from "../draw";
import { EDGE_KINDS, GraphLayout } from "../graph-layout";
import { edgeControl, Size, View } from "../geometry";
import type { GraphData } from "../state";
import { EdgeChunk, edgeLayer, narrowLayer, splitByCost } from "./graph-progress";

/** Widest stroke (px) drawn as a 1 px hairline with its width folded into its opacity. */
export const HAIRLINE_MAX = 2;

export interface EdgeInput {
  v: View;
  size: Size;
  theme: Theme;
  g: GraphData;
}

/**
 * Append the dashes of the segment (x0, y0) -> (x1, y1) to `out` as x0, y0, x1, y1 quadruples: `on` px drawn, `off`
 * px skipped, starting with a dash at (x0, y0), the last one cut at the end, as the canvas dashes a path that is
 * one line (the pattern restarts at each subpath).
 */
export function dashSegments(x0: number, y0: number, x1: number, y1: number, on: number, off: number, out: number[]): void {
  const dx = x1 - x0, dy = y1 - y0;
  const len = Math.hypot(dx, dy);
  if (!(len > 0) || !(on > 0)) return;
  const ux = dx / len, uy = dy / len;
  for (let s = 0; s < len; s += on + Math.max(0, off)) {
    const e = Math.min(len, s + on);
    out.push(x0 + ux * s, y0 + uy * s, x0 + ux * e, y0 + uy * e);
  }
}

/**
 * Where the thin attention curves go: a canvas `kx` times as wide as the layer (same height, same transform), drawn
 * with x scaled by kx and composited stretched back over the layer (by `flush`, called once they are all drawn).
 * The curves are long and nearly horizontal (a row apart, often a hundred columns across), and a hairline costs
 * Skia its length in pixels: at kx = 1/2 half the work, while a horizontal line stretched sideways stays the same
 * line (only the short bend into the destination node is widened).
 */
export interface ThinLayer {
  c: CanvasRenderingContext2D;
  kx: number;
  flush(): void;
}

/**
 * Wide strokes are stroked this many shapes at a time: Skia fills a wide stroke as one polygon, and its scan
 * converter slows down far more than in proportion with the shapes in one path (the 2,000 dashes of the heaviest MLP
 * bin at τ = 0.005, 512 tokens: 31 ms in one stroke, 3.5 ms in strokes of 32). Where two shapes of one bin overlap
 * in different strokes their overlap is blended twice, a difference the eye does not see at these opacities.
 */
export const WIDE_BATCH = 32;

/** Edge weight -> stroke opacity, by kind (residual edges are background: lighter). */
function edgeAlpha(kind: string, t: number): number {
  return kind === "residual" ? 0.35 + 0.6 * t : 0.55 + 0.45 * t;
}

/**
 * Edges: one path and one stroke (or fill) per (kind, weight bin) bucket, wide strokes in batches of WIDE_BATCH;
 * edges wholly off screen are skipped.
 */
export function paintEdges(c: CanvasRenderingContext2D, p: EdgeInput, lay: GraphLayout, nx: Float32Array, ny: Float32Array, thinLayer?: ThinLayer) {
  const { v, theme } = p;
  const zoom = Math.min(v.sx, v.sy) / 8;
  const m = 8 + v.sx;
  const dashes: number[] = [];
  c.lineCap = "round";
  c.setLineDash([]);
  let pending: ThinLayer | null = null;
  const outer = c;
  for (let ki = 0; ki < EDGE_KINDS.length; ki++) {
    const k = EDGE_KINDS[ki];
    for (let b = 0; b < WEIGHT_BINS; b++) {
      const bucket = ki * WEIGHT_BINS + b;
      const s0 = lay.start[bucket];
      const s1 = lay.start[bucket + 1];
      if (s0 === s1) continue;
      const tt = binCenter(b);
      const st = edgeStyle(k, tt, theme, zoom);
      // a thin stroke is drawn 1 px wide with its width folded into its opacity: Skia draws 1 px strokes as
      // hairlines, about twice as fast as wider ones, and the low-weight bulk of a low-τ graph is all thin
      const thin = st.width <= HAIRLINE_MAX;
      const lw = thin ? 1 : st.width;
      const alpha = edgeAlpha(k, tt);
      // thin attention curves into the narrow layer, if any; the first wide one flushes it, so that the heavier
      // curves stay on top as before
      const narrow = k === "attention" && thin && thinLayer ? thinLayer : null;
      if (pending && !narrow) {
        pending.flush();
        pending = null;
      }
      if (narrow) pending = narrow;
      const kx = narrow ? narrow.kx : 1;
      const c = narrow ? narrow.c : outer;
      c.lineCap = "round";
      c.globalAlpha = thin ? alpha * Math.min(1, st.width) : alpha;
      c.strokeStyle = c.fillStyle = st.color;
      c.lineWidth = lw;
      c.beginPath();
      if (k === "residual") {
        paintRuns(c, p, lay, lay.runStart[b], lay.runStart[b + 1], lw, nx, ny, m);
        continue;
      }
      strokeEdges(c, p, lay, k, st.dash, thin, s0, s1, nx, ny, kx, dashes);
    }
  }
  (pending as ThinLayer | null)?.flush();
  outer.globalAlpha = 1;
}

/**
 * One weight bin's residual runs (see GraphLayout.runs): a 1 px run as a hairline (the cheapest shape Skia draws),
 * a wider one as a filled rectangle `lw` wide between its two nodes (a round-capped stroke's caps would lie under
 * those nodes), any run that is not vertical as a stroked line.
 */
function paintRuns(c: CanvasRenderingContext2D, p: EdgeInput, lay: GraphLayout, q0: number, q1: number, lw: number, nx: Float32Array, ny: Float32Array, m: number) {
  const { size } = p;
  const hairline = lw <= 1;
  let odd = false;
  for (let q = q0; q < q1; q++) {
    const s = lay.runs[2 * q], d = lay.runs[2 * q + 1];
    const x0 = nx[s], y0 = ny[s], x1 = nx[d], y1 = ny[d];
    if ((x0 < -m && x1 < -m) || (x0 > size.w + m && x1 > size.w + m)) continue;
    if ((y0 < -m && y1 < -m) || (y0 > size.h + m && y1 > size.h + m)) continue;
    if (x0 !== x1) odd = true;
    else if (hairline) {
      c.moveTo(x0, y0);
      c.lineTo(x1, y1);
    } else c.rect(x0 - lw / 2, Math.min(y0, y1), lw, Math.abs(y1 - y0));
  }
  if (hairline) c.stroke();
  else c.fill();
  if (!odd) return;
  c.beginPath();
  for (let q = q0; q < q1; q++) {
    const s = lay.runs[2 * q], d = lay.runs[2 * q + 1];
    if (nx[s] === nx[d]) continue;
    c.moveTo(nx[s], ny[s]);
    c.lineTo(nx[d], ny[d]);
  }
  c.stroke();
}

/**
 * Stroke the attention or MLP edges order[j0 .. j1) of one bucket (style already set on `c`, a path begun), x scaled
 * by kx; edges wholly off screen are skipped; wide ones WIDE_BATCH shapes a stroke.
 */
function strokeEdges(c: CanvasRenderingContext2D, p: EdgeInput, lay: GraphLayout, k: string, dash: number[], thin: boolean, j0: number, j1: number, nx: Float32Array, ny: Float32Array, kx: number, dashes: number[]) {
  const { v, size, g } = p;
  const m = 8 + v.sx;
  const batch = thin ? Infinity : WIDE_BATCH;
  let shapes = 0;
  for (let j = j0; j < j1; j++) {
    const i = lay.order[j];
    const s = g.edgeSrc[i];
    const d = g.edgeDst[i];
    const x0 = nx[s], y0 = ny[s], x1 = nx[d], y1 = ny[d];
    if ((x0 < -m && x1 < -m) || (x0 > size.w + m && x1 > size.w + m)) continue;
    if ((y0 < -m && y1 < -m) || (y0 > size.h + m && y1 > size.h + m)) continue;
    if (k === "attention") {
      const [cx, cy] = edgeControl(x0, y0, x1, y1, v.sx);
      c.moveTo(x0 * kx, y0);
      c.quadraticCurveTo(cx * kx, cy, x1 * kx, y1);
      shapes++;
    } else {
      dashes.length = 0;
      dashSegments(x0, y0, x1, y1, dash[0], dash[1], dashes);
      for (let q = 0; q < dashes.length; q += 4) {
        c.moveTo(dashes[q], dashes[q + 1]);
        c.lineTo(dashes[q + 2], dashes[q + 3]);
      }
      shapes += dashes.length / 4;
    }
    if (shapes >= batch) {
      c.stroke();
      c.beginPath();
      shapes = 0;
    }
  }
  c.stroke();
}

// ---- progressive drawing (see graph-progress): the edges cut into chunks of estimated work, drawn chunk by chunk

/**
 * Cost model of Skia's software rasteriser (µs): a fixed cost per stroked shape (a hairline; a wide stroke is turned
 * into a polygon first: the 2,000 wide dashes of one MLP bin took 3.5 ms in batches of WIDE_BATCH), plus its covered
 * device pixels.
 */
export const SHAPE_US = 0.4;
export const WIDE_SHAPE_US = 1.8;
export const PX_US = 0.007;
/** Most estimated work (µs) in one chunk: small enough to fill a frame's budget closely, big enough to stroke few paths. */
export const CHUNK_US = 600;

interface BucketStyle {
  kind: string;
  thin: boolean;
  lw: number;
  alpha: number;
  color: string;
  dash: number[];
  layer: number;
}

/** How a (kind, weight bin) bucket is drawn, as paintEdges draws it, and the layer it goes to (see EDGE_LAYERS). */
function bucketStyle(ki: number, b: number, theme: EdgeInput["theme"], zoom: number): BucketStyle {
  const kind = EDGE_KINDS[ki];
  const tt = binCenter(b);
  const st = edgeStyle(kind, tt, theme, zoom);
  const thin = st.width <= HAIRLINE_MAX;
  const alpha = edgeAlpha(kind, tt);
  const layer = edgeLayer(ki, b, thin);
  return { kind, thin, lw: thin ? 1 : st.width, alpha: thin ? alpha * Math.min(1, st.width) : alpha, color: st.color, dash: st.dash, layer };
}

/**
 * Every bucket's edges (residual: runs) cut into chunks of at most CHUNK_US estimated work, in bucket order; the thin
 * attention layer drawn `kxThin` times as wide (see ThinLayer), `dpr` device px per CSS px.
 */
export function edgeChunks(p: EdgeInput, lay: GraphLayout, nx: Float32Array, ny: Float32Array, kxThin: number, dpr: number): EdgeChunk[] {
  const { v, size, theme } = p;
  const zoom = Math.min(v.sx, v.sy) / 8;
  const m = 8 + v.sx;
  const out: EdgeChunk[] = [];
  const off = (x0: number, y0: number, x1: number, y1: number) =>
    (x0 < -m && x1 < -m) || (x0 > size.w + m && x1 > size.w + m) || (y0 < -m && y1 < -m) || (y0 > size.h + m && y1 > size.h + m);
  for (let ki = 0; ki < EDGE_KINDS.length; ki++) {
    for (let b = 0; b < WEIGHT_BINS; b++) {
      const bucket = ki * WEIGHT_BINS + b;
      const st = bucketStyle(ki, b, theme, zoom);
      const residual = st.kind === "residual";
      const from = residual ? lay.runStart[b] : lay.start[bucket];
      const to = residual ? lay.runStart[b + 1] : lay.start[bucket + 1];
      if (from === to) continue;
      const kx = narrowLayer(st.layer) ? kxThin : 1;
      const pxUs = PX_US * dpr * st.lw;
      const period = st.dash[0] + Math.max(0, st.dash[1]);
      const shapeUs = st.thin || residual ? SHAPE_US : WIDE_SHAPE_US;
      const costs = new Float64Array(to - from);
      for (let q = from; q < to; q++) {
        const s = residual ? lay.runs[2 * q] : p.g.edgeSrc[lay.order[q]];
        const d = residual ? lay.runs[2 * q + 1] : p.g.edgeDst[lay.order[q]];
        const x0 = nx[s], y0 = ny[s], x1 = nx[d], y1 = ny[d];
        if (off(x0, y0, x1, y1)) continue;
        const len = Math.hypot((x1 - x0) * kx, y1 - y0);
        costs[q - from] =
          st.kind === "mlp" && period > 0
            ? Math.ceil(len / period) * shapeUs + (len * st.dash[0]) / period * pxUs
            : shapeUs + len * pxUs;
      }
      for (const [f, t, cost] of splitByCost(costs, from, to, CHUNK_US)) out.push({ layer: st.layer, bucket, bin: b, from: f, to: t, cost });
    }
  }
  return out;
}

/** Draw one chunk into its layer `c` (on top of the lighter chunks of that layer), x scaled by kx for a thin attention layer. */
export function paintChunk(c: CanvasRenderingContext2D, p: EdgeInput, lay: GraphLayout, ch: EdgeChunk, nx: Float32Array, ny: Float32Array, kx: number, dashes: number[] = []) {
  const { v } = p;
  const zoom = Math.min(v.sx, v.sy) / 8;
  const st = bucketStyle(Math.floor(ch.bucket / WEIGHT_BINS), ch.bin, p.theme, zoom);
  c.lineCap = "round";
  c.setLineDash([]);
  c.globalAlpha = st.alpha;
  c.strokeStyle = c.fillStyle = st.color;
  c.lineWidth = st.lw;
  c.beginPath();
  if (st.kind === "residual") paintRuns(c, p, lay, ch.from, ch.to, st.lw, nx, ny, 8 + v.sx);
  else strokeEdges(c, p, lay, st.kind, st.dash, st.thin, ch.from, ch.to, nx, ny, narrowLayer(st.layer) ? kx : 1, dashes);
  c.globalAlpha = 1;
}
