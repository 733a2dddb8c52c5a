/**
 * What drawing a graph needs that depends on the graph alone, computed once per graph (not per frame): edges
 * grouped into style buckets (kind × weight bin, in drawing order), each node's world position, importance and
 * colour bin, and the MLP blocks present (for hit testing).
 */
import { nodeImportance, WEIGHT_BINS, weightBin } from "./draw";
import { MLP_DX } from "./geometry";
import type { EdgeKindName } from "./protocol.gen";
import { rowOf } from "./state";
import type { GraphData } from "./state";

/** Edge kinds in drawing order (later ones on top); names from the protocol. */
export const EDGE_KINDS = ["residual", "mlp", "attention"] as const satisfies readonly EdgeKindName[];
/** Colour levels of node fills: 64 steps of the importance ramp are closer than the eye can tell apart. */
export const NODE_BINS = 64;

export interface GraphLayout {
  /** Edge indices sorted by bucket; bucket b holds order[start[b] .. start[b+1]). */
  order: Uint32Array;
  start: Uint32Array;
  /** World column and row of each node. */
  col: Float32Array;
  row: Float32Array;
  /** Node importance in [0, 1] and its colour bin. */
  importance: Float32Array;
  colorBin: Uint8Array;
  /** MLP blocks in the graph, `${layer}:${token}`. */
  mlpNodes: Set<string>;
  /**
   * Residual edges as runs: each weight bin's edges that stack in one column, end to end, merged into one span,
   * as [lower node, upper node] pairs; bin b holds pairs runStart[b] .. runStart[b+1]. An edge that is not
   * vertical (its two nodes in different columns) is a pair of its own.
   */
  runs: Uint32Array;
  runStart: Uint32Array;
  /** Columns the attention edges span, summed: their drawn length in px is about this times px per column. */
  attentionSpan: number;
  /** Node indices by colour bin, lowest first (the order nodes are stamped in), by index within a bin. */
  nodeOrder: Uint32Array;
  /** How many nodes are flagged cancelling / external (the status line says so). */
  cancelling: number;
  external: number;
}

/** Bucket of an edge: its kind's place in EDGE_KINDS × WEIGHT_BINS + its weight bin; -1 for an unknown kind. */
export function edgeBucket(kind: string, t: number): number {
  const k = (EDGE_KINDS as readonly string[]).indexOf(kind);
  return k < 0 ? -1 : k * WEIGHT_BINS + weightBin(t);
}

/** Counting sort of the edges by bucket (stable: within a bucket, edges keep their order). */
export function bucketEdges(g: GraphData): { order: Uint32Array; start: Uint32Array } {
  const nb = EDGE_KINDS.length * WEIGHT_BINS;
  const bucket = new Int32Array(g.e);
  const count = new Uint32Array(nb + 1);
  for (let i = 0; i < g.e; i++) {
    const t = g.maxWeight > 0 ? Math.sqrt(Math.max(0, g.edgeWeight[i]) / g.maxWeight) : 0;
    const b = edgeBucket(g.edgeKind[i], t);
    bucket[i] = b;
    if (b >= 0) count[b + 1]++;
  }
  for (let b = 0; b < nb; b++) count[b + 1] += count[b];
  const start = count.slice();
  const fill = count.slice(0, nb);
  const order = new Uint32Array(start[nb]);
  for (let i = 0; i < g.e; i++) if (bucket[i] >= 0) order[fill[bucket[i]]++] = i;
  return { order, start };
}

/** Indices 0 .. keys.length - 1 sorted by key (each below `nk`), stably: a counting sort. */
export function countingOrder(keys: ArrayLike<number>, nk: number): Uint32Array {
  const next = new Uint32Array(nk + 1);
  for (let i = 0; i < keys.length; i++) next[keys[i] + 1]++;
  for (let k = 0; k < nk; k++) next[k + 1] += next[k];
  const out = new Uint32Array(keys.length);
  for (let i = 0; i < keys.length; i++) out[next[keys[i]]++] = i;
  return out;
}

