// @vitest-environment happy-dom
import { afterEach, describe, expect, it, vi } from "vitest";
import widget from "../index";
import { FakeModel } from "../dev/fake-model";
import { fakeDetailsReply, makeState } from "../dev/fake-data";
import { DetailsClient } from "../details";

afterEach(() => {
  document.body.replaceChildren();
  vi.useRealTimers();
});

/** A model whose "kernel" answers each details request `delay` ms after it was sent, in order. */
function slowKernel(delay: number, panes = ["heads", "neurons", "vocab"]) {
  const st = makeState({ L: 4, H: 3, T: 8, K: 4 });
  delete st._dense;
  st.panes = panes;
  const model = new FakeModel(st);
  let busyUntil = 0;
  const sentAt: number[] = [];
  const answeredAt: number[] = [];
  model.onSend = (c: any) => {
    if (c?.type !== "details") return;
    sentAt.push(Date.now());
    busyUntil = Math.max(busyUntil, Date.now()) + delay; // one computation at a time, like a kernel
    setTimeout(() => {
      const { msg, buffers } = fakeDetailsReply(c.key, 8);
      answeredAt.push(Date.now());
      model.emit("msg:custom", { type: "details", id: c.id, key: c.key, ...msg }, buffers);
    }, busyUntil - Date.now());
  };
  return { model, sentAt, answeredAt };
}

const details = (m: FakeModel) => m.sent.filter((s) => s.content?.type === "details").map((s) => s.content.key as string);

describe("details requests: the latest selection wins", () => {
  it("a burst of 200 head selections sends a handful of requests and ends on the last head's matrices", () => {
    vi.useFakeTimers();
    const { model, sentAt, answeredAt } = slowKernel(30);
    const el = document.createElement("div");
    document.body.appendChild(el);
    const cleanup = widget.render({ model, el });
    let last = "";
    const t0 = Date.now();
    for (let i = 0; i < 200; i++) {
      const layer = (i * 7) % 4;
      const head = (i * 5) % 3;
      model.set("selection", { kind: "head", layer, head, token: 7 });
      last = `head:${layer}:${head}:7`;
      vi.advanceTimersByTime(5); // a click every 5 ms, the kernel needs 30 ms per request
    }
    const lastClick = Date.now() - 5;
    vi.advanceTimersByTime(500);
    const keys = details(model);
    // at most one request in flight: about one per kernel computation over the burst (without coalescing: one head
    // request per click, 200, plus the MLP blocks' neurons)
    expect(keys.length).toBeLessThanOrEqual(Math.ceil((lastClick - t0) / 30) + 3);
    expect(keys.slice(-2)).toContain(last);
    // the kernel is free again within two computations of the last click (it would have had ~6 s of backlog)
    expect(answeredAt.at(-1)! - lastClick).toBeLessThanOrEqual(2 * 30 + 5);
    expect(sentAt.at(-1)! - lastClick).toBeLessThanOrEqual(30 + 5);
    const sub = el.querySelector(".lmtt-head-detail .lmtt-subtitle")!.textContent!;
    const [, l, h] = last.split(":");
    expect(sub).toContain(`head L${l}.H${h}`);
    expect(el.querySelectorAll(".lmtt-head-detail canvas.lmtt-matrix").length).toBe(2);
    expect(el.querySelector(".lmtt-loading")).toBeNull();
    cleanup();
    expect(vi.getTimerCount()).toBe(0);
  });

  it("waits for a superseded request before sending, and drops its reply undecoded", () => {
    vi.useFakeTimers();
    const { model } = slowKernel(0);
    model.onSend = null; // answer by hand
    const d = new DetailsClient(model);
    const seen: string[] = [];
    d.subscribe((k) => seen.push(k));
    model.set("selection", { kind: "head", layer: 0, head: 0, token: 1 });
    d.get("head:0:0:1");
    vi.advanceTimersByTime(0);
    expect(details(model)).toEqual(["head:0:0:1"]);
    // two newer selections while the first is in flight: nothing is sent yet, only the last is queued
    model.set("selection", { kind: "head", layer: 1, head: 0, token: 1 });
    d.get("head:1:0:1");
    vi.advanceTimersByTime(0);
    model.set("selection", { kind: "head", layer: 2, head: 0, token: 1 });
    d.get("head:2:0:1");
    vi.advanceTimersByTime(0);
    expect(details(model)).toEqual(["head:0:0:1"]);
    expect(d.inFlight()).toEqual(["head:0:0:1"]);
    // the stale reply arrives: dropped (a broken payload would be an error if it were decoded), then the latest goes
    const first = model.sent[0].content;
    model.emit("msg:custom", { type: "details", id: first.id, key: first.key, ok: true, result: { x: { dtype: "nope" } } }, []);
    expect(d.get("head:0:0:1", false)).toBeNull();
    expect(details(model)).toEqual(["head:0:0:1", "head:2:0:1"]);
    expect(d.get("head:1:0:1", false)).toBeNull(); // never sent
    const latest = model.sent[1].content;
    const { msg, buffers } = fakeDetailsReply(latest.key, 8);
    model.emit("msg:custom", { type: "details", id: latest.id, key: latest.key, ...msg }, buffers);
    expect(d.get("head:2:0:1")).toMatchObject({ status: "ok" });
    expect(seen).toContain("head:2:0:1");
    d.dispose();
    expect(vi.getTimerCount()).toBe(0);
  });

  it("keys asked for by the same selection go out together, at once", () => {
    vi.useFakeTimers();
    const { model } = slowKernel(0);
    model.onSend = null;
    const d = new DetailsClient(model);
    model.set("selection", { kind: "mlp", layer: 1, token: 1 });
    d.get("mlp:1:1");
    d.get("lens:3:1");
    vi.advanceTimersByTime(0);
    expect(details(model)).toEqual(["mlp:1:1", "lens:3:1"]);
    d.dispose();
  });
});

