/** Paints the flow graph on a 2D canvas: layer grid, edges batched by kind and weight, nodes, rings, layer labels. */
import type { Theme } from "../color";
import { edgeGeometry, edgeStyle } from "../draw";
import { graphLayout, GraphLayout } from "../graph-layout";
import { findEdge } from "../graph-select";
import { nodeAtlas, NodeAtlas, stampCell } from "../node-sprites";
import { Hit, mlpHalf, MLP_DX, nodeRadius, Size, toScreen, View } from "../geometry";
import { edgeChunks, paintChunk, paintEdges, ThinLayer } from "./graph-edges";
import { EdgeProgress, FIRST_SLICE_US, narrowLayer, ONE_SHOT_US, SLICE_US } from "./graph-progress";
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
  /** device pixels per CSS pixel of `c` */
  dpr: number;
  /** draw every edge now (the PNG export), not a frame's share of a dense graph's edges */
  complete?: boolean;
  /** estimated µs of edges drawn in the first frame after a change and in each later one (see graph-progress) */
  budget?: [number, number];
}

/**
 * Bitmaps of the parts that change only with the graph, the view, the size or the theme (background; edges over it;
 * nodes), so that a redraw for a hover, a selection or focus only composites them under the highlights.
 */
export interface PaintCache {
  /** what the background bitmap shows (view, size, theme), and the edges and nodes bitmaps (that, the graph and the
   * target) */
  bgKey: string;
  key: string;
  bg: HTMLCanvasElement | null;
  /** the background, the target's band and the edges over them */
  edges: HTMLCanvasElement | null;
  /** the thin attention curves, THIN_KX of the width, stretched onto `edges` (see ThinLayer) */
  thin: HTMLCanvasElement | null;
  nodes: HTMLCanvasElement | null;
  /** a dense graph's edges still being drawn into `edges`, a frame's share at a time (see graph-progress) */
  progress: EdgeProgress;
  /** the job's share of the width for the thin attention curves (1: drawn straight into `edges`) */
  jobKx: number;
  /** the narrow layer the job is drawing thin attention curves into, to flush onto `edges` once they are done */
  jobThin: ThinLayer | null;
  /** whether `edges` holds the background and the target's band for `key` yet (a progressive job's first frame
   * draws them straight onto the picture) */
  based: boolean;
  /** what the picture on screen shows: `key` and the highlights (see looksKey); "" after a partial redraw */
  shown: string;
}

export function newPaintCache(): PaintCache {
  return {
    bgKey: "", key: "", bg: null, edges: null, thin: null, nodes: null,
    progress: new EdgeProgress(), jobKx: 1, jobThin: null, based: false, shown: "",
  };
}

/** Whether the picture drawn last still lacks edges (more frames will complete it). */
export function edgesPending(cache: PaintCache): boolean {
  return cache.progress.pending(cache.key);
}

const graphIds = new WeakMap<GraphData, number>();
let nextGraphId = 1;
function graphId(g: GraphData): number {
  let id = graphIds.get(g);
  if (!id) graphIds.set(g, (id = nextGraphId++));
  return id;
}

/**
 * A bitmap of W × H device px (the old one resized). `readBack`: its context is made for pixel reads (a progressive
 * job forces each slice to rasterise with a one-pixel read; Chromium warns about, and may move off the GPU, a
 * canvas read from repeatedly that did not say so).
 */
function layerCanvas(old: HTMLCanvasElement | null, W: number, H: number, readBack = false): HTMLCanvasElement {
  let cv = old;
  if (!cv) {
    cv = document.createElement("canvas");
    if (readBack) cv.getContext("2d", { willReadFrequently: true });
  }
  if (cv.width !== W) cv.width = W;
  if (cv.height !== H) cv.height = H;
  return cv;
}

/** Screen position of every node for this view. */
function nodeScreen(lay: GraphLayout, v: View): [Float32Array, Float32Array] {
  const n = lay.col.length;
  const x = new Float32Array(n);
  const y = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    x[i] = v.tx + lay.col[i] * v.sx;
    y[i] = v.ty - lay.row[i] * v.sy;
  }
  return [x, y];
}

