/**
 * FlowGraph view: the canvas, its token axis and tooltip, the view transform (zoom / pan), the redraw loop and hit
 * testing. It reads the model and never commits to it: the input controller and the toolbar do.
 */
import { readTheme, Theme } from "../color";
import { clampTokens, fitView, hitTest, Hit, keepColumnInView, PAD, Size, toScreen, View, visibleLabels, zoomTokensAt } from "../geometry";
import { Cursor } from "../selection";
import { dims, getGraph, getSelection, getTarget, getTokens } from "../state";
import { displayToken, h, truncate } from "../text";
import { isLaidOut, watchTheme } from "../theme";
import type { PaneContext } from "../types";
import { createMinimap, panToStrip } from "./graph-minimap";
import { edgesPending, hitMlpNodes, newPaintCache, paintGraph } from "./graph-paint";
import { graphLayout } from "../graph-layout";
import { placeTooltip, tooltipContent } from "./graph-tooltip";

export interface GraphView {
  wrap: HTMLElement;
  canvas: HTMLCanvasElement;
  axis: HTMLElement;
  /** the token overview strip (shown while the tokens are stretched) */
  minimap: HTMLElement;
  size(): Size;
  /** The current view transform (the fitted one unless the user zoomed or panned). */
  ensureView(): View;
  /** The user's zoom / pan. */
  setView(v: View): void;
  resetView(): void;
  /** The view that shows the whole graph at this size. */
  fitted(): View;
  /** Stretch (k > 1) or shrink the tokens around screen x (default: the target's column), all layers in view. */
  zoomTokens(k: number, x?: number): void;
  /** After a new target: pan sideways so that its column (where the route ends) is in view. */
  keepTargetInView(): void;
  /** Whether the user zoomed or panned (a resize or new tokens then keep the view). */
  userView(): boolean;
  getView(): View | null;
  hitAt(x: number, y: number): Hit;
  hover(): Hit;
  setHover(hit: Hit): boolean;
  cursor(): Cursor | null;
  setCursor(c: Cursor | null): void;
  showTooltip(hit: Hit, x: number, y: number): void;
  hideTooltip(): void;
  /** Redraw at the next animation frame (many calls, one draw). */
  schedule(): void;
  /**
   * Redraw now: a dense graph's edges a frame's share at a time (later frames are scheduled until the picture is
   * complete), or all of them with `complete` (the PNG export); `fresh` redraws the edges from scratch.
   */
  draw(opts?: DrawOptions): void;
  /** Whether the picture drawn last still lacks edges that later frames will add. */
  pending(): boolean;
  /** Estimated µs of edges per frame, first and later ones (tests and benchmarks; see graph-progress). */
  setBudget(first: number, slice: number): void;
  theme(): Theme;
  lastDrawMs(): number;
  /** New tokens: labels rebuilt, view refitted. */
  tokensChanged(): void;
}

export interface DrawOptions {
  complete?: boolean;
  fresh?: boolean;
}

function canvasHeight(L: number) {
  return Math.round(Math.min(620, Math.max(240, (2 * L + 1) * 9 + 30)));
}

