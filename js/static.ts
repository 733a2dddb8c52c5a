/**
 * Kernel-less host for self-contained HTML reports (see docs/widget-protocol.md, "Report and neuron fallback").
 * `renderStatic(el, state)` draws the same widget from a plain JSON state whose array dicts carry base64 `data`.
 */
import { decodeArray, encodeArray, isArrayDict } from "./codec";
import { inflateTree } from "./reportcodec";
import { traceRoute, type FlowScores } from "./staticroute";
import { getLens } from "./state";
import type { Handler, WidgetModel } from "./types";
import { lensFromTrait } from "./panes/vocab";

export const STATIC_RUN_ERROR = "This is a static report: running a new prompt needs a notebook kernel";
export const STATIC_DETAILS_ERROR = "not in this report: open it in a notebook with a kernel to compute it";
export const LEFT_OUT = "left out of this report (see the note at its top): open it in a notebook with a kernel to compute it";
export const NOT_HELD_HEAD =
  "not in this report: at targets other than the last it holds the projections of the most important heads and of the heads on the route (see the note at its top); open it in a notebook with a kernel to compute it";

/**
 * A complete report (lmtt_widgets/report.py): per-target snapshots of the traits that follow the target, the
 * attribution pane's scores per method and target, the route scores the page traces routes from, and the
 * details a click asks for (still stored: inflated when asked).
 */
export interface ReportData {
  perTarget: Record<string, Record<string, unknown>>;
  attributions: Record<string, Record<string, unknown>>;
  flow: FlowScores | null;
  details: Record<string, unknown>;
  bytes: Uint8Array;
  defaultTarget: number;
  omitted: string[];
  /** token texts that vocabulary projections index (report.py `_compact_pairs`, `_stored_table`) */
  texts: string[];
  /** vocabulary projection tables (lmtt_widgets/report_vocab.py): `head`, `mlp` rows by key, `neuron` directions */
  vocab: Record<string, VocabTable>;
}

/** A report_vocab table, inflated: rows of top-k then bottom-k (text index, logit); see `vocabResult`. */
export interface VocabTable {
  k: number;
  ids: Uint32Array;
  vals: Float32Array;
  /** "layer:head:token" / "layer:token" -> row (head and mlp tables) */
  rows: Map<string, number>;
  /** neuron table: row of each (layer, token, rank) of the `neurons` trait (-1: none) and its scale there */
  index?: Int32Array;
  scale?: Float32Array;
}

/** Inflate one stored vocabulary table. */
export function vocabTable(raw: any, bytes: Uint8Array): VocabTable {
  const t = inflateTree(raw, bytes);
  const ids = decodeArray(t.ids)!;
  const k = ids.shape.length === 2 ? ids.shape[1] / 2 : 0;
  const rows = new Map<string, number>();
  const keys = t.keys ? decodeArray(t.keys) : null;
  if (keys && keys.shape.length === 2) {
    const w = keys.shape[1];
    for (let r = 0; r < keys.shape[0]; r++) rows.set(Array.from(keys.data.subarray(r * w, r * w + w)).join(":"), r);
  }
  return {
    k, ids: ids.data as Uint32Array, vals: decodeArray(t.vals)!.data as Float32Array, rows,
    index: t.index ? (decodeArray(t.index)!.data as Int32Array) : undefined,
    scale: t.scale ? (decodeArray(t.scale)!.data as Float32Array) : undefined,
  };
}

/**
 * Promoted and suppressed [text, logit] lists of one table row, times `scale` (a neuron's factor at a token: a
 * negative one swaps the lists, as the vector then points the other way).
 */
export function vocabResult(t: VocabTable, row: number, texts: readonly string[], scale = 1): { promoted: unknown[]; suppressed: unknown[] } {
  const base = row * 2 * t.k;
  const list = (from: number) =>
    Array.from({ length: t.k }, (_, i) => [texts[t.ids[base + from + i]] ?? `#${t.ids[base + from + i]}`, t.vals[base + from + i] * scale]);
  const top = list(0);
  const bottom = list(t.k);
  return scale >= 0 ? { promoted: top, suppressed: bottom } : { promoted: bottom, suppressed: top };
}

