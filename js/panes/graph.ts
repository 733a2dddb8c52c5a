/** FlowGraph pane: tokens × residual rows on a canvas, with toolbar, tooltip, zoom/pan, keyboard and export. */
import { at } from "../codec";
import { importanceColor, readTheme, rgbString, Theme } from "../color";
import { binCenter, edgeGeometry, edgeStyle, nodeGeometry, nodeImportance, WEIGHT_BINS, weightBin } from "../draw";
import {
  fitView, hitTest, Hit, mlpHalf, nodeRadius, panBy, toScreen, View, visibleLabels, zoomAt, MLP_DX,
} from "../geometry";
import { routesFrom } from "../routes";
import { Cursor, cursorToSelection, describeSelection, moveCursor, selectionToCursor } from "../selection";
import { dims, getBlockImportance, getGraph, getMeta, getSelection, getTarget, getTokens, GraphData, rowLabel, rowToNode } from "../state";
import { buildGraphSvg, serializeSvg } from "../svg";
import { displayToken, fmt, h, pct, truncate } from "../text";
import type { Pane, PaneContext, Selection } from "../types";

import { selectKeys } from "../keyboard";
import { sliderToTau, stepTau, TAU_LADDER, tauToSlider } from "../tau";
import { isLaidOut, watchTheme } from "../theme";

export { sliderToTau, TAU_MAX, TAU_MIN, tauToSlider } from "../tau";
// Marks a node whose update cancelled (every part farther from the sum than 0): its importances are an even split.
const CANCEL_COLOR = "#e08a00";
// Marks a node whose update holds an external edit (code outside the model's modules changed the stream).
const EXTERNAL_COLOR = "#c2185b";

function findEdge(g: GraphData, s: Selection): number {
  if (!s || s.kind !== "edge") return -1;
  for (let i = 0; i < g.e; i++) {
    if (g.edgeKind[i] !== "attention") continue;
    const d = g.edgeDst[i];
    const src = g.edgeSrc[i];
    if (g.nodeLayer[d] === s.layer && g.nodeToken[d] === s.token && g.nodeToken[src] === s.source) return i;
  }
  return -1;
}

export function edgeHeadShares(g: GraphData, i: number): [number, number][] {
  if (!g.edgeHeads || i < 0) return [];
  const H = g.edgeHeads.shape[1];
  const out: [number, number][] = [];
  for (let hh = 0; hh < H; hh++) out.push([hh, at(g.edgeHeads, i, hh)]);
  return out.filter(([, v]) => v !== 0).sort((a, b) => Math.abs(b[1]) - Math.abs(a[1]));
}

function download(name: string, href: string) {
  const a = document.createElement("a");
  a.setAttribute("download", name);
  a.setAttribute("href", href);
  a.style.display = "none";
  document.body.appendChild(a);
  a.click();
  a.remove();
}