export function colorBin(t: number): number {
  return Math.max(0, Math.min(NODE_BINS - 1, Math.floor(t * NODE_BINS)));
}

/**
 * The residual runs of GraphLayout: within each weight bin, the vertical edges of one column sorted by row and
 * merged where they touch (a filled union draws the same pixels as its parts, with far fewer shapes to fill).
 */
export function residualRuns(g: GraphData, order: Uint32Array, start: Uint32Array, col: Float32Array, row: Float32Array) {
  const k = EDGE_KINDS.indexOf("residual");
  const pairs: number[] = [];
  const runStart = new Uint32Array(WEIGHT_BINS + 1);
  for (let b = 0; b < WEIGHT_BINS; b++) {
    runStart[b] = pairs.length / 2;
    const lowHigh: [number, number][] = [];
    for (let j = start[k * WEIGHT_BINS + b]; j < start[k * WEIGHT_BINS + b + 1]; j++) {
      const i = order[j];
      const s = g.edgeSrc[i], d = g.edgeDst[i];
      if (col[s] !== col[d]) pairs.push(s, d);
      else lowHigh.push(row[s] <= row[d] ? [s, d] : [d, s]);
    }
    lowHigh.sort((p, q) => col[p[0]] - col[q[0]] || row[p[0]] - row[q[0]]);
    let cur: [number, number] | null = null;
    for (const e of lowHigh) {
      if (cur && col[e[0]] === col[cur[0]] && row[e[0]] <= row[cur[1]]) {
        if (row[e[1]] > row[cur[1]]) cur[1] = e[1];
        continue;
      }
      if (cur) pairs.push(cur[0], cur[1]);
      cur = [e[0], e[1]];
    }
    if (cur) pairs.push(cur[0], cur[1]);
  }
  runStart[WEIGHT_BINS] = pairs.length / 2;
  return { runs: Uint32Array.from(pairs), runStart };
}

function mlpSet(g: GraphData): Set<string> {
  const out = new Set<string>();
  for (let i = 0; i < g.n; i++) if (g.nodeKind[i] === "mlp") out.add(`${g.nodeLayer[i]}:${g.nodeToken[i]}`);
  return out;
}

const cache = new WeakMap<GraphData, GraphLayout>();

export function graphLayout(g: GraphData): GraphLayout {
  let lay = cache.get(g);
  if (lay) return lay;
  const { order, start } = bucketEdges(g);
  const col = new Float32Array(g.n);
  const row = new Float32Array(g.n);
  const importance = nodeImportance(g);
  const bins = new Uint8Array(g.n);
  for (let i = 0; i < g.n; i++) {
    const kind = g.nodeKind[i];
    col[i] = kind === "mlp" ? g.nodeToken[i] + MLP_DX : g.nodeToken[i];
    row[i] = rowOf(kind, g.nodeLayer[i]);
    bins[i] = colorBin(importance[i]);
  }
  let attentionSpan = 0;
  for (let i = 0; i < g.e; i++) if (g.edgeKind[i] === "attention") attentionSpan += Math.abs(col[g.edgeSrc[i]] - col[g.edgeDst[i]]);
  const nodeOrder = countingOrder(bins, NODE_BINS);
  let cancelling = 0, external = 0;
  for (let i = 0; i < g.n; i++) {
    if (g.nodeCancelling[i]) cancelling++;
    if (g.nodeExternal[i]) external++;
  }
  let mlpNodes: Set<string> | null = null;
  lay = {
    // only hit testing asks, and not on every graph: built then
    get mlpNodes() {
      return (mlpNodes ??= mlpSet(g));
    },
    order, start, col, row, importance, colorBin: bins, ...residualRuns(g, order, start, col, row), attentionSpan, nodeOrder, cancelling, external,
  };
  cache.set(g, lay);
  return lay;
}
