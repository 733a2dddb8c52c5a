/** Synthetic but realistically sized trace (30 layers, 9 heads, 128 tokens) following docs/widget-protocol.md. */
import { encodeArray } from "../codec";
import { EDGE_KINDS, NODE_KINDS, type EdgeKindName, type NodeKindName } from "../protocol.gen";

const EDGE = Object.fromEntries(EDGE_KINDS.map((k, i) => [k, i])) as Record<EdgeKindName, number>;

export interface FakeOpts {
  L?: number;
  H?: number;
  T?: number;
  K?: number;
  seed?: number;
}

function rng(seed: number) {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return ((s >>> 0) % 1_000_000) / 1_000_000;
  };
}

const WORDS = ["The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", ".", "\n", " In", " 1905", ",",
  " Albert", " Einstein", " published", " four", " papers", " on", " physics", "\t", "  indented", " café", "Ġspace", "▁piece",
  " and", " then", " it", " was", " said", " that", " he", " would"];

export function fakeTokens(T: number): string[] {
  const toks: string[] = [];
  for (let i = 0; i < T; i++) toks.push(WORDS[(i * 7 + (i >> 3)) % WORDS.length]);
  toks[0] = "<|endoftext|>";
  if (T > 5) toks[5] = "<img src=x onerror=alert(1)>";
  if (T > 9) toks[9] = "\n\n";
  if (T > 12) toks[12] = " ";
  return toks;
}

export interface Dense {
  L: number;
  H: number;
  T: number;
  /** attention edge weights: [l][i] -> list of [j, w, heads[]] ; residual share res[l][i] */
  attn: (l: number, i: number) => { res: number; src: [number, number, number[]][] };
  mlp: (l: number, i: number) => { res: number; mlp: number };
}

export function makeDense(L: number, H: number, T: number, seed = 1): Dense {
  const cacheA = new Map<number, ReturnType<Dense["attn"]>>();
  const cacheM = new Map<number, ReturnType<Dense["mlp"]>>();
  return {
    L,
    H,
    T,
    attn(l, i) {
      const key = l * T + i;
      const c = cacheA.get(key);
      if (c) return c;
      const r = rng(seed * 7919 + key * 31 + 17);
      const cand = new Map<number, number>();
      const add = (j: number, w: number) => j >= 0 && j <= i && cand.set(j, (cand.get(j) ?? 0) + w);
      add(i, 0.2 + r() * 0.4);
      add(0, 0.05 + r() * 0.3 * (l / L));
      add(i - 1, Math.pow(r(), 3) * 0.5);
      for (let k = 0; k < 3; k++) add(Math.floor(r() * (i + 1)), Math.pow(r(), 5) * 0.6);
      if (r() < 0.15) add(Math.floor(i * 0.5), r() * 0.6);
      const res = 1.2 + r() * 3;
      let tot = res;
      for (const w of cand.values()) tot += w;
      const src: [number, number, number[]][] = [];
      for (const [j, w] of cand) {
        const hw = Array.from({ length: H }, () => Math.pow(r(), 3));
        const hs = hw.reduce((a, b) => a + b, 0) || 1;
        src.push([j, w / tot, hw.map((x) => x / hs)]);
      }
      const out = { res: res / tot, src };
      cacheA.set(key, out);
      return out;
    },
    mlp(l, i) {
      const key = l * T + i;
      const c = cacheM.get(key);
      if (c) return c;
      const r = rng(seed * 104729 + key * 13 + 5);
      const m = r() * r() * (0.4 + l / L);
      const out = { res: 1 - m, mlp: m };
      cacheM.set(key, out);
      return out;
    },
  };
}

