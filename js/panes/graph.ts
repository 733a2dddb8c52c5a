/**
 * FlowGraph pane: tokens × residual rows on a canvas. This module only assembles it: the toolbar and status line
 * (graph-toolbar), the canvas view with its axis and tooltip (graph-view, painted by graph-paint), the input
 * controller (graph-input) and the exports (graph-export), and routes the model's changes to one redraw path.
 */
import { selectionToCursor } from "../selection";
import { dims, getSelection, getTarget, getTokens } from "../state";
import { displayToken, h, truncate } from "../text";
import type { Pane, PaneContext } from "../types";
import { downloadPng, downloadSvg, exportSvgText } from "./graph-export";
import { attachGraphInput } from "./graph-input";
import { createGraphToolbar } from "./graph-toolbar";
import { createGraphView } from "./graph-view";

export { sliderToTau, TAU_MAX, TAU_MIN, tauToSlider } from "../tau";
export { edgeHeadShares } from "./graph-tooltip";

export function createGraphPane(ctx: PaneContext): Pane {
  const { model } = ctx;
  const tokText = (t: number) => `“${truncate(displayToken(getTokens(model)[t] ?? ""), 24)}”`;
  let el: HTMLElement | null = null;
  const gv = createGraphView(ctx, () => el as HTMLElement, () => bar.sync(), tokText);
  const bar = createGraphToolbar(
    ctx,
    { resetView: () => gv.resetView(), zoomTokens: (k) => gv.zoomTokens(k), exportPng: () => downloadPng(ctx, gv), exportSvg: () => downloadSvg(ctx, gv) },
    tokText,
  );
  el = h("div", { class: "lmtt-pane lmtt-graph" }, bar.toolbar, gv.wrap, gv.axis, gv.minimap, h("div", { class: "lmtt-footer" }, bar.info, bar.legend));
  attachGraphInput(ctx, gv);

  // ---- model events -> one redraw path
  const onGraphChange = () => {
    gv.setHover(null);
    bar.sync();
    gv.schedule();
  };
  // a new target: its column (where the route ends) comes into view when the user has zoomed
  ctx.listen("change:target", () => gv.keepTargetInView());
  for (const name of ["graph", "target", "threshold", "granularity", "meta", "block_importance"]) ctx.listen(`change:${name}`, onGraphChange);
  ctx.listen("change:tokens", () => gv.tokensChanged());
  ctx.listen("change:selection", () => {
    bar.sync();
    const sel = getSelection(model);
    if (sel) gv.setCursor(selectionToCursor(sel, getTarget(model), dims(model).L));
    gv.schedule();
  });

  (el as any).__lmtt = {
    exportSvg: () => exportSvgText(ctx, gv),
    draw: gv.draw,
    pending: gv.pending,
    setBudget: gv.setBudget,
    getView: gv.getView,
    lastDrawMs: gv.lastDrawMs,
  };
  bar.sync();
  gv.schedule();
  return { el };
}
