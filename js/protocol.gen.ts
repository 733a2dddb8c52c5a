// Generated from lmtt_widgets/widgets/protocol by `python -m lmtt_widgets.widgets.protocol --write`.
// Do not edit: change the Python protocol and regenerate (tests/test_protocol.py fails while stale).

export const NODE_KINDS = ["embedding", "after_attention", "mlp", "after_mlp"] as const;
export type NodeKindName = (typeof NODE_KINDS)[number];
export const EDGE_KINDS = ["residual", "attention", "mlp"] as const;
export type EdgeKindName = (typeof EDGE_KINDS)[number];
export const SELECTABLE_NODE_KINDS = ["embedding", "after_attention", "after_mlp"] as const;
export type SelectableNodeKind = (typeof SELECTABLE_NODE_KINDS)[number];
export const TOPOLOGIES = ["sequential", "parallel", "post_norm"] as const;
export type Topology = (typeof TOPOLOGIES)[number];
export const GRANULARITIES = ["head", "edge"] as const;
export type Granularity = (typeof GRANULARITIES)[number];
export const STATUS_STATES = ["idle", "running", "error"] as const;
export type StatusState = (typeof STATUS_STATES)[number];
export const ABLATIONS = ["corrupted", "mean", "zero"] as const;
export type Ablation = (typeof ABLATIONS)[number];
export const HEAD_MODES = ["importance", "logit_attribution", "attribution_patching"] as const;
export type HeadMode = (typeof HEAD_MODES)[number];

// ranges
export const THRESHOLD_DEFAULT = 0.04;
/** τ below this is refused in head granularity. */
export const HEAD_FLOOR = 0.001;
/** What the τ slider offers. */
export const TAU_MIN = 0.005;
export const TAU_MAX = 0.5;

/** Residual row of a node: row = 2 * layer + ROW_OFFSET[kind] (embeddings have layer -1). */
export const ROW_OFFSET: Readonly<Record<NodeKindName, number>> = {"embedding": 2, "after_attention": 1, "mlp": 1.5, "after_mlp": 2};

export const SELECTION_FIELDS = {"node": ["layer", "token", "node_kind"], "edge": ["layer", "source", "token"], "mlp": ["layer", "token"], "head": ["layer", "head", "token"], "neuron": ["layer", "neuron", "token"]} as const;
export type SelectionKind = keyof typeof SELECTION_FIELDS;
export type Selection =
  | { kind: "node"; layer: number; token: number; node_kind: SelectableNodeKind; last?: number }
  | { kind: "edge"; layer: number; source: number; token: number }
  | { kind: "mlp"; layer: number; token: number }
  | { kind: "head"; layer: number; head: number; token: number }
  | { kind: "neuron"; layer: number; neuron: number; token: number }
  | null;

/** `details` keys: "<kind>:<field>:..." with integer fields, or CHECK_PREFIX + a component id. */
export const DETAIL_KEYS = {"lens": ["row", "token"], "head": ["layer", "head", "token"], "mlp": ["layer", "token"], "neuron": ["layer", "neuron", "token"]} as const;
export type DetailKind = keyof typeof DETAIL_KEYS;
export const CHECK_PREFIX = "check:";
export const MAX_KEY_LENGTH = 200;

export type DType = "float32" | "uint32" | "int32" | "uint8";
/** An array on the wire: C order; `data` a DataView in a trait, a buffer index in a message. */
export interface WireArray<D extends DType = DType> {
  dtype: D;
  shape: number[];
  data: unknown;
}

export interface Prediction {
  /** text of the predicted token */
  token: string;
  /** its probability */
  prob: number;
  /** the top 5 as [text, probability] */
  top?: [string, number][];
}

