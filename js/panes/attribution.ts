/**
 * Attribution pane (Explorer): the tokens coloured by the chosen input-attribution method for the target's
 * prediction, a method picker, and for generated continuations the source × generated matrix (SVG).
 * Clicking a source token selects its embedding node (the graph highlights the routes that start at it);
 * clicking a generated token makes the position that predicted it the target everywhere.
 */
import {
  Attribution, columnOfTarget, completenessText, getAttribution, legendOf, scaleMax, scoreColor, targetForGenerated,
} from "../attribution";
import { divergingGradient, heatGradient, readTheme, rgbString } from "../color";
import { getSelection, getTarget, getTokens } from "../state";
import { displayToken, fmt, h, truncate } from "../text";
import { watchTheme } from "../theme";
import type { Pane, PaneContext, Status } from "../types";

const NS = "http://www.w3.org/2000/svg";
const CELL_W = 30;
const CELL_H = 15;
const LEFT = 96; // source labels
const TOP = 64; // generated labels, rotated

function svg(tag: string, attrs: Record<string, string | number>, text?: string): SVGElement {
  const e = document.createElementNS(NS, tag) as SVGElement;
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text != null) e.textContent = text;
  return e;
}

export function createAttributionPane(ctx: PaneContext): Pane {
  const { model } = ctx;
  const ac = new AbortController();
  const sig = { signal: ac.signal };
  ctx.onCleanup(() => ac.abort());

  const picker = h("select", { class: "lmtt-attr-method", "aria-label": "Input-attribution method" }) as HTMLSelectElement;
  const legendBar = h("span", { class: "lmtt-legend-bar" });
  const legendText = h("span", { class: "lmtt-legend-text" });
  const legendEnds = h("span", { class: "lmtt-hint lmtt-attr-ends" });
  const note = h("div", { class: "lmtt-hint lmtt-attr-note" });
  const tokens = h("div", { class: "lmtt-attr-tokens", role: "list" });
  const compute = h("button", { type: "button", class: "lmtt-btn lmtt-attr-compute" }, "Compute source × generated matrix");
  const matrixBox = h("div", { class: "lmtt-attr-matrix" });
  const el = h(
    "div",
    { class: "lmtt-pane lmtt-attribution" },
    h("div", { class: "lmtt-pane-head" }, h("span", { class: "lmtt-pane-title" }, "Input attribution"), picker),
    h("div", { class: "lmtt-legend" }, legendBar, legendEnds, legendText),
    note,
    tokens,
    compute,
    matrixBox,
  );

  const busy = () => ((model.get("status") ?? {}) as Status).state === "running";

  function drawPicker(a: Attribution) {
    const names = a.methods.includes(a.method) ? a.methods : [a.method, ...a.methods];
    if (picker.options.length !== names.length || [...picker.options].some((o, i) => o.value !== names[i])) {
      picker.replaceChildren(...names.map((n) => h("option", { value: n }, n)));
    }
    picker.value = a.method;
    picker.disabled = busy() || model.get("static") === true;
  }

  function drawTokens(a: Attribution, toks: string[], dark: boolean) {
    const sel = getSelection(model);
    const picked = sel && sel.kind === "node" && sel.node_kind === "embedding" ? sel.token : -1;
    const vals = a.scores?.data ?? new Float32Array();
    const max = scaleMax(vals);
    const gen = new Set(a.generated);
    tokens.replaceChildren(
      ...toks.map((tok, j) => {
        const v = j < vals.length ? vals[j] : NaN;
        const rgb = scoreColor(v, max, a.signed, dark);
        const span = h(
          "button",
          {
            type: "button", role: "listitem", "data-position": j,
            class: `lmtt-attr-tok${rgb ? "" : " is-unread"}${gen.has(j) ? " is-generated" : ""}${j === picked ? " is-selected" : ""}${j === a.position ? " is-target" : ""}`,
            title: `#${j} ${displayToken(tok)}: ${rgb ? fmt(v, 4) : "not read by this prediction"}`,
          },
          truncate(displayToken(tok), 16),
        );
        if (rgb) {
          span.style.background = rgbString(rgb);
          // dark text on a light cell, light text on a dark one
          span.style.color = rgb[0] * 0.299 + rgb[1] * 0.587 + rgb[2] * 0.114 > 140 ? "#111" : "#fff";
        }
        return span;
      }),
    );
  }

  function drawMatrix(a: Attribution, toks: string[], dark: boolean) {
    compute.hidden = a.matrixState !== "on_demand";
    compute.disabled = busy() || model.get("static") === true;
    if (a.matrixState !== "ready" || !a.matrix || a.matrix.shape.length !== 2) {
      matrixBox.replaceChildren(
        a.matrixState === "none" ? h("div", { class: "lmtt-hint" }, "No generated tokens: explain with generate=N for the source × generated matrix.") : "",
      );
      return;
    }
    const [G, T] = a.matrix.shape;
    const max = scaleMax(a.matrix.data);
    const col = columnOfTarget(a.matrixRows, getTarget(model));
    const W = LEFT + G * CELL_W + 4;
    const H = TOP + T * CELL_H + 4;
    const root = svg("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: "lmtt-attr-svg", role: "img" });
    root.appendChild(svg("title", {}, `source × generated: ${a.method} (${a.matrixMetric})`));
    const muted = readTheme(el).muted;
    for (let s = 0; s < T; s++) {
      const label = svg("text", { x: LEFT - 4, y: TOP + s * CELL_H + CELL_H - 4, "text-anchor": "end", class: "lmtt-attr-src", "data-position": s },
        truncate(displayToken(toks[s] ?? ""), 12));
      root.appendChild(label);
    }
    for (let g = 0; g < G; g++) {
      const pos = a.matrixRows[g];
      const x = LEFT + g * CELL_W;
      const colGroup = svg("g", { class: `lmtt-attr-col${g === col ? " is-target" : ""}`, "data-generated": pos });
      colGroup.appendChild(svg("title", {}, `#${pos} ${displayToken(toks[pos] ?? "")}: click to explain its prediction (target #${targetForGenerated(pos)})`));
      colGroup.appendChild(svg("text", { x: x + CELL_W / 2, y: TOP - 4, transform: `rotate(-50 ${x + CELL_W / 2} ${TOP - 4})`, class: "lmtt-attr-gen" },
        truncate(displayToken(toks[pos] ?? ""), 10)));
      for (let s = 0; s < T; s++) {
        const v = a.matrix.data[g * T + s];
        const rgb = scoreColor(v, max, a.signed, dark);
        colGroup.appendChild(svg("rect", {
          x, y: TOP + s * CELL_H, width: CELL_W - 1, height: CELL_H - 1,
          fill: rgb ? rgbString(rgb) : "none", stroke: rgb ? "none" : muted, "stroke-opacity": 0.15,
        }));
      }
      if (g === col) colGroup.appendChild(svg("rect", { x: x - 1, y: TOP - 1, width: CELL_W + 1, height: T * CELL_H + 1, fill: "none", class: "lmtt-attr-colring" }));
      root.appendChild(colGroup);
    }
    matrixBox.replaceChildren(
      h("div", { class: "lmtt-subtitle" }, `Source × generated (${a.matrixMetric}; column = the prediction of that token; click one to make it the target)`),
      root as unknown as HTMLElement,
    );
  }

  function draw() {
    const a = getAttribution(model);
    el.hidden = !a;
    if (!a) return;
    const dark = readTheme(el).dark;
    const toks = getTokens(model);
    drawPicker(a);
    legendBar.style.background = a.signed ? divergingGradient(dark) : heatGradient(dark);
    const max = scaleMax(a.scores?.data ?? []);
    legendEnds.textContent = a.signed ? `−${fmt(max, 3)} … +${fmt(max, 3)}` : `0 … ${fmt(max, 3)}`;
    legendText.textContent = legendOf(a);
    note.textContent = completenessText(a);
    note.hidden = !note.textContent;
    drawTokens(a, toks, dark);
    drawMatrix(a, toks, dark);
  }

  picker.addEventListener("change", () => ctx.commit({ attribution_method: picker.value }), sig);
  compute.addEventListener("click", () => model.send({ type: "attribution_matrix" }), sig);
  tokens.addEventListener("click", (ev) => {
    const b = (ev.target as Element).closest?.("[data-position]");
    if (!b) return;
    const token = Number(b.getAttribute("data-position"));
    ctx.commit({ selection: { kind: "node", node_kind: "embedding", layer: -1, token } });
  }, sig);
  matrixBox.addEventListener("click", (ev) => {
    const t = ev.target as Element;
    const src = t.closest?.(".lmtt-attr-src");
    if (src) {
      ctx.commit({ selection: { kind: "node", node_kind: "embedding", layer: -1, token: Number(src.getAttribute("data-position")) } });
      return;
    }
    const colEl = t.closest?.("[data-generated]");
    if (colEl && model.get("static") !== true) ctx.commit({ target: targetForGenerated(Number(colEl.getAttribute("data-generated"))) });
  }, sig);
  for (const n of ["attribution", "tokens", "target", "selection", "status", "static"]) ctx.listen(`change:${n}`, draw);
  watchTheme(el, draw, ac.signal);
  draw();
  return { el, destroy: () => ac.abort() };
}