/** Lists of [text, value] pairs stored as two arrays (`pair_texts`, `pair_values`) back as lists. */
export function expandPairs(v: unknown, texts: readonly string[]): unknown {
  if (Array.isArray(v)) return v.map((x) => expandPairs(x, texts));
  if (!v || typeof v !== "object" || ArrayBuffer.isView(v)) return v;
  const o = v as Record<string, unknown>;
  if ("pair_texts" in o && "pair_values" in o) {
    const ids = decodeArray(o.pair_texts)!.data;
    const vals = decodeArray(o.pair_values)!.data;
    return Array.from(ids, (id, i) => [texts[id] ?? `#${id}`, vals[i]]);
  }
  if (isArrayDict(o)) return o;
  return Object.fromEntries(Object.entries(o).map(([k, x]) => [k, expandPairs(x, texts)]));
}

function floats(a: unknown): Float32Array {
  return decodeArray(a)!.data as Float32Array;
}

function uints(a: unknown): Uint32Array {
  return decodeArray(a)!.data as Uint32Array;
}

/** The report's `flow` section, its arrays inflated, as typed arrays for the route tracer. */
export function flowScores(raw: any): FlowScores {
  return {
    L: Number(raw.L), T: Number(raw.T), H: Number(raw.H), parallel: raw.parallel === true, floor: Number(raw.floor),
    residAttn: floats(raw.resid_attn), biasAttn: floats(raw.bias_attn), externalAttn: floats(raw.external_attn),
    mlp: floats(raw.mlp), residMlp: floats(raw.resid_mlp), externalMlp: floats(raw.external_mlp),
    headPtr: uints(raw.head_ptr), headCol: uints(raw.head_col), headVal: floats(raw.head_val),
    edgePtr: uints(raw.edge_ptr), edgeSrc: uints(raw.edge_src), edgeVal: floats(raw.edge_val),
    cancelling: decodeArray(raw.cancelling)!.data as Int32Array, external: decodeArray(raw.external)!.data as Int32Array,
  };
}

/**
 * The per-target head tables a report holds as a column of a state array (report.py `_state_column`: the flow
 * share table at target t is `head_importance[:, :, t]`), rebuilt as [L, H] float32 arrays, in place.
 */
export function fromStateColumns(perTarget: Record<string, Record<string, any>>, state: Record<string, any>): void {
  for (const snap of Object.values(perTarget)) {
    for (const table of Object.values((snap?.method_scores ?? {}) as Record<string, any>)) {
      const ref = table?.heads;
      if (!ref || typeof ref !== "object" || isArrayDict(ref) || !("column_of" in ref)) continue;
      const source = decodeArray(state[String(ref.column_of)]);
      const t = Number(ref.token);
      if (!source || source.shape.length !== 3 || !Number.isInteger(t) || t < 0 || t >= source.shape[2]) {
        throw new Error(`the report's table refers to a column ${String(ref.column_of)}[:, :, ${String(ref.token)}] it does not hold`);
      }
      const [L, H] = source.shape;
      const out = new Float32Array(L * H);
      for (let i = 0; i < L * H; i++) out[i] = source.data[i * source.shape[2] + t];
      table.heads = encodeArray(out, [L, H]);
    }
  }
}

/**
 * The route scores' per-update arrays a report holds as a table of the state's block importance (report.py
 * `_flow_state_refs`: the same float32 scores, [L, T] read as layer * T + token), put back in place.
 */
export function fromStateBlocks(flow: Record<string, any>, state: Record<string, any>): Record<string, any> {
  for (const [name, ref] of Object.entries(flow)) {
    if (!ref || typeof ref !== "object" || isArrayDict(ref) || !("state_of" in ref)) continue;
    const table = decodeArray(state[String(ref.state_of)]?.[String(ref.key)]);
    if (!table) throw new Error(`the report's route scores refer to a table ${String(ref.state_of)}.${String(ref.key)} it does not hold`);
    flow[name] = table;
  }
  return flow;
}