/** Backward traversal from the top node at `target`, keeping edges with weight >= tau (like Python's filtering). */
export function buildGraph(d: Dense, target: number, tau: number, granularity: "head" | "edge" = "head") {
  const { L, H } = d;
  const kinds = Object.fromEntries(NODE_KINDS.map((k, i) => [k, i])) as Record<NodeKindName, number>;
  const nodeIndex = new Map<string, number>();
  const nk: number[] = [], nl: number[] = [], nt: number[] = [];
  const es: number[] = [], ed: number[] = [], ew: number[] = [], ek: number[] = [], eh: number[] = [];
  const node = (kind: keyof typeof kinds, layer: number, tok: number) => {
    const k = `${kind}:${layer}:${tok}`;
    let i = nodeIndex.get(k);
    if (i === undefined) {
      i = nk.length;
      nodeIndex.set(k, i);
      nk.push(kinds[kind]);
      nl.push(kind === "embedding" ? -1 : layer);
      nt.push(tok);
    }
    return i;
  };
  const edge = (s: number, t: number, w: number, kind: number, heads?: number[]) => {
    es.push(s); ed.push(t); ew.push(w); ek.push(kind);
    for (let h = 0; h < H; h++) eh.push(heads ? heads[h] : 0);
  };
  const prevRow = (l: number, tok: number) => (l === 0 ? node("embedding", -1, tok) : node("after_mlp", l - 1, tok));
  // frontier per row: set of tokens
  let frontier = new Set([target]);
  for (let l = L - 1; l >= 0; l--) {
    const afterAttn = new Set<number>();
    for (const i of frontier) {
      const dst = node("after_mlp", l, i);
      const m = d.mlp(l, i);
      const a = node("after_attention", l, i);
      if (m.res >= tau || m.mlp < tau) {
        edge(a, dst, m.res, EDGE.residual);
        afterAttn.add(i);
      }
      if (m.mlp >= tau) {
        const mn = node("mlp", l, i);
        edge(mn, dst, m.mlp, EDGE.mlp);
        edge(a, mn, m.mlp, EDGE.mlp);
        afterAttn.add(i);
      }
    }
    const next = new Set<number>();
    for (const i of afterAttn) {
      const dst = node("after_attention", l, i);
      const at = d.attn(l, i);
      if (at.res >= tau) {
        edge(prevRow(l, i), dst, at.res, EDGE.residual);
        next.add(i);
      }
      for (const [j, w, heads] of at.src) {
        const kept = granularity === "head" ? heads.reduce((acc, s) => acc + (s * w >= tau / 2 ? s * w : 0), 0) : w >= tau ? w : 0;
        if (kept >= tau) {
          edge(prevRow(l, j), dst, kept, EDGE.attention, heads);
          next.add(j);
        }
      }
    }
    frontier = next.size ? next : new Set([target]);
  }
  return {
    node_kind: encodeArray(Uint8Array.from(nk), [nk.length]),
    node_layer: encodeArray(Int32Array.from(nl), [nl.length]),
    node_token: encodeArray(Uint32Array.from(nt), [nt.length]),
    edge_src: encodeArray(Uint32Array.from(es), [es.length]),
    edge_dst: encodeArray(Uint32Array.from(ed), [ed.length]),
    edge_weight: encodeArray(Float32Array.from(ew), [ew.length]),
    edge_kind: encodeArray(Uint8Array.from(ek), [ek.length]),
    edge_heads: encodeArray(Float32Array.from(eh), [es.length, H]),
  };
}

