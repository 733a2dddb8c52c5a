/**
 * Routes traced in the page, for the offline report: the same algorithm as `contributions/graph.py` `route()`
 * (kept parts of each update > τ, renormalised; traced back from the target's top node), run on the sparse scores
 * the report carries (every part above the report's lowest τ). Output: the `graph` trait's arrays
 * (`payload.graph_arrays`), edges in the same order, so a route drawn from a report equals the kernel's.
 */
import type { ArrayDict } from "./codec";

/** Decoded `flow` section of a report (see report.py `flow_scores`). Per-update arrays are [L*T], row = l*T + i. */
export interface FlowScores {
  L: number;
  T: number;
  H: number;
  parallel: boolean;
  /** smallest τ the sparse parts are complete for */
  floor: number;
  residAttn: Float32Array;
  biasAttn: Float32Array;
  externalAttn: Float32Array;
  mlp: Float32Array;
  residMlp: Float32Array;
  externalMlp: Float32Array;
  /** per-head parts of attention updates (CSR over rows; `headCol` = j*H + h, ascending within a row) */
  headPtr: Uint32Array;
  headCol: Uint32Array;
  headVal: Float32Array;
  /** head-summed edges (CSR over rows, `edgeSrc` ascending within a row) */
  edgePtr: Uint32Array;
  edgeSrc: Uint32Array;
  edgeVal: Float32Array;
  cancelling: Int32Array;
  external: Int32Array;
}

const EMBEDDING = 0;
const AFTER_ATTENTION = 1;
const MLP = 2;
const AFTER_MLP = 3;
const RESIDUAL = 0;
const ATTENTION = 1;
const MLP_EDGE = 2;

function nodeId(kind: number, layer: number, token: number, T: number): number {
  return kind === EMBEDDING ? token : T * (1 + 3 * layer + (kind - 1)) + token;
}

function nodeOf(nid: number, T: number): [number, number, number] {
  const block = Math.floor(nid / T);
  const token = nid - block * T;
  if (block === 0) return [EMBEDDING, -1, token];
  const layer = Math.floor((block - 1) / 3);
  return [((block - 1) % 3) + 1, layer, token];
}

interface Edges {
  src: number[];
  dst: number[];
  w: number[];
  kind: number[];
  heads: Float32Array[];
}

const keep = (v: number, tau: number) => (v > tau ? v : 0);

/** Kept parts of the attention update at (layer, i), renormalised: [residual, sources by j ascending, mlp]. */
function attentionParts(f: FlowScores, layer: number, i: number, tau: number, gran: string): [number, [number, number, Float32Array][], number] {
  const row = layer * f.T + i;
  const H = f.H;
  const resid = keep(f.residAttn[row], tau);
  const bias = keep(f.biasAttn[row], tau);
  const external = keep(f.externalAttn[row], tau);
  const mlp = f.parallel ? keep(f.mlp[row], tau) : 0;
  const sources = new Map<number, [number, Float32Array]>();
  // Python compares the float32 score tensors with τ cast to float32, and its float scalars in double
  const tau32 = Math.fround(tau);
  const h0 = f.headPtr[row];
  const h1 = f.headPtr[row + 1];
  if (gran === "head") {
    for (let k = h0; k < h1; k++) {
      const v = f.headVal[k];
      if (!(v > tau32)) continue;
      const j = Math.floor(f.headCol[k] / H);
      const s = sources.get(j) ?? [0, new Float32Array(H)];
      s[1][f.headCol[k] - j * H] = v;
      s[0] += v;
      sources.set(j, s);
    }
  } else {
    for (let k = f.edgePtr[row]; k < f.edgePtr[row + 1]; k++) {
      const v = f.edgeVal[k];
      if (!(v > tau32)) continue;
      const j = f.edgeSrc[k];
      const hv = new Float32Array(H);
      for (let q = h0; q < h1; q++) if (Math.floor(f.headCol[q] / H) === j) hv[f.headCol[q] - j * H] = f.headVal[q];
      sources.set(j, [v, hv]);
    }
  }
  let summed = 0; // summed apart, then added: Python's order, so the totals agree to the last bit
  for (const [w] of sources.values()) summed += w;
  const total = resid + bias + mlp + external + summed;
  if (total <= 0) return [0, [], 0];
  const list = [...sources.entries()].sort((a, b) => a[0] - b[0]);
  return [resid / total, list.map(([j, [w, hv]]) => [j, w / total, hv.map((x) => x / total)]), mlp / total];
}

function mlpParts(f: FlowScores, layer: number, i: number, tau: number): [number, number] {
  const row = layer * f.T + i;
  const resid = keep(f.residMlp[row], tau);
  const mlp = keep(f.mlp[row], tau);
  const total = resid + mlp + keep(f.externalMlp[row], tau);
  return total > 0 ? [resid / total, mlp / total] : [0, 0];
}

