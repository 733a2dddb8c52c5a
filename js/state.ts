/** Decoded views of model traits, cached by trait-object identity. */
import { decodeArray, decodeDict, NDArray, shapeProblems, type ArraySpec } from "./codec";
import { ARRAY_FIELDS, EDGE_KINDS, NODE_KINDS, PYTHON_ONLY, ROW_OFFSET, TRAIT_ARRAYS } from "./protocol.gen";
import type { SelectableNodeKind } from "./protocol.gen";
import type { Meta, NodeKindName, Selection, WidgetModel } from "./types";

/** The kind names of the codes in `graph.node_kind` / `edge_kind` when `meta` does not list them. */
export const DEFAULT_NODE_KINDS: readonly NodeKindName[] = NODE_KINDS;
export const DEFAULT_EDGE_KINDS: readonly string[] = EDGE_KINDS;

export interface GraphData {
  n: number; // nodes
  e: number; // edges
  nodeKind: NodeKindName[]; // per node
  nodeLayer: Int32Array;
  nodeToken: Uint32Array;
  nodeCancelling: Uint8Array; // 1: the update into this node cancelled (its importances are an even split)
  nodeExternal: Uint8Array; // 1: the update into this node holds an external edit (a hook changed the stream)
  edgeSrc: Uint32Array;
  edgeDst: Uint32Array;
  edgeWeight: Float32Array;
  edgeKind: string[]; // per edge kind name (a kind this bundle does not know stays as sent: it is not drawn)
  edgeHeads: NDArray | null; // [E, H]
  maxWeight: number;
}

const EMPTY_GRAPH: GraphData = {
  n: 0,
  e: 0,
  nodeKind: [],
  nodeLayer: new Int32Array(0),
  nodeToken: new Uint32Array(0),
  nodeCancelling: new Uint8Array(0),
  nodeExternal: new Uint8Array(0),
  edgeSrc: new Uint32Array(0),
  edgeDst: new Uint32Array(0),
  edgeWeight: new Float32Array(0),
  edgeKind: [],
  edgeHeads: null,
  maxWeight: 0,
};

const EMPTY_TOKENS: string[] = [];
const cache = new WeakMap<object, unknown>();
function cached<T>(key: unknown, f: () => T): T {
  if (!key || typeof key !== "object") return f();
  if (cache.has(key)) return cache.get(key) as T;
  const v = f();
  cache.set(key, v);
  return v;
}

export function getMeta(model: WidgetModel): Meta {
  const m = model.get("meta");
  return m && typeof m === "object" ? (m as Meta) : {};
}

export function getTokens(model: WidgetModel): string[] {
  const t = model.get("tokens");
  if (!Array.isArray(t)) return EMPTY_TOKENS;
  return cached(t, () => t.map((x) => (typeof x === "string" ? x : String(x))));
}

export function dims(model: WidgetModel): { L: number; H: number; T: number } {
  const meta = getMeta(model);
  const T = Number(meta.n_tokens ?? getTokens(model).length) || getTokens(model).length;
  let L = Number(meta.n_layers ?? 0);
  let H = Number(meta.n_heads ?? 0);
  if (!L || !H) {
    const hi = getHeadImportance(model);
    if (hi) {
      L = L || hi.shape[0];
      H = H || hi.shape[1];
    }
  }
  return { L: L | 0, H: H | 0, T: T | 0 };
}

export function getTarget(model: WidgetModel): number {
  const t = Number(model.get("target"));
  const T = dims(model).T;
  if (!Number.isFinite(t)) return Math.max(0, T - 1);
  return Math.max(0, Math.min(T - 1, t | 0));
}

export function getSelection(model: WidgetModel): Selection {
  const s = model.get("selection");
  return s && typeof s === "object" && typeof (s as any).kind === "string" ? (s as Selection) : null;
}

/** Token the token-dependent panes look at: the selection's token, else `target`. */
export function focusToken(model: WidgetModel): number {
  const s = getSelection(model);
  if (s && Number.isFinite((s as any).token)) return (s as any).token;
  return getTarget(model);
}

export function getGraph(model: WidgetModel): GraphData {
  const raw = model.get("graph");
  const meta = getMeta(model);
  return cached(raw, () => decodeGraph(raw, meta));
}

