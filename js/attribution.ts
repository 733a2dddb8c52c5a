/**
 * The `attribution` trait decoded (input attribution: which source tokens drove the target's prediction), its
 * colour scale and legend text, and the mapping from a matrix column (a generated token) to the target position.
 * Pure functions: the pane (panes/attribution.ts) draws with them, the tests check them.
 */
import { decodeArray, NDArray } from "./codec";
import { divergingColor, heatColor, RGB } from "./color";
import type { WidgetModel } from "./types";

export interface Attribution {
  method: string;
  quantity: string;
  signed: boolean;
  position: number;
  metric: { name?: string; target_text?: string; foil_text?: string } | null;
  units: string;
  scores: NDArray | null; // [T], NaN after the position (the prediction cannot read those tokens)
  methods: string[];
  generated: number[];
  matrixState: "ready" | "on_demand" | "none";
  matrix: NDArray | null; // [generated, source]; row r explains the prediction of token matrixRows[r]
  matrixRows: number[];
  matrixMetric: string;
  extra: Record<string, unknown>;
  agreement: Agreement | null;
  words: Words | null;
}

/** One other method's agreement with the shown one on the same target (computed in Python, scoring.py). */
export interface AgreementRow {
  method: string;
  state: "ready" | "on_demand" | "error";
  spearman: number | null; // null: not computed, or undefined (a constant side)
  compared: string; // "signed" (both methods signed) or "|score|"
  topK: number | null;
  cost: string;
  error: string;
}

export interface Agreement {
  method: string;
  k: number;
  n: number;
  measures: string; // what the numbers measure (shown as the table's caption)
  rows: AgreementRow[];
}

/** Word view: each word's [first, last] token and the shown scores merged per word by each merge rule. */
export interface Words {
  spans: [number, number][];
  merged: Record<string, NDArray | null>;
  merges: string[];
}

/** One cell of the token strip: a token (first === last) or a word, with the score shown for it. */
export interface Cell {
  first: number;
  last: number;
  value: number;
}

function parseAgreement(r: any): Agreement | null {
  if (!r || typeof r !== "object" || !Array.isArray(r.rows)) return null;
  const num = (v: unknown) => (typeof v === "number" && Number.isFinite(v) ? v : null);
  return {
    method: String(r.method ?? ""),
    k: Number(r.k ?? 0),
    n: Number(r.n ?? 0),
    measures: String(r.measures ?? ""),
    rows: r.rows.map((x: any) => ({
      method: String(x?.method ?? ""),
      state: x?.state === "ready" || x?.state === "error" ? x.state : "on_demand",
      spearman: num(x?.spearman),
      compared: String(x?.compared ?? ""),
      topK: num(x?.top_k),
      cost: String(x?.cost ?? ""),
      error: String(x?.error ?? ""),
    })),
  };
}

function parseWords(r: any): Words | null {
  if (!r || typeof r !== "object" || !Array.isArray(r.spans)) return null;
  const merged: Record<string, NDArray | null> = {};
  for (const [k, v] of Object.entries(r.merged ?? {})) merged[k] = decodeArray(v);
  return {
    spans: r.spans.map((s: any) => [Number(s[0]), Number(s[1])] as [number, number]),
    merged,
    merges: Array.isArray(r.merges) ? r.merges.map(String) : Object.keys(merged),
  };
}

const cache = new WeakMap<object, Attribution | null>();

export function getAttribution(model: WidgetModel): Attribution | null {
  const raw = model.get("attribution");
  if (!raw || typeof raw !== "object" || !("method" in raw)) return null;
  const hit = cache.get(raw);
  if (hit !== undefined) return hit;
  let out: Attribution | null = null;
  try {
    const r = raw as Record<string, any>;
    const state = r.matrix_state === "ready" || r.matrix_state === "on_demand" ? r.matrix_state : "none";
    out = {
      method: String(r.method),
      quantity: String(r.quantity ?? ""),
      signed: r.signed !== false,
      position: Number(r.position ?? -1),
      metric: r.metric && typeof r.metric === "object" ? r.metric : null,
      units: String(r.units ?? ""),
      scores: decodeArray(r.scores),
      methods: Array.isArray(r.methods) ? r.methods.map(String) : [String(r.method)],
      generated: Array.isArray(r.generated) ? r.generated.map(Number) : [],
      matrixState: state,
      matrix: state === "ready" ? decodeArray(r.matrix) : null,
      matrixRows: Array.isArray(r.matrix_rows) ? r.matrix_rows.map(Number) : [],
      matrixMetric: String(r.matrix_metric ?? ""),
      extra: r.extra && typeof r.extra === "object" ? r.extra : {},
      agreement: parseAgreement(r.agreement),
      words: parseWords(r.words),
    };
  } catch (e) {
    console.error("lmtt-widgets: bad attribution trait", e);
  }
  cache.set(raw, out);
  return out;
}

