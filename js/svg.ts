/** SVG export built with DOM APIs (createElementNS + textContent) and XMLSerializer: tokens are always escaped. */
import { importanceColor, rgbString, Theme } from "./color";
import { edgeGeometry, edgeStyle, nodeGeometry, nodeImportance } from "./draw";
import { toScreen, View, visibleLabels } from "./geometry";
import type { GraphData } from "./state";
import { rowLabel } from "./state";
import { displayToken, truncate } from "./text";

const NS = "http://www.w3.org/2000/svg";

export interface SvgParams {
  view: View;
  width: number;
  height: number;
  graph: GraphData;
  tokens: string[];
  L: number;
  target: number;
  theme: Theme;
  title?: string;
}

function el(doc: Document, tag: string, attrs: Record<string, string | number>): Element {
  const e = doc.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}

const LABEL_H = 70;

export function buildGraphSvg(p: SvgParams, doc: Document = document): SVGSVGElement {
  const { view: v, graph: g, theme } = p;
  const W = Math.round(p.width);
  const H = Math.round(p.height + LABEL_H);
  const svg = el(doc, "svg", { xmlns: NS, width: W, height: H, viewBox: `0 0 ${W} ${H}`, "font-family": "sans-serif" }) as SVGSVGElement;
  const title = el(doc, "title", {});
  title.textContent = p.title ?? "Information flow routes";
  svg.appendChild(title);
  svg.appendChild(el(doc, "rect", { x: 0, y: 0, width: W, height: H, fill: theme.bg }));
  // target column
  const [tx] = toScreen(v, p.target, 0);
  svg.appendChild(el(doc, "rect", { x: (tx - v.sx / 2).toFixed(1), y: 0, width: v.sx.toFixed(1), height: p.height, fill: theme.accent, "fill-opacity": 0.08 }));
  // layer labels
  const rowStep = Math.max(1, Math.ceil(12 / v.sy));
  for (let r = 0; r <= 2 * p.L; r += r === 0 ? 1 : 1) {
    if (r !== 0 && (r % 2 === 0 || ((r - 1) / 2) % Math.max(1, Math.ceil(rowStep / 2)) !== 0)) continue;
    const [, y] = toScreen(v, 0, r);
    if (y < 0 || y > p.height) continue;
    const t = el(doc, "text", { x: 4, y: (y + 3).toFixed(1), "font-size": 9, fill: theme.muted });
    t.textContent = r === 0 ? "emb" : rowLabel(r).split(" ")[0];
    svg.appendChild(t);
  }
  const edges = el(doc, "g", { fill: "none", "stroke-linecap": "round" });
  const order = Array.from({ length: g.e }, (_, i) => i).sort((a, b) => g.edgeWeight[a] - g.edgeWeight[b]);
  for (const i of order) {
    const e = edgeGeometry(v, g, i);
    const st = edgeStyle(e.kind, e.t, theme, Math.min(v.sx, v.sy) / 8);
    const d = e.curved
      ? `M${e.x0.toFixed(1)} ${e.y0.toFixed(1)}Q${e.cx.toFixed(1)} ${e.cy.toFixed(1)} ${e.x1.toFixed(1)} ${e.y1.toFixed(1)}`
      : `M${e.x0.toFixed(1)} ${e.y0.toFixed(1)}L${e.x1.toFixed(1)} ${e.y1.toFixed(1)}`;
    const attrs: Record<string, string | number> = { d, stroke: st.color, "stroke-width": st.width.toFixed(2) };
    if (e.kind === "residual") attrs["stroke-opacity"] = (0.35 + 0.6 * e.t).toFixed(2);
    if (st.dash.length) attrs["stroke-dasharray"] = st.dash.join(" ");
    edges.appendChild(el(doc, "path", attrs));
  }
  svg.appendChild(edges);
  const nodes = el(doc, "g", { stroke: theme.fg, "stroke-width": 0.6 });
  for (const n of nodeGeometry(v, g, nodeImportance(g))) {
    const fill = rgbString(importanceColor(n.t, theme.dark));
    if (n.kind === "mlp") {
      nodes.appendChild(el(doc, "rect", { x: (n.x - n.r).toFixed(1), y: (n.y - n.r).toFixed(1), width: (2 * n.r).toFixed(1), height: (2 * n.r).toFixed(1), fill }));
    } else {
      nodes.appendChild(el(doc, "circle", { cx: n.x.toFixed(1), cy: n.y.toFixed(1), r: n.r.toFixed(1), fill }));
    }
  }
  svg.appendChild(nodes);
  const labels = el(doc, "g", { "font-size": 10, fill: theme.fg });
  const T = p.tokens.length;
  for (const t of visibleLabels(T, v, W, [p.target])) {
    const [x] = toScreen(v, t, 0);
    const y = p.height + 6;
    const txt = el(doc, "text", {
      x: x.toFixed(1),
      y: y.toFixed(1),
      transform: `rotate(-45 ${x.toFixed(1)} ${y.toFixed(1)})`,
      "text-anchor": "end",
      "font-weight": t === p.target ? "bold" : "normal",
    });
    txt.setAttribute("transform", `rotate(-45 ${x.toFixed(1)} ${y.toFixed(1)}) translate(0 8)`);
    txt.textContent = truncate(displayToken(p.tokens[t]), 14);
    labels.appendChild(txt);
  }
  svg.appendChild(labels);
  return svg;
}

export function serializeSvg(svg: SVGSVGElement): string {
  return new XMLSerializer().serializeToString(svg);
}
