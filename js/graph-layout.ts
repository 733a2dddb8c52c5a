/**
 * What drawing a graph needs that depends on the graph alone, computed once per graph (not per frame): edges
 * grouped into style buckets (kind × weight bin, in drawing order), each node's world position, importance and
 * colour bin, and the MLP blocks present (for hit testing).
 */
import { nodeImportance, WEIGHT_BINS, weightBin } from "./draw";
import { nodeWorld } from "./geometry";
import type { EdgeKindName } from "./protocol.gen";
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

export function colorBin(t: number): number {
  return Math.max(0, Math.min(NODE_BINS - 1, Math.floor(t * NODE_BINS)));
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
  const mlpNodes = new Set<string>();
  for (let i = 0; i < g.n; i++) {
    const [c, r] = nodeWorld(g.nodeKind[i], g.nodeLayer[i], g.nodeToken[i]);
    col[i] = c;
    row[i] = r;
    bins[i] = colorBin(importance[i]);
    if (g.nodeKind[i] === "mlp") mlpNodes.add(`${g.nodeLayer[i]}:${g.nodeToken[i]}`);
  }
  lay = { order, start, col, row, importance, colorBin: bins, mlpNodes };
  cache.set(g, lay);
  return lay;
}