/** Background, layer lines and the faint grid of residual nodes: the same for every graph of these tokens. */
function paintBackground(c: CanvasRenderingContext2D, p: PaintInput) {
  const { v, size, theme, T, L } = p;
  const rows = 2 * L + 1;
  c.fillStyle = theme.bg;
  c.fillRect(0, 0, size.w, size.h);
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
  if (v.sx >= 4 && v.sy >= 3) {
    // one path, one fill: thousands of fillRect calls cost more than the rest of the frame
    const lo = Math.max(0, Math.floor(-v.tx / v.sx) - 1);
    const hi = Math.min(T - 1, Math.ceil((size.w - v.tx) / v.sx) + 1);
    const rlo = Math.max(0, Math.floor((v.ty - size.h) / v.sy) - 1);
    const rhi = Math.min(rows - 1, Math.ceil(v.ty / v.sy) + 1);
    const d = Math.max(1, Math.min(3, Math.min(v.sx, v.sy) * 0.16));
    c.fillStyle = theme.grid;
    c.beginPath();
    for (let r = rlo; r <= rhi; r++) {
      const y = v.ty - r * v.sy;
      for (let t = lo; t <= hi; t++) c.rect(v.tx + t * v.sx - d / 2, y - d / 2, d, d);
    }
    c.fill();
  }
}

/**
 * The image the node stamps are written into, as large as the canvas and reused from one draw to the next: a fresh
 * one is megabytes of memory the system hands out page by page (and the collector then reclaims) on every τ change,
 * and each graph's nodes cover a different box. Only the box written last is cleared. Shared by every graph on the
 * page, which is safe because it is written and put back within one synchronous draw.
 */
let scratch: ImageData | null = null;
let scratchWords: Uint32Array | null = null;
/** the box (device px) written last: x0, y0, x1, y1 (exclusive) */
const scratchBox = [0, 0, 0, 0];
function scratchImage(c: CanvasRenderingContext2D, W: number, H: number): [ImageData, Uint32Array] {
  if (!scratch || !scratchWords || scratch.width !== W || scratch.height !== H) {
    scratch = c.createImageData(W, H);
    scratchWords = new Uint32Array(scratch.data.buffer, scratch.data.byteOffset, W * H);
  } else {
    const [x0, y0, x1, y1] = scratchBox;
    for (let y = y0; y < y1; y++) scratchWords.fill(0, y * W + x0, y * W + x1);
  }
  scratchBox.fill(0);
  return [scratch, scratchWords];
}

/**
 * Nodes as copies of their stamp, at whole device pixels, lowest colour bin first, written into the layer's pixels:
 * the layer must be clear (it is: nodes are the first thing on it). Only the box around the nodes is put back (a
 * short route's nodes sit in a few columns).
 */
function stampNodes(c: CanvasRenderingContext2D, p: PaintInput, lay: GraphLayout, atlas: NodeAtlas, nx: Float32Array, ny: Float32Array, visible: (i: number) => boolean) {
  const { g, dpr } = p;
  const W = c.canvas.width, H = c.canvas.height;
  const cell = atlas.cell;
  const half = cell / 2;
  const [img, words] = scratchImage(c, W, H);
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  const { nodeOrder } = lay;
  for (let j = 0; j < nodeOrder.length; j++) {
    const i = nodeOrder[j];
    if (!visible(i)) continue;
    const x = Math.round(nx[i] * dpr - half), y = Math.round(ny[i] * dpr - half);
    if (x < x0) x0 = x;
    if (y < y0) y0 = y;
    if (x > x1) x1 = x;
    if (y > y1) y1 = y;
    stampCell(img.data, W, H, atlas, lay.colorBin[i], g.nodeKind[i] === "mlp" ? 1 : 0, x, y, words);
  }
  x0 = Math.max(0, x0);
  y0 = Math.max(0, y0);
  x1 = Math.min(W, x1 + cell);
  y1 = Math.min(H, y1 + cell);
  if (!(x1 > x0 && y1 > y0)) return;
  scratchBox[0] = x0;
  scratchBox[1] = y0;
  scratchBox[2] = x1;
  scratchBox[3] = y1;
  c.putImageData(img, 0, 0, x0, y0, x1 - x0, y1 - y0);
}