/** what is explained, for the `target` position */
export interface Meta {
  /** model name */
  model: string;
  /** L */
  n_layers: number;
  /** H */
  n_heads: number;
  /** T */
  n_tokens: number;
  /** residual topology */
  topology: Topology;
  /** index = `graph.node_kind` code (= NODE_KINDS) */
  node_kinds: NodeKindName[];
  /** index = `graph.edge_kind` code (= EDGE_KINDS) */
  edge_kinds: EdgeKindName[];
  prediction: Prediction;
  /** the position `prediction` is read at (the `target` it was computed for): the browser changes `target` before this arrives, so panes label the prediction by it */
  position?: number;
}

/** the important subgraph for (`target`, `threshold`, `granularity`) */
export interface Graph {
  /** uint8[N]. index into `meta.node_kinds` */
  node_kind: WireArray<"uint8">;
  /** int32[N]. layer, -1 for embeddings */
  node_layer: WireArray<"int32">;
  /** uint32[N]. token position */
  node_token: WireArray<"uint32">;
  /** uint8[N]. 1 where the update into the node cancelled: its importances are an even split */
  node_cancelling?: WireArray<"uint8">;
  /** uint8[N]. 1 where the update into the node holds an external edit (a hook changed the stream) */
  node_external?: WireArray<"uint8">;
  /** uint32[E]. source node index */
  edge_src: WireArray<"uint32">;
  /** uint32[E]. destination node index */
  edge_dst: WireArray<"uint32">;
  /** float32[E]. renormalised importance */
  edge_weight: WireArray<"float32">;
  /** uint8[E]. index into `meta.edge_kinds` */
  edge_kind: WireArray<"uint8">;
  /** float32[E, H]. per-head share of attention edges, 0 elsewhere */
  edge_heads: WireArray<"float32">;
}

/** importance of each block's parts at each token */
export interface BlockImportance {
  /** float32[L, T]. sum of all head parts */
  attention: WireArray<"float32">;
  /** float32[L, T]. */
  mlp: WireArray<"float32">;
  /** float32[L, T]. */
  residual_attention: WireArray<"float32">;
  /** float32[L, T]. */
  residual_mlp: WireArray<"float32">;
}

/** top neurons of the MLP blocks on the route and at the target */
export interface Neurons {
  /** uint32[L, T, K]. top-K neurons of each MLP block */
  ids: WireArray<"uint32">;
  /** float32[L, T, K]. */
  importance: WireArray<"float32">;
  /** float32[L, T, K]. */
  activation: WireArray<"float32">;
  /** uint8[L, T]. 1 where the block's rows are filled (the rest: the `mlp:` details key); absent = all */
  available?: WireArray<"uint8">;
}

/** logit lens of the `target` column */
export interface Lens {
  /** R = 2L+1 residual rows */
  rows: number;
  /** the position the column describes */
  token: number;
  /** uint32[R, K]. top tokens of each residual row at `token` */
  ids: WireArray<"uint32">;
  /** float32[R, K]. */
  probs: WireArray<"float32">;
  /** int32[R, K]. rank of the same token in the previous row (-1 for row 0) */
  rank_prev: WireArray<"int32">;
  /** token id -> text for every id above */
  strings: Record<string, string>;
}

export interface Status {
  state: StatusState;
  message: string;
  /** 0..1 */
  progress: number;
}

export interface MetricRef {
  /** = `target` */
  position: number;
  /** id of the prediction there */
  target?: number;
  target_text?: string;
  /** id or null */
  foil?: number | null;
  foil_text?: string | null;
  /** Python's `Metric.name` */
  name?: string;
}

/** what the signed methods explain; absent keys when the metric cannot be formed (the reason is in `error`) */
export interface Metric extends MetricRef {
  /** "logits" with a foil, "nats" (log p) without */
  units?: string;
  /** top 10 at `position` as [id, text, prob] (the foil picker) */
  candidates: [number, string, number][];
  corrupted: string;
  ablation: Ablation;
  /** a causal method can run */
  causal_ready: boolean;
}

