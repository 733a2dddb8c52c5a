/**
 * The Check action (heads pane): exact activation patching of the selected head, MLP, neuron or edge, or of the
 * whole route, through the details channel (`check:<component id>`, `check:route:<tau>`). The exact effect is
 * shown beside the approximations of the same component (logit attribution, attribution patching), signed, with
 * units. Results hold only for the settings they were computed with: they are forgotten when `metric` changes.
 */
import type { DetailState } from "../details";
import { CHECK_PREFIX, THRESHOLD_DEFAULT } from "../protocol.gen";
import { approxOf, componentId, getMethodScores, getMetric, metricText, settingText, signed, unitsOf } from "../scores";
import { getSelection } from "../state";
import { h } from "../text";
import type { PaneContext } from "../types";

// Exact patching runs the model once per component (and traces the corrupted prompt): far longer than a lookup.
export const CHECK_TIMEOUT_MS = 180_000;

export function routeKey(threshold: unknown): string {
  const tau = Number(threshold);
  return `${CHECK_PREFIX}route:${Number.isFinite(tau) ? tau : THRESHOLD_DEFAULT}`;
}

function row(label: string, value: string, cls = ""): HTMLElement {
  return h("div", { class: `lmtt-check-row ${cls}` }, h("span", { class: "lmtt-lbl" }, label), h("span", { class: "lmtt-num" }, value));
}

export function createCheckBox(ctx: PaneContext, sig: { signal: AbortSignal }): { el: HTMLElement; draw: () => void } {
  const { model } = ctx;
  const checkBtn = h("button", { type: "button", class: "lmtt-btn lmtt-check-btn" }, "Check");
  const routeBtn = h("button", { type: "button", class: "lmtt-btn lmtt-check-route" }, "Check route");
  const head = h("div", { class: "lmtt-check-head" });
  const body = h("div", { class: "lmtt-check-body" });
  const el = h("div", { class: "lmtt-check", "aria-live": "polite" }, h("div", { class: "lmtt-check-bar" }, head, checkBtn, routeBtn), body);
  let shown: string | null = null; // the key whose result the body shows (last clicked)

  const compId = () => componentId(getSelection(model));

  function result(st: DetailState | null, what: string): HTMLElement[] {
    if (!st) return [];
    if (st.status === "loading") return [h("div", { class: "lmtt-loading", role: "status" }, h("span", { class: "lmtt-spinner" }), `Exact patching of ${what}…`)];
    if (st.status === "error") return [h("div", { class: "lmtt-detail-error", role: "alert" }, `Check of ${what} failed: ${st.error}`)];
    const r = st.result ?? {};
    const m = r.metric ?? getMetric(model);
    const units = unitsOf("attribution_patching", m);
    if (r.route) {
      const frac = Number(r.fraction_kept);
      return [
        row(`${r.component}: metric kept`, Number.isFinite(frac) ? `${(frac * 100).toFixed(1)}%` : "—", "lmtt-check-exact"),
        row("metric: clean / route only / all ablated", `${signed(r.clean)} / ${signed(r.kept)} / ${signed(r.ablated)} ${units}`),
        row("components kept (head and MLP positions)", Number.isFinite(r.size) ? String(r.size) : "—"),
        h("div", { class: "lmtt-hint" }, `${metricText("attribution_patching", m)}; off-route heads and MLPs ${r.setting ?? settingText(m)}`),
      ];
    }
    const tables = getMethodScores(model);
    const id = String(r.component ?? what);
    const dla = r.approx?.logit_attribution ?? approxOf(tables, "logit_attribution", id);
    const ap = r.approx?.attribution_patching ?? approxOf(tables, "attribution_patching", id);
    const out = [
      row("exact (patching)", `${signed(r.exact)} ${units}`, "lmtt-check-exact"),
      row("≈ attribution patching", ap == null ? "— (switch the heatmap to ≈ causal)" : `${signed(ap)} ${units}`),
      row("direct logit attribution", dla == null ? "—" : `${signed(dla)} logits`),
    ];
    if (Number.isFinite(r.clean) && Number.isFinite(r.patched)) out.push(row("metric clean → patched", `${signed(r.clean)} → ${signed(r.patched)}`));
    out.push(h("div", { class: "lmtt-hint" }, `${metricText("attribution_patching", m)}: clean − patched, ${r.setting ?? settingText(m)}`));
    return out;
  }

  function draw() {
    const id = compId();
    const m = getMetric(model);
    const stat = model.get("static") === true;
    el.hidden = stat; // a report has no kernel to patch the model in
    const ready = m.causal_ready === true && !stat;
    checkBtn.hidden = !id;
    checkBtn.disabled = !ready;
    routeBtn.disabled = !ready;
    const why = ready ? "" : " (needs a corrupted prompt, or mean / zero ablation)";
    checkBtn.title = id ? `Exact activation patching of ${id}${why}` : "";
    routeBtn.title = `Faithfulness of the route at τ = ${model.get("threshold")}${why}`;
    head.textContent = id ? `Check ${id}: exact effect` : "Check: select a head, MLP, neuron or edge";
    if (!shown) {
      body.replaceChildren(ready ? h("div", { class: "lmtt-hint" }, "Runs exact activation patching in the kernel.") : h("div", { class: "lmtt-hint" }, `Check${why}.`));
      return;
    }
    const what = shown.slice(CHECK_PREFIX.length);
    body.replaceChildren(...result(ctx.details.get(shown, false), what));
  }

  checkBtn.addEventListener("click", () => {
    const id = compId();
    if (!id) return;
    shown = `${CHECK_PREFIX}${id}`;
    if (ctx.details.get(shown, false)?.status !== "ok") ctx.details.request(shown, CHECK_TIMEOUT_MS);
    draw();
  }, sig);
  routeBtn.addEventListener("click", () => {
    shown = routeKey(model.get("threshold"));
    if (ctx.details.get(shown, false)?.status !== "ok") ctx.details.request(shown, CHECK_TIMEOUT_MS);
    draw();
  }, sig);
  ctx.listen("change:metric", () => {
    ctx.details.forget(CHECK_PREFIX);
    shown = null;
    draw();
  });
  ctx.listen("change:selection", () => {
    // the result of another component stays until a new Check; a selection's own cached result shows at once
    const id = compId();
    if (id && ctx.details.get(`${CHECK_PREFIX}${id}`, false)) shown = `${CHECK_PREFIX}${id}`;
    draw();
  });
  for (const n of ["method_scores", "threshold", "static"]) ctx.listen(`change:${n}`, draw);
  const unsub = ctx.details.subscribe((key) => {
    if (key === "*" || key === shown) draw();
  });
  ctx.onCleanup(unsub);
  draw();
  return { el, draw };
}
