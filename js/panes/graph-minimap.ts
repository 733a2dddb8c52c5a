/**
 * Minimap of the token axis: while the tokens are stretched, a thin strip under the axis shows the whole prompt
 * (each token's strongest node in the route, the target marked) with the visible window framed; a click or a drag on
 * it pans the graph there, so the route stays findable at any zoom. Hidden at the fitted width, where the graph
 * itself shows every token.
 */
import type { Theme } from "../color";
import { graphLayout } from "../graph-layout";
import { clampTokens, PAD, Size, View } from "../geometry";
import type { GraphData } from "../state";
import { h } from "../text";

/** Strip height, CSS px. */
export const MINIMAP_H = 14;

/** The visible token window [from, to] (column units, -0.5 … T - 0.5) of view `v` on a canvas of this size. */
export function visibleTokens(v: View, size: Size, T: number): [number, number] {
  const from = (PAD.left - v.tx) / v.sx;
  const to = (size.w - PAD.right - v.tx) / v.sx;
  return [Math.max(-0.5, from), Math.min(T - 0.5, to)];
}

/** Strip x (px, 0 … width) of token column `col` (-0.5 … T - 0.5 maps onto the strip's whole width). */
export function stripX(col: number, T: number, width: number): number {
  return ((col + 0.5) / Math.max(1, T)) * width;
}

/** The window the minimap frames: [left, right] strip x of the visible tokens. */
export function minimapWindow(v: View, size: Size, T: number, width: number): [number, number] {
  const [from, to] = visibleTokens(v, size, T);
  return [stripX(from, T, width), stripX(to, T, width)];
}

/**
 * The view after a click (or drag) at strip x: panned sideways (same zoom) so that the token there sits in the
 * middle of the canvas, then kept inside the tokens (no blank beside them).
 */
export function panToStrip(v: View, fit: View, size: Size, T: number, x: number, width: number): View {
  const col = (Math.max(0, Math.min(width, x)) / Math.max(1, width)) * Math.max(1, T) - 0.5;
  const mid = (PAD.left + size.w - PAD.right) / 2;
  return clampTokens({ ...v, tx: mid - col * v.sx }, fit, T);
}

/** Each token's strongest node in the route (importance 0–1; 0 for a token the route does not touch). */
export function tokenStrength(g: GraphData, T: number): Float32Array {
  const imp = graphLayout(g).importance;
  const out = new Float32Array(Math.max(0, T));
  for (let i = 0; i < g.n; i++) {
    const t = g.nodeToken[i];
    if (t < out.length && imp[i] > out[t]) out[t] = imp[i];
  }
  return out;
}

export interface Minimap {
  el: HTMLCanvasElement;
  /** Redraw for this view (hidden when the tokens are not stretched). */
  draw(v: View, fit: View, size: Size, g: GraphData, T: number, target: number, theme: Theme, dpr: number): void;
}

/** The strip; `pan` receives the view a click or drag asks for. */
export function createMinimap(pan: (x: number, width: number) => void, signal: AbortSignal): Minimap {
  const el = h("canvas", { class: "lmtt-minimap", "aria-label": "Token overview: click or drag to move the view along the tokens" }) as HTMLCanvasElement;
  el.hidden = true;
  let dragging = false;
  const at = (e: PointerEvent) => {
    const r = el.getBoundingClientRect();
    pan(e.clientX - r.left, r.width);
  };
  el.addEventListener("pointerdown", (e) => {
    dragging = true;
    el.setPointerCapture?.(e.pointerId);
    at(e);
    e.preventDefault();
  }, { signal });
  el.addEventListener("pointermove", (e) => dragging && at(e), { signal });
  for (const ev of ["pointerup", "pointercancel"]) el.addEventListener(ev, () => (dragging = false), { signal });

  function draw(v: View, fit: View, size: Size, g: GraphData, T: number, target: number, theme: Theme, dpr: number) {
    const show = v.sx > fit.sx * 1.001 && T > 1;
    if (el.hidden === show) el.hidden = !show;
    if (!show) return;
    const W = Math.round(size.w * dpr);
    const H = Math.round(MINIMAP_H * dpr);
    if (el.width !== W) el.width = W;
    if (el.height !== H) el.height = H;
    el.style.width = `${size.w}px`;
    el.style.height = `${MINIMAP_H}px`;
    const c = el.getContext("2d");
    if (!c) return;
    c.setTransform(dpr, 0, 0, dpr, 0, 0);
    c.fillStyle = theme.bg;
    c.fillRect(0, 0, size.w, MINIMAP_H);
    // each token's strongest node as a bar: where the route runs
    const s = tokenStrength(g, T);
    const bw = Math.max(1, size.w / T);
    c.fillStyle = theme.residual;
    for (let t = 0; t < T; t++) {
      if (!(s[t] > 0)) continue;
      const bh = 2 + (MINIMAP_H - 4) * s[t];
      c.fillRect(stripX(t - 0.5, T, size.w), MINIMAP_H - bh, bw, bh);
    }
    c.fillStyle = theme.accent;
    c.fillRect(stripX(target - 0.5, T, size.w), 0, bw, MINIMAP_H);
    // the window in view
    const [x0, x1] = minimapWindow(v, size, T, size.w);
    c.globalAlpha = 0.15;
    c.fillRect(x0, 0, x1 - x0, MINIMAP_H);
    c.globalAlpha = 1;
    c.strokeStyle = theme.accent;
    c.lineWidth = 1.5;
    c.strokeRect(x0 + 0.75, 0.75, Math.max(1, x1 - x0 - 1.5), MINIMAP_H - 1.5);
  }
  return { el, draw };
}