export interface MethodScores {
  method: string;
  quantity: string;
  signed: boolean;
  metric: MetricRef | null;
  /** float32[L, H]. whole-prompt head components `L{l}.H{h}`; NaN = not scored */
  heads: WireArray<"float32">;
  /** float32[L]. `L{l}.MLP` */
  mlp: WireArray<"float32">;
  /** scalars */
  extra: Record<string, string | number | boolean | null>;
}

/** agreement of the head tables, `{}` until causal scores exist */
export interface Agreement {
  /** [method a, method b, Spearman ρ, top-k overlap] */
  pairs: [string, string, number | null, number][];
  /** heads */
  n: number;
  k: number;
  /** "|score| per head" */
  of: string;
  position: number | null;
}

/** the attribution pane's scores, `{}` when they cannot be computed */
export interface Attribution {
  method: string;
  quantity: string;
  /** diverging scale when true, sequential share when false */
  signed: boolean;
  /** = `target` */
  position: number;
  /** null for flow methods (target-independent) */
  metric: MetricRef | null;
  /** "nats" / "logits" / "" */
  units: string;
  /** float32[T]. per source token; NaN after `position` */
  scores: WireArray<"float32">;
  /** scalars */
  extra: Record<string, string | number | boolean | null>;
  /** the picker's names */
  methods: string[];
  /** the chosen method's options */
  options: Record<string, string | number | boolean>;
  /** positions of generated tokens */
  generated: number[];
  /** null for a plain prompt */
  n_prompt_tokens: number | null;
  matrix_state: "ready" | "on_demand" | "none";
  /** float32[G, T]. row r explains generated token `matrix_rows[r]`; NaN at or after it */
  matrix: WireArray<"float32"> | null;
  matrix_rows: number[];
  matrix_metric: string;
  /** the shown method against the others on this target (Explorer only) */
  agreement?: AttributionAgreement;
  /** the tokens merged into words (Explorer only) */
  words?: AttributionWords;
}

export interface AttributionAgreementRow {
  method: string;
  /** the registry's one line */
  cost: string;
  /** "on_demand": not computed yet (the `attribution_agreement` message computes it); "error": it cannot run here, the text is in `error` */
  state: "ready" | "on_demand" | "error";
  error?: string;
  /** the other method's; null when not computed */
  signed: boolean | null;
  /** Spearman ρ over tokens 0..`position` (NaN pairs dropped); null when not computed or undefined (a constant side) */
  spearman: number | null;
  /** "signed" when both methods are signed, "|score|" otherwise, "" when not computed */
  compared: string;
  /** how many of the `k` tokens of largest |score| both share */
  top_k: number | null;
}

/** the shown method against every other input-attribution method on the same target and foil; cheap methods (flow family, saliency, input_x_gradient) computed on every change, the others once computed or asked for */
export interface AttributionAgreement {
  /** the shown method */
  method: string;
  /** min(3, `n`) */
  k: number;
  /** tokens 0..`position` */
  n: number;
  position: number;
  /** the caption: what the numbers measure */
  measures: string;
  rows: AttributionAgreementRow[];
}

/** the attribution pane's word view (its subword / word control is view state, not synced) */
export interface AttributionWords {
  /** [first, last] token of each word (granularity.word_spans: a word starts at whitespace / a word marker, after a newline, and where the token role changes) */
  spans: [number, number][];
  /** ["sum", "mean", "max"] */
  merges: string[];
  /** merge -> the shown `scores` merged per word (granularity.merge: sum; mean; max = the score of largest magnitude, sign kept; NaN tokens skipped, NaN when none is read) */
  merged: Record<string, WireArray<"float32">>;
}

export interface LensDetail {
  /** [text, prob, rank change] */
  top: [string, number, number][];
}

export interface HeadDetail {
  /** [text, score] */
  promoted: [string, number][];
  /** [text, score] */
  suppressed: [string, number][];
  importance: number;
  /** float32[T, T]. attention pattern of the head */
  pattern: WireArray<"float32">;
  /** float32[T, T]. its contribution map */
  contribution: WireArray<"float32">;
}