/** A word's value from its tokens' (granularity.py `merge`): NaN tokens skipped, NaN when it has none. */
function mergeWord(values: ArrayLike<number>, first: number, last: number, how: string): number {
  let sum = 0;
  let n = 0;
  let best = NaN;
  for (let i = first; i <= last && i < values.length; i++) {
    const v = values[i];
    if (Number.isNaN(v)) continue;
    sum += v;
    n += 1;
    if (!(Math.abs(v) <= Math.abs(best))) best = v; // the first of the largest magnitude, as argmax
  }
  if (!n) return NaN;
  return how === "max" ? best : how === "mean" ? sum / n : sum;
}

/**
 * The word merges a report leaves to the page (report.py `_attribution_reduced`: `merged` is "from_scores"),
 * computed from the attribution's scores for each merge rule, in place.
 */
export function fromScoreMerges(attributions: Record<string, Record<string, any>>): Record<string, Record<string, any>> {
  for (const byTarget of Object.values(attributions)) {
    for (const att of Object.values(byTarget ?? {})) {
      const words = att?.words;
      if (!words || words.merged !== "from_scores") continue;
      const scores = decodeArray(att.scores);
      if (!scores || !Array.isArray(words.spans)) throw new Error("the report's word view lacks the scores it is merged from");
      const spans = words.spans as [number, number][];
      words.merged = Object.fromEntries(
        (words.merges as string[]).map((how) => [
          how,
          encodeArray(Float32Array.from(spans, ([a, b]) => mergeWord(scores.data, a, b, how)), [spans.length]),
        ]),
      );
    }
  }
  return attributions;
}

/**
 * The logit lens columns a report holds as one table (report.py `_lens_table`, its arrays inflated), back as each
 * target's `lens`
 * trait, exactly as the kernel sends it, in place: a token's rank in the row before is its place there when it is
 * listed there (`rank_rest`: the ranks of the others, in order; `rank_fix_at` / `rank_fix`: where ties made it
 * otherwise), its string the report's text at its index in `strings` (one per id of the table, ascending).
 */
export function fromLensTable(perTarget: Record<string, Record<string, any>>, table: Record<string, any>, texts: readonly string[]): void {
  const ids = decodeArray(table.ids)!;
  const [N, R, K] = ids.shape;
  const probs = floats(table.probs);
  const rest = decodeArray(table.rank_rest)!.data;
  const ranks = new Int32Array(N * R * K);
  let k = 0;
  for (let n = 0; n < N; n++) {
    for (let r = 0; r < R; r++) {
      for (let i = 0; i < K; i++) {
        const at = (n * R + r) * K + i;
        let place = -1;
        if (r > 0) {
          const prev = at - i - K;
          for (let j = 0; j < K && place < 0; j++) if (ids.data[prev + j] === ids.data[at]) place = j;
        }
        if (place >= 0) ranks[at] = place;
        else if (k < rest.length) ranks[at] = rest[k++];
        else throw new Error("the report's lens table lacks ranks: the file was altered");
      }
    }
  }
  const fixAt = uints(table.rank_fix_at);
  const fix = decodeArray(table.rank_fix)!.data;
  fixAt.forEach((at, i) => (ranks[at] = fix[i]));
  // the table's ids ascending, each with its text
  const strings = uints(table.strings);
  const unique = [...new Set(ids.data)].sort((a, b) => a - b);
  if (unique.length !== strings.length) throw new Error("the report's lens table has another number of strings than of tokens");
  const textOf = new Map(unique.map((id, i) => [id, texts[strings[i]] ?? `#${strings[i]}`]));
  (table.tokens as number[]).forEach((t, n) => {
    const part = (R * K) * n;
    const colIds = (ids.data as Uint32Array).slice(part, part + R * K);
    const colStrings: Record<string, string> = {};
    for (const id of [...new Set(colIds)].sort((a, b) => a - b)) colStrings[String(id)] = textOf.get(id)!;
    const snap = (perTarget[String(t)] ??= {});
    snap.lens = {
      rows: Number(table.rows[n]), token: Number(t), ids: encodeArray(colIds, [R, K]),
      probs: encodeArray(probs.slice(part, part + R * K), [R, K]), rank_prev: encodeArray(ranks.slice(part, part + R * K), [R, K]),
      strings: colStrings,
    };
  });
}

