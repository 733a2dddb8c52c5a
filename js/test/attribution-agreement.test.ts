// @vitest-environment happy-dom
// Issue 13 points 3 and 5 in the pane: tokens merged into words (merged in Python, shown here) and the agreement
// of the shown method with the others on the same target.
import { afterEach, describe, expect, it } from "vitest";
import widget from "../index";
import { encodeArray } from "../codec";
import { agreementText, cellSelection, cellsOf, getAttribution } from "../attribution";
import { FakeModel } from "../dev/fake-model";
import { makeState } from "../dev/fake-data";
import { mountAttribution } from "./mount-attribution";
import { routesFrom } from "../routes";
import type { GraphData } from "../state";

afterEach(() => document.body.replaceChildren());

const ROWS = [
  { method: "flow_attribution", state: "ready", spearman: 0.8, compared: "|score|", top_k: 2, cost: "free" },
  { method: "occlusion", state: "on_demand", spearman: null, compared: "", top_k: null, cost: "about T/2 forwards" },
  { method: "saliency", state: "error", spearman: null, compared: "", top_k: null, cost: "", error: "no <b>pad</b>" },
  { method: "integrated_gradients", state: "ready", spearman: -0.25, compared: "signed", top_k: 1, cost: "" },
];

function attribution(over: Record<string, unknown> = {}) {
  // 6 tokens, words [0,1] [2,2] [3,5]; signed scores, position 4 (token 5 unread)
  return {
    method: "input_x_gradient", quantity: "input x gradient", signed: true, position: 4,
    metric: { name: "log p(' Paris') at token 4" }, units: "nats",
    scores: encodeArray(Float32Array.from([0.5, -1, 0.25, 0, 2, NaN]), [6]),
    methods: ["flow_attribution", "input_x_gradient"], generated: [], matrix_state: "none", matrix: null,
    matrix_rows: [], matrix_metric: "", extra: {},
    agreement: { method: "input_x_gradient", k: 3, n: 5, measures: "Spearman rank correlation …", rows: ROWS },
    words: {
      spans: [[0, 1], [2, 2], [3, 5]], merges: ["sum", "mean", "max"],
      merged: {
        sum: encodeArray(Float32Array.from([-0.5, 0.25, 2]), [3]),
        mean: encodeArray(Float32Array.from([-0.25, 0.25, 1]), [3]),
        max: encodeArray(Float32Array.from([-1, 0.25, 2]), [3]),
      },
    },
    ...over,
  };
}

describe("words and agreement helpers", () => {
  it("cells are tokens for subword, words with the chosen merge otherwise", () => {
    const a = getAttribution(new FakeModel({ attribution: attribution() }))!;
    expect(cellsOf(a, "subword", 6).map((c) => [c.first, c.last])).toEqual([[0, 0], [1, 1], [2, 2], [3, 3], [4, 4], [5, 5]]);
    expect(cellsOf(a, "max", 6)).toEqual([{ first: 0, last: 1, value: -1 }, { first: 2, last: 2, value: 0.25 }, { first: 3, last: 5, value: 2 }]);
    expect(cellsOf(a, "mean", 6).map((c) => c.value)).toEqual([-0.25, 0.25, 1]);
    const noWords = getAttribution(new FakeModel({ attribution: attribution({ words: undefined }) }))!;
    expect(cellsOf(noWords, "sum", 6)).toHaveLength(6); // an older kernel: tokens
  });
  it("a word selects its tokens' embedding nodes; a one-token cell the plain node", () => {
    expect(cellSelection({ first: 3, last: 5, value: 0 })).toEqual({ kind: "node", node_kind: "embedding", layer: -1, token: 3, last: 5 });
    expect(cellSelection({ first: 2, last: 2, value: 0 })).toEqual({ kind: "node", node_kind: "embedding", layer: -1, token: 2 });
  });
  it("says what each agreement number is, or why there is none", () => {
    const a = getAttribution(new FakeModel({ attribution: attribution() }))!;
    const t = a.agreement!.rows.map((r) => agreementText(r, 3));
    expect(t[0]).toBe("ρ +0.80 (of |score|) · top-3 shared 2/3");
    expect(t[1]).toBe("not computed (about T/2 forwards)");
    expect(t[2]).toContain("cannot run here");
    expect(t[3]).toBe("ρ −0.25 (signed) · top-3 shared 1/3");
  });
  it("routes from a word follow every one of its tokens", () => {
    const g = {
      n: 4, e: 3, nodeKind: ["embedding", "embedding", "embedding", "after_attention"],
      nodeLayer: Int32Array.from([-1, -1, -1, 0]), nodeToken: Uint32Array.from([0, 1, 2, 2]),
      edgeSrc: Uint32Array.from([0, 1, 2]), edgeDst: Uint32Array.from([3, 3, 3]),
    } as unknown as GraphData;
    expect(routesFrom(g, 0, 1)).toEqual([0, 1]);
    expect(routesFrom(g, 1)).toEqual([1]);
  });
});

