/** FlowGraph export: the drawn canvas as PNG, the same geometry as SVG, handed to the browser as a download. */
import { readTheme } from "../color";
import { dims, getGraph, getMeta, getTarget, getTokens } from "../state";
import { buildGraphSvg, serializeSvg } from "../svg";
import type { PaneContext } from "../types";
import type { GraphView } from "./graph-view";

export function download(name: string, href: string) {
  const a = document.createElement("a");
  a.setAttribute("download", name);
  a.setAttribute("href", href);
  a.style.display = "none";
  document.body.appendChild(a);
  a.click();
  a.remove();
}

export function exportSvgText(ctx: PaneContext, gv: GraphView): string {
  const { model } = ctx;
  const size = gv.size();
  const svg = buildGraphSvg({
    view: gv.ensureView(),
    width: size.w,
    height: size.h,
    graph: getGraph(model),
    tokens: getTokens(model),
    L: dims(model).L,
    target: getTarget(model),
    theme: readTheme(ctx.root),
    title: getMeta(model).model,
  });
  return serializeSvg(svg);
}

export function downloadSvg(ctx: PaneContext, gv: GraphView) {
  const url = URL.createObjectURL(new Blob([exportSvgText(ctx, gv)], { type: "image/svg+xml" }));
  download("flow-graph.svg", url);
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

export function downloadPng(gv: GraphView) {
  gv.draw();
  try {
    download("flow-graph.png", gv.canvas.toDataURL("image/png"));
  } catch (e) {
    console.error("lmtt-widgets: PNG export failed", e);
  }
}
