/**
 * FlowGraph export: the drawn canvas as PNG with its token labels and a legend drawn into the image, the same
 * geometry as SVG, handed to the browser as a download.
 */
import { importanceColor, readTheme, rgbString, Theme } from "../color";
import { edgeStyle } from "../draw";
import { toScreen, visibleLabels } from "../geometry";
import { dims, getGraph, getMeta, getTarget, getTokens } from "../state";
import { displayToken, fmt, truncate } from "../text";
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

/** Height (CSS px) of the PNG's token-label band and of its legend line. */
export const PNG_AXIS_H = 72;
export const PNG_LEGEND_H = 24;

/** Token labels under the graph, as the axis shows them: rotated, every k-th one, the target in the accent colour. */
function drawLabels(c: CanvasRenderingContext2D, ctx: PaneContext, gv: GraphView, theme: Theme, top: number) {
  const { model } = ctx;
  const toks = getTokens(model);
  const v = gv.ensureView();
  const size = gv.size();
  const target = getTarget(model);
  c.textAlign = "right";
  c.textBaseline = "middle";
  for (const i of visibleLabels(toks.length, v, size.w, [target])) {
    const [x] = toScreen(v, i, 0);
    if (x < 0 || x > size.w) continue;
    c.save();
    c.translate(x, top + 6);
    c.rotate((-50 * Math.PI) / 180);
    c.fillStyle = i === target ? theme.accent : theme.fg;
    c.font = `${i === target ? "bold " : ""}10.5px ui-monospace, monospace`;
    c.fillText(truncate(displayToken(toks[i]), 14), 0, 0);
    c.restore();
  }
  c.textAlign = "left";
}

/** The legend line: edge kinds, the weight scale and what the picture shows (model, target, τ). */
function drawLegend(c: CanvasRenderingContext2D, ctx: PaneContext, theme: Theme, top: number, width: number) {
  const { model } = ctx;
  const y = top + PNG_LEGEND_H / 2;
  let x = 8;
  c.font = `11px ${theme.font}`;
  c.textBaseline = "middle";
  const key = (kind: string, label: string) => {
    const st = edgeStyle(kind, 0.8, theme, 1);
    c.strokeStyle = st.color;
    c.lineWidth = 2;
    c.setLineDash(st.dash);
    c.beginPath();
    c.moveTo(x, y);
    c.lineTo(x + 18, y);
    c.stroke();
    c.setLineDash([]);
    c.fillStyle = theme.muted;
    c.fillText(label, x + 22, y);
    x += 26 + c.measureText(label).width + 8;
  };
  key("attention", "attention");
  key("mlp", "MLP");
  key("residual", "residual");
  const grad = c.createLinearGradient(x, 0, x + 48, 0);
  for (let k = 0; k <= 4; k++) grad.addColorStop(k / 4, rgbString(importanceColor(k / 4, theme.dark)));
  c.fillStyle = grad;
  c.fillRect(x, y - 3, 48, 6);
  c.fillStyle = theme.muted;
  c.fillText("weight (low → high)", x + 52, y);
  const target = getTarget(model);
  const what = `${getMeta(model).model ?? ""} · target #${target} “${truncate(displayToken(getTokens(model)[target] ?? ""), 20)}” · τ = ${fmt(Number(model.get("threshold")), 3)} · ${model.get("granularity") ?? "head"}`;
  c.textAlign = "right";
  c.fillText(what, width - 8, y);
  c.textAlign = "left";
}

/** The image the PNG holds: the graph as drawn, its token labels and the legend, at the canvas's pixel density. */
export function composePng(ctx: PaneContext, gv: GraphView): HTMLCanvasElement {
  gv.draw({ complete: true }); // every edge, never the part of a dense graph drawn so far
  const src = gv.canvas;
  const size = gv.size();
  const dpr = src.width / Math.max(1, size.w) || 1;
  const theme = gv.theme();
  const out = document.createElement("canvas");
  out.width = src.width;
  out.height = Math.round((size.h + PNG_AXIS_H + PNG_LEGEND_H) * dpr);
  const c = out.getContext("2d");
  if (!c) throw new Error("no 2D canvas to compose the PNG on");
  c.fillStyle = theme.bg;
  c.fillRect(0, 0, out.width, out.height);
  c.drawImage(src, 0, 0);
  c.setTransform(dpr, 0, 0, dpr, 0, 0);
  drawLabels(c, ctx, gv, theme, size.h);
  drawLegend(c, ctx, theme, size.h + PNG_AXIS_H, size.w);
  return out;
}

export function downloadPng(ctx: PaneContext, gv: GraphView) {
  try {
    download("flow-graph.png", composePng(ctx, gv).toDataURL("image/png"));
  } catch (e) {
    console.error("lmtt-widgets: PNG export failed", e);
  }
}