export function createGraphView(ctx: PaneContext, el: () => HTMLElement, beforeDraw: () => void, tokText: (t: number) => string): GraphView {
  const { model } = ctx;
  const canvas = h("canvas", { class: "lmtt-canvas" }) as HTMLCanvasElement;
  const tooltip = h("div", { class: "lmtt-tooltip", role: "tooltip" });
  tooltip.hidden = true;
  const wrap = h(
    "div",
    {
      class: "lmtt-canvas-wrap",
      tabindex: 0,
      role: "application",
      "aria-label": "Information flow graph. Arrows move, Enter selects, Escape clears, +/- zoom, ] and [ stretch or shrink the tokens, 0 resets.",
    },
    canvas,
    tooltip,
  );
  const axis = h("div", { class: "lmtt-axis", "aria-label": "Tokens" });

  let size: Size = { w: 600, h: 400 };
  let view: View | null = null;
  let userView = false;
  let cursor: Cursor | null = null;
  let hover: Hit = null;
  let raf = 0;
  const paintCache = newPaintCache();
  let theme: Theme = readTheme(ctx.root);
  let labelEls: HTMLElement[] = [];
  let labelTokens: string[] | null = null;
  let lastDrawMs = 0;
  let budget: [number, number] | undefined;
  let stale = false;
  /** wrap's width as last reported by the ResizeObserver (0: not displayed), null before its first report */
  let roWidth: number | null = null;
  const mapAbort = new AbortController();
  ctx.onCleanup(() => mapAbort.abort());
  // a click or drag on the overview strip pans the stretched tokens there
  const minimap = createMinimap((x, width) => {
    view = panToStrip(ensureView(), fitted(), size, dims(model).T, x, width);
    userView = true;
    schedule();
  }, mapAbort.signal);

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

  // ---- token axis (DOM, textContent)
  function layoutLabels(v: View) {
    const toks = getTokens(model);
    if (labelTokens !== toks) {
      labelEls = toks.map((t, i) => h("span", { class: "lmtt-tok", "data-token": i, title: `#${i} ${displayToken(t)}` }, truncate(displayToken(t), 14)));
      axis.replaceChildren(...labelEls);
      labelTokens = toks;
    }
    const target = getTarget(model);
    const sel = getSelection(model);
    const always = [target];
    if (sel && "token" in sel) always.push(sel.token);
    if (sel && sel.kind === "edge") always.push(sel.source);
    const shown = new Set(visibleLabels(toks.length, v, size.w, always));
    // write only what changed: at 512 tokens, restyling every label on every frame costs more than the drawing
    labelEls.forEach((s, i) => {
      const vis = shown.has(i);
      if (s.hidden === vis) s.hidden = !vis;
      if (!vis) return;
      const left = `${toScreen(v, i, 0)[0].toFixed(1)}px`;
      if (s.style.left !== left) s.style.left = left;
      const isTarget = i === target;
      const isSel = !!sel && "token" in sel && sel.token === i && i !== target;
      if (s.classList.contains("is-target") !== isTarget) s.classList.toggle("is-target", isTarget);
      if (s.classList.contains("is-selected") !== isSel) s.classList.toggle("is-selected", isSel);
    });
  }

  function draw(opts: DrawOptions = {}) {
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
    beforeDraw();
    layoutLabels(v);
    const c = canvas.getContext("2d");
    if (!c) return;
    c.setTransform(dpr, 0, 0, dpr, 0, 0);
    const { T, L } = dims(model);
    if (opts.fresh) paintCache.key = "";
    paintGraph({
      c, v, size, theme, T, L,
      g: getGraph(model),
      target: getTarget(model),
      sel: getSelection(model),
      hover,
      cursor: document.activeElement === wrap ? cursor : null,
      dpr,
      complete: opts.complete,
      budget,
    }, paintCache);
    minimap.draw(v, fitted(), size, getGraph(model), T, getTarget(model), theme, dpr);
    lastDrawMs = performance.now() - t0;
    el().dataset.drawMs = lastDrawMs.toFixed(1);
    // a dense graph's thinner edges come in the next frames; a new change meanwhile starts over (see graph-paint)
    if (edgesPending(paintCache)) {
      el().dataset.edgesPending = "1";
      schedule();
    } else delete el().dataset.edgesPending;
  }

  function fitted(): View {
    const { T, L } = dims(model);
    return fitView(T, L, size);
  }

  function zoomTokens(k: number, x?: number) {
    const v = ensureView();
    const [xt] = toScreen(v, getTarget(model), 0);
    const anchor = x ?? (xt >= PAD.left && xt <= size.w - PAD.right ? xt : size.w / 2);
    const fit = fitted();
    const T = dims(model).T;
    view = clampTokens(keepColumnInView(zoomTokensAt(v, k, anchor, fit, T), getTarget(model), PAD.left, size.w - PAD.right), fit, T);
    userView = true;
    schedule();
  }

  function keepTargetInView() {
    if (!view || !userView) return;
    const fit = fitted();
    let v = keepColumnInView(view, getTarget(model), PAD.left, size.w - PAD.right, 8);
    if (v.sy === fit.sy) v = clampTokens(v, fit, dims(model).T); // a token zoom: no blank beside the tokens
    if (v.tx !== view.tx) {
      view = v;
      schedule();
    }
  }

  function resetView() {
    userView = false;
    view = null;
    schedule();
  }

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
  const ac = new AbortController();
  ctx.onCleanup(() => ac.abort());
  // theme switches (JupyterLab / VS Code / Colab / OS) -> redraw with new colours, at the real size
  watchTheme(wrap, schedule, ac.signal);

  return {
    wrap,
    canvas,
    axis,
    minimap: minimap.el,
    size: () => size,
    ensureView,
    setView(v) {
      view = v;
      userView = true;
      schedule();
    },
    resetView,
    fitted,
    zoomTokens,
    keepTargetInView,
    userView: () => userView,
    getView: () => view,
    hitAt(x, y) {
      const { T, L } = dims(model);
      const g = getGraph(model);
      // the MLP blocks are built on the first hit test of a graph, not on every τ change
      return hitTest(ensureView(), x, y, { T, L, graph: g, mlpNodes: hitMlpNodes(graphLayout(g), getSelection(model)) });
    },
    hover: () => hover,
    setHover(hit) {
      const changed = JSON.stringify(hit) !== JSON.stringify(hover);
      hover = hit;
      return changed;
    },
    cursor: () => cursor,
    setCursor(c) {
      cursor = c;
    },
    showTooltip(hit, x, y) {
      placeTooltip(tooltip, tooltipContent(model, hit, tokText), x, y, size);
    },
    hideTooltip() {
      tooltip.hidden = true;
    },
    schedule,
    draw,
    pending: () => edgesPending(paintCache),
    setBudget(first, slice) {
      budget = [first, slice];
    },
    theme: () => theme,
    lastDrawMs: () => lastDrawMs,
    tokensChanged() {
      userView = false;
      view = null;
      labelTokens = null;
      schedule();
    },
  };
}
