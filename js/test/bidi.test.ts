// @vitest-environment happy-dom
/** Issue 11, point 2: a token's bidi controls, line separators or lone surrogates never reach the page raw. */
import { afterEach, describe, expect, it, vi } from "vitest";
import widget from "../index";
import { FakeModel } from "../dev/fake-model";
import { fakeDetailsReply, makeState } from "../dev/fake-data";
import { buildGraphSvg, serializeSvg } from "../svg";
import { fitView } from "../geometry";
import { readTheme } from "../color";
import { getGraph } from "../state";
import { displayToken, truncate } from "../text";

const BIDI = [0x202a, 0x202b, 0x202c, 0x202d, 0x202e, 0x2066, 0x2067, 0x2068, 0x2069, 0x200e, 0x200f, 0x061c];
const SEPARATORS = [0x2028, 0x2029];
/** What must never be in the DOM's text or attributes: bidi controls, line separators, lone surrogates. */
const RAW = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

const hex = (cp: number) => cp.toString(16).toUpperCase().padStart(4, "0");

afterEach(() => {
  document.body.replaceChildren();
  vi.useRealTimers();
});

describe("displayToken: layout-changing characters", () => {
  it.each([...BIDI, ...SEPARATORS].map((cp) => [hex(cp), cp]))("U+%s is shown as a visible escape", (h, cp) => {
    const shown = displayToken(`a${String.fromCharCode(cp as number)}b`);
    expect(shown).toBe(`a⟨U+${h}⟩b`);
    expect(shown).not.toMatch(RAW);
  });

  it("an override inside a token cannot reverse what follows", () => {
    expect(displayToken("user\u202Egnp.exe")).toBe("user⟨U+202E⟩gnp.exe");
    expect(displayToken("\u2067\u202B\u200F")).toBe("⟨U+2067⟩⟨U+202B⟩⟨U+200F⟩");
  });

  it("lone surrogates become U+FFFD; real pairs and other scripts stay", () => {
    expect(displayToken("\ud800")).toBe("\ufffd");
    expect(displayToken("a\udc00b")).toBe("a\ufffdb");
    expect(displayToken("\udfff\ud83d")).toBe("\ufffd\ufffd");
    expect(displayToken("x\ud83d")).toBe("x\ufffd");
    expect(displayToken("😀")).toBe("😀");
    expect(displayToken("שלום عربي")).toBe("שלום␣عربي");
  });

  it("truncating an escaped token never brings a raw control back, nor cuts an escape", () => {
    for (let n = 1; n < 20; n++) {
      const t = truncate(displayToken("\u202E\u2066\ud800abc"), n);
      expect(t).not.toMatch(RAW);
      expect(t.replace(/⟨U\+[0-9A-F]{4}⟩/g, "")).not.toMatch(/[⟨⟩]/);
    }
    expect(truncate("⟨U+202E⟩abc", 4)).toBe("⟨U+202E⟩…"); // a label starts with at least one whole unit
    expect(truncate("⟨U+202E⟩abc", 10)).toBe("⟨U+202E⟩a…");
    expect(truncate("⟨U+202E⟩abc", 11)).toBe("⟨U+202E⟩abc");
    expect(truncate("a⟨U+202E⟩bc", 3)).toBe("a…");
  });
});

/** Every text node and every attribute value under `root` (what a user sees, tooltips included). */
function everythingShown(root: Element): string[] {
  const out: string[] = [];
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_ELEMENT | NodeFilter.SHOW_TEXT);
  for (let n: Node | null = walker.currentNode; n; n = walker.nextNode()) {
    if (n.nodeType === Node.TEXT_NODE) out.push(n.nodeValue ?? "");
    else for (const a of Array.from((n as Element).attributes)) out.push(a.value);
  }
  return out;
}