/** Split a decoded report body into the widget state (arrays inflated) and what the page answers from. */
export function reportParts(body: any, bytes: Uint8Array): { state: Record<string, any>; report: ReportData } {
  const state = inflateTree(body.state ?? {}, bytes);
  const perTarget = inflateTree(body.per_target ?? {}, bytes);
  fromStateColumns(perTarget, state);
  const texts: string[] = Array.isArray(body.texts) ? body.texts.map(String) : [];
  if (body.lens) fromLensTable(perTarget, inflateTree(body.lens, bytes), texts);
  const report: ReportData = {
    perTarget,
    attributions: fromScoreMerges(inflateTree(body.attributions ?? {}, bytes)),
    flow: body.flow ? flowScores(fromStateBlocks(inflateTree(body.flow, bytes), state)) : null,
    details: body.details ?? {},
    bytes,
    defaultTarget: Number(body.default_target ?? state.target),
    omitted: Array.isArray(body.omitted) ? body.omitted.map(String) : [],
    texts,
    vocab: Object.fromEntries(Object.entries(body.vocab ?? {}).map(([k, v]) => [k, vocabTable(v, bytes)])),
  };
  return { state, report };
}

/** Decode standard (or URL-safe) base64 into a fresh, aligned DataView. Whitespace is ignored. */
export function base64ToDataView(s: string): DataView {
  const clean = s.replace(/[\s=]/g, "").replace(/-/g, "+").replace(/_/g, "/");
  let bin: string;
  try {
    bin = atob(clean + "===".slice((clean.length + 3) % 4));
  } catch (e) {
    throw new Error(`invalid base64 array data: ${String(e)}`);
  }
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new DataView(bytes.buffer);
}

/** Recursively turn every array dict with base64 string `data` into one with DataView `data` (like a live trait). */
export function inflateState<T = any>(v: T): T {
  if (isArrayDict(v) && typeof (v as any).data === "string") return { ...(v as any), data: base64ToDataView((v as any).data) };
  if (Array.isArray(v)) return v.map((x) => inflateState(x)) as any;
  if (v && typeof v === "object" && !ArrayBuffer.isView(v) && !(v instanceof ArrayBuffer)) {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) out[k] = inflateState(x);
    return out as T;
  }
  return v;
}

/** Deep equality for JSON-like trait values; binary views compare by identity (Backbone-like change detection). */
function sameValue(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (!a || !b || typeof a !== "object" || typeof b !== "object") return Number.isNaN(a) && Number.isNaN(b);
  if (ArrayBuffer.isView(a) || ArrayBuffer.isView(b) || a instanceof ArrayBuffer || b instanceof ArrayBuffer) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) {
    const bb = b as unknown[];
    return a.length === bb.length && a.every((x, i) => sameValue(x, bb[i]));
  }
  const ka = Object.keys(a as object);
  const kb = Object.keys(b as object);
  return ka.length === kb.length && ka.every((k) => k in (b as object) && sameValue((a as any)[k], (b as any)[k]));
}

export interface Variant {
  target: number;
  threshold: number;
  granularity: string;
  key: string;
}

/** Parse the `graph_variants` keys `"<target>|<threshold>|<granularity>"`; malformed keys are skipped. */
export function parseVariants(variants: unknown): Variant[] {
  if (!variants || typeof variants !== "object") return [];
  const out: Variant[] = [];
  for (const key of Object.keys(variants as object)) {
    const parts = key.split("|");
    if (parts.length !== 3) continue;
    const target = Number(parts[0]);
    const threshold = Number(parts[1]);
    if (!Number.isInteger(target) || !Number.isFinite(threshold) || threshold <= 0) continue;
    out.push({ target, threshold, granularity: parts[2].trim(), key });
  }
  return out;
}

