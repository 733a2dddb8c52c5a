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