export function makeState(opts: FakeOpts = {}) {
  const L = opts.L ?? 30, H = opts.H ?? 9, T = opts.T ?? 128, K = opts.K ?? 10;
  const seed = opts.seed ?? 1;
  const r = rng(seed);
  const tokens = fakeTokens(T);
  const dense = makeDense(L, H, T, seed);
  const target = T - 1;
  const threshold = 0.04;
  const hi = new Float32Array(L * H * T);
  for (let l = 0; l < L; l++)
    for (let h = 0; h < H; h++) {
      const base = Math.pow(r(), 4) * (1 + l / L);
      for (let t = 0; t < T; t++) hi[(l * H + h) * T + t] = base * (0.3 + r());
    }
  const blk = (f: (l: number, t: number) => number) => {
    const a = new Float32Array(L * T);
    for (let l = 0; l < L; l++) for (let t = 0; t < T; t++) a[l * T + t] = f(l, t);
    return encodeArray(a, [L, T]);
  };
  const graph = buildGraph(dense, target, threshold, "head");
  // like Python: top-K rows only for the MLP blocks of the initial graph (mlp nodes), the rest via `mlp:` details
  const available = new Uint8Array(L * T);
  {
    const nk = graph.node_kind.data as DataView, nl = graph.node_layer.data as DataView, nt = graph.node_token.data as DataView;
    for (let i = 0; i < nk.byteLength; i++) if (nk.getUint8(i) === NODE_KINDS.indexOf("mlp")) available[nl.getInt32(4 * i, true) * T + nt.getUint32(4 * i, true)] = 1;
  }
  const ids = new Uint32Array(L * T * K), imp = new Float32Array(L * T * K), act = new Float32Array(L * T * K);
  for (let i = 0; i < L * T; i++) {
    let v = 0.2 + r() * 0.3;
    for (let k = 0; k < K; k++) {
      ids[i * K + k] = Math.floor(r() * 11008);
      imp[i * K + k] = v;
      v *= 0.6 + r() * 0.35;
      act[i * K + k] = (r() - 0.3) * 4;
    }
  }
  const vocab = [" Paris", " the", " London", " physics", " Einstein", " relativity", " a", "\n", " <b>bold</b>", " of", " Berlin", " theory", " quantum", " and", " light", " energy"];
  const R = 2 * L + 1;
  const lids = new Uint32Array(R * K), lp = new Float32Array(R * K), lr = new Int32Array(R * K);
  for (let row = 0; row < R; row++) {
    let p = Math.min(0.95, 0.02 + (row / R) ** 2 * 0.8 * (0.7 + r() * 0.3));
    for (let k = 0; k < K; k++) {
      lids[row * K + k] = (row < R / 2 ? (k * 3 + row) % vocab.length : row > R * 0.8 && k === 0 ? 4 : (k + row % 3) % vocab.length);
      lp[row * K + k] = p;
      p *= 0.5;
      lr[row * K + k] = row === 0 ? -1 : Math.max(0, k + Math.floor((r() - 0.4) * 6));
    }
  }
  const strings: Record<string, string> = {};
  vocab.forEach((s, i) => (strings[String(i)] = s));
  const details: Record<string, unknown> = {
    [`lens:${2 * L}:${target}`]: { top: [[" Einstein", 0.61, 0], [" relativity", 0.12, 2], [" physics", 0.05, -1]] },
  };
  return {
    panes: ["prompt", "graph", "heads", "neurons", "vocab"],
    tokens,
    meta: {
      model: "fake-30L",
      n_layers: L,
      n_heads: H,
      n_tokens: T,
      topology: "sequential",
      node_kinds: [...NODE_KINDS],
      edge_kinds: [...EDGE_KINDS],
      prediction: { token: " Einstein", prob: 0.61, top: [[" Einstein", 0.61], [" relativity", 0.12], [" physics", 0.05], ["<script>", 0.01]] },
    },
    target,
    threshold,
    granularity: "head",
    graph,
    head_importance: encodeArray(hi, [L, H, T]),
    block_importance: {
      attention: blk((l, t) => 1 - dense.attn(l, t).res),
      mlp: blk((l, t) => dense.mlp(l, t).mlp),
      residual_attention: blk((l, t) => dense.attn(l, t).res),
      residual_mlp: blk((l, t) => dense.mlp(l, t).res),
    },
    neurons: {
      ids: encodeArray(ids, [L, T, K]),
      importance: encodeArray(imp, [L, T, K]),
      activation: encodeArray(act, [L, T, K]),
      available: encodeArray(available, [L, T]),
    },
    lens: { rows: R, token: target, ids: encodeArray(lids, [R, K]), probs: encodeArray(lp, [R, K]), rank_prev: encodeArray(lr, [R, K]), strings },
    selection: null,
    details,
    status: { state: "idle", message: "", progress: 1 },
    error: "",
    prompt: tokens.join(""),
    _dense: dense,
  } as Record<string, any>;
}