export interface MlpDetail {
  /** [text, score] */
  promoted: [string, number][];
  /** [text, score] */
  suppressed: [string, number][];
  /** top-K [neuron, importance, activation] */
  neurons: [number, number, number][];
}

export interface NeuronDetail {
  /** [text, score] */
  promoted: [string, number][];
  /** [text, score] */
  suppressed: [string, number][];
}

export type DetailResult = LensDetail | HeadDetail | MlpDetail | NeuronDetail | Record<string, unknown>;

/** Every synced trait (and the report-only `graph_variants`) by name: what `model.get` returns. */
export interface Traits {
  /** py only: pane names the widget draws (the class chooses them) */
  panes: string[];
  /** py only: decoded text of each prompt token (raw: spaces, `\n`, `<` ... travel as they are) */
  tokens: string[];
  /** py only: what is explained, for the `target` position */
  meta: Partial<Meta>;
  /** token position whose route is shown (default last); Python refilters `graph` */
  target: number;
  /** τ: Python accepts 0 < τ < 1 (τ ≥ 0.001 in head granularity); the slider offers [0.005, 0.5]; default 0.04 */
  threshold: number;
  /** "head" (threshold each head, then sum) or "edge" (threshold the head-summed edge) */
  granularity: Granularity;
  /** py only: the important subgraph for (`target`, `threshold`, `granularity`) */
  graph: Partial<Graph>;
  /** py only: importance of head h in the attention update at (layer, target token), summed over sources */
  head_importance: WireArray<"float32"> | null;
  /** py only: importance of each block's parts at each token */
  block_importance: Partial<BlockImportance>;
  /** py only: top neurons of the MLP blocks on the route and at the target */
  neurons: Partial<Neurons>;
  /** py only: logit lens of the `target` column */
  lens: Partial<Lens>;
  /** null or one of `{"kind": "node", "layer", "token", "node_kind"}`, `{"kind": "edge", "layer", "source", "token"}`, `{"kind": "mlp", "layer", "token"}`, `{"kind": "head", "layer", "head", "token"}`, `{"kind": "neuron", "layer", "neuron", "token"}`; `node_kind` is one of embedding, after_attention, after_mlp (embeddings have layer -1), an `edge` is attention from `source` to `token` in `layer`. Python validates every selection; a bad one from the browser is reverted with `error` set */
  selection: Selection | null;
  /** py only: pre-filled detail results (the report's) and the cache of fetched ones; keys: `lens:<row>:<token>`, `head:<layer>:<head>:<token>`, `mlp:<layer>:<token>`, `neuron:<layer>:<neuron>:<token>`, `check:<id>` */
  details: Record<string, DetailResult>;
  /** py only: progress of a run or a computation */
  status: Status;
  /** py only: "" when none: shown in a visible error bar */
  error: string;
  /** the prompt box; Run sends a `run` message */
  prompt: string;
  /** py only: true in a report: no Run button, read-only prompt */
  static: boolean;
  /** token id the prediction is contrasted with, or null; the browser may send one-token text, which Python turns into its id (or refuses) */
  foil: number | string | null;
  /** the corrupted prompt causal methods patch in, "" = none */
  corrupted: string;
  /** what a causal method patches in */
  ablation: Ablation;
  /** the quantity of the head heatmap */
  head_mode: HeadMode;
  /** py only: what the signed methods explain; absent keys when the metric cannot be formed (the reason is in `error`) */
  metric: Partial<Metric>;
  /** py only: method name -> its head matrix and MLP vector with what they mean */
  method_scores: Record<string, MethodScores>;
  /** py only: agreement of the head tables, `{}` until causal scores exist */
  agreement: Partial<Agreement>;
  /** the attribution pane's method, by registry name (flow or input family) */
  attribution_method: string;
  /** method name -> its keyword options, e.g. `{"integrated_gradients": {"steps": 8}}`; unknown methods or options, and the metric's own (target, foil, position), are refused and put back */
  attribution_options: Record<string, Record<string, unknown>>;
  /** py only: the attribution pane's scores, `{}` when they cannot be computed */
  attribution: Partial<Attribution>;
  /** report only: report only: `"<target>|<threshold>|<granularity>"` -> graph, the routes a report can switch to */
  graph_variants?: Record<string, Partial<Graph>>;
}

