/** HeadHeatmap pane: layers × heads importance at the focus token, head detail (pattern + contribution). */
import type { NDArray } from "../codec";
import { at } from "../codec";
import { divergingColor, divergingGradient, heatColor, heatGradient, readTheme, rgbString } from "../color";
import {
  CAUSAL, getAgreement, getHeadMode, getMethodScores, getMetric, HEAD_MODES, HeadMode, legendText, MODE_LABELS, signed,
  unitsOf,
} from "../scores";
import { dims, focusToken, getGraph, getHeadImportance, getSelection, getTokens, getTarget } from "../state";
import { detailKey } from "../selection";
import { displayToken, fmt, h, pct, truncate } from "../text";
import type { Pane, PaneContext, Status } from "../types";
import { createCheckBox } from "./check";
import { edgeHeadShares } from "./graph";
import { detailStatus, drawMatrix } from "./common";
import { moveCell } from "../keyboard";
import { watchTheme } from "../theme";
import { frameThrottle } from "../frame";

// Pattern and contribution maps sit side by side in the side column.
const MATRIX_PX = 130;

export interface HeatGeom {
  cw: number;
  ch: number;
  left: number;
  top: number;
}

export function heatGeom(L: number, H: number, availW = 320): HeatGeom {
  const left = 30;
  const cw = Math.max(8, Math.min(26, Math.floor((availW - left - 4) / Math.max(1, H))));
  const ch = Math.max(6, Math.min(16, Math.floor(420 / Math.max(1, L))));
  return { cw, ch, left, top: 16 };
}

export function heatCellAt(g: HeatGeom, L: number, H: number, x: number, y: number): { layer: number; head: number } | null {
  const head = Math.floor((x - g.left) / g.cw);
  const layer = Math.floor((y - g.top) / g.ch);
  if (x < g.left || y < g.top || head < 0 || head >= H || layer < 0 || layer >= L) return null;
  return { layer, head };
}

function findSelectedEdge(model: PaneContext["model"]): number {
  const s = getSelection(model);
  if (!s || s.kind !== "edge") return -1;
  const g = getGraph(model);
  for (let i = 0; i < g.e; i++) {
    if (g.edgeKind[i] !== "attention") continue;
    const d = g.edgeDst[i];
    if (g.nodeLayer[d] === s.layer && g.nodeToken[d] === s.token && g.nodeToken[g.edgeSrc[i]] === s.source) return i;
  }
  return -1;
}

