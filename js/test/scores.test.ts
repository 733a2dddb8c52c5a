// @vitest-environment happy-dom
import { afterEach, describe, expect, it } from "vitest";
import widget from "../index";
import { encodeArray } from "../codec";
import { divergingColor, luminance } from "../color";
import { DetailsClient } from "../details";
import { FakeModel } from "../dev/fake-model";
import { makeState } from "../dev/fake-data";
import { approxOf, componentId, getMethodScores, legendText, quoteToken, signed, unitsOf } from "../scores";

const MARY_JOHN = { position: 13, target: 5099, target_text: " Mary", foil: 2322, foil_text: " John" };
const MARY = { position: 13, target: 5099, target_text: " Mary", foil: null };

afterEach(() => document.body.replaceChildren());

describe("diverging colour scale", () => {
  it("is the page at 0, blue below, red above, deeper with |t|, on both themes", () => {
    for (const dark of [false, true]) {
      const page = dark ? [30, 30, 30] : [255, 255, 255];
      expect(divergingColor(0, dark)).toEqual(page);
      expect(divergingColor(NaN, dark)).toEqual(page);
      const [nr, , nb] = divergingColor(-1, dark);
      const [pr, , pb] = divergingColor(1, dark);
      expect(nb).toBeGreaterThan(nr + 60); // negative reads blue
      expect(pr).toBeGreaterThan(pb + 60); // positive reads red
      // contrast with the page grows with |t| on either side (light: darker, dark: lighter)
      for (const sign of [-1, 1]) {
        let prev = luminance(page as [number, number, number]);
        for (let i = 1; i <= 10; i++) {
          const l = luminance(divergingColor((sign * i) / 10, dark));
          if (dark) expect(l).toBeGreaterThan(prev - 1e-9);
          else expect(l).toBeLessThan(prev + 1e-9);
          prev = l;
        }
      }
      // a tiny value is still visibly tinted, and out-of-range values clamp
      expect(divergingColor(-0.01, dark)).not.toEqual(page);
      expect(divergingColor(-5, dark)).toEqual(divergingColor(-1, dark));
    }
  });
});