/** The scale's end: max |finite value| (1 when there is none, so an all-zero row draws as the page). */
export function scaleMax(values: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < values.length; i++) {
    const a = Math.abs(values[i]);
    if (Number.isFinite(a) && a > m) m = a;
  }
  return m || 1;
}

/** A score's colour: diverging (blue < 0 < red) for signed methods, sequential for shares; null for NaN. */
export function scoreColor(v: number, max: number, signed: boolean, dark: boolean): RGB | null {
  if (!Number.isFinite(v)) return null;
  return signed ? divergingColor(v / max, dark) : heatColor(Math.sqrt(Math.max(0, v) / max), dark);
}

/** Legend: the quantity, and for target-dependent methods the metric and where it is read. */
export function legendOf(a: Attribution): string {
  // the metric's name already says where it is read ("log p(' Paris') at token 4")
  const metric = a.metric?.name ? a.metric.name : `flow into #${a.position} (no metric: target-independent)`;
  const units = a.units ? ` (${a.units})` : "";
  return `${a.method}: ${a.quantity} · ${metric}${units}`;
}

/** Integrated gradients' completeness error as a sentence (the check of its exactness), "" for other methods. */
export function completenessText(a: Attribution): string {
  const rel = Number(a.extra.completeness_relative);
  if (!("completeness_relative" in a.extra) || !Number.isFinite(rel)) return "";
  const steps = a.extra.steps != null ? ` at ${a.extra.steps} steps` : "";
  return `completeness error ${(rel * 100).toFixed(1)}%${steps}${rel > 0.05 ? " — read with care" : ""}`;
}

/**
 * The target position a matrix column selects: generated token g is predicted at position g - 1, so clicking it
 * explains that prediction (the graph's target is the position whose next token is explained).
 */
export function targetForGenerated(g: number): number {
  return g - 1;
}

/** The matrix column of the current target (-1 when the target's next token is not a generated one). */
export function columnOfTarget(rows: number[], target: number): number {
  return rows.indexOf(target + 1);
}

/** The token strip's cells for a granularity: "subword" (one per token) or a merge rule of the word view ("sum",
 * "mean", "max"; the merging is Python's, granularity.py). Falls back to tokens when words were not sent. */
export function cellsOf(a: Attribution, granularity: string, nTokens: number): Cell[] {
  const merged = a.words?.merged[granularity];
  if (granularity !== "subword" && a.words && merged) {
    return a.words.spans.map(([first, last], i) => ({ first, last, value: i < merged.data.length ? merged.data[i] : NaN }));
  }
  const vals = a.scores?.data ?? new Float32Array();
  return Array.from({ length: nTokens }, (_, j) => ({ first: j, last: j, value: j < vals.length ? vals[j] : NaN }));
}

/** The selection a click on a cell makes: the embedding node of its token, or of the word's tokens (`last`). */
export function cellSelection(c: Cell) {
  const sel: { kind: "node"; node_kind: "embedding"; layer: number; token: number; last?: number } =
    { kind: "node", node_kind: "embedding", layer: -1, token: c.first };
  if (c.last > c.first) sel.last = c.last;
  return sel;
}

/** One agreement row as text: "ρ +0.85 (of |score|) · top-3 shared 2/3", or why there is no number. */
export function agreementText(r: AgreementRow, k: number): string {
  if (r.state === "error") return `cannot run here: ${r.error}`;
  if (r.state === "on_demand") return `not computed (${r.cost})`;
  const rho = r.spearman == null ? "ρ undefined (constant scores)" : `ρ ${r.spearman >= 0 ? "+" : "−"}${Math.abs(r.spearman).toFixed(2)}`;
  return `${rho} (${r.compared === "signed" ? "signed" : "of |score|"}) · top-${k} shared ${r.topK ?? 0}/${k}`;
}