describe("frameThrottle", () => {
  it("runs the first call at once and folds the rest of the frame into one trailing run", async () => {
    const { frameThrottle } = await import("../frame");
    vi.useFakeTimers();
    const fn = vi.fn();
    const ac = new AbortController();
    const t = frameThrottle(fn, ac.signal);
    t();
    expect(fn).toHaveBeenCalledTimes(1);
    for (let i = 0; i < 50; i++) t();
    expect(fn).toHaveBeenCalledTimes(1);
    vi.advanceTimersByTime(20);
    expect(fn).toHaveBeenCalledTimes(2);
    vi.advanceTimersByTime(20);
    expect(fn).toHaveBeenCalledTimes(2);
    t();
    expect(fn).toHaveBeenCalledTimes(3);
    t();
    ac.abort();
    vi.advanceTimersByTime(40);
    expect(fn).toHaveBeenCalledTimes(3);
    expect(vi.getTimerCount()).toBe(0);
  });
});

describe("loading keeps the pane's height", () => {
  it("a shown head detail stays in place, hidden under a spinner, until the next head's arrives", () => {
    vi.useFakeTimers();
    const { model } = slowKernel(30, ["heads"]);
    const el = document.createElement("div");
    document.body.appendChild(el);
    const cleanup = widget.render({ model, el });
    model.set("selection", { kind: "head", layer: 1, head: 2, token: 7 });
    vi.advanceTimersByTime(100);
    const detail = el.querySelector(".lmtt-head-detail") as HTMLElement;
    expect(detail.querySelectorAll("canvas.lmtt-matrix").length).toBe(2);
    expect(detail.classList.contains("lmtt-stale")).toBe(false);
    model.set("selection", { kind: "head", layer: 2, head: 0, token: 7 });
    vi.advanceTimersByTime(20);
    // the old matrices keep the box's height but are hidden (.lmtt-stale > * { visibility: hidden }) under a spinner
    expect(detail.classList.contains("lmtt-stale")).toBe(true);
    expect(detail.querySelectorAll("canvas.lmtt-matrix").length).toBe(2);
    expect(detail.querySelectorAll(":scope > .lmtt-loading.lmtt-overlay").length).toBe(1);
    vi.advanceTimersByTime(100);
    expect(detail.classList.contains("lmtt-stale")).toBe(false);
    expect(detail.querySelector(".lmtt-loading")).toBeNull();
    expect(detail.textContent).toContain("head L2.H0");
    cleanup();
  });
});