/** Traits only Python writes: the kernel refuses (and reverts) a browser update to them. */
export const PYTHON_ONLY = ["panes", "tokens", "meta", "graph", "head_importance", "block_importance", "neurons", "lens", "details", "status", "error", "static", "metric", "method_scores", "agreement", "attribution"] as const;
/** Traits the browser may set (a user action); Python validates every value. */
export const BROWSER_WRITABLE = ["target", "threshold", "granularity", "selection", "prompt", "foil", "corrupted", "ablation", "head_mode", "attribution_method", "attribution_options"] as const;
export type BrowserWritable = (typeof BROWSER_WRITABLE)[number];

export const ARRAY_FIELDS = {
  Graph: {
    node_kind: { dtype: "uint8", dims: ["N"], optional: false },
    node_layer: { dtype: "int32", dims: ["N"], optional: false },
    node_token: { dtype: "uint32", dims: ["N"], optional: false },
    node_cancelling: { dtype: "uint8", dims: ["N"], optional: true },
    node_external: { dtype: "uint8", dims: ["N"], optional: true },
    edge_src: { dtype: "uint32", dims: ["E"], optional: false },
    edge_dst: { dtype: "uint32", dims: ["E"], optional: false },
    edge_weight: { dtype: "float32", dims: ["E"], optional: false },
    edge_kind: { dtype: "uint8", dims: ["E"], optional: false },
    edge_heads: { dtype: "float32", dims: ["E", "H"], optional: false },
  },
  BlockImportance: {
    attention: { dtype: "float32", dims: ["L", "T"], optional: false },
    mlp: { dtype: "float32", dims: ["L", "T"], optional: false },
    residual_attention: { dtype: "float32", dims: ["L", "T"], optional: false },
    residual_mlp: { dtype: "float32", dims: ["L", "T"], optional: false },
  },
  Neurons: {
    ids: { dtype: "uint32", dims: ["L", "T", "K"], optional: false },
    importance: { dtype: "float32", dims: ["L", "T", "K"], optional: false },
    activation: { dtype: "float32", dims: ["L", "T", "K"], optional: false },
    available: { dtype: "uint8", dims: ["L", "T"], optional: true },
  },
  Lens: {
    ids: { dtype: "uint32", dims: ["R", "K"], optional: false },
    probs: { dtype: "float32", dims: ["R", "K"], optional: false },
    rank_prev: { dtype: "int32", dims: ["R", "K"], optional: false },
  },
  MethodScores: {
    heads: { dtype: "float32", dims: ["L", "H"], optional: false },
    mlp: { dtype: "float32", dims: ["L"], optional: false },
  },
  Attribution: {
    scores: { dtype: "float32", dims: ["T"], optional: false },
    matrix: { dtype: "float32", dims: ["G", "T"], optional: true },
  },
  HeadDetail: {
    pattern: { dtype: "float32", dims: ["T", "T"], optional: false },
    contribution: { dtype: "float32", dims: ["T", "T"], optional: false },
  },
} as const;

/** The arrays of each trait: `struct` (ARRAY_FIELDS entry), `mapOf` (values of that struct) or `array`. */
export const TRAIT_ARRAYS = {
  graph: { struct: "Graph" },
  head_importance: { array: { dtype: "float32", dims: ["L", "H", "T"], optional: true } },
  block_importance: { struct: "BlockImportance" },
  neurons: { struct: "Neurons" },
  lens: { struct: "Lens" },
  method_scores: { mapOf: "MethodScores" },
  attribution: { struct: "Attribution" },
  graph_variants: { mapOf: "Graph" },
} as const;
