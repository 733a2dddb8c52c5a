/**
 * The metric controls of the Explorer (inside the prompt pane): the foil (top predictions or any token), the
 * corrupted prompt and the ablation. Each edit is one trait commit; Python validates it (a text that is not one
 * token is refused into the error bar) and recomputes the method tables only.
 */
import { getMetric, metricText, quoteToken } from "../scores";
import { displayToken, h, pct, truncate } from "../text";
import type { PaneContext } from "../types";

const NONE = "none";
const CUSTOM = "custom";

export function createMetricBar(ctx: PaneContext, sig: { signal: AbortSignal }): HTMLElement {
  const { model } = ctx;
  const foilSel = h("select", { class: "lmtt-pick lmtt-foil", "aria-label": "Foil token (contrast with the prediction)" }) as HTMLSelectElement;
  const foilText = h("input", {
    type: "text", class: "lmtt-input lmtt-foil-text", placeholder: "any token, e.g. ␣John", spellcheck: "false",
    "aria-label": "Foil as text (one token)", title: "Type one token (mind the leading space) and press Enter",
  }) as HTMLInputElement;
  const corrupted = h("input", {
    type: "text", class: "lmtt-input lmtt-corrupted", placeholder: "corrupted prompt (same length), e.g. other names",
    spellcheck: "false", "aria-label": "Corrupted prompt",
  }) as HTMLInputElement;
  const ablation = h("select", { class: "lmtt-pick lmtt-ablation", "aria-label": "Ablation for causal effects" },
    h("option", { value: "corrupted" }, "patch from corrupted"),
    h("option", { value: "mean" }, "mean ablation"),
    h("option", { value: "zero" }, "zero ablation"),
  ) as HTMLSelectElement;
  const metric = h("span", { class: "lmtt-metric-name", "aria-live": "polite" });
  const el = h(
    "div",
    { class: "lmtt-metric-row" },
    h("label", { class: "lmtt-field" }, h("span", { class: "lmtt-lbl" }, "foil"), foilSel),
    foilText,
    h("label", { class: "lmtt-field lmtt-grow" }, h("span", { class: "lmtt-lbl" }, "corrupted"), corrupted),
    ablation,
    metric,
  );

  function draw() {
    const m = getMetric(model);
    const stat = model.get("static") === true;
    const options = [h("option", { value: NONE }, m.target_text != null ? `none: log p(${quoteToken(m.target_text)})` : "none")];
    let known = m.foil == null;
    for (const [id, text, prob] of m.candidates ?? []) {
      if (id === m.target) continue;
      options.push(h("option", { value: String(id) }, `${truncate(displayToken(text), 16)} ${pct(prob)}`));
      if (id === m.foil) known = true;
    }
    if (!known) options.push(h("option", { value: CUSTOM }, `${truncate(displayToken(m.foil_text ?? ""), 16)} (typed)`));
    foilSel.replaceChildren(...options);
    foilSel.value = m.foil == null ? NONE : known ? String(m.foil) : CUSTOM;
    const corr = model.get("corrupted");
    if (document.activeElement !== corrupted) corrupted.value = typeof corr === "string" ? corr : "";
    const abl = model.get("ablation");
    ablation.value = typeof abl === "string" ? abl : "corrupted";
    corrupted.disabled = ablation.value !== "corrupted" || stat;
    foilSel.disabled = foilText.disabled = ablation.disabled = stat;
    el.hidden = stat && m.target_text == null; // a report without method tables has nothing to set here
    metric.textContent = m.target_text != null ? `metric: ${metricText("attribution_patching", m)}` : "";
  }

  foilSel.addEventListener("change", () => {
    const v = foilSel.value;
    if (v === CUSTOM) return;
    ctx.commit({ foil: v === NONE ? null : Number(v) });
  }, sig);
  const commitText = () => {
    // the raw text, leading space included; Python turns it into a token id or refuses it with a message
    if (foilText.value === "") return;
    ctx.commit({ foil: foilText.value.replace(/␣/g, " ") });
    foilText.value = "";
  };
  foilText.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") {
      ev.preventDefault();
      commitText();
    }
  }, sig);
  foilText.addEventListener("change", commitText, sig);
  const commitCorrupted = () => {
    if (model.get("corrupted") !== corrupted.value) ctx.commit({ corrupted: corrupted.value });
  };
  corrupted.addEventListener("change", commitCorrupted, sig);
  corrupted.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") {
      ev.preventDefault();
      commitCorrupted();
    }
  }, sig);
  ablation.addEventListener("change", () => ctx.commit({ ablation: ablation.value }), sig);
  for (const n of ["metric", "corrupted", "ablation", "static"]) ctx.listen(`change:${n}`, draw);
  draw();
  return el;
}