/** Nodes (circles for residual nodes, squares for MLP blocks) coloured by importance, and their flag rings. */
function paintNodes(c: CanvasRenderingContext2D, p: PaintInput, lay: GraphLayout, nx: Float32Array, ny: Float32Array) {
  const { v, size, theme, g } = p;
  const r = nodeRadius(v);
  const m = mlpHalf(v);
  const { w, h } = size;
  stampNodes(c, p, lay, nodeAtlas(r, m, p.dpr, theme), nx, ny, (i) => !(nx[i] < -10 || nx[i] > w + 10 || ny[i] < -10 || ny[i] > h + 10));
  // cancelling updates (importances split evenly): a dashed ring; external edits (a hook changed the stream):
  // a solid ring
  c.lineWidth = 1.5;
  for (const [flags, color, dash] of [
    [g.nodeCancelling, CANCEL_COLOR, [2, 2]],
    [g.nodeExternal, EXTERNAL_COLOR, []],
  ] as [Uint8Array, string, number[]][]) {
    if (!(flags === g.nodeCancelling ? lay.cancelling : lay.external)) continue;
    c.strokeStyle = color;
    c.setLineDash(dash);
    for (let i = 0; i < g.n; i++) {
      if (!flags[i]) continue;
      const rr = (g.nodeKind[i] === "mlp" ? m : r) + 2;
      c.beginPath();
      c.arc(nx[i], ny[i], rr, 0, Math.PI * 2);
      c.stroke();
    }
  }
  c.setLineDash([]);
}

/** Share of the width the thin attention curves of a dense graph are drawn at (see ThinLayer). */
export const THIN_KX = 0.5;
/**
 * Device px of attention curves from which they go to the narrow layer: below it, stretching the layer back costs
 * about what the narrow layer saves (drawing a pixel of hairline ~7 ns, the stretch ~1 ms at 1270 × 579), and a
 * graph of a few hundred edges keeps its full-width curves.
 */
export const NARROW_FROM_PX = 300_000;

/**
 * The narrow layer of the thin attention curves, cleared, flushing onto the edges bitmap `lc` (W × H device px);
 * none when the curves are short enough in total (`px`) to be drawn at full width.
 */
export function thinLayer(cache: PaintCache, lc: CanvasRenderingContext2D, dpr: number, W: number, H: number, px: number): ThinLayer | undefined {
  const kx = THIN_KX;
  if (px < NARROW_FROM_PX) return undefined;
  const w = Math.ceil(W * kx);
  const cv = (cache.thin = layerCanvas(cache.thin, w, H, true));
  const tc = cv.getContext("2d");
  if (!tc) return undefined;
  tc.setTransform(1, 0, 0, 1, 0, 0);
  tc.clearRect(0, 0, w, H);
  tc.setTransform(dpr, 0, 0, dpr, 0, 0);
  return {
    c: tc,
    kx,
    flush() {
      lc.save();
      lc.setTransform(1, 0, 0, 1, 0, 0);
      lc.globalAlpha = 1;
      lc.imageSmoothingEnabled = true;
      lc.drawImage(cv, 0, 0, w, H, 0, 0, w / kx, H);
      lc.restore();
    },
  };
}

/** Draw `paintLayer` into the layer's bitmap when `fresh` (else reuse what it holds) and composite it onto `c`. */
function composite(c: CanvasRenderingContext2D, p: PaintInput, cv: HTMLCanvasElement, fresh: boolean, paintLayer: (lc: CanvasRenderingContext2D) => void) {
  const lc = cv.getContext("2d");
  if (!lc) throw new Error("lmtt-widgets: no 2D canvas context for a graph layer");
  if (fresh) {
    lc.setTransform(1, 0, 0, 1, 0, 0);
    lc.clearRect(0, 0, cv.width, cv.height);
    lc.setTransform(p.dpr, 0, 0, p.dpr, 0, 0);
    paintLayer(lc);
  }
  c.save();
  c.setTransform(1, 0, 0, 1, 0, 0);
  c.drawImage(cv, 0, 0);
  c.restore();
}

/** Clear a layer's bitmap (device px) and set the CSS px transform on it. */
function clearLayer(cv: HTMLCanvasElement, dpr: number): CanvasRenderingContext2D {
  const lc = cv.getContext("2d");
  if (!lc) throw new Error("lmtt-widgets: no 2D canvas context for a graph layer");
  lc.setTransform(1, 0, 0, 1, 0, 0);
  lc.clearRect(0, 0, cv.width, cv.height);
  lc.setTransform(dpr, 0, 0, dpr, 0, 0);
  return lc;
}

/** Start the edges bitmap of a new picture as the background and the target's band: edges go over them. */
function baseEdges(p: PaintInput, cache: PaintCache, edgesCv: HTMLCanvasElement, bgCv: HTMLCanvasElement) {
  const lc = edgesCv.getContext("2d");
  if (!lc) throw new Error("lmtt-widgets: no 2D canvas context for a graph layer");
  lc.setTransform(1, 0, 0, 1, 0, 0);
  lc.globalAlpha = 1;
  lc.drawImage(bgCv, 0, 0); // opaque: no need to clear first
  lc.setTransform(p.dpr, 0, 0, p.dpr, 0, 0);
  targetBand(lc, p);
  cache.based = true;
}

