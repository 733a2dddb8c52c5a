/** The five-node graph the unit tests share: one token's layer 0 with its embedding, attention, MLP and residual. */
import { encodeArray } from "../codec";
import { decodeGraph } from "../state";

export function tinyGraph() {
  // nodes: 0 emb t0, 1 emb t1, 2 after_attn L0 t1, 3 mlp L0 t1, 4 after_mlp L0 t1
  return decodeGraph({
    node_kind: encodeArray(new Uint8Array([0, 0, 1, 2, 3]), [5]),
    node_layer: encodeArray(new Int32Array([-1, -1, 0, 0, 0]), [5]),
    node_token: encodeArray(new Uint32Array([0, 1, 1, 1, 1]), [5]),
    edge_src: encodeArray(new Uint32Array([0, 1, 2, 3, 2]), [5]),
    edge_dst: encodeArray(new Uint32Array([2, 2, 3, 4, 4]), [5]),
    edge_weight: encodeArray(new Float32Array([0.6, 0.4, 0.3, 0.3, 0.7]), [5]),
    edge_kind: encodeArray(new Uint8Array([1, 0, 2, 2, 0]), [5]),
    edge_heads: encodeArray(new Float32Array(5 * 2), [5, 2]),
  });
}

/** A denser graph: tokens × layers of the tiny graph's pattern, with attention edges between every pair of columns. */
export function denseGraph(T = 12, seed = 7) {
  let s = seed;
  const rnd = () => ((s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const kind: number[] = [], layer: number[] = [], token: number[] = [];
  const node = (k: number, l: number, t: number) => (kind.push(k), layer.push(l), token.push(t), kind.length - 1);
  const emb = Array.from({ length: T }, (_, t) => node(0, -1, t));
  const attn = Array.from({ length: T }, (_, t) => node(1, 0, t));
  const mlp = Array.from({ length: T }, (_, t) => node(2, 0, t));
  const out = Array.from({ length: T }, (_, t) => node(3, 0, t));
  const src: number[] = [], dst: number[] = [], w: number[] = [], ek: number[] = [];
  const edge = (a: number, b: number, k: number) => (src.push(a), dst.push(b), w.push(rnd() ** 3), ek.push(k));
  for (let t = 0; t < T; t++) {
    edge(emb[t], attn[t], 0);
    edge(attn[t], mlp[t], 2);
    edge(mlp[t], out[t], 2);
    edge(attn[t], out[t], 0);
    for (let u = 0; u < t; u++) edge(emb[u], attn[t], 1);
  }
  const E = src.length, N = kind.length;
  return decodeGraph({
    node_kind: encodeArray(new Uint8Array(kind), [N]),
    node_layer: encodeArray(new Int32Array(layer), [N]),
    node_token: encodeArray(new Uint32Array(token), [N]),
    edge_src: encodeArray(new Uint32Array(src), [E]),
    edge_dst: encodeArray(new Uint32Array(dst), [E]),
    edge_weight: encodeArray(new Float32Array(w), [E]),
    edge_kind: encodeArray(new Uint8Array(ek), [E]),
    edge_heads: encodeArray(new Float32Array(E * 2), [E, 2]),
  });
}

