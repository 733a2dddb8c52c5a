/**
 * FlowGraph input controller: pointer (hover, click to select, drag to pan), wheel zoom, keyboard (cursor, Enter,
 * Escape, zoom keys) and clicks on the token axis. It turns events into view changes or one commit per user action.
 */
import { clampTokens, Hit, panBy, toScreen, zoomAt } from "../geometry";
import { cursorToSelection, moveCursor, selectionToCursor } from "../selection";
import { dims, getSelection, getTarget } from "../state";
import type { PaneContext, Selection } from "../types";
import type { GraphView } from "./graph-view";

function hitToSelection(hit: Hit): Selection {
  if (!hit) return null;
  if (hit.kind === "node") return cursorToSelection({ token: hit.token, row: hit.row });
  if (hit.kind === "mlp") return { kind: "mlp", layer: hit.layer, token: hit.token };
  return { kind: "edge", layer: hit.layer, source: hit.source, token: hit.token };
}

export function attachGraphInput(ctx: PaneContext, gv: GraphView): void {
  const { model } = ctx;
  const { canvas, wrap, axis } = gv;
  const ac = new AbortController();
  const sig = { signal: ac.signal };
  ctx.onCleanup(() => ac.abort());

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
          gv.setView(panBy(gv.ensureView(), dx, dy));
          drag.x = x;
          drag.y = y;
          gv.hideTooltip();
          canvas.style.cursor = "grabbing";
          return;
        }
      }
      const hit = gv.hitAt(x, y);
      const changed = gv.setHover(hit);
      canvas.style.cursor = hit ? "pointer" : "grab";
      gv.showTooltip(hit, x, y);
      if (changed) gv.schedule();
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
      const s = hitToSelection(gv.hitAt(x, y));
      if (s) {
        gv.setCursor(selectionToCursor(s, getTarget(model), dims(model).L));
        ctx.commit({ selection: s });
      }
    },
    sig,
  );
  canvas.addEventListener(
    "pointerleave",
    () => {
      if (gv.setHover(null)) gv.schedule();
      gv.hideTooltip();
    },
    sig,
  );
  canvas.addEventListener(
    "wheel",
    (ev) => {
      ev.preventDefault();
      gv.hideTooltip();
      const [x, y] = localXY(ev);
      const unit = ev.deltaMode === 1 ? 0.05 : 0.0015;
      // a pinch (which browsers send as ctrl + wheel) or ctrl/⌘ + wheel: zoom both axes, as on a map
      if (ev.ctrlKey || ev.metaKey) {
        gv.setView(zoomAt(gv.ensureView(), Math.exp(-ev.deltaY * unit), x, y));
        return;
      }
      // a sideways swipe pans along the tokens
      if (Math.abs(ev.deltaX) > Math.abs(ev.deltaY) && !ev.shiftKey) {
        const v = panBy(gv.ensureView(), -ev.deltaX * (ev.deltaMode === 1 ? 16 : 1), 0);
        const fit = gv.fitted();
        // with the layers as fitted (a token zoom), the tokens keep covering the width
        gv.setView(v.sy === fit.sy ? clampTokens(v, fit, dims(model).T) : v);
        return;
      }
      // the wheel (or shift + wheel, which some systems turn into deltaX) stretches the tokens: every layer stays
      gv.zoomTokens(Math.exp(-(ev.deltaY || ev.deltaX) * unit), x);
    },
    { signal: ac.signal, passive: false },
  );
  canvas.addEventListener("dblclick", () => gv.resetView(), sig);

  wrap.addEventListener(
    "keydown",
    (ev) => {
      const { T, L } = dims(model);
      if (!T) return;
      const cursor = gv.cursor() ?? selectionToCursor(getSelection(model), getTarget(model), L);
      gv.setCursor(cursor);
      const moved = moveCursor(cursor, ev.key, T, L, ev.shiftKey);
      const size = gv.size();
      if (moved) {
        ev.preventDefault();
        gv.setCursor(moved);
        const [x, y] = toScreen(gv.ensureView(), moved.token, moved.row);
        gv.showTooltip({ kind: "node", token: moved.token, row: moved.row }, x, y);
        gv.schedule();
        return;
      }
      if (ev.key === "Enter" || ev.key === " ") {
        ev.preventDefault();
        ctx.commit({ selection: cursorToSelection(cursor) });
      } else if (ev.key === "Escape") {
        ev.preventDefault();
        gv.hideTooltip();
        ctx.commit({ selection: null });
      } else if (ev.key === "+" || ev.key === "=") {
        gv.setView(zoomAt(gv.ensureView(), 1.25, size.w / 2, size.h / 2));
      } else if (ev.key === "-") {
        gv.setView(zoomAt(gv.ensureView(), 0.8, size.w / 2, size.h / 2));
      } else if (ev.key === "]") {
        gv.zoomTokens(1.25);
      } else if (ev.key === "[") {
        gv.zoomTokens(0.8);
      } else if (ev.key === "0") {
        gv.resetView();
      }
    },
    sig,
  );
  wrap.addEventListener("focus", () => gv.schedule(), sig);
  wrap.addEventListener(
    "blur",
    () => {
      gv.hideTooltip();
      gv.schedule();
    },
    sig,
  );
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
}
