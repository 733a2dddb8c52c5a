/** Prompt pane (Explorer): prompt box bound to `prompt`, Run button sending `{type:"run"}`, status display. */
import { getMeta } from "../state";
import { h } from "../text";
import type { Pane, PaneContext, Status } from "../types";
import { createMetricBar } from "./metricbar";
import { displayToken, pct, truncate } from "../text";

export function createPromptPane(ctx: PaneContext): Pane {
  const { model } = ctx;
  const ac = new AbortController();
  const sig = { signal: ac.signal };
  ctx.onCleanup(() => ac.abort());
  const ta = h("textarea", { class: "lmtt-prompt", rows: 2, "aria-label": "Prompt", placeholder: "Type a prompt…", spellcheck: "false" }) as HTMLTextAreaElement;
  const run = h("button", { type: "button", class: "lmtt-btn lmtt-primary", title: "Run the model (Ctrl+Enter)" }, "Run");
  const bar = h("span", { class: "lmtt-progress-bar" });
  const progress = h("span", { class: "lmtt-progress", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100 }, bar);
  const msg = h("span", { class: "lmtt-status-msg", "aria-live": "polite" });
  const pred = h("span", { class: "lmtt-pred" });
  const note = h("span", { class: "lmtt-hint lmtt-static-note" }, "Static report: the prompt is fixed (running a new one needs a notebook kernel).");
  const statusRow = h("div", { class: "lmtt-status" }, progress, msg, note, h("span", { class: "lmtt-spacer" }), pred);
  const el = h("div", { class: "lmtt-pane lmtt-prompt-pane" }, h("div", { class: "lmtt-prompt-row" }, ta, run), statusRow, createMetricBar(ctx, sig));

  const status = (): Status => {
    const s = model.get("status");
    return s && typeof s === "object" ? (s as Status) : { state: "idle" };
  };

  const isStatic = () => model.get("static") === true;

  function draw() {
    const p = model.get("prompt");
    const text = typeof p === "string" ? p : "";
    if (document.activeElement !== ta && ta.value !== text) ta.value = text;
    const st = status();
    const running = st.state === "running";
    const stat = isStatic();
    run.hidden = stat;
    run.disabled = running || stat;
    ta.readOnly = stat;
    note.hidden = !stat;
    ta.setAttribute("aria-busy", String(running));
    progress.hidden = !running;
    const prog = Math.max(0, Math.min(1, Number(st.progress ?? 0)));
    bar.style.width = `${Math.round(prog * 100)}%`;
    progress.setAttribute("aria-valuenow", String(Math.round(prog * 100)));
    msg.textContent = st.message ? String(st.message) : running ? "running…" : "";
    msg.className = `lmtt-status-msg ${st.state === "error" ? "is-error" : ""}`;
    const m = getMeta(model);
    const at = m.position != null ? ` after #${m.position}` : "";
    pred.textContent = m.prediction ? `${m.model ? m.model + " · " : ""}next${at}: “${truncate(displayToken(m.prediction.token), 20)}” ${pct(m.prediction.prob)}` : m.model ?? "";
  }

  function doRun() {
    if (status().state === "running" || isStatic()) return;
    const prompt = ta.value;
    if (model.get("prompt") !== prompt) ctx.commit({ prompt });
    model.send({ type: "run", prompt });
  }
  run.addEventListener("click", doRun, sig);
  ta.addEventListener(
    "keydown",
    (ev) => {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey || ev.shiftKey)) {
        ev.preventDefault();
        doRun();
      }
    },
    sig,
  );
  ta.addEventListener("change", () => {
    if (!isStatic() && model.get("prompt") !== ta.value) ctx.commit({ prompt: ta.value });
  }, sig);
  for (const n of ["prompt", "status", "meta", "static"]) ctx.listen(`change:${n}`, draw);
  draw();
  return { el, destroy: () => ac.abort() };
}
