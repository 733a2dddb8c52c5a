/**
 * Progressive drawing of a dense graph's edges: the edges are cut into chunks of about CHUNK_US of estimated
 * rasterising work and drawn a frame's budget at a time, so that a τ change never holds the main thread for the whole
 * picture. Pure bookkeeping; the painting is graph-edges', the bitmaps graph-paint's.
 *
 * Order: the first frame after a change draws the background, the heavy edges (the heavy layers of EDGE_LAYERS
 * first: what the eye reads first) and the nodes straight onto the picture. The later frames draw every chunk, that
 * first share again included, back to front in the one-shot painter's order into the edges bitmap, out of sight; the
 * picture stays the first frame's until the bitmap is complete, and then shows it as drawn in one go. So a later
 * frame composites nothing, and the picture still ends up the same.
 */
/**
 * Estimated µs of edges drawn in the first frame after a change (which also decodes the graph, lays it out and draws
 * the background and the nodes) and in each later frame (which only draws edges, out of sight). Calibrated on the real SmolLM2 route at
 * τ = 0.005 (see README, "Browser: redrawing the flow graph by τ").
 */
export const FIRST_SLICE_US = 1000;
export const SLICE_US = 3000;
/** A graph whose edges are estimated at most this is drawn in one go (one frame holds it). */
export const ONE_SHOT_US = 3000;

/**
 * Back-to-front layers of the edges, what the first frame's choice goes by: per kind (residual, MLP) its light bins
 * then its heavy ones (HEAVY_FROM_BIN up); attention: the light thin curves, the heavy thin curves (both maybe
 * narrow, see ThinLayer), the wide ones (over HAIRLINE_MAX px; a stroke's width grows with its weight, so they are
 * the heaviest).
 */
export const EDGE_LAYERS = 7;
/** The light thin attention curves' layer (the bulk of a dense graph's work); it and the next may be narrow. */
export const THIN_ATTENTION = 4;
/** Weight bins from this one up (t ≥ 1/4, weight ≥ 1/16 of the largest) are heavy: drawn first. */
export const HEAVY_FROM_BIN = 4;
/**
 * Which layers the first frame's preview takes first: the heavy attention curves (thin and wide: the flow between
 * tokens, and few), then the heavy residual lines and MLP dashes, what the eye reads first; then the light residual
 * lines, light MLP dashes and last the light attention curves (the bulk of a dense graph's work).
 */
const LAYER_RANK = [2, 1, 3, 1, 4, 0, 0];

/** The layer of a (kind index in EDGE_KINDS, weight bin) bucket, drawn thin (a hairline) or wide. */
export function edgeLayer(ki: number, bin: number, thin: boolean): number {
  const heavy = bin >= HEAVY_FROM_BIN ? 1 : 0;
  if (ki < 2) return 2 * ki + heavy;
  return thin ? THIN_ATTENTION + heavy : THIN_ATTENTION + 2;
}

/** Whether a layer holds thin attention curves (drawn narrow in a dense graph, see ThinLayer). */
export function narrowLayer(l: number): boolean {
  return l === THIN_ATTENTION || l === THIN_ATTENTION + 1;
}

export interface EdgeChunk {
  /** layer (0 .. EDGE_LAYERS - 1) */
  layer: number;
  /** (kind, weight bin) bucket of GraphLayout; a higher weight bin is heavier */
  bucket: number;
  /** its weight bin */
  bin: number;
  /** range of edges (lay.order) or, for residual edges, of runs (lay.runs) */
  from: number;
  to: number;
  /** estimated µs of rasterising */
  cost: number;
}

/**
 * Cut one bucket's items (with their estimated costs) into contiguous chunks of at most `max` (each holding at least
 * one item); items costing 0 (off screen) ride along. Returns [from, to, cost] triples.
 */
export function splitByCost(costs: ArrayLike<number>, from: number, to: number, max: number): [number, number, number][] {
  const out: [number, number, number][] = [];
  let s = from, sum = 0;
  for (let i = from; i < to; i++) {
    const c = costs[i - from];
    if (i > s && sum + c > max) {
      out.push([s, i, sum]);
      s = i;
      sum = 0;
    }
    sum += c;
  }
  if (to > s) out.push([s, to, sum]);
  return out;
}

/**
 * The first frame's order: by LAYER_RANK (the heavy edges first), and within a layer lightest bucket first and a bucket's
 * chunks in their own order (back to front, as drawn in one go).
 */
export function orderChunks<T extends EdgeChunk>(chunks: T[]): T[] {
  return chunks
    .map((c, i) => [c, i] as const)
    .sort((a, b) => LAYER_RANK[a[0].layer] - LAYER_RANK[b[0].layer] || a[0].layer - b[0].layer || a[0].bucket - b[0].bucket || a[1] - b[1])
    .map(([c]) => c);
}

/** End (exclusive) of the slice that starts at `from`: chunks while their costs fit `budget`, always at least one. */
export function sliceEnd(chunks: readonly EdgeChunk[], from: number, budget: number): number {
  let end = from, sum = 0;
  while (end < chunks.length && (end === from || sum + chunks[end].cost <= budget)) sum += chunks[end++].cost;
  return end;
}

/**
 * One picture's pending edges: what is drawn so far and for what (the key of graph, view, size and theme). The
 * chunks are handed out in the order given (back to front, as the one-shot painter draws them, so that they can go
 * straight into one bitmap); `preview` is the first frame's share, the heavy edges first (see orderChunks), which
 * the first frame draws over the background while the rest is drawn out of sight. A job for another key is stale:
 * `take` gives nothing from it, so no edge of an old graph lands on a new picture.
 */
export class EdgeProgress<T extends EdgeChunk = EdgeChunk> {
  key = "";
  order: T[] = [];
  next = 0;
  preview: T[] = [];

  /** A job for `key`: `chunks` in drawing order, the preview the heaviest of them within `first` (estimated µs). */
  start(key: string, chunks: T[], first: number): void {
    this.key = key;
    this.order = chunks;
    this.next = 0;
    const heavyFirst = orderChunks(chunks);
    // chosen heavy first, drawn back to front (the order given)
    const chosen = new Set(heavyFirst.slice(0, sliceEnd(heavyFirst, 0, first)));
    this.preview = chunks.filter((c) => chosen.has(c));
  }

  cancel(): void {
    this.key = "";
    this.order = [];
    this.next = 0;
    this.preview = [];
  }

  /** Whether the job for `key` still has chunks to draw. */
  pending(key: string): boolean {
    return key === this.key && this.next < this.order.length;
  }

  /** The next slice for `key` (all that is left when budget is Infinity); none when the job is for another key. */
  take(key: string, budget: number): T[] {
    if (key !== this.key) return [];
    const end = sliceEnd(this.order, this.next, budget);
    const out = this.order.slice(this.next, end);
    this.next = end;
    return out;
  }
}
