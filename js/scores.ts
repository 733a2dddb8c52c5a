/**
 * Scoring methods in the browser: the `metric`, `method_scores` and `agreement` traits decoded, the heatmap modes,
 * legend text (quantity and units), and the component id a selection names for the Check action.
 */
import { decodeArray, NDArray } from "./codec";
import { HEAD_MODES, type HeadMode, type Metric } from "./protocol.gen";
import type { Selection, WidgetModel } from "./types";

export { HEAD_MODES, type HeadMode };
export const MODE_LABELS: Record<HeadMode, string> = {
  importance: "flow share",
  logit_attribution: "logit attribution",
  attribution_patching: "≈ causal effect",
};
export const CAUSAL: HeadMode = "attribution_patching";

/** The `metric` trait: every field may be missing (`{}` before the first explanation, no metric formed). */
export type MetricInfo = Partial<Metric>;

export interface MethodTable {
  method: string;
  quantity: string;
  signed: boolean;
  metric: MetricInfo | null;
  heads: NDArray | null; // [L, H]
  mlp: NDArray | null; // [L]
}

export interface Agreement {
  pairs: [string, string, number, number?][]; // a, b, Spearman ρ, top-k overlap
  n: number;
  of: string;
  k?: number;
}

export function getMetric(model: WidgetModel): MetricInfo {
  const m = model.get("metric");
  return m && typeof m === "object" ? (m as MetricInfo) : {};
}

const tableCache = new WeakMap<object, Record<string, MethodTable>>();

/** `method_scores` decoded; absent or malformed entries are left out (a static report may have none). */
export function getMethodScores(model: WidgetModel): Record<string, MethodTable> {
  const raw = model.get("method_scores");
  if (!raw || typeof raw !== "object") return {};
  const hit = tableCache.get(raw);
  if (hit) return hit;
  const out: Record<string, MethodTable> = {};
  for (const [name, v] of Object.entries(raw as Record<string, any>)) {
    if (!v || typeof v !== "object") continue;
    try {
      out[name] = {
        method: String(v.method ?? name),
        quantity: String(v.quantity ?? ""),
        signed: v.signed !== false,
        metric: v.metric && typeof v.metric === "object" ? v.metric : null,
        heads: decodeArray(v.heads),
        mlp: decodeArray(v.mlp),
      };
    } catch (e) {
      console.error("lmtt-widgets: bad method_scores entry", name, e);
    }
  }
  tableCache.set(raw, out);
  return out;
}

export function getAgreement(model: WidgetModel): Agreement | null {
  const a = model.get("agreement");
  if (!a || typeof a !== "object" || !Array.isArray((a as any).pairs) || !(a as any).pairs.length) return null;
  return a as Agreement;
}

export function getHeadMode(model: WidgetModel): HeadMode {
  const m = model.get("head_mode");
  return HEAD_MODES.includes(m) ? (m as HeadMode) : "importance";
}

/** A token inside quotes with its leading space kept and line breaks / tabs made visible: `' Mary'`. */
export function quoteToken(tok: unknown): string {
  const s = String(tok ?? "").replace(/\r\n|\n|\r/g, "↵").replace(/\t/g, "⇥").replace(/[\u0000-\u001f\u007f]/g, "�");
  return `'${s}'`;
}

/**
 * What a signed score is a share of, in words: the logit difference with a foil; without one the target's logit
 * (direct logit attribution is linear in the logit) or its log-probability (causal effects patch the whole model).
 */
export function metricText(mode: HeadMode, m: MetricInfo): string {
  const t = quoteToken(m.target_text);
  if (m.foil != null) return `logit(${t}) − logit(${quoteToken(m.foil_text)})`;
  return mode === "logit_attribution" ? `logit(${t})` : `log p(${t})`;
}

export function unitsOf(mode: HeadMode, m: MetricInfo): string {
  if (mode === "importance") return "share of the attention update";
  return m.foil != null || mode === "logit_attribution" ? "logits" : "nats";
}

/** The legend line under the heatmap: the quantity and its units. */
export function legendText(mode: HeadMode, m: MetricInfo, position?: number): string {
  const at = position == null ? "" : ` at #${position}`;
  if (mode === "importance") return `flow share (importance)${at}: where information came from, not what it did`;
  const what = mode === "logit_attribution" ? "direct logit attribution" : "≈ causal effect (attribution patching)";
  return `${metricText(mode, m)}${at}, ${what} (${unitsOf(mode, m)}; red raises it, blue lowers it)`;
}

/** How the causal setting reads: "patched from 'When Alice…'" or "mean ablation". */
export function settingText(m: MetricInfo): string {
  if (m.ablation && m.ablation !== "corrupted") return `${m.ablation} ablation`;
  return m.corrupted ? `patched from ${quoteToken(m.corrupted)}` : "no corrupted prompt";
}

/**
 * The component id (Python's `Component.parse`) that a selection's Check patches: heads, MLPs and neurons over
 * the whole prompt (as attribution patching scores them), an attention edge through all heads of its layer.
 * null for a residual node (not a component one can patch on its own).
 */
export function componentId(sel: Selection): string | null {
  if (!sel) return null;
  switch (sel.kind) {
    case "head":
      return `L${sel.layer}.H${sel.head}`;
    case "mlp":
      return `L${sel.layer}.MLP`;
    case "neuron":
      return `L${sel.layer}.N${sel.neuron}`;
    case "edge":
      return `L${sel.layer} ${sel.source}>${sel.token}`;
    default:
      return null;
  }
}

/** The approximate scores of a component id from the method tables (heads and MLPs only), null when not scored. */
export function approxOf(tables: Record<string, MethodTable>, method: string, id: string): number | null {
  const tb = tables[method];
  if (!tb) return null;
  let m = /^L(\d+)\.H(\d+)$/.exec(id);
  if (m && tb.heads && tb.heads.shape.length === 2) {
    const [L, H] = tb.heads.shape;
    const l = Number(m[1]);
    const h = Number(m[2]);
    if (l >= L || h >= H) return null;
    const v = tb.heads.data[l * H + h];
    return Number.isFinite(v) ? v : null;
  }
  m = /^L(\d+)\.MLP$/.exec(id);
  if (m && tb.mlp) {
    const v = tb.mlp.data[Number(m[1])];
    return v != null && Number.isFinite(v) ? v : null;
  }
  return null;
}

/** "+1.234" / "−0.500": the sign always shown (a negative effect must not read as a small positive one). */
export function signed(x: number | null | undefined, digits = 3): string {
  if (x == null || !Number.isFinite(x)) return "—";
  const s = Math.abs(x).toFixed(digits);
  return x < 0 ? `−${s}` : `+${s}`;
}
