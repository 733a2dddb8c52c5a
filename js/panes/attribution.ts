/**
 * Attribution pane (Explorer): the tokens coloured by the chosen input-attribution method for the target's
 * prediction, a method picker, and for generated continuations the source × generated matrix (SVG).
 * Clicking a source token selects its embedding node (the graph highlights the routes that start at it);
 * clicking a generated token makes the position that predicted it the target everywhere.
 * A granularity control shows tokens merged into words (sum / mean / max, merged in Python); clicking a word selects
 * its tokens' embedding nodes. Beside it, the agreement of the shown method with the others on the same target.
 */
import {
  agreementText, Attribution, cellSelection, cellsOf, columnOfTarget, completenessText, getAttribution, legendOf,
  scaleMax, scoreColor, targetForGenerated,
} from "../attribution";
import { divergingGradient, heatGradient, readTheme, rgbString } from "../color";
import { getSelection, getTarget, getTokens } from "../state";
import { displayToken, fmt, h, truncate } from "../text";
import { frameThrottle } from "../frame";
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
  // subword: one cell per token; sum / mean / max: words, their tokens' scores merged that way (granularity.py)
  const granularity = h("select", { class: "lmtt-attr-granularity", "aria-label": "Tokens or words" },
    h("option", { value: "subword" }, "subword tokens"),
    h("option", { value: "sum" }, "words (sum)"),
    h("option", { value: "mean" }, "words (mean)"),
    h("option", { value: "max" }, "words (max |score|)"),
  ) as HTMLSelectElement;
  granularity.title = "Words start at whitespace or a word marker; a word's score is the sum, the mean or the largest-magnitude score of its tokens (unread tokens skipped)";
  const agreeBox = h("div", { class: "lmtt-attr-agreement" });
  const agreeAll = h("button", { type: "button", class: "lmtt-btn lmtt-attr-agree-all" }, "Compute the others");
  const compute = h("button", { type: "button", class: "lmtt-btn lmtt-attr-compute" }, "Compute source × generated matrix");
  const matrixBox = h("div", { class: "lmtt-attr-matrix" });
  const el = h(
    "div",
    { class: "lmtt-pane lmtt-attribution" },
    h("div", { class: "lmtt-pane-head" }, h("span", { class: "lmtt-pane-title" }, "Input attribution"), picker, granularity),
    h("div", { class: "lmtt-legend" }, legendBar, legendEnds, legendText),
    note,
    h("div", { class: "lmtt-attr-row" }, tokens, agreeBox),
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
    const emb = sel && sel.kind === "node" && sel.node_kind === "embedding" ? sel : null;
    const [p0, p1] = emb ? [emb.token, emb.last ?? emb.token] : [-1, -2];
    const cells = cellsOf(a, granularity.value, toks.length);
    const max = scaleMax(cells.map((c) => c.value));
    const gen = new Set(a.generated);
    tokens.replaceChildren(
      ...cells.map((c) => {
        const text = toks.slice(c.first, c.last + 1).join("");
        const rgb = scoreColor(c.value, max, a.signed, dark);
        const where = c.last > c.first ? `#${c.first}–#${c.last}` : `#${c.first}`;
        const span = h(
          "button",
          {
            type: "button", role: "listitem", "data-position": c.first, "data-last": c.last,
            class: `lmtt-attr-tok${rgb ? "" : " is-unread"}${gen.has(c.first) ? " is-generated" : ""}${c.first <= p1 && c.last >= p0 ? " is-selected" : ""}${a.position >= c.first && a.position <= c.last ? " is-target" : ""}`,
            title: `${where} ${displayToken(text)}: ${rgb ? fmt(c.value, 4) : "not read by this prediction"}`,
          },
          truncate(displayToken(text), 24),
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

  function drawAgreement(a: Attribution) {
    const ag = a.agreement;
    if (!ag || !ag.rows.length) {
      agreeBox.replaceChildren();
      return;
    }
    const rows = ag.rows.map((r) => h("tr", { class: `lmtt-attr-agree is-${r.state}`, "data-method": r.method },
      h("td", null, r.method), h("td", null, agreementText(r, ag.k))));
    agreeAll.hidden = !ag.rows.some((r) => r.state === "on_demand");
    agreeAll.disabled = busy() || model.get("static") === true;
    agreeBox.replaceChildren(
      h("div", { class: "lmtt-subtitle" }, `Agreement of ${ag.method} with the other methods (this target, ${ag.n} tokens)`),
      h("table", { class: "lmtt-attr-agree-table" }, h("tbody", null, ...rows)),
      agreeAll,
      h("div", { class: "lmtt-hint lmtt-attr-measures" }, ag.measures),
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
    const max = scaleMax(cellsOf(a, granularity.value, toks.length).map((c) => c.value));
    legendEnds.textContent = a.signed ? `−${fmt(max, 3)} … +${fmt(max, 3)}` : `0 … ${fmt(max, 3)}`;
    legendText.textContent = legendOf(a);
    note.textContent = completenessText(a);
    note.hidden = !note.textContent;
    granularity.hidden = !a.words;
    drawTokens(a, toks, dark);
    drawAgreement(a);
    drawMatrix(a, toks, dark);
  }

  picker.addEventListener("change", () => ctx.commit({ attribution_method: picker.value }), sig);
  compute.addEventListener("click", () => model.send({ type: "attribution_matrix" }), sig);
  granularity.addEventListener("change", draw, sig); // a view setting: the merged scores are already in the trait
  agreeAll.addEventListener("click", () => model.send({ type: "attribution_agreement" }), sig);
  tokens.addEventListener("click", (ev) => {
    const b = (ev.target as Element).closest?.("[data-position]");
    if (!b) return;
    const first = Number(b.getAttribute("data-position"));
    const last = Number(b.getAttribute("data-last") ?? first);
    ctx.commit({ selection: cellSelection({ first, last, value: NaN }) });
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
  ctx.listen("change:selection", frameThrottle(draw, ac.signal)); // once a frame during a burst of selections
  for (const n of ["attribution", "tokens", "target", "status", "static"]) ctx.listen(`change:${n}`, draw);
  watchTheme(el, draw, ac.signal);
  draw();
  return { el, destroy: () => ac.abort() };
}