/** Variant for (target, granularity) whose threshold is nearest to `threshold` (in log space), or null. */
export function findVariant(variants: Variant[], target: number, threshold: number, granularity: string): Variant | null {
  const tau = Number.isFinite(threshold) && threshold > 0 ? threshold : 0.04;
  let best: Variant | null = null;
  let bestD = Infinity;
  for (const v of variants) {
    if (v.target !== target || v.granularity !== granularity) continue;
    const d = Math.abs(Math.log(v.threshold / tau));
    // ties: prefer the lower threshold (the larger graph)
    if (d < bestD - 1e-12 || (Math.abs(d - bestD) <= 1e-12 && best && v.threshold < best.threshold)) {
      best = v;
      bestD = d;
    }
  }
  return best;
}

const ROUTE_KEYS = ["target", "threshold", "granularity"] as const;

/**
 * In-memory anywidget model for a static report. Trait changes stay in the page; a new target / threshold /
 * granularity picks a precomputed graph from `graph_variants`; `details` requests are answered from the `details`
 * trait; `run` is refused.
 */
export class StaticModel implements WidgetModel {
  private state: Record<string, any>;
  private handlers = new Map<string, Set<Handler>>();
  private dirty = new Set<string>();
  private lastError = "";
  /** Route (target, threshold, granularity) that the current `graph` belongs to. */
  private route: Record<(typeof ROUTE_KEYS)[number], unknown>;

  /** Trait values at the report's default target, for the traits some target's snapshot replaces. */
  private base: Record<string, unknown> = {};
  private inflated = new Map<string, unknown>();

  constructor(state: Record<string, any>, private report: ReportData | null = null) {
    this.state = { ...state, static: true };
    this.route = { target: this.state.target, threshold: this.state.threshold, granularity: this.state.granularity };
    if (report) {
      for (const snap of Object.values(report.perTarget)) for (const k of Object.keys(snap)) this.base[k] = this.state[k];
      this.base.attribution = this.state.attribution;
    }
  }

  get(name: string): any {
    return this.state[name];
  }

  set(name: string, value: unknown): void {
    const old = this.state[name];
    this.state[name] = value;
    this.dirty.add(name);
    if (!sameValue(old, value)) this.emit(`change:${name}`, this, value);
  }

  on(event: string, cb: Handler): void {
    let s = this.handlers.get(event);
    if (!s) this.handlers.set(event, (s = new Set()));
    s.add(cb);
  }

  off(event?: string | null, cb?: Handler | null): void {
    if (!event) {
      if (!cb) this.handlers.clear();
      else for (const s of this.handlers.values()) s.delete(cb);
      return;
    }
    if (!cb) this.handlers.delete(event);
    else this.handlers.get(event)?.delete(cb);
  }

  /** Plays the kernel's part for the traits it would react to. */
  save_changes(): void {
    const changed = [...this.dirty];
    this.dirty.clear();
    if (this.report) this.followReport(changed);
    else if (changed.some((k) => (ROUTE_KEYS as readonly string[]).includes(k))) this.updateRoute();
  }

  send(content: unknown, _callbacks?: unknown, _buffers?: unknown[]): void {
    const msg = content as any;
    if (!msg || typeof msg !== "object") return;
    if (msg.type === "run") {
      this.setError(STATIC_RUN_ERROR);
    } else if (msg.type === "attribution_matrix" || msg.type === "attribution_agreement") {
      this.setError(`This computation runs the model: it is ${LEFT_OUT}`);
    } else if (msg.type === "details") {
      const d = this.state.details;
      const key = String(msg.key);
      const has = !!d && typeof d === "object" && Object.prototype.hasOwnProperty.call(d, key);
      const found = has ? d[key] : this.fromReport(key);
      const reply = found !== undefined
        ? { type: "details", id: msg.id, key: msg.key, ok: true, result: found }
        : { type: "details", id: msg.id, key: msg.key, ok: false, error: this.report ? LEFT_OUT : STATIC_DETAILS_ERROR };
      // answer asynchronously, like a kernel would (no re-entrant redraws inside a pane's draw)
      Promise.resolve().then(() => this.emit("msg:custom", reply, []));
    }
  }