/** The target's column band, over the background. */
function targetBand(c: CanvasRenderingContext2D, p: PaintInput) {
  const { v, size, theme, target } = p;
  const [txc] = toScreen(v, target, 0);
  c.fillStyle = theme.accent;
  c.globalAlpha = 0.09;
  c.fillRect(txc - v.sx / 2, 0, v.sx, size.h);
  c.globalAlpha = 1;
}

/** Copy a whole bitmap (device px) onto `c`. */
function blit(c: CanvasRenderingContext2D, cv: HTMLCanvasElement) {
  c.save();
  c.setTransform(1, 0, 0, 1, 0, 0);
  c.globalAlpha = 1;
  c.drawImage(cv, 0, 0);
  c.restore();
}

/**
 * The background and the edges. The edges bitmap holds the background, the target's band and the edges over them
 * (one opaque bitmap to copy on a redraw that brings nothing new). A graph whose edges fit a frame (or `complete`)
 * is drawn in one go into it. A denser one starts a progressive job on a change (see graph-progress): its first
 * frame (what blocks the page after a τ change) draws the background and the job's preview, the heaviest edges,
 * straight onto the picture; each later draw adds a slice of the edges to the bitmap, back to front, and the picture
 * shows the preview until the bitmap is complete. A new key (graph, target, view, size, theme) replaces any pending
 * job, whose edges are then never drawn.
 */
function paintEdgeLayers(c: CanvasRenderingContext2D, p: PaintInput, cache: PaintCache, key: string, fresh: boolean, lay: GraphLayout, screen: () => [Float32Array, Float32Array], edgesCv: HTMLCanvasElement, bgCv: HTMLCanvasElement, attentionPx: number) {
  const W = edgesCv.width, H = edgesCv.height;
  const [first, slice] = p.budget ?? [FIRST_SLICE_US, SLICE_US];
  const job = cache.progress;
  if (fresh) {
    job.cancel();
    cache.based = false;
    cache.jobThin = null;
    const kx = attentionPx >= NARROW_FROM_PX ? THIN_KX : 1;
    const chunks = edgeChunks(p, lay, ...screen(), kx, p.dpr);
    let total = 0;
    for (const ch of chunks) total += ch.cost;
    if (p.complete || total <= Math.max(first, p.budget ? 0 : ONE_SHOT_US)) {
      baseEdges(p, cache, edgesCv, bgCv);
      const lc = edgesCv.getContext("2d") as CanvasRenderingContext2D;
      paintEdges(lc, p, lay, ...screen(), thinLayer(cache, lc, p.dpr, W, H, attentionPx));
      blit(c, edgesCv);
      return;
    }
    job.start(key, chunks, first);
    cache.jobKx = kx;
  } else if (job.pending(key)) {
    advanceJob(p, cache, key, lay, screen(), edgesCv, bgCv, p.complete ? Infinity : slice);
  }
  if (job.pending(key)) {
    // the preview: the background and the heaviest edges, straight onto the picture
    blit(c, bgCv);
    targetBand(c, p);
    const dashes: number[] = [];
    for (const ch of job.preview) paintChunk(c, p, lay, ch, ...screen(), 1, dashes);
  } else blit(c, edgesCv);
}

/**
 * The job's next slice of edges (`budget` estimated µs) into the edges bitmap, back to front as the one-shot painter
 * draws them: the thin attention curves of a dense graph into the narrow layer (see ThinLayer), flushed onto the
 * bitmap before the first edge drawn over them. Rasterised now, so that the picture's last frame does not pay for
 * every slice at once.
 */