describe("attribution pane: words and agreement", () => {
  const mount = (over: Record<string, unknown> = {}) => mountAttribution(["The", "cap", " of", " Fr", "an", "ce"], attribution(over));

  it("shows the agreement table with its label, escaped, and asks for the expensive methods on a click", () => {
    const { el, model } = mount();
    const rows = [...el.querySelectorAll(".lmtt-attr-agree")];
    expect(rows.map((r) => r.getAttribute("data-method"))).toEqual(ROWS.map((r) => r.method));
    expect(rows[0].textContent).toContain("ρ +0.80 (of |score|)");
    expect(el.querySelector(".lmtt-attr-agreement b")).toBeNull(); // error text is text
    expect(el.querySelector(".lmtt-attr-measures")?.textContent).toContain("Spearman");
    const btn = el.querySelector(".lmtt-attr-agree-all") as HTMLButtonElement;
    expect(btn.hidden).toBe(false);
    btn.click();
    expect(model.sent.at(-1)?.content).toEqual({ type: "attribution_agreement" });
  });

  it("no button when every method is computed", () => {
    const { el } = mount({ agreement: { method: "x", k: 3, n: 5, measures: "m", rows: [ROWS[0]] } });
    expect((el.querySelector(".lmtt-attr-agree-all") as HTMLElement).hidden).toBe(true);
  });

  it("the word control merges the strip, and a word click selects its tokens", () => {
    const { el, model } = mount();
    expect(el.querySelectorAll(".lmtt-attr-tok")).toHaveLength(6);
    const g = el.querySelector("select.lmtt-attr-granularity") as HTMLSelectElement;
    g.value = "sum";
    g.dispatchEvent(new Event("change"));
    const words = [...el.querySelectorAll<HTMLElement>(".lmtt-attr-tok")];
    expect(words.map((w) => w.textContent)).toEqual(["Thecap", "␣of", "␣France"]);
    expect(words[2].classList.contains("is-target")).toBe(true); // the target token 4 is in " France"
    words[2].click();
    expect(model.get("selection")).toEqual({ kind: "node", node_kind: "embedding", layer: -1, token: 3, last: 5 });
    expect(el.querySelectorAll(".lmtt-attr-tok.is-selected")).toHaveLength(1);
    g.value = "subword";
    g.dispatchEvent(new Event("change"));
    expect(el.querySelectorAll(".lmtt-attr-tok.is-selected")).toHaveLength(3); // the word's three tokens
  });
});

describe("a prediction is labelled by its own position", () => {
  it("right after a target change the vocabulary pane still names the position meta was computed for", () => {
    const st = makeState({ L: 4, H: 3, T: 6, K: 4 });
    delete st._dense;
    st.panes = ["vocab"];
    st.selection = null;
    st.meta = { ...(st.meta as object), position: 3, prediction: { token: " Paris", prob: 0.5, top: [[" Paris", 0.5]] } };
    st.target = 3;
    const model = new FakeModel(st);
    const el = document.createElement("div");
    document.body.appendChild(el);
    widget.render({ model, el });
    model.set("target", 4); // the click: the kernel's new meta has not arrived yet
    expect(el.querySelector(".lmtt-vocab-body")!.textContent).toContain("next token after #3");
  });
});