/** Reply to a `details` request like the kernel would (arrays as buffer indices). */
export function fakeDetailsReply(key: string, T: number): { msg: any; buffers: DataView[] } {
  const parts = key.split(":");
  const promoted = [[" Paris", 2.1], [" <script>alert(1)</script>", 1.4], [" theory", 0.9], ["\n", 0.5]];
  const suppressed = [[" London", -1.8], [" the", -0.7], [" Berlin", -0.3]];
  if (parts[0] === "head") {
    const t = Number(parts[3]);
    const pat = new Float32Array(T * T);
    const con = new Float32Array(T * T);
    const r = rng(Number(parts[1]) * 100 + Number(parts[2]) + 1);
    for (let i = 0; i < T; i++) {
      let s = 0;
      for (let j = 0; j <= i; j++) {
        const v = j === 0 ? 2 : j === i ? 1.5 : Math.pow(r(), 6);
        pat[i * T + j] = v;
        s += v;
      }
      for (let j = 0; j <= i; j++) {
        pat[i * T + j] /= s;
        con[i * T + j] = pat[i * T + j] * (0.2 + r());
      }
    }
    return {
      msg: {
        ok: true,
        result: {
          promoted, suppressed, importance: 0.12 + t * 0,
          pattern: { dtype: "float32", shape: [T, T], data: 0 },
          contribution: { dtype: "float32", shape: [T, T], data: 1 },
        },
      },
      buffers: [new DataView(pat.buffer), new DataView(con.buffer)],
    };
  }
  if (parts[0] === "lens") {
    return { msg: { ok: true, result: { top: [[" the", 0.2, 3], [" a", 0.1, -2], ["<b>", 0.05, 0]] } }, buffers: [] };
  }
  if (parts[0] === "mlp") return { msg: { ok: true, result: { promoted, suppressed, neurons: fakeNeurons(Number(parts[1]), Number(parts[2])) } }, buffers: [] };
  if (parts[0] === "neuron") return { msg: { ok: true, result: { promoted, suppressed } }, buffers: [] };
  return { msg: { ok: false, error: `unknown key ${key}` }, buffers: [] };
}

/** Top-K `[neuron_id, importance, activation]` rows of an `mlp:` details result (by importance). */
export function fakeNeurons(layer: number, token: number, K = 8): [number, number, number][] {
  const r = rng(layer * 7717 + token * 131 + 3);
  let v = 0.3 + r() * 0.2;
  const out: [number, number, number][] = [];
  for (let k = 0; k < K; k++) {
    out.push([Math.floor(r() * 11008), Number(v.toFixed(4)), Number(((r() - 0.3) * 4).toFixed(3))]);
    v *= 0.6 + r() * 0.35;
  }
  return out;
}

function bytesToBase64(dv: DataView): string {
  const u8 = new Uint8Array(dv.buffer, dv.byteOffset, dv.byteLength);
  let bin = "";
  for (let i = 0; i < u8.length; i += 0x8000) bin += String.fromCharCode(...u8.subarray(i, i + 0x8000));
  return btoa(bin);
}

/** Like Python's `to_base64`: every array dict's DataView `data` -> base64 text (a static report's state). */
export function toBase64Tree(v: unknown): any {
  if (v && typeof v === "object" && (v as any).data instanceof DataView && typeof (v as any).dtype === "string") {
    return { ...(v as any), data: bytesToBase64((v as any).data) };
  }
  if (Array.isArray(v)) return v.map(toBase64Tree);
  if (v && typeof v === "object") {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) out[k] = toBase64Tree(x);
    return out;
  }
  return v;
}

/** Python-like `repr(float)` for the thresholds used in `graph_variants` keys. */
export const reprFloat = (x: number) => (Number.isInteger(x) ? x.toFixed(1) : String(x));

/** `graph_variants` for a static report: every (target, threshold, granularity) combination given. */
export function makeVariants(d: Dense, targets: number[], thresholds: number[], grans: ("head" | "edge")[] = ["head", "edge"]) {
  const out: Record<string, ReturnType<typeof buildGraph>> = {};
  for (const t of targets) for (const tau of thresholds) for (const g of grans) out[`${t}|${reprFloat(tau)}|${g}`] = buildGraph(d, t, tau, g);
  return out;
}