function add(e: Edges, src: number, dst: number, w: number, kind: number, H: number, heads?: Float32Array) {
  e.src.push(src);
  e.dst.push(dst);
  e.w.push(w);
  e.kind.push(kind);
  e.heads.push(heads ?? new Float32Array(H));
}

/** The important subgraph traced back from `target`'s top node, as the `graph` trait's array dicts. */
export function traceRoute(f: FlowScores, target: number, tau: number, gran: string): Record<string, ArrayDict> {
  const { L, T, H, parallel } = f;
  const e: Edges = { src: [], dst: [], w: [], kind: [], heads: [] };
  let active = new Set<number>([target]);
  for (let layer = L - 1; layer >= 0; layer--) {
    const below = new Set<number>();
    const srcId = (j: number) => (layer === 0 ? nodeId(EMBEDDING, -1, j, T) : nodeId(AFTER_MLP, layer - 1, j, T));
    const attnTargets = new Set<number>();
    for (const i of [...active].sort((a, b) => a - b)) {
      if (parallel) {
        attnTargets.add(i);
        continue;
      }
      const out = nodeId(AFTER_MLP, layer, i, T);
      const mid = nodeId(AFTER_ATTENTION, layer, i, T);
      const [r, m] = mlpParts(f, layer, i, tau);
      if (r > 0) add(e, mid, out, r, RESIDUAL, H);
      if (m > 0) {
        const mlpNode = nodeId(MLP, layer, i, T);
        add(e, mlpNode, out, m, MLP_EDGE, H);
        add(e, mid, mlpNode, m, MLP_EDGE, H);
      }
      if (r > 0 || m > 0) attnTargets.add(i);
    }
    for (const i of [...attnTargets].sort((a, b) => a - b)) {
      const dst = nodeId(parallel ? AFTER_MLP : AFTER_ATTENTION, layer, i, T);
      const [r, sources, m] = attentionParts(f, layer, i, tau, gran);
      if (r > 0) {
        add(e, srcId(i), dst, r, RESIDUAL, H);
        below.add(i);
      }
      for (const [j, w, hv] of sources) {
        add(e, srcId(j), dst, w, ATTENTION, H, hv);
        below.add(j);
      }
      if (parallel && m > 0) {
        const mlpNode = nodeId(MLP, layer, i, T);
        add(e, mlpNode, dst, m, MLP_EDGE, H);
        add(e, srcId(i), mlpNode, m, MLP_EDGE, H);
        below.add(i);
      }
    }
    active = below;
  }
  return graphArrays(f, e, nodeId(AFTER_MLP, L - 1, target, T));
}

function dict(data: Float32Array | Uint32Array | Int32Array | Uint8Array, shape: number[]): ArrayDict {
  const dtype = data instanceof Float32Array ? "float32" : data instanceof Uint32Array ? "uint32" : data instanceof Int32Array ? "int32" : "uint8";
  return { dtype, shape, data: new DataView(data.buffer, data.byteOffset, data.byteLength) };
}

/** `payload.graph_arrays`: nodes are the sorted ids touched by an edge plus the target's top node. */
function graphArrays(f: FlowScores, e: Edges, top: number): Record<string, ArrayDict> {
  const ids = [...new Set([...e.src, ...e.dst, top])].sort((a, b) => a - b);
  const index = new Map(ids.map((n, k) => [n, k]));
  const n = ids.length;
  const E = e.src.length;
  const kind = new Uint8Array(n);
  const layer = new Int32Array(n);
  const token = new Uint32Array(n);
  const cancel = new Set(f.cancelling);
  const ext = new Set(f.external);
  const cancelling = new Uint8Array(n);
  const external = new Uint8Array(n);
  ids.forEach((id, k) => {
    [kind[k], layer[k], token[k]] = nodeOf(id, f.T);
    cancelling[k] = cancel.has(id) ? 1 : 0;
    external[k] = ext.has(id) ? 1 : 0;
  });
  const heads = new Float32Array(E * f.H);
  e.heads.forEach((hv, k) => heads.set(hv, k * f.H));
  return {
    node_kind: dict(kind, [n]),
    node_layer: dict(layer, [n]),
    node_token: dict(token, [n]),
    edge_src: dict(Uint32Array.from(e.src, (s) => index.get(s)!), [E]),
    edge_dst: dict(Uint32Array.from(e.dst, (d) => index.get(d)!), [E]),
    edge_weight: dict(Float32Array.from(e.w), [E]),
    edge_kind: dict(Uint8Array.from(e.kind), [E]),
    edge_heads: dict(heads, [E, f.H]),
    node_cancelling: dict(cancelling, [n]),
    node_external: dict(external, [n]),
  };
}
