/** lmtt-widgets front end: one anywidget module for FlowGraph, HeadHeatmap, NeuronView, VocabView and Explorer. */
import "./style.css";
import { DetailsClient } from "./details";
import { guardKeys } from "./keyboard";
import { createAttributionPane } from "./panes/attribution";
import { createGraphPane } from "./panes/graph";
import { createHeadsPane } from "./panes/heads";
import { createNeuronsPane } from "./panes/neurons";
import { createPromptPane } from "./panes/prompt";
import { createVocabPane } from "./panes/vocab";
import { TRAIT_ARRAYS } from "./protocol.gen";
import { readContainer } from "./reportcodec";
import { protocolProblems } from "./state";
import { inflateState, reportParts, StaticModel } from "./static";
import { h } from "./text";
import type { Changes, Handler, Pane, PaneContext, WidgetModel } from "./types";

export const PANES: Record<string, (ctx: PaneContext) => Pane> = {
  prompt: createPromptPane,
  graph: createGraphPane,
  heads: createHeadsPane,
  neurons: createNeuronsPane,
  vocab: createVocabPane,
  attribution: createAttributionPane,
};

function errorBar(ctx: PaneContext): HTMLElement {
  const text = h("span", { class: "lmtt-error-text" });
  const close = h("button", { type: "button", class: "lmtt-close", "aria-label": "Dismiss error", title: "Dismiss" }, "×");
  const bar = h("div", { class: "lmtt-errorbar", role: "alert" }, h("span", { class: "lmtt-error-icon", "aria-hidden": "true" }, "!"), text, close);
  let dismissed = "";
  const draw = () => {
    const e = ctx.model.get("error");
    const problems = protocolProblems(ctx.model);
    const drift = problems.length
      ? `This widget cannot read what Python sent (${problems.slice(0, 3).join("; ")}): the Python package and the ` +
        "widget bundle come from different versions; reinstall lmtt-widgets and restart the kernel."
      : "";
    const msg = [typeof e === "string" ? e : e ? String(e) : "", drift].filter(Boolean).join(" ");
    if (msg !== dismissed) dismissed = "";
    text.textContent = msg;
    bar.hidden = !msg || msg === dismissed;
  };
  close.addEventListener("click", () => {
    dismissed = text.textContent ?? "";
    bar.hidden = true;
  });
  ctx.listen("change:error", draw);
  for (const name of Object.keys(TRAIT_ARRAYS)) ctx.listen(`change:${name}`, draw);
  draw();
  return bar;
}

function render({ model, el }: { model: WidgetModel; el: HTMLElement }): () => void {
  const root = h("div", { class: "lmtt-root" });
  const details = new DetailsClient(model);

  function makeCtx(cleanups: (() => void)[]): PaneContext {
    return {
      model,
      root,
      details,
      onCleanup: (fn) => cleanups.push(fn),
      listen: (event: string, cb: Handler) => {
        const wrapped: Handler = (...args) => {
          try {
            cb(...args);
          } catch (e) {
            console.error("lmtt-widgets:", e);
          }
        };
        model.on(event, wrapped);
        cleanups.push(() => model.off(event, wrapped));
      },
      commit: (changes) => {
        for (const k of Object.keys(changes) as (keyof Changes)[]) model.set(k, changes[k] as never);
        model.save_changes();
      },
    };
  }
  const runAll = (fns: (() => void)[]) => {
    while (fns.length) {
      const fn = fns.pop()!;
      try {
        fn();
      } catch (e) {
        console.error("lmtt-widgets: cleanup", e);
      }
    }
  };

  const keys = new AbortController();
  guardKeys(root, keys.signal); // keys pressed in the widget never reach the notebook's shortcuts
  const viewCleanups: (() => void)[] = [() => details.dispose(), () => keys.abort()];
  let paneCleanups: (() => void)[] = [];
  const body = h("div", { class: "lmtt-body" });
  root.append(errorBar(makeCtx(viewCleanups)), body);
  el.replaceChildren(root);

  function build() {
    runAll(paneCleanups);
    paneCleanups = [];
    const ctx = makeCtx(paneCleanups);
    const names = model.get("panes");
    const list: string[] = Array.isArray(names) && names.length ? names.map(String) : ["graph"];
    const explorer = list.length > 1 && list.includes("graph");
    body.className = `lmtt-body lmtt-layout-${explorer ? "explorer" : "single"}`;
    body.replaceChildren();
    const side = h("div", { class: "lmtt-side" });
    for (const name of list) {
      const make = PANES[name];
      if (!make) {
        body.appendChild(h("div", { class: "lmtt-hint" }, `Unknown pane: ${name}`));
        continue;
      }
      try {
        const pane = make(ctx);
        if (pane.destroy) paneCleanups.push(pane.destroy);
        if (explorer && (name === "heads" || name === "neurons" || name === "vocab")) side.appendChild(pane.el);
        else body.appendChild(pane.el);
      } catch (e) {
        console.error("lmtt-widgets: pane failed", name, e);
        body.appendChild(h("div", { class: "lmtt-hint" }, `Pane ${name} failed: ${String(e)}`));
      }
    }
    if (side.childElementCount) body.appendChild(side);
  }
  build();
  const onPanes = () => build();
  model.on("change:panes", onPanes);
  viewCleanups.push(() => model.off("change:panes", onPanes));

  return () => {
    runAll(paneCleanups);
    runAll(viewCleanups);
    root.remove();
  };
}

/**
 * Kernel-less host for HTML reports: render the widget from a plain JSON state (array `data` as base64) with an
 * in-memory model (`static` is forced to true). Returns the cleanup function.
 */
export function renderStatic(el: HTMLElement, state: object): () => void {
  const model = new StaticModel(inflateState((state ?? {}) as Record<string, any>));
  return render({ model, el });
}

/**
 * Host of a complete offline report (lmtt_widgets/report.py): `text` is its gzip container as the page's text (7
 * bits a character, reportcodec.ts `textBytes`), decompressed by the browser itself. Resolves to the cleanup function.
 */
export async function renderReport(el: HTMLElement, text: string): Promise<() => void> {
  const { body, bytes } = await readContainer(text);
  const { state, report } = reportParts(body, bytes);
  return render({ model: new StaticModel(state, report), el });
}

// for tests and tools: the report's decoder and route tracer, callable outside a page (Node)
export { readContainer } from "./reportcodec";
export { reportParts, StaticModel } from "./static";
export { traceRoute } from "./staticroute";

export default { render };
