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
