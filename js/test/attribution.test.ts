// @vitest-environment happy-dom
import { afterEach, describe, expect, it } from "vitest";
import { encodeArray } from "../codec";
import {
  columnOfTarget, completenessText, getAttribution, legendOf, scaleMax, scoreColor, targetForGenerated,
} from "../attribution";
import { divergingColor, heatColor } from "../color";
import { FakeModel } from "../dev/fake-model";
import { mountAttribution } from "./mount-attribution";
import { routesFrom } from "../routes";
import type { GraphData } from "../state";

const HOSTILE = "<img src=x onerror=alert(1)>";

afterEach(() => document.body.replaceChildren());

function attribution(over: Record<string, unknown> = {}) {
  // 4 prompt tokens + 2 generated; target 5; scores signed; matrix rows = generated tokens 4, 5
  const scores = Float32Array.from([0.5, -1, 0.25, 0, 2, NaN]);
  const matrix = Float32Array.from([0.1, -0.2, 0.3, 0.4, NaN, NaN, 0.5, 0.6, -0.7, 0.8, 0.9, NaN]);
  return {
    method: "input_x_gradient", quantity: "input x gradient", signed: true, position: 4,
    metric: { name: "log p(' Paris') at token 4" }, units: "nats", scores: encodeArray(scores, [6]),
    methods: ["flow_attribution", "attention_rollout", "input_x_gradient"], generated: [4, 5],
    matrix_state: "ready", matrix: encodeArray(matrix, [2, 6]), matrix_rows: [4, 5], matrix_metric: "log p(token)",
    extra: {}, ...over,
  };
}

describe("attribution helpers", () => {
  it("scale ends at max |finite value|, 1 for nothing", () => {
    expect(scaleMax([0.5, -3, NaN, 2])).toBe(3);
    expect(scaleMax([NaN, 0])).toBe(1);
  });
  it("colours signed scores on the diverging scale, shares on the sequential one, NaN not at all", () => {
    expect(scoreColor(-1, 2, true, false)).toEqual(divergingColor(-0.5, false));
    expect(scoreColor(1, 4, false, true)).toEqual(heatColor(0.5, true));
    expect(scoreColor(NaN, 1, true, false)).toBeNull();
  });
  it("maps a generated token to the position that predicted it, and back", () => {
    expect(targetForGenerated(7)).toBe(6);
    expect(columnOfTarget([5, 6, 7], 6)).toBe(2);
    expect(columnOfTarget([5, 6, 7], 2)).toBe(-1);
  });
  it("states the quantity and the metric, and flags an inexact integrated-gradients result", () => {
    const m = new FakeModel({ attribution: attribution({ extra: { completeness_relative: 0.09, steps: 8 } }) });
    const a = getAttribution(m)!;
    expect(legendOf(a)).toBe("input_x_gradient: input x gradient · log p(' Paris') at token 4 (nats)");
    expect(completenessText(a)).toBe("completeness error 9.0% at 8 steps — read with care");
    const flow = getAttribution(new FakeModel({ attribution: attribution({ metric: null, units: "", method: "flow_attribution" }) }))!;
    expect(legendOf(flow)).toContain("no metric: target-independent");
    expect(completenessText(flow)).toBe("");
  });
});

describe("routesFrom", () => {
  it("follows edges upward from the token's embedding node only", () => {
    // nodes: 0 emb t0, 1 emb t1, 2 attn t1, 3 top t1, 4 attn t0; edges 0->2, 1->2, 2->3, 1->4? no: 0->4
    const g = {
      n: 5, e: 4, nodeKind: ["embedding", "embedding", "after_attention", "after_mlp", "after_attention"],
      nodeLayer: Int32Array.from([-1, -1, 0, 0, 0]), nodeToken: Uint32Array.from([0, 1, 1, 1, 0]),
      edgeSrc: Uint32Array.from([0, 1, 2, 0]), edgeDst: Uint32Array.from([2, 2, 3, 4]),
    } as unknown as GraphData;
    expect(routesFrom(g, 0)).toEqual([0, 2, 3]);
    expect(routesFrom(g, 1)).toEqual([1, 2]);
    expect(routesFrom(g, 9)).toEqual([]);
  });
});

describe("attribution pane", () => {
  const mount = (over: Record<string, unknown> = {}) => mountAttribution(["The", " capital", HOSTILE, " is", " Paris", "."], attribution(over));

  it("colours the tokens, greys the unread, escapes token text and draws the matrix", () => {
    const { el } = mount();
    const toks = [...el.querySelectorAll<HTMLElement>(".lmtt-attr-tok")];
    expect(toks.map((t) => t.textContent)).toHaveLength(6);
    expect(el.querySelector("img")).toBeNull();
    expect(toks[2].textContent).toContain("<img");
    expect(toks[5].classList.contains("is-unread")).toBe(true);
    expect(toks[1].style.background).not.toBe(""); // -1: blue
    expect(el.querySelectorAll(".lmtt-attr-col")).toHaveLength(2);
    expect(el.querySelectorAll(".lmtt-attr-col rect").length).toBeGreaterThanOrEqual(12);
    expect(el.querySelector(".lmtt-attr-col.is-target")?.getAttribute("data-generated")).toBe("5");
    expect((el.querySelector(".lmtt-attr-compute") as HTMLElement).hidden).toBe(true);
  });

  it("clicking a source token selects its embedding node; a generated column sets the target", () => {
    const { el, model } = mount();
    (el.querySelectorAll(".lmtt-attr-tok")[1] as HTMLElement).click();
    expect(model.get("selection")).toEqual({ kind: "node", node_kind: "embedding", layer: -1, token: 1 });
    el.querySelector('.lmtt-attr-col[data-generated="4"] rect')!.dispatchEvent(new MouseEvent("click", { bubbles: true }));
    expect(model.get("target")).toBe(3);
  });

  it("the method picker sets the trait; an uncomputed matrix offers the button", () => {
    const { el, model } = mount({ matrix_state: "on_demand", matrix: null, matrix_rows: [] });
    const pick = el.querySelector("select.lmtt-attr-method") as HTMLSelectElement;
    expect([...pick.options].map((o) => o.value)).toEqual(["flow_attribution", "attention_rollout", "input_x_gradient"]);
    pick.value = "attention_rollout";
    pick.dispatchEvent(new Event("change"));
    expect(model.get("attribution_method")).toBe("attention_rollout");
    const btn = el.querySelector(".lmtt-attr-compute") as HTMLButtonElement;
    expect(btn.hidden).toBe(false);
    btn.click();
    expect(model.sent.at(-1)?.content).toEqual({ type: "attribution_matrix" });
    expect(el.querySelectorAll(".lmtt-attr-col")).toHaveLength(0);
  });
});