export function createGraphPane(ctx: PaneContext): Pane {
  const { model } = ctx;
  const ac = new AbortController();
  const sig = { signal: ac.signal };
  ctx.onCleanup(() => ac.abort());

  // ---- toolbar
  const targetSel = h("select", { class: "lmtt-select", "aria-label": "Target token", title: "Target token (whose route is shown)" });
  const slider = h("input", {
    type: "range", min: 0, max: TAU_LADDER.length - 1, step: 1, class: "lmtt-slider", "aria-label": "Threshold τ",
    title: "Threshold τ: arrows one step, PageUp/PageDown ×2, Home = lowest (largest graph), End = highest",
  }) as HTMLInputElement;
  const tauOut = h("span", { class: "lmtt-num" });
  const granBtns = (["head", "edge"] as const).map((g) =>
    h("button", { type: "button", class: "lmtt-seg", "data-value": g, title: g === "head" ? "Threshold each head, then sum" : "Threshold the head-summed edge" }, g),
  );
  const resetBtn = h("button", { type: "button", class: "lmtt-btn", title: "Reset zoom and pan (0)" }, "Reset");
  const pngBtn = h("button", { type: "button", class: "lmtt-btn", title: "Download PNG" }, "PNG");
  const svgBtn = h("button", { type: "button", class: "lmtt-btn", title: "Download SVG" }, "SVG");
  const legend = h(
    "span",
    { class: "lmtt-legend" },
    h("span", { class: "lmtt-key lmtt-key-attn" }),
    "attention ",
    h("span", { class: "lmtt-key lmtt-key-mlp" }),
    "MLP ",
    h("span", { class: "lmtt-key lmtt-key-res" }),
    "residual ",
    h("span", { class: "lmtt-key lmtt-key-scale" }),
    "weight",
  );
  const toolbar = h(
    "div",
    { class: "lmtt-toolbar" },
    h("label", { class: "lmtt-field" }, h("span", { class: "lmtt-lbl" }, "target"), targetSel),
    h("label", { class: "lmtt-field" }, h("span", { class: "lmtt-lbl" }, "τ"), slider, tauOut),
    h("span", { class: "lmtt-segs", role: "group", "aria-label": "Granularity" }, ...granBtns),
    h("span", { class: "lmtt-spacer" }),
    h("span", { class: "lmtt-actions" }, resetBtn, pngBtn, svgBtn),
  );

  // ---- canvas area
  const canvas = h("canvas", { class: "lmtt-canvas" });
  const tooltip = h("div", { class: "lmtt-tooltip", role: "tooltip" });
  tooltip.hidden = true;
  const wrap = h(
    "div",
    {
      class: "lmtt-canvas-wrap",
      tabindex: 0,
      role: "application",
      "aria-label": "Information flow graph. Arrows move, Enter selects, Escape clears, +/- zoom, 0 resets.",
    },
    canvas,
    tooltip,
  );
  const axis = h("div", { class: "lmtt-axis", "aria-label": "Tokens" });
  const info = h("div", { class: "lmtt-info", "aria-live": "polite" });
  const el = h("div", { class: "lmtt-pane lmtt-graph" }, toolbar, wrap, axis, h("div", { class: "lmtt-footer" }, info, legend));

  // ---- state
  let size = { w: 600, h: 400 };
  let view: View | null = null;
  let userView = false;
  let cursor: Cursor | null = null;
  let hover: Hit = null;
  let raf = 0;
  let mlpNodes = new Set<string>();
  let theme: Theme = readTheme(ctx.root);
  let labelEls: HTMLElement[] = [];
  let labelTokens: string[] | null = null;
  let selTokens: string[] | null = null;
  let lastDrawMs = 0;
  let stale = false;
  /** wrap's width as last reported by the ResizeObserver (0: not displayed), null before its first report */
  let roWidth: number | null = null;

  const tokens = () => getTokens(model);
  const tokText = (t: number) => `“${truncate(displayToken(tokens()[t] ?? ""), 24)}”`;

  function canvasHeight(L: number) {
    return Math.round(Math.min(620, Math.max(240, (2 * L + 1) * 9 + 30)));
  }

  function measure() {
    const { L } = dims(model);
    // the ResizeObserver's width when it has reported one: reading clientWidth would force a layout on every frame
    const w = Math.max(200, Math.floor(roWidth ?? (wrap.clientWidth || ctx.root.clientWidth || 720)));
    const hgt = canvasHeight(L);
    if (wrap.style.height !== `${hgt}px`) wrap.style.height = `${hgt}px`;
    size = { w, h: hgt };
  }

  function ensureView(): View {
    const { T, L } = dims(model);
    if (!view || !userView) view = fitView(T, L, size);
    return view;
  }

  function schedule() {
    if (raf) return;
    const rafFn = typeof requestAnimationFrame === "function" ? requestAnimationFrame : (f: FrameRequestCallback) => setTimeout(() => f(0), 16) as unknown as number;
    raf = rafFn(() => {
      raf = 0;
      draw();
    });
  }
  ctx.onCleanup(() => {
    if (raf) {
      if (typeof cancelAnimationFrame === "function") cancelAnimationFrame(raf);
      else clearTimeout(raf);
    }
    raf = 0;
  });

  // ---- controls sync from model
  function syncControls() {
    const toks = tokens();
    const target = getTarget(model);
    if (selTokens !== toks) {
      selTokens = toks;
      targetSel.replaceChildren(...toks.map((t, i) => h("option", { value: i }, `#${i} ${truncate(displayToken(t), 28)}`)));
    }
    targetSel.value = String(target);
    const tau = Number(model.get("threshold") ?? 0.04);
    slider.value = String(tauToSlider(tau));
    slider.setAttribute("aria-valuetext", `τ = ${fmt(tau, 3)}`);
    tauOut.textContent = fmt(tau, 3);
    const gran = model.get("granularity") === "edge" ? "edge" : "head";
    for (const b of granBtns) b.setAttribute("aria-pressed", String(b.dataset.value === gran));
    const sel = getSelection(model);
    const g = getGraph(model);
    const meta = getMeta(model);
    const parts = [
      `${meta.model ? meta.model + " · " : ""}${g.n} nodes, ${g.e} edges`,
      `selected: ${describeSelection(sel, tokText)}`,
    ];
    const cancelling = g.nodeCancelling.reduce((a, b) => a + (b ? 1 : 0), 0);
    if (cancelling) parts.push(`${cancelling} cancelling update${cancelling > 1 ? "s" : ""} (dashed ring: split evenly)`);
    const external = g.nodeExternal.reduce((a, b) => a + (b ? 1 : 0), 0);
    if (external) parts.push(`${external} external edit${external > 1 ? "s" : ""} (pink ring: a hook changed the stream)`);
    info.textContent = parts.join("  ·  ");
  }

  // ---- token axis (DOM, textContent)
  function layoutLabels(v: View) {
    const toks = tokens();
    if (labelTokens !== toks) {
      labelEls = toks.map((t, i) => {
        const s = h("span", { class: "lmtt-tok", "data-token": i, title: `#${i} ${displayToken(t)}` }, truncate(displayToken(t), 14));
        return s;
      });
      axis.replaceChildren(...labelEls);
      labelTokens = toks;
    }
    const target = getTarget(model);
    const sel = getSelection(model);
    const always = [target];
    if (sel && "token" in sel) always.push(sel.token);
    if (sel && sel.kind === "edge") always.push(sel.source);
    const shown = new Set(visibleLabels(toks.length, v, size.w, always));
    labelEls.forEach((s, i) => {
      const vis = shown.has(i);
      s.hidden = !vis;
      if (!vis) return;
      const [x] = toScreen(v, i, 0);
      s.style.left = `${x.toFixed(1)}px`;
      s.classList.toggle("is-target", i === target);
      s.classList.toggle("is-selected", !!sel && "token" in sel && sel.token === i && i !== target);
    });
  }

  // ---- drawing
  function draw() {
    // hidden (JupyterLab hides its shell for a frame while switching themes, a closed tab...): a size made up now
    // would stick, since the ResizeObserver sees the same width again when it comes back. Draw once laid out.
    if (roWidth === 0 || (roWidth === null && !isLaidOut(wrap))) {
      stale = true;
      return;
    }
    stale = false;
    const t0 = performance.now();
    measure();
    const v = ensureView();
    theme = readTheme(ctx.root);
    const dpr = Math.max(1, Math.min(3, (globalThis as any).devicePixelRatio || 1));
    const W = Math.round(size.w * dpr);
    const Hh = Math.round(size.h * dpr);
    if (canvas.width !== W) canvas.width = W;
    if (canvas.height !== Hh) canvas.height = Hh;
    canvas.style.width = `${size.w}px`;
    canvas.style.height = `${size.h}px`;
    syncControls();
    layoutLabels(v);
    const c = canvas.getContext("2d");
    if (!c) return;
    c.setTransform(dpr, 0, 0, dpr, 0, 0);
    paint(c, v);
    lastDrawMs = performance.now() - t0;
    el.dataset.drawMs = lastDrawMs.toFixed(1);
  }

  function paint(c: CanvasRenderingContext2D, v: View) {
    const { T, L } = dims(model);
    const g = getGraph(model);
    const target = getTarget(model);
    const sel = getSelection(model);
    const rows = 2 * L + 1;
    c.fillStyle = theme.bg;
    c.fillRect(0, 0, size.w, size.h);
    // target column band
    const [txc] = toScreen(v, target, 0);
    c.fillStyle = theme.accent;
    c.globalAlpha = 0.09;
    c.fillRect(txc - v.sx / 2, 0, v.sx, size.h);
    c.globalAlpha = 1;
    // layer bands + labels
    c.font = `10px ${theme.font}`;
    c.textBaseline = "middle";
    const layerStep = Math.max(1, Math.ceil(13 / (2 * v.sy)));
    c.strokeStyle = theme.grid;
    c.lineWidth = 1;
    c.beginPath();
    for (let l = 0; l <= L; l++) {
      const [, y] = toScreen(v, 0, 2 * l + 0.5);
      if (y < -2 || y > size.h + 2) continue;
      c.moveTo(0, Math.round(y) + 0.5);
      c.lineTo(size.w, Math.round(y) + 0.5);
    }
    c.stroke();
    // faint grid of all residual nodes when there is room
    if (v.sx >= 4 && v.sy >= 3) {
      c.fillStyle = theme.grid;
      const lo = Math.max(0, Math.floor(-v.tx / v.sx) - 1);
      const hi = Math.min(T - 1, Math.ceil((size.w - v.tx) / v.sx) + 1);
      const rlo = Math.max(0, Math.floor((v.ty - size.h) / v.sy) - 1);
      const rhi = Math.min(rows - 1, Math.ceil(v.ty / v.sy) + 1);
      const d = Math.max(1, Math.min(3, Math.min(v.sx, v.sy) * 0.16));
      for (let r = rlo; r <= rhi; r++) {
        const y = v.ty - r * v.sy;
        for (let t = lo; t <= hi; t++) c.fillRect(v.tx + t * v.sx - d / 2, y - d / 2, d, d);
      }
    }
    // edges batched by kind and weight bin
    const zoom = Math.min(v.sx, v.sy) / 8;
    const kinds = ["residual", "mlp", "attention"];
    const bins = new Map<string, number[]>();
    for (let i = 0; i < g.e; i++) {
      const k = g.edgeKind[i];
      const b = weightBin(g.maxWeight > 0 ? Math.sqrt(Math.max(0, g.edgeWeight[i]) / g.maxWeight) : 0);
      const key = `${k}|${b}`;
      let arr = bins.get(key);
      if (!arr) bins.set(key, (arr = []));
      arr.push(i);
    }
    c.lineCap = "round";
    for (const k of kinds) {
      for (let b = 0; b < WEIGHT_BINS; b++) {
        const idx = bins.get(`${k}|${b}`);
        if (!idx) continue;
        const tt = binCenter(b);
        const st = edgeStyle(k, tt, theme, zoom);
        c.strokeStyle = st.color;
        c.lineWidth = st.width;
        c.setLineDash(st.dash);
        c.globalAlpha = k === "residual" ? 0.35 + 0.6 * tt : 0.55 + 0.45 * tt;
        c.beginPath();
        for (const i of idx) {
          const e = edgeGeometry(v, g, i);
          c.moveTo(e.x0, e.y0);
          if (e.curved) c.quadraticCurveTo(e.cx, e.cy, e.x1, e.y1);
          else c.lineTo(e.x1, e.y1);
        }
        c.stroke();
      }
    }
    c.setLineDash([]);
    c.globalAlpha = 1;
    // a selected input token (embedding node): the routes that start at it
    if (sel && sel.kind === "node" && sel.node_kind === "embedding") {
      c.strokeStyle = theme.accent;
      c.globalAlpha = 0.5;
      for (const i of routesFrom(g, sel.token)) {
        const e = edgeGeometry(v, g, i);
        c.lineWidth = edgeStyle(e.kind, e.t, theme, zoom).width + 2;
        c.beginPath();
        c.moveTo(e.x0, e.y0);
        if (e.curved) c.quadraticCurveTo(e.cx, e.cy, e.x1, e.y1);
        else c.lineTo(e.x1, e.y1);
        c.stroke();
      }
      c.globalAlpha = 1;
    }
    // selected / hovered edge highlight
    const selEdge = findEdge(g, sel);
    const hovEdge = hover && hover.kind === "edge" ? hover.index : -1;
    for (const [i, col, w] of [
      [hovEdge, theme.fg, 1.5],
      [selEdge, theme.accent, 2.5],
    ] as [number, string, number][]) {
      if (i < 0) continue;
      const e = edgeGeometry(v, g, i);
      c.strokeStyle = col;
      c.lineWidth = edgeStyle(e.kind, e.t, theme, zoom).width + w * 2;
      c.globalAlpha = 0.45;
      c.beginPath();
      c.moveTo(e.x0, e.y0);
      c.quadraticCurveTo(e.cx, e.cy, e.x1, e.y1);
      c.stroke();
      c.globalAlpha = 1;
    }
    // nodes
    mlpNodes = new Set();
    const imp = nodeImportance(g);
    const nodes = nodeGeometry(v, g, imp);
    c.lineWidth = 0.75;
    c.strokeStyle = theme.fg;
    for (const n of nodes) {
      if (n.kind === "mlp") mlpNodes.add(`${n.layer}:${n.token}`);
      if (n.x < -10 || n.x > size.w + 10 || n.y < -10 || n.y > size.h + 10) continue;
      c.fillStyle = rgbString(importanceColor(n.t, theme.dark));
      c.beginPath();
      if (n.kind === "mlp") c.rect(n.x - n.r, n.y - n.r, 2 * n.r, 2 * n.r);
      else c.arc(n.x, n.y, n.r, 0, Math.PI * 2);
      c.fill();
      if (n.r >= 2.5) c.stroke();
    }
    // cancelling updates (importances split evenly): a dashed ring; external edits (a hook changed the stream):
    // a solid ring
    c.lineWidth = 1.5;
    for (const [flags, color, dash] of [
      [g.nodeCancelling, CANCEL_COLOR, [2, 2]],
      [g.nodeExternal, EXTERNAL_COLOR, []],
    ] as [Uint8Array, string, number[]][]) {
      c.strokeStyle = color;
      c.setLineDash(dash);
      for (const n of nodes) {
        if (!flags[n.i]) continue;
        c.beginPath();
        c.arc(n.x, n.y, n.r + 2, 0, Math.PI * 2);
        c.stroke();
      }
    }
    c.setLineDash([]);
    if (sel && (sel.kind === "mlp" || sel.kind === "neuron")) mlpNodes.add(`${sel.layer}:${sel.token}`);
    // selection ring, hover ring, keyboard cursor
    const ring = (kind: "node" | "mlp", token: number, row: number, color: string, width: number, dash: number[] = []) => {
      c.strokeStyle = color;
      c.lineWidth = width;
      c.setLineDash(dash);
      c.beginPath();
      if (kind === "mlp") {
        const [x, y] = toScreen(v, token + MLP_DX, row);
        const s = mlpHalf(v) + 3;
        c.rect(x - s, y - s, 2 * s, 2 * s);
      } else {
        const [x, y] = toScreen(v, token, row);
        c.arc(x, y, nodeRadius(v) + 3, 0, Math.PI * 2);
      }
      c.stroke();
      c.setLineDash([]);
    };
    if (hover && hover.kind === "node") ring("node", hover.token, hover.row, theme.fg, 1);
    if (hover && hover.kind === "mlp") ring("mlp", hover.token, 2 * hover.layer + 1.5, theme.fg, 1);
    if (sel) {
      if (sel.kind === "node") {
        const cur = selectionToCursor(sel, target, L);
        ring("node", cur.token, cur.row, theme.accent, 2.5);
      } else if (sel.kind === "mlp" || sel.kind === "neuron") {
        ring("mlp", sel.token, 2 * sel.layer + 1.5, theme.accent, 2.5);
      } else if (sel.kind === "head") {
        ring("node", sel.token, 2 * sel.layer + 1, theme.accent, 2.5);
      }
    }
    if (cursor && document.activeElement === wrap) ring("node", cursor.token, cursor.row, theme.accent, 1.5, [3, 2]);
    // layer labels (drawn last, on an opaque gutter)
    c.fillStyle = theme.bg;
    c.globalAlpha = 0.85;
    c.fillRect(0, 0, 34, size.h);
    c.globalAlpha = 1;
    c.fillStyle = theme.muted;
    for (let l = 0; l < L; l += layerStep) {
      const [, y] = toScreen(v, 0, 2 * l + 1.5);
      if (y < 6 || y > size.h - 6) continue;
      c.fillText(`L${l}`, 4, y);
    }
    const [, ye] = toScreen(v, 0, 0);
    if (ye > 6 && ye < size.h - 4) c.fillText("emb", 4, ye);
  }

  // ---- tooltip
  function blockValue(name: string, layer: number, token: number): number | null {
    const b = getBlockImportance(model)[name];
    if (!b || layer < 0 || layer >= b.shape[0] || token >= b.shape[1]) return null;
    return at(b, layer, token);
  }

  function tooltipContent(hit: Hit): (Node | string)[] {
    if (!hit) return [];
    const g = getGraph(model);
    const lines: (Node | string)[] = [];
    const line = (k: string, v: string) => lines.push(h("div", { class: "lmtt-tt-row" }, h("span", { class: "lmtt-tt-k" }, k), h("span", { class: "lmtt-tt-v" }, v)));
    if (hit.kind === "node") {
      const n = rowToNode(hit.row);
      lines.push(h("div", { class: "lmtt-tt-title" }, `${rowLabel(hit.row)} · ${tokText(hit.token)} #${hit.token}`));
      if (n.node_kind === "after_attention") {
        const a = blockValue("attention", n.layer, hit.token);
        const r = blockValue("residual_attention", n.layer, hit.token);
        if (a != null) line("attention block", fmt(a));
        if (r != null) line("residual", fmt(r));
      } else if (n.node_kind === "after_mlp") {
        const a = blockValue("mlp", n.layer, hit.token);
        const r = blockValue("residual_mlp", n.layer, hit.token);
        if (a != null) line("MLP block", fmt(a));
        if (r != null) line("residual", fmt(r));
      }
      let win = 0;
      let cnt = 0;
      for (let i = 0; i < g.e; i++) {
        const d = g.edgeDst[i];
        if (g.nodeToken[d] === hit.token && g.nodeKind[d] === n.node_kind && g.nodeLayer[d] === n.layer) {
          win += g.edgeWeight[i];
          cnt++;
        }
      }
      if (cnt) line("incoming (graph)", `${fmt(win)} over ${cnt} edge${cnt > 1 ? "s" : ""}`);
    } else if (hit.kind === "mlp") {
      lines.push(h("div", { class: "lmtt-tt-title" }, `MLP L${hit.layer} · ${tokText(hit.token)} #${hit.token}`));
      const a = blockValue("mlp", hit.layer, hit.token);
      if (a != null) line("importance", fmt(a));
    } else if (hit.kind === "edge") {
      lines.push(h("div", { class: "lmtt-tt-title" }, `L${hit.layer} attention · ${tokText(hit.source)} → ${tokText(hit.token)}`));
      line("weight", fmt(g.edgeWeight[hit.index]));
      const shares = edgeHeadShares(g, hit.index).slice(0, 6);
      if (shares.length) {
        const maxs = Math.max(...shares.map(([, s]) => Math.abs(s))) || 1;
        const list = h("div", { class: "lmtt-tt-heads" });
        for (const [hh, s] of shares) {
          const bar = h("span", { class: "lmtt-tt-bar" });
          bar.style.width = `${Math.round((Math.abs(s) / maxs) * 60)}px`;
          list.appendChild(h("div", { class: "lmtt-tt-row" }, h("span", { class: "lmtt-tt-k" }, `H${hh}`), bar, h("span", { class: "lmtt-tt-v" }, pct(s))));
        }
        lines.push(list);
      }
    }
    return lines;
  }

  function showTooltip(hit: Hit, x: number, y: number) {
    if (!hit) {
      tooltip.hidden = true;
      return;
    }
    tooltip.replaceChildren(...tooltipContent(hit));
    tooltip.hidden = false;
    const tw = tooltip.offsetWidth || 200;
    const th = tooltip.offsetHeight || 60;
    let left = x + 14;
    let top = y + 14;
    if (left + tw > size.w) left = Math.max(0, x - tw - 10);
    if (top + th > size.h) top = Math.max(0, y - th - 10);
    tooltip.style.left = `${left}px`;
    tooltip.style.top = `${top}px`;
  }

  // ---- actions (one save_changes per user action)
  function hitToSelection(hit: Hit): Selection {
    if (!hit) return null;
    if (hit.kind === "node") return cursorToSelection({ token: hit.token, row: hit.row });
    if (hit.kind === "mlp") return { kind: "mlp", layer: hit.layer, token: hit.token };
    return { kind: "edge", layer: hit.layer, source: hit.source, token: hit.token };
  }

  const doHit = (x: number, y: number): Hit => {
    const { T, L } = dims(model);
    return hitTest(ensureView(), x, y, { T, L, graph: getGraph(model), mlpNodes });
  };

  const localXY = (ev: MouseEvent): [number, number] => {
    const r = canvas.getBoundingClientRect();
    return [ev.clientX - r.left, ev.clientY - r.top];
  };

  let drag: { x: number; y: number; moved: boolean; id: number } | null = null;
  canvas.addEventListener(
    "pointerdown",
    (ev) => {
      if (ev.button !== 0) return;
      const [x, y] = localXY(ev);
      drag = { x, y, moved: false, id: ev.pointerId };
      try {
        canvas.setPointerCapture(ev.pointerId);
      } catch {
        /* not supported */
      }
    },
    sig,
  );
  canvas.addEventListener(
    "pointermove",
    (ev) => {
      const [x, y] = localXY(ev);
      if (drag) {
        const dx = x - drag.x;
        const dy = y - drag.y;
        if (drag.moved || Math.hypot(dx, dy) > 3) {
          drag.moved = true;
          view = panBy(ensureView(), dx, dy);
          userView = true;
          drag.x = x;
          drag.y = y;
          tooltip.hidden = true;
          canvas.style.cursor = "grabbing";
          schedule();
          return;
        }
      }
      const hit = doHit(x, y);
      const changed = JSON.stringify(hit) !== JSON.stringify(hover);
      hover = hit;
      canvas.style.cursor = hit ? "pointer" : "grab";
      showTooltip(hit, x, y);
      if (changed) schedule();
    },
    sig,
  );
  canvas.addEventListener(
    "pointerup",
    (ev) => {
      const d = drag;
      drag = null;
      canvas.style.cursor = "";
      if (!d || d.moved) return;
      const [x, y] = localXY(ev);
      const hit = doHit(x, y);
      const s = hitToSelection(hit);
      if (s) {
        cursor = selectionToCursor(s, getTarget(model), dims(model).L);
        ctx.commit({ selection: s });
      }
    },
    sig,
  );
  canvas.addEventListener(
    "pointerleave",
    () => {
      if (hover) {
        hover = null;
        schedule();
      }
      tooltip.hidden = true;
    },
    sig,
  );
  canvas.addEventListener(
    "wheel",
    (ev) => {
      ev.preventDefault();
      const [x, y] = localXY(ev);
      const k = Math.exp(-ev.deltaY * (ev.deltaMode === 1 ? 0.05 : 0.0015));
      view = zoomAt(ensureView(), k, x, y);
      userView = true;
      tooltip.hidden = true;
      schedule();
    },
    { signal: ac.signal, passive: false },
  );
  canvas.addEventListener("dblclick", () => resetView(), sig);

  function resetView() {
    userView = false;
    view = null;
    schedule();
  }
  resetBtn.addEventListener("click", resetView, sig);

  wrap.addEventListener(
    "keydown",
    (ev) => {
      const { T, L } = dims(model);
      if (!T) return;
      if (!cursor) cursor = selectionToCursor(getSelection(model), getTarget(model), L);
      const moved = moveCursor(cursor, ev.key, T, L, ev.shiftKey);
      if (moved) {
        ev.preventDefault();
        cursor = moved;
        const [x, y] = toScreen(ensureView(), cursor.token, cursor.row);
        showTooltip({ kind: "node", token: cursor.token, row: cursor.row }, x, y);
        schedule();
        return;
      }
      if (ev.key === "Enter" || ev.key === " ") {
        ev.preventDefault();
        ctx.commit({ selection: cursorToSelection(cursor) });
      } else if (ev.key === "Escape") {
        ev.preventDefault();
        tooltip.hidden = true;
        ctx.commit({ selection: null });
      } else if (ev.key === "+" || ev.key === "=") {
        view = zoomAt(ensureView(), 1.25, size.w / 2, size.h / 2);
        userView = true;
        schedule();
      } else if (ev.key === "-") {
        view = zoomAt(ensureView(), 0.8, size.w / 2, size.h / 2);
        userView = true;
        schedule();
      } else if (ev.key === "0") {
        resetView();
      }
    },
    sig,
  );
  wrap.addEventListener("focus", () => schedule(), sig);
  wrap.addEventListener(
    "blur",
    () => {
      tooltip.hidden = true;
      schedule();
    },
    sig,
  );

  // toolbar actions
  targetSel.addEventListener("change", () => ctx.commit({ target: Number(targetSel.value) }), sig);
  selectKeys(targetSel, () => ctx.commit({ target: Number(targetSel.value) }), ac.signal);
  slider.addEventListener("input", () => (tauOut.textContent = fmt(sliderToTau(Number(slider.value)), 3)), sig);
  slider.addEventListener("change", () => ctx.commit({ threshold: sliderToTau(Number(slider.value)) }), sig);
  slider.addEventListener(
    "keydown",
    (ev) => {
      // the ladder's own steps (the native ones would move from the rung, not from a τ set in Python)
      const tau = stepTau(Number(model.get("threshold") ?? 0.04), ev.key);
      if (tau === null) return;
      ev.preventDefault();
      slider.value = String(tauToSlider(tau));
      tauOut.textContent = fmt(tau, 3);
      if (tau !== model.get("threshold")) ctx.commit({ threshold: tau });
    },
    sig,
  );
  for (const b of granBtns) {
    b.addEventListener(
      "click",
      () => {
        if (model.get("granularity") !== b.dataset.value) ctx.commit({ granularity: b.dataset.value });
      },
      sig,
    );
  }
  axis.addEventListener(
    "click",
    (ev) => {
      const t = (ev.target as HTMLElement).closest?.(".lmtt-tok") as HTMLElement | null;
      if (!t) return;
      const i = Number(t.dataset.token);
      if (Number.isFinite(i) && i !== getTarget(model)) ctx.commit({ target: i });
    },
    sig,
  );
  pngBtn.addEventListener(
    "click",
    () => {
      draw();
      try {
        download("flow-graph.png", canvas.toDataURL("image/png"));
      } catch (e) {
        console.error("lmtt-widgets: PNG export failed", e);
      }
    },
    sig,
  );
  svgBtn.addEventListener("click", () => {
    const text = exportSvg();
    const url = URL.createObjectURL(new Blob([text], { type: "image/svg+xml" }));
    download("flow-graph.svg", url);
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }, sig);

  function exportSvg(): string {
    const { L } = dims(model);
    const svg = buildGraphSvg({
      view: ensureView(),
      width: size.w,
      height: size.h,
      graph: getGraph(model),
      tokens: tokens(),
      L,
      target: getTarget(model),
      theme: readTheme(ctx.root),
      title: getMeta(model).model,
    });
    return serializeSvg(svg);
  }

  // ---- model events -> one redraw path
  const onGraphChange = () => {
    hover = null;
    syncControls();
    schedule();
  };
  for (const name of ["graph", "target", "threshold", "granularity", "meta", "block_importance"]) ctx.listen(`change:${name}`, onGraphChange);
  ctx.listen("change:tokens", () => {
    userView = false;
    view = null;
    labelTokens = null;
    schedule();
  });
  ctx.listen("change:selection", () => {
    syncControls();
    const sel = getSelection(model);
    cursor = sel ? selectionToCursor(sel, getTarget(model), dims(model).L) : cursor;
    schedule();
  });

  if (typeof ResizeObserver !== "undefined") {
    const ro = new ResizeObserver((entries) => {
      const w = Math.floor(entries[entries.length - 1].contentRect.width);
      roWidth = w;
      // compare with the width of the last draw, not the last observation: a draw may have happened in between
      if (w && (w !== size.w || stale)) {
        if (!userView) view = null;
        schedule();
      }
    });
    ro.observe(wrap);
    ctx.onCleanup(() => ro.disconnect());
  }
  // theme switches (JupyterLab / VS Code / Colab / OS) -> redraw with new colours, at the real size
  watchTheme(wrap, schedule, ac.signal);

  (el as any).__lmtt = { exportSvg, draw, getView: () => view, lastDrawMs: () => lastDrawMs };
  syncControls();
  schedule();
  return {
    el,
    destroy() {
      ac.abort();
    },
  };
}