export function decodeGraph(raw: unknown, meta: Meta = {}): GraphData {
  if (!raw || typeof raw !== "object") return EMPTY_GRAPH;
  const d = decodeDict(raw);
  const nk: readonly string[] = meta.node_kinds?.length ? meta.node_kinds : DEFAULT_NODE_KINDS;
  const ek: readonly string[] = meta.edge_kinds?.length ? meta.edge_kinds : DEFAULT_EDGE_KINDS;
  const kindArr = d.node_kind?.data ?? new Uint8Array(0);
  const n = kindArr.length;
  const nodeKind = Array.from(kindArr, (k) => (nk[k] ?? "after_mlp") as NodeKindName);
  const nodeLayer = d.node_layer ? Int32Array.from(d.node_layer.data) : new Int32Array(n);
  const nodeToken = d.node_token ? Uint32Array.from(d.node_token.data) : new Uint32Array(n);
  const nodeCancelling = d.node_cancelling ? Uint8Array.from(d.node_cancelling.data) : new Uint8Array(n);
  const nodeExternal = d.node_external ? Uint8Array.from(d.node_external.data) : new Uint8Array(n);
  const edgeSrc = (d.edge_src?.data as Uint32Array) ?? new Uint32Array(0);
  const e = edgeSrc.length;
  const edgeDst = (d.edge_dst?.data as Uint32Array) ?? new Uint32Array(e);
  const edgeWeight = d.edge_weight ? Float32Array.from(d.edge_weight.data) : new Float32Array(e);
  const ekArr = d.edge_kind?.data ?? new Uint8Array(e);
  const edgeKind = Array.from(ekArr, (k) => ek[k] ?? "residual");
  let maxWeight = 0;
  for (let i = 0; i < e; i++) if (edgeWeight[i] > maxWeight) maxWeight = edgeWeight[i];
  return {
    n,
    e: Math.min(e, edgeDst.length, edgeWeight.length),
    nodeKind,
    nodeLayer,
    nodeToken,
    nodeCancelling,
    nodeExternal,
    edgeSrc,
    edgeDst,
    edgeWeight,
    edgeKind,
    edgeHeads: d.edge_heads ?? null,
    maxWeight,
  };
}

export function getHeadImportance(model: WidgetModel): NDArray | null {
  const raw = model.get("head_importance");
  return cached(raw, () => {
    try {
      return decodeArray(raw);
    } catch {
      return null;
    }
  });
}

export function getBlockImportance(model: WidgetModel): Record<string, NDArray> {
  const raw = model.get("block_importance");
  return cached(raw, () => decodeDict(raw));
}

export function getNeurons(model: WidgetModel): Record<string, NDArray> {
  const raw = model.get("neurons");
  return cached(raw, () => decodeDict(raw));
}

export interface LensData {
  rows: number;
  ids: NDArray | null;
  probs: NDArray | null;
  rankPrev: NDArray | null;
  strings: Record<string, string>;
  /** Token position the column describes (`lens.token`), null when Python did not say (then: `target`). */
  token: number | null;
}

export function getLens(model: WidgetModel): LensData | null {
  const raw = model.get("lens");
  if (!raw || typeof raw !== "object") return null;
  return cached(raw, () => {
    const d = decodeDict(raw);
    const r = raw as any;
    return {
      rows: Number(r.rows ?? d.ids?.shape[0] ?? 0),
      ids: d.ids ?? null,
      probs: d.probs ?? null,
      rankPrev: d.rank_prev ?? null,
      strings: r.strings && typeof r.strings === "object" ? r.strings : {},
      token: Number.isInteger(r.token) ? Number(r.token) : null,
    };
  });
}

/** Residual row of a node (the protocol's ROW_OFFSET): 0 embeddings, 2l+1 after attention, 2l+1.5 the MLP, 2l+2 after
 * MLP. An unknown kind is drawn as after MLP. */
export function rowOf(kind: string, layer: number): number {
  if (kind === "embedding" || layer < 0) return 0;
  return 2 * layer + (ROW_OFFSET[kind as NodeKindName] ?? ROW_OFFSET.after_mlp);
}

export function rowToNode(row: number): { node_kind: SelectableNodeKind; layer: number } {
  if (row <= 0) return { node_kind: "embedding", layer: -1 };
  if (row % 2 === 1) return { node_kind: "after_attention", layer: (row - 1) / 2 };
  return { node_kind: "after_mlp", layer: row / 2 - 1 };
}

export function rowLabel(row: number): string {
  const n = rowToNode(row);
  if (n.node_kind === "embedding") return "embeddings";
  return `L${n.layer} ${n.node_kind === "after_attention" ? "after attention" : "after MLP"}`;
}

function problemsOf(raw: unknown, spec: Readonly<Record<string, ArraySpec>>, sizes: Record<string, number>): string[] {
  if (!raw || typeof raw !== "object" || Object.keys(raw).length === 0) return []; // {}: not computed yet
  try {
    return shapeProblems(decodeDict(raw), spec, { ...sizes });
  } catch (e) {
    return [String(e)];
  }
}

/**
 * Where the traits Python sent differ from the protocol this bundle was built with (a kernel and a front end of
 * different versions): "graph: edge_src is missing". Decoders fall back to empty data; this says why.
 */
export function protocolProblems(model: WidgetModel): string[] {
  const { L, H, T } = dims(model);
  const sizes: Record<string, number> = L && H && T ? { L, H, T, R: 2 * L + 1 } : {};
  const out: string[] = [];
  for (const [trait, where] of Object.entries(TRAIT_ARRAYS)) {
    if (!(PYTHON_ONLY as readonly string[]).includes(trait)) continue; // report-only variants: checked in Python
    const raw = model.get(trait as keyof typeof TRAIT_ARRAYS) as unknown;
    let found: string[] = [];
    if ("array" in where) {
      found = raw && typeof raw === "object" && Object.keys(raw).length ? problemsOf({ [trait]: raw }, { [trait]: where.array }, sizes) : [];
    } else if ("struct" in where) {
      found = problemsOf(raw, ARRAY_FIELDS[where.struct], sizes);
    } else if (raw && typeof raw === "object") {
      for (const v of Object.values(raw)) found.push(...problemsOf(v, ARRAY_FIELDS[where.mapOf], sizes));
    }
    out.push(...found.map((f) => `${trait}: ${f}`));
  }
  return out;
}