function hostileModel() {
  const T = 8;
  const st = makeState({ L: 4, H: 3, T, K: 4 });
  delete st._dense;
  st.panes = ["prompt", "graph", "heads", "neurons", "vocab"];
  // every token is hostile, so whatever a pane names (target, source, selection, cursor) is one of them
  st.tokens = ["\u202Eevil", "a\u2066b", "\ud800", "x\u2028y", "\u200F\u061C", "\udfff", "p\u2029", "\u202Dtarget\u202C"];
  st.prompt = st.tokens.join("");
  st.meta = { ...st.meta, prediction: { token: "\u202Enext", prob: 0.5, top: [["\u202Enext", 0.5]] } };
  return new FakeModel(st);
}

describe("hostile tokens in every pane", () => {
  it("labels, titles, options, tooltips and details show escapes, never the raw characters", () => {
    vi.useFakeTimers();
    const model = hostileModel();
    model.onSend = (c: any) => {
      const { msg, buffers } = fakeDetailsReply(c.key, 8);
      const r = (msg as any).result;
      if (r?.promoted) r.promoted = [["\u202Eup", 1], ["\ud800", 0.5]];
      if (r?.suppressed) r.suppressed = [["\u2067down", -1]];
      if (r?.top) r.top = [["\u202Elens", 0.9, 1]];
      model.emit("msg:custom", { type: "details", id: c.id, key: c.key, ...msg }, buffers);
    };
    const el = document.createElement("div");
    document.body.appendChild(el);
    const cleanup = widget.render({ model, el });
    const seen: string[] = [];
    const look = () => {
      vi.advanceTimersByTime(20); // a frame: coalesced redraws and details requests go out (answered at once)
      (el.querySelector(".lmtt-graph") as any).__lmtt.draw(); // the frame a browser would have drawn by now
      seen.push(...everythingShown(el));
    };
    look();
    for (const sel of [
      { kind: "edge", layer: 1, source: 0, token: 7 },
      { kind: "head", layer: 1, head: 2, token: 7 },
      { kind: "mlp", layer: 2, token: 7 },
      { kind: "node", layer: 3, token: 7, node_kind: "after_attention" },
    ]) {
      model.set("selection", sel);
      look();
    }
    // the keyboard cursor walks every token, showing the graph's tooltip for each
    const wrap = el.querySelector(".lmtt-canvas-wrap") as HTMLElement;
    for (let i = 0; i < 8; i++) {
      wrap.dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowLeft", bubbles: true }));
      look();
    }
    const tooltip = el.querySelector(".lmtt-tooltip") as HTMLElement;
    expect(tooltip.hidden).toBe(false);
    expect(tooltip.textContent).toContain("⟨U+202E⟩evil"); // the cursor ended on token 0

    const bad = seen.filter((s) => RAW.test(s));
    expect(bad).toEqual([]);
    const all = seen.join("\n");
    for (const shown of ["⟨U+202E⟩evil", "a⟨U+2066⟩b", "x⟨U+2028⟩y", "⟨U+200F⟩⟨U+061C⟩", "⟨U+202D⟩target⟨U+202C⟩",
      "⟨U+202E⟩next", "⟨U+202E⟩up", "⟨U+2067⟩down"]) {
      expect(all).toContain(shown);
    }
    const labels = Array.from(el.querySelectorAll(".lmtt-graph .lmtt-tok"), (e) => e.textContent);
    expect(labels).toEqual(["⟨U+202E⟩evil", "a⟨U+2066⟩b", "\ufffd", "x⟨U+2028⟩y", "⟨U+200F⟩…", "\ufffd", "p⟨U+2029⟩",
      "⟨U+202D⟩targe…"]);
    const options = Array.from(el.querySelectorAll(".lmtt-graph select option"), (e) => e.textContent);
    expect(options[7]).toBe("#7 ⟨U+202D⟩target⟨U+202C⟩");
    cleanup();
  });

  it("the SVG export escapes them too", () => {
    const model = hostileModel();
    const tokens = model.get("tokens") as string[];
    const svg = serializeSvg(buildGraphSvg({
      view: fitView(8, 4, { w: 400, h: 300 }), width: 400, height: 300, graph: getGraph(model), tokens, L: 4,
      target: 7, theme: readTheme(document.body),
    }));
    expect(svg).not.toMatch(RAW);
    expect(svg).toContain("⟨U+202E⟩evil");
  });
});