describe("legend text", () => {
  it("states the quantity and units of each mode", () => {
    expect(legendText("logit_attribution", MARY_JOHN, 13)).toBe(
      "logit(' Mary') − logit(' John') at #13, direct logit attribution (logits; red raises it, blue lowers it)",
    );
    expect(legendText("attribution_patching", MARY_JOHN)).toBe(
      "logit(' Mary') − logit(' John'), ≈ causal effect (attribution patching) (logits; red raises it, blue lowers it)",
    );
    // without a foil: DLA explains the target logit, a causal effect its log-probability
    expect(legendText("logit_attribution", MARY)).toMatch(/^logit\(' Mary'\), direct logit attribution \(logits;/);
    expect(legendText("attribution_patching", MARY)).toMatch(/^log p\(' Mary'\), ≈ causal effect .*\(nats;/);
    expect(unitsOf("attribution_patching", MARY)).toBe("nats");
    expect(legendText("importance", MARY, 4)).toMatch(/^flow share \(importance\) at #4/);
  });
  it("keeps a token's spaces and makes line breaks visible", () => {
    expect(quoteToken(" a\nb\t")).toBe("' a↵b⇥'");
    expect(quoteToken("<img src=x onerror=alert(1)>")).toBe("'<img src=x onerror=alert(1)>'");
  });
  it("shows the sign of every value", () => {
    expect(signed(-0.5)).toBe("−0.500");
    expect(signed(2)).toBe("+2.000");
    expect(signed(null)).toBe("—");
  });
});

describe("components and tables", () => {
  it("names the component a selection checks", () => {
    expect(componentId({ kind: "head", layer: 23, head: 3, token: 13 })).toBe("L23.H3");
    expect(componentId({ kind: "mlp", layer: 5, token: 2 })).toBe("L5.MLP");
    expect(componentId({ kind: "neuron", layer: 5, neuron: 12, token: 2 })).toBe("L5.N12");
    expect(componentId({ kind: "edge", layer: 3, source: 5, token: 7 })).toBe("L3 5>7");
    expect(componentId({ kind: "node", layer: 3, token: 7, node_kind: "after_mlp" })).toBeNull();
    expect(componentId(null)).toBeNull();
  });
  it("decodes method_scores from binary buffers and reads heads and MLPs", () => {
    const heads = Float32Array.from([0.5, -1.5, NaN, 2]);
    const model = new FakeModel({
      method_scores: {
        logit_attribution: { method: "logit_attribution", quantity: "dla", signed: true, metric: MARY_JOHN,
          heads: encodeArray(heads, [2, 2]), mlp: encodeArray(Float32Array.from([0.25, -3]), [2]) },
        broken: { heads: { dtype: "float64", shape: [1], data: new DataView(new ArrayBuffer(8)) } },
      },
    });
    const t = getMethodScores(model);
    expect(Object.keys(t)).toEqual(["logit_attribution"]); // a malformed entry is left out, not thrown
    expect(t.logit_attribution.heads!.shape).toEqual([2, 2]);
    expect(approxOf(t, "logit_attribution", "L0.H1")).toBe(-1.5);
    expect(approxOf(t, "logit_attribution", "L1.H0")).toBeNull(); // NaN = not scored
    expect(approxOf(t, "logit_attribution", "L1.MLP")).toBe(-3);
    expect(approxOf(t, "logit_attribution", "L9.H0")).toBeNull();
    expect(approxOf(t, "attribution_patching", "L0.H0")).toBeNull();
    expect(getMethodScores(model)).toBe(t); // cached by trait identity
  });
});

describe("DetailsClient.forget", () => {
  it("drops results and ignores the late reply of a forgotten request", () => {
    const model = new FakeModel({});
    const d = new DetailsClient(model);
    d.request("check:L1.H2", 1000);
    const id = model.sent[0].content.id;
    d.forget("check:");
    expect(d.get("check:L1.H2", false)).toBeNull();
    model.emit("msg:custom", { type: "details", id, key: "check:L1.H2", ok: true, result: { exact: 1 } });
    expect(d.get("check:L1.H2", false)).toBeNull();
    d.dispose();
  });
});

function explorer(extra: Record<string, unknown> = {}) {
  const st = makeState({ L: 4, H: 3, T: 8, K: 4 });
  delete st._dense;
  const L = 4, H = 3;
  const dla = Float32Array.from({ length: L * H }, (_, i) => (i % 2 ? -1 : 1) * (i + 1) * 0.1);
  Object.assign(st, {
    panes: ["prompt", "graph", "heads", "neurons", "vocab"],
    metric: { ...MARY_JOHN, position: 7, candidates: [[5099, " Mary", 0.6], [2322, " John", 0.2], [9, "<b>", 0.1]],
      corrupted: "", ablation: "corrupted", causal_ready: false },
    method_scores: { logit_attribution: { method: "logit_attribution", quantity: "dla", signed: true, metric: MARY_JOHN,
      heads: encodeArray(dla, [L, H]), mlp: encodeArray(new Float32Array(L), [L]) } },
    head_mode: "importance",
    ...extra,
  });
  const model = new FakeModel(st);
  const el = document.createElement("div");
  document.body.appendChild(el);
  const cleanup = widget.render({ model, el });
  return { model, el, cleanup };
}

describe("heatmap modes and Check in the Explorer", () => {
  it("switches modes with one save, labels the signed legend, keeps causal off without a corruption", () => {
    const { model, el, cleanup } = explorer();
    const btn = (m: string) => el.querySelector(`.lmtt-head-modes [data-mode="${m}"]`) as HTMLButtonElement;
    expect(btn("importance").getAttribute("aria-pressed")).toBe("true");
    expect(btn("attribution_patching").disabled).toBe(true);
    expect(el.querySelector(".lmtt-legend-text")!.textContent).toMatch(/^flow share/);
    const saves = model.saves;
    btn("logit_attribution").click();
    expect(model.saves).toBe(saves + 1);
    expect(model.get("head_mode")).toBe("logit_attribution");
    expect(el.querySelector(".lmtt-legend-text")!.textContent).toContain("logit(' Mary') − logit(' John') at #7, direct logit attribution");
    expect(el.querySelector(".lmtt-heads .lmtt-pane-title")!.textContent).toMatch(/^Direct logit attribution at/);
    // the signed legend runs from −max to +max (max |DLA| = 1.2)
    const nums = [...el.querySelectorAll(".lmtt-legend-scale .lmtt-num")].map((e) => e.textContent);
    expect(nums).toEqual(["−1.20", "0", "+1.20"]); // centred at 0
    // causal scores not computed yet: a note, no stale map
    model.pySet("metric", { ...model.get("metric"), causal_ready: true });
    expect(btn("attribution_patching").disabled).toBe(false);
    btn("attribution_patching").click();
    expect(model.get("head_mode")).toBe("attribution_patching");
    expect((el.querySelector(".lmtt-heat") as HTMLElement).hidden).toBe(true);
    expect(el.querySelector(".lmtt-mode-note")!.textContent).toContain("not computed");
    cleanup();
  });

  it("Check sends check:<component id>, shows the exact effect signed, and forgets it when the metric changes", () => {
    const { model, el, cleanup } = explorer({ head_mode: "logit_attribution" });
    model.pySet("metric", { ...model.get("metric"), causal_ready: true, corrupted: "When Alice and Bob" });
    model.pySet("selection", { kind: "head", layer: 0, head: 1, token: 7 });
    const btn = el.querySelector(".lmtt-check-btn") as HTMLButtonElement;
    expect(btn.hidden).toBe(false);
    expect(btn.disabled).toBe(false);
    btn.click();
    const req = model.sent.find((m) => m.content.type === "details" && m.content.key.startsWith("check:"))!;
    expect(req.content.key).toBe("check:L0.H1");
    expect(el.querySelector(".lmtt-check-body")!.textContent).toContain("Exact patching of L0.H1");
    model.emit("msg:custom", { type: "details", id: req.content.id, key: req.content.key, ok: true,
      result: { component: "L0.H1", exact: -0.75, clean: 6.1, patched: 6.85, approx: { logit_attribution: -0.2, attribution_patching: null },
        metric: MARY_JOHN, units: "logits", setting: "patched from 'When Alice and Bob'" } });
    const body = el.querySelector(".lmtt-check-body")!.textContent!;
    expect(body).toContain("exact (patching)−0.750 logits");
    expect(body).toContain("direct logit attribution−0.200 logits");
    expect(body).toContain("+6.100 → +6.850");
    // a kernel error shows in place; a metric change forgets the result
    model.pySet("metric", { ...model.get("metric"), foil: 9, foil_text: "<b>" });
    expect(el.querySelector(".lmtt-check-body")!.textContent).not.toContain("−0.750");
    (el.querySelector(".lmtt-check-route") as HTMLButtonElement).click();
    const route = model.sent.filter((m) => m.content.type === "details").pop()!;
    expect(route.content.key).toBe(`check:route:${model.get("threshold")}`);
    model.emit("msg:custom", { type: "details", id: route.content.id, key: route.content.key, ok: false, error: "needs <b>faithfulness</b>" });
    expect(el.querySelector(".lmtt-check-body .lmtt-detail-error")!.textContent).toContain("needs <b>faithfulness</b>");
    expect(el.querySelector(".lmtt-check-body b")).toBeNull();
    cleanup();
  });

  it("the metric bar commits a foil id, a typed foil as text, the corrupted prompt and the ablation", () => {
    const { model, el, cleanup } = explorer();
    const foil = el.querySelector("select.lmtt-foil") as HTMLSelectElement;
    const values = [...foil.options].map((o) => o.value);
    expect(values).toEqual(["none", "2322", "9"]); // the target itself is not offered as its own foil
    foil.value = "9";
    foil.dispatchEvent(new Event("change"));
    expect(model.get("foil")).toBe(9);
    const text = el.querySelector("input.lmtt-foil-text") as HTMLInputElement;
    text.value = "␣John";
    text.dispatchEvent(new KeyboardEvent("keydown", { key: "Enter" }));
    expect(model.get("foil")).toBe(" John"); // Python turns it into an id, or refuses it into the error bar
    const corr = el.querySelector("input.lmtt-corrupted") as HTMLInputElement;
    corr.value = "When Alice and Bob went";
    corr.dispatchEvent(new Event("change"));
    expect(model.get("corrupted")).toBe("When Alice and Bob went");
    const abl = el.querySelector("select.lmtt-ablation") as HTMLSelectElement;
    abl.value = "mean";
    abl.dispatchEvent(new Event("change"));
    expect(model.get("ablation")).toBe("mean");
    model.pySet("ablation", "mean");
    expect(corr.disabled).toBe(true);
    expect(el.querySelector(".lmtt-metric-name")!.textContent).toBe("metric: logit(' Mary') − logit(' John')");
    cleanup();
  });
});