  /** Number of registered handlers (tests). */
  listenerCount(): number {
    let n = 0;
    for (const s of this.handlers.values()) n += s.size;
    return n;
  }

  private emit(event: string, ...args: unknown[]) {
    for (const cb of [...(this.handlers.get(event) ?? [])]) {
      try {
        cb(...args);
      } catch (e) {
        console.error("lmtt-widgets:", e);
      }
    }
  }

  /** Kernel-side update: set without marking it dirty. */
  private pySet(name: string, value: unknown) {
    this.set(name, value);
    this.dirty.delete(name);
  }

  private setError(msg: string) {
    // re-show the bar even when the same message was dismissed before
    if (this.state.error === msg) this.pySet("error", "");
    this.lastError = msg;
    this.pySet("error", msg);
  }

  /** A details result the report holds or derives (lens rows from a target's lens column); undefined if none. */
  private fromReport(key: string): unknown {
    const r = this.report;
    if (!r) return undefined;
    if (this.inflated.has(key)) return this.inflated.get(key);
    let out: unknown;
    const [kind, ...nums] = key.split(":");
    const n = nums.map(Number);
    if (Object.prototype.hasOwnProperty.call(r.details, key)) {
      out = expandPairs(inflateTree(r.details[key], r.bytes), r.texts);
    } else if (kind === "lens" && n.length === 2) {
      const raw = n[1] === r.defaultTarget ? this.base.lens ?? this.state.lens : r.perTarget[String(n[1])]?.lens;
      out = raw ? lensFromTrait(getLens({ get: () => raw } as unknown as WidgetModel), n[0]) ?? undefined : undefined;
    } else if (kind === "head" && n.length === 3 && n[2] !== r.defaultTarget) {
      out = this.headElsewhere(n[0], n[1], n[2]);
    } else if (kind === "mlp" && n.length === 2) {
      out = this.mlpResult(n[0], n[1]);
    } else if (kind === "neuron" && n.length === 3) {
      out = this.neuronResult(n[0], n[1], n[2]);
    }
    if (out !== undefined) this.inflated.set(key, out);
    return out;
  }

  /**
   * A head's detail at a target other than the report's: its attention and contribution maps are the same at
   * every target (one row is highlighted), its importance there is in `head_importance`; its vocabulary
   * projection at that token from the report's head table, or a note saying it is not in the report.
   */
  private headElsewhere(layer: number, head: number, token: number): unknown {
    const r = this.report!;
    const raw = r.details[`head:${layer}:${head}:${r.defaultTarget}`];
    if (raw === undefined) return undefined;
    const d = expandPairs(inflateTree(raw, r.bytes), r.texts) as Record<string, unknown>;
    const hi = decodeArray(this.state.head_importance);
    const importance = hi && hi.shape.length === 3 && token < hi.shape[2] ? hi.data[(layer * hi.shape[1] + head) * hi.shape[2] + token] : NaN;
    const table = r.vocab.head;
    const row = table?.rows.get(`${layer}:${head}:${token}`);
    if (table && row !== undefined) return { ...d, importance, ...vocabResult(table, row, r.texts) };
    return { ...d, importance, promoted: [], suppressed: [], note: `The vocabulary projection of this head at #${token} is ${NOT_HELD_HEAD}` };
  }

  /** An MLP block's projection from the report's table, with its top neurons from the `neurons` trait. */
  private mlpResult(layer: number, token: number): unknown {
    const r = this.report!;
    const table = r.vocab.mlp;
    const row = table?.rows.get(`${layer}:${token}`);
    if (!table || row === undefined) return undefined;
    return { ...vocabResult(table, row, r.texts), neurons: this.neuronRows(layer, token) };
  }