export function createHeadsPane(ctx: PaneContext): Pane {
  const { model } = ctx;
  const ac = new AbortController();
  const sig = { signal: ac.signal };
  ctx.onCleanup(() => ac.abort());

  const title = h("div", { class: "lmtt-pane-title" });
  const modeBtns = HEAD_MODES.map((m) => h("button", { type: "button", class: "lmtt-seg", "data-mode": m, "aria-pressed": "false" }, MODE_LABELS[m]));
  const modes = h("div", { class: "lmtt-segs lmtt-head-modes", role: "group", "aria-label": "Heatmap quantity" }, ...modeBtns);
  const modeNote = h("div", { class: "lmtt-hint lmtt-mode-note", role: "status" });
  const legendBar = h("span", { class: "lmtt-legend-bar" });
  const legendLo = h("span", { class: "lmtt-num" });
  const legendHi = h("span", { class: "lmtt-num" });
  const legendMid = h("span", { class: "lmtt-num lmtt-legend-mid" });
  const legendText_ = h("div", { class: "lmtt-legend-text" });
  // the "0" tick sits under the bar's middle, where a diverging scale is centred
  const legendBarWrap = h("span", { class: "lmtt-legend-barwrap" }, legendBar, legendMid);
  const legend = h("div", { class: "lmtt-heat-legend" }, h("div", { class: "lmtt-legend-scale" }, legendLo, legendBarWrap, legendHi), legendText_);
  const agree = h("div", { class: "lmtt-agreement" });
  const check = createCheckBox(ctx, sig);
  const canvas = h("canvas", { class: "lmtt-heat", tabindex: 0, "aria-label": "Head importance heatmap (layers × heads)" });
  const tip = h("div", { class: "lmtt-tooltip" });
  tip.hidden = true;
  const heatWrap = h("div", { class: "lmtt-heat-wrap" }, canvas, tip);
  const edgeBox = h("div", { class: "lmtt-edge-heads" });
  const detail = h("div", { class: "lmtt-head-detail" });
  const el = h("div", { class: "lmtt-pane lmtt-heads" }, title, modes, modeNote, heatWrap, legend, agree, check.el, edgeBox, detail);

  let geom: HeatGeom = heatGeom(1, 1);

  function slice(hi: NDArray, t: number, L: number, H: number): Float32Array {
    const out = new Float32Array(L * H);
    if (t < 0 || t >= hi.shape[2]) return out;
    for (let l = 0; l < L; l++) for (let hh = 0; hh < H; hh++) out[l * H + hh] = at(hi, l, hh, t);
    return out;
  }

  /** The values the heatmap shows now: [L*H], whether signed, the token they are at, or why there are none. */
  function current(): { vals: Float32Array | null; L: number; H: number; signed: boolean; token: number; why: string } {
    const mode = getHeadMode(model);
    const hi = getHeadImportance(model);
    if (mode === "importance") {
      if (!hi || hi.shape.length !== 3) return { vals: null, L: 0, H: 0, signed: false, token: 0, why: "No head importance data" };
      const t = focusToken(model);
      return { vals: slice(hi, t, hi.shape[0], hi.shape[1]), L: hi.shape[0], H: hi.shape[1], signed: false, token: t, why: "" };
    }
    const tb = getMethodScores(model)[mode];
    const m = getMetric(model);
    const token = Number.isInteger(m.position) ? (m.position as number) : getTarget(model);
    if (!tb || !tb.heads || tb.heads.shape.length !== 2) {
      const st = model.get("status") as Status | undefined;
      let why = `${MODE_LABELS[mode]}: not computed`;
      if (st && st.state === "running") why = String(st.message || "computing…");
      else if (mode === CAUSAL && model.get("static") === true) why = "≈ causal effect: this report holds it at the last target only; other targets need a kernel (the notebook).";
      else if (mode === CAUSAL && !m.causal_ready) why = "≈ causal effect needs a corrupted prompt or mean / zero ablation: the Explorer's “corrupted” box, or w.corrupted / w.ablation in Python.";
      return { vals: null, L: 0, H: 0, signed: true, token, why };
    }
    const [L, H] = tb.heads.shape;
    return { vals: Float32Array.from(tb.heads.data), L, H, signed: tb.signed, token, why: "" };
  }

  function drawModes() {
    const mode = getHeadMode(model);
    const tables = getMethodScores(model);
    const m = getMetric(model);
    const stat = model.get("static") === true;
    for (const b of modeBtns) {
      const bm = b.dataset.mode as HeadMode;
      b.setAttribute("aria-pressed", String(bm === mode));
      // without a kernel only what was shipped can be shown; with one, the causal mode needs a corruption
      const avail = bm === "importance" || !!tables[bm] || (!stat && (bm !== CAUSAL || m.causal_ready === true));
      b.disabled = !avail;
      b.title = bm === CAUSAL
        ? stat
          ? avail ? "≈ causal effect (attribution patching), computed when the report was written" : "not in this report at this target (the report holds it at the last target; other targets need a kernel)"
          : avail ? "≈ causal effect (attribution patching): computed on demand" : "needs a corrupted prompt, or mean / zero ablation"
        : bm === "importance" ? "flow share (importance): where information came from" : "signed direct logit attribution";
    }
    modes.hidden = !Object.keys(tables).length && stat;
  }

  function drawLegend(mode: HeadMode, max: number, isSigned: boolean, token: number, dark: boolean) {
    const m = getMetric(model);
    legendBar.style.background = isSigned ? divergingGradient(dark) : heatGradient(dark);
    legendLo.textContent = isSigned ? signed(-max, 2) : "0";
    legendHi.textContent = isSigned ? signed(max, 2) : fmt(max, 2);
    legendMid.textContent = isSigned ? "0" : "";
    legendText_.textContent = legendText(mode, m, token);
    legend.hidden = false;
  }

  function drawAgreement() {
    const a = getAgreement(model);
    if (!a) {
      agree.replaceChildren();
      return;
    }
    const name = (k: string) => MODE_LABELS[k as HeadMode] ?? k;
    agree.replaceChildren(
      h("div", { class: "lmtt-subtitle" }, `Rank agreement over ${a.n} heads (Spearman ρ of ${a.of}; top-${a.k ?? 10} overlap)`),
      ...a.pairs.map(([x, y, rho, overlap]) => h(
        "div", { class: "lmtt-check-row" },
        h("span", { class: "lmtt-lbl" }, `${name(x)} vs ${name(y)}`),
        h("span", { class: "lmtt-num" }, `ρ ${Number.isFinite(rho) ? rho.toFixed(2) : "–"}${Number.isFinite(overlap) ? ` · ${overlap}/${a.k ?? 10}` : ""}`),
      )),
    );
  }

  let shownVals: { vals: Float32Array | null; H: number; signed: boolean } = { vals: null, H: 1, signed: false };

  function draw() {
    const mode = getHeadMode(model);
    drawModes();
    drawAgreement();
    const cur = current();
    const toks = getTokens(model);
    const t = cur.token;
    const label = mode === "importance" ? "Head importance" : mode === "logit_attribution" ? "Direct logit attribution" : "≈ Causal effect";
    title.textContent = `${label} at “${truncate(displayToken(toks[t] ?? ""), 20)}” (#${t})`;
    shownVals = { vals: cur.vals, H: cur.H, signed: cur.signed };
    modeNote.textContent = cur.why;
    modeNote.hidden = !cur.why;
    if (!cur.vals) {
      canvas.hidden = true;
      legend.hidden = true;
      if (mode === "importance") title.textContent = cur.why;
      drawEdgeBox();
      drawDetail();
      return;
    }
    canvas.hidden = false;
    const { L, H, vals } = cur;
    geom = heatGeom(L, H, Math.max(200, Math.min(420, el.clientWidth || 320)));
    const W = geom.left + H * geom.cw + 4;
    const Hh = geom.top + L * geom.ch + 2;
    const dpr = Math.max(1, Math.min(3, (globalThis as any).devicePixelRatio || 1));
    canvas.width = Math.round(W * dpr);
    canvas.height = Math.round(Hh * dpr);
    canvas.style.width = `${W}px`;
    canvas.style.height = `${Hh}px`;
    const c = canvas.getContext("2d");
    const theme = readTheme(ctx.root);
    let max = 0;
    for (const v of vals) if (Number.isFinite(v) && Math.abs(v) > max) max = Math.abs(v);
    max = max || 1;
    drawLegend(mode, max, cur.signed, t, theme.dark);
    if (c) {
      c.setTransform(dpr, 0, 0, dpr, 0, 0);
      c.fillStyle = theme.bg;
      c.fillRect(0, 0, W, Hh);
      c.font = `9px ${theme.font}`;
      c.fillStyle = theme.muted;
      c.textBaseline = "middle";
      c.textAlign = "center";
      const hStep = geom.cw < 14 ? 2 : 1;
      for (let hh = 0; hh < H; hh += hStep) c.fillText(`H${hh}`, geom.left + (hh + 0.5) * geom.cw, 8);
      c.textAlign = "right";
      const lStep = Math.max(1, Math.ceil(11 / geom.ch));
      for (let l = 0; l < L; l += lStep) c.fillText(`L${l}`, geom.left - 4, geom.top + (l + 0.5) * geom.ch);
      for (let l = 0; l < L; l++) {
        for (let hh = 0; hh < H; hh++) {
          const v = vals[l * H + hh];
          c.fillStyle = rgbString(cur.signed ? divergingColor(v / max, theme.dark) : heatColor(Math.abs(v) / max, theme.dark));
          c.fillRect(geom.left + hh * geom.cw, geom.top + l * geom.ch, geom.cw - 1, geom.ch - 1);
        }
      }
      if (cur.signed) {
        // a hairline grid: zero cells are the page colour, so without it the map's extent would be invisible
        c.strokeStyle = theme.grid;
        c.lineWidth = 0.5;
        c.strokeRect(geom.left - 0.5, geom.top - 0.5, H * geom.cw, L * geom.ch);
      }
      const sel = getSelection(model);
      const ei = findSelectedEdge(model);
      if (ei >= 0 && sel && sel.kind === "edge") {
        // edge: outline its layer row and mark each head's share
        const y = geom.top + sel.layer * geom.ch;
        c.strokeStyle = theme.accent;
        c.lineWidth = 1.5;
        c.strokeRect(geom.left - 1, y - 1, H * geom.cw + 1, geom.ch + 1);
        const shares = edgeHeadShares(getGraph(model), ei);
        const ms = Math.max(1e-9, ...shares.map(([, s]) => Math.abs(s)));
        c.fillStyle = theme.fg;
        for (const [hh, s] of shares) {
          const r = Math.max(1, (Math.abs(s) / ms) * (Math.min(geom.cw, geom.ch) / 2 - 1));
          c.beginPath();
          c.arc(geom.left + (hh + 0.5) * geom.cw - 0.5, y + geom.ch / 2 - 0.5, r, 0, Math.PI * 2);
          c.fill();
        }
      }
      if (sel && sel.kind === "head") {
        c.strokeStyle = theme.accent;
        c.lineWidth = 2;
        c.strokeRect(geom.left + sel.head * geom.cw - 1, geom.top + sel.layer * geom.ch - 1, geom.cw + 1, geom.ch + 1);
      }
    }
    drawEdgeBox();
    drawDetail();
  }

  function drawEdgeBox() {
    const sel = getSelection(model);
    const ei = findSelectedEdge(model);
    if (!sel || sel.kind !== "edge") {
      edgeBox.replaceChildren();
      return;
    }
    const toks = getTokens(model);
    const shares = edgeHeadShares(getGraph(model), ei);
    const label = `Edge L${sel.layer}: “${truncate(displayToken(toks[sel.source] ?? ""), 14)}” → “${truncate(displayToken(toks[sel.token] ?? ""), 14)}”`;
    if (ei < 0) {
      edgeBox.replaceChildren(h("div", { class: "lmtt-subtitle" }, label), h("div", { class: "lmtt-empty" }, "edge not in the current graph"));
      return;
    }
    edgeBox.replaceChildren(
      h("div", { class: "lmtt-subtitle" }, `${label} · per-head share`),
      h("div", { class: "lmtt-chips" }, ...shares.slice(0, 12).map(([hh, s]) => {
        const b = h("button", { type: "button", class: "lmtt-chip", title: `select head L${sel.layer}.H${hh}` }, `H${hh} ${pct(s)}`);
        b.addEventListener("click", () => ctx.commit({ selection: { kind: "head", layer: sel.layer, head: hh, token: sel.token } }));
        return b;
      })),
    );
  }

  function drawDetail() {
    const sel = getSelection(model);
    if (!sel || sel.kind !== "head") {
      detail.replaceChildren(h("div", { class: "lmtt-hint" }, "Click a cell to see that head's attention pattern and contribution map."));
      return;
    }
    const key = detailKey("head", sel);
    const st = ctx.details.get(key);
    const what = `head L${sel.layer}.H${sel.head}`;
    if (!detailStatus(detail, st, ctx.details, what) || !st || st.status !== "ok") return;
    const r = st.result ?? {};
    const pat = h("canvas", { class: "lmtt-matrix", "aria-label": `attention pattern of ${what}` });
    const con = h("canvas", { class: "lmtt-matrix", "aria-label": `contribution map of ${what}` });
    detail.replaceChildren(
      h("div", { class: "lmtt-subtitle" }, `${what} at #${sel.token}${Number.isFinite(r.importance) ? ` · importance ${fmt(r.importance)}` : ""}`),
      h(
        "div",
        { class: "lmtt-matrices" },
        h("figure", null, pat, h("figcaption", null, "attention pattern (query ↓, key →)")),
        h("figure", null, con, h("figcaption", null, "contribution map")),
      ),
    );
    drawMatrix(pat, r.pattern ?? null, ctx.root, sel.token, MATRIX_PX);
    drawMatrix(con, r.contribution ?? null, ctx.root, sel.token, MATRIX_PX);
    if (!r.pattern && !r.contribution) detail.appendChild(h("div", { class: "lmtt-empty" }, "no matrices in this result"));
  }

  const local = (ev: MouseEvent): [number, number] => {
    const r = canvas.getBoundingClientRect();
    return [ev.clientX - r.left, ev.clientY - r.top];
  };
  canvas.addEventListener(
    "click",
    (ev) => {
      const hi = getHeadImportance(model);
      if (!hi) return;
      const [x, y] = local(ev);
      const cell = heatCellAt(geom, hi.shape[0], hi.shape[1], x, y);
      if (cell) ctx.commit({ selection: { kind: "head", layer: cell.layer, head: cell.head, token: focusToken(model) } });
    },
    sig,
  );
  canvas.addEventListener(
    "mousemove",
    (ev) => {
      const hi = getHeadImportance(model);
      if (!hi) return;
      const [x, y] = local(ev);
      const cell = heatCellAt(geom, hi.shape[0], hi.shape[1], x, y);
      if (!cell) {
        tip.hidden = true;
        return;
      }
      const mode = getHeadMode(model);
      const v = shownVals.vals ? shownVals.vals[cell.layer * shownVals.H + cell.head] : NaN;
      tip.textContent = shownVals.signed
        ? `L${cell.layer}.H${cell.head}: ${signed(v)} ${unitsOf(mode, getMetric(model))} (${MODE_LABELS[mode]})`
        : `L${cell.layer}.H${cell.head}: ${fmt(v)} (flow share)`;
      tip.hidden = false;
      tip.style.left = `${x + 12}px`;
      tip.style.top = `${y + 12}px`;
    },
    sig,
  );
  canvas.addEventListener("mouseleave", () => (tip.hidden = true), sig);
  canvas.addEventListener(
    "keydown",
    (ev) => {
      const hi = getHeadImportance(model);
      if (!hi) return;
      const [L, H] = hi.shape;
      const s = getSelection(model);
      if (ev.key === "Escape") {
        ctx.commit({ selection: null });
        return;
      }
      const from = s && s.kind === "head" ? { row: s.layer, col: s.head } : { row: 0, col: 0 };
      const to = moveCell(from, ev.key, L, H); // arrows, Home/End in the layer, PageUp/PageDown 5 layers
      if (!to) return;
      ev.preventDefault();
      ctx.commit({ selection: { kind: "head", layer: to.row, head: to.col, token: focusToken(model) } });
    },
    sig,
  );

  ctx.listen("change:selection", frameThrottle(draw, ac.signal)); // once a frame during a burst of selections
  for (const n of ["head_importance", "target", "graph", "tokens", "meta", "method_scores", "metric", "head_mode", "agreement"]) ctx.listen(`change:${n}`, draw);
  // progress of an on-demand computation replaces the "not computed" note; a finished one redraws via its traits
  ctx.listen("change:status", () => {
    if (getHeadMode(model) !== "importance" && !shownVals.vals) draw();
  });
  for (const b of modeBtns) {
    b.addEventListener("click", () => {
      const mode = b.dataset.mode as HeadMode;
      if (mode !== getHeadMode(model)) ctx.commit({ head_mode: mode });
    }, sig);
  }
  watchTheme(el, draw, ac.signal); // the heatmap and matrices read their colours at draw time
  const unsub = ctx.details.subscribe(() => drawDetail());
  ctx.onCleanup(unsub);
  draw();
  void dims;
  return { el, destroy: () => ac.abort() };
}