function advanceJob(p: PaintInput, cache: PaintCache, key: string, lay: GraphLayout, [nx, ny]: [Float32Array, Float32Array], edgesCv: HTMLCanvasElement, bgCv: HTMLCanvasElement, budget: number) {
  if (!cache.based) baseEdges(p, cache, edgesCv, bgCv);
  const ec = edgesCv.getContext("2d") as CanvasRenderingContext2D;
  const dashes: number[] = [];
  for (const ch of cache.progress.take(key, budget)) {
    const narrow = cache.jobKx !== 1 && narrowLayer(ch.layer);
    if (!narrow && cache.jobThin) {
      cache.jobThin.flush();
      cache.jobThin = null;
    }
    // opened (cleared) at the first thin curve; the job already chose to draw narrow, hence no length threshold
    if (narrow) cache.jobThin ??= thinLayer(cache, ec, p.dpr, edgesCv.width, edgesCv.height, Infinity) ?? null;
    const lc = narrow && cache.jobThin ? cache.jobThin.c : ec;
    lc.setTransform(p.dpr, 0, 0, p.dpr, 0, 0);
    paintChunk(lc, p, lay, ch, nx, ny, cache.jobKx, dashes);
  }
  if (!cache.progress.pending(key) && cache.jobThin) {
    cache.jobThin.flush();
    cache.jobThin = null;
  }
  // a pixel read forces the canvas to rasterise what was drawn into it (it would otherwise wait for a later use)
  cache.jobThin?.c.getImageData(0, 0, 1, 1);
  ec.getImageData(0, 0, 1, 1);
}

/** What else the picture shows over the bitmaps: highlights, rings, the cursor, the labels' colours. */
function looksKey(p: PaintInput): string {
  return JSON.stringify([p.sel, p.hover, p.cursor, p.theme.muted, p.theme.font]);
}

/** The MLP blocks hit testing should know: the graph's, and a selected one (`${layer}:${token}`). */
export function hitMlpNodes(lay: GraphLayout, sel: Selection): Set<string> {
  if (!sel || (sel.kind !== "mlp" && sel.kind !== "neuron")) return lay.mlpNodes;
  const k = `${sel.layer}:${sel.token}`;
  return lay.mlpNodes.has(k) ? lay.mlpNodes : new Set(lay.mlpNodes).add(k);
}

/**
 * Paint everything. The background is drawn
 * once per view, size and theme, the edges and nodes once per graph too; later redraws composite them.
 */
export function paintGraph(p: PaintInput, cache: PaintCache): void {
  const { c, v, size, theme, g, L, target, sel, hover, cursor } = p;
  const lay = graphLayout(g);
  const W = Math.round(size.w * p.dpr);
  const H = Math.round(size.h * p.dpr);
  const bgKey = [v.sx, v.sy, v.tx, v.ty, W, H, p.dpr, p.T, L, theme.bg, theme.fg, theme.grid, theme.accent, theme.residual, theme.dark].join("|");
  // the edges bitmap holds the target's band too
  const key = `${graphId(g)}|${target}|${bgKey}`;
  const fresh = cache.key !== key;
  let nxy: [Float32Array, Float32Array] | null = null;
  const screen = () => (nxy ??= nodeScreen(lay, v));
  const bgCv = (cache.bg = layerCanvas(cache.bg, W, H));
  const edgesCv = (cache.edges = layerCanvas(cache.edges, W, H, true));
  const nodesCv = (cache.nodes = layerCanvas(cache.nodes, W, H));
  if (cache.bgKey !== bgKey) {
    paintBackground(clearLayer(bgCv, p.dpr), p);
    cache.bgKey = bgKey;
  }
  const looks = `${key}|${looksKey(p)}`;
  if (!fresh && !p.complete && cache.progress.pending(key) && cache.shown === looks) {
    // a later frame of a progressive job with nothing else new: edges added out of sight, the picture left as it is
    // until they are complete
    advanceJob(p, cache, key, lay, screen(), edgesCv, bgCv, (p.budget ?? [FIRST_SLICE_US, SLICE_US])[1]);
    if (cache.progress.pending(key)) return;
  }
  const attentionPx = lay.attentionSpan * v.sx * p.dpr;
  paintEdgeLayers(c, p, cache, key, fresh, lay, screen, edgesCv, bgCv, attentionPx);
  const zoom = Math.min(v.sx, v.sy) / 8;
  // a selected input token (embedding node): the routes that start at it
  if (sel && sel.kind === "node" && sel.node_kind === "embedding") {
    c.strokeStyle = theme.accent;
    c.globalAlpha = 0.5;
    for (const i of routesFrom(g, sel.token, sel.last ?? sel.token)) {
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
  composite(c, p, nodesCv, fresh, (lc) => paintNodes(lc, p, lay, ...screen()));
  cache.key = key;
  cache.shown = looks;
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
  c.font = `10px ${theme.font}`;
  c.textBaseline = "middle";
  const layerStep = Math.max(1, Math.ceil(13 / (2 * v.sy)));
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
}