  /** [[neuron, importance, activation]] of a block in the `neurons` trait (empty if it is not there). */
  private neuronRows(layer: number, token: number): number[][] {
    const nr = this.state.neurons;
    const ids = decodeArray(nr?.ids);
    if (!ids || ids.shape.length !== 3) return [];
    const [, T, k] = ids.shape;
    const avail = decodeArray(nr.available);
    if (avail && !avail.data[layer * T + token]) return [];
    const imp = decodeArray(nr.importance)!.data;
    const act = decodeArray(nr.activation)!.data;
    const at = (layer * T + token) * k;
    return Array.from({ length: k }, (_, i) => [ids.data[at + i], imp[at + i], act[at + i]]);
  }

  /** A neuron's projection: its direction's row of the neuron table times its scale at that token. */
  private neuronResult(layer: number, neuron: number, token: number): unknown {
    const r = this.report!;
    const table = r.vocab.neuron;
    const ids = decodeArray(this.state.neurons?.ids);
    if (!table?.index || !table.scale || !ids || ids.shape.length !== 3) return undefined;
    const [, T, k] = ids.shape;
    const at = (layer * T + token) * k;
    for (let i = 0; i < k; i++) {
      if (ids.data[at + i] !== neuron) continue;
      const row = table.index[at + i];
      return row >= 0 ? vocabResult(table, row, r.texts, table.scale[at + i]) : undefined;
    }
    return undefined;
  }

  /** Play the kernel for a complete report: a new target brings its snapshot, any route change a traced route. */
  private followReport(changed: string[]) {
    const r = this.report!;
    const target = Number(this.state.target);
    if (changed.includes("target")) {
      const snap = target === r.defaultTarget ? this.base : r.perTarget[String(target)] ?? {};
      for (const [k, v] of Object.entries(this.base)) if (k !== "attribution") this.pySet(k, k in snap ? snap[k] : v);
    }
    if (changed.includes("target") || changed.includes("attribution_method")) this.showAttribution(target);
    if (changed.some((k) => (ROUTE_KEYS as readonly string[]).includes(k)) && r.flow) {
      const tau = Number(this.state.threshold);
      const gran = String(this.state.granularity ?? "head");
      if (!(tau >= r.flow.floor - 1e-12)) {
        this.pySet("threshold", this.route.threshold);
        this.setError(`This report holds routes for τ ≥ ${r.flow.floor}: open it in a notebook with a kernel for lower thresholds.`);
        return;
      }
      this.pySet("graph", traceRoute(r.flow, target, tau, gran));
      this.route = { target, threshold: tau, granularity: gran };
    }
  }

  private showAttribution(target: number) {
    const method = String(this.state.attribution_method ?? "");
    const found = this.report!.attributions[method]?.[String(target)];
    if (found !== undefined) {
      this.pySet("attribution", found);
      if (this.lastError && this.state.error === this.lastError) this.pySet("error", "");
      this.lastError = "";
    } else {
      this.setError(`${method} at #${target} is ${LEFT_OUT}`);
    }
  }

  private updateRoute() {
    const target = Number(this.state.target);
    const tau = Number(this.state.threshold);
    const gran = String(this.state.granularity ?? "head");
    const variants = this.state.graph_variants;
    const v = findVariant(parseVariants(variants), target, tau, gran);
    if (!v) {
      // keep the graph and put the controls back on the route it shows
      for (const k of ROUTE_KEYS) if (!sameValue(this.state[k], this.route[k])) this.pySet(k, this.route[k]);
      const what = [
        !sameValue(target, this.route.target) ? `target #${target}` : "",
        !sameValue(gran, this.route.granularity) ? `granularity “${gran}”` : "",
        !sameValue(tau, this.route.threshold) ? `threshold ${tau}` : "",
      ].filter(Boolean);
      this.setError(
        `This report only holds precomputed routes: none for ${what.join(", ") || "this choice"}. Open it in a notebook with a kernel to compute it.`,
      );
      return;
    }
    if (v.threshold !== tau) this.pySet("threshold", v.threshold);
    this.route = { target: v.target, threshold: v.threshold, granularity: v.granularity };
    const graph = variants[v.key];
    if (graph !== this.state.graph) this.pySet("graph", graph);
    if (this.lastError && this.state.error === this.lastError) this.pySet("error", "");
    this.lastError = "";
  }
}
