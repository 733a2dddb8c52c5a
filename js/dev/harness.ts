/**
 * Dev harness: mounts the built bundle with a fake model + fake kernel. Query: ?panes=explorer|graph|heads|neurons|vocab&select=...&L=&T=&H=
 * `static=1` instead mounts it with `renderStatic` from a base64 JSON state with graph variants (an HTML report).
 */
import { FakeModel } from "./fake-model";
import { buildGraph, fakeDetailsReply, makeState, makeVariants, toBase64Tree } from "./fake-data";

const q = new URLSearchParams(location.search);
const L = Number(q.get("L") ?? 30), H = Number(q.get("H") ?? 9), T = Number(q.get("T") ?? 128);
const state = makeState({ L, H, T });
const dense = state._dense;
delete state._dense;
const paneArg = q.get("panes") ?? "explorer";
state.panes = paneArg === "explorer" ? ["prompt", "graph", "heads", "neurons", "vocab"] : paneArg.split(",");
const sel = q.get("select");
if (sel === "head") state.selection = { kind: "head", layer: Math.min(20, L - 1), head: 3, token: T - 1 };
else if (sel === "edge") state.selection = null; // chosen after first paint
else if (sel === "mlp") state.selection = { kind: "mlp", layer: Math.min(25, L - 1), token: T - 1 };
else if (sel === "node") state.selection = { kind: "node", layer: Math.min(20, L - 1), token: T - 1, node_kind: "after_mlp" };
if (q.get("error")) state.error = q.get("error");
if (q.get("running")) state.status = { state: "running", message: "tracing layer 12/30…", progress: 0.4 };

const model = new FakeModel(state);
model.onSave = (changed) => {
  if (changed.some((c) => c === "target" || c === "threshold" || c === "granularity")) {
    setTimeout(() => model.pySet("graph", buildGraph(dense, model.get("target"), model.get("threshold"), model.get("granularity"))), 30);
  }
};
model.onSend = (content: any) => {
  if (content?.type === "details") {
    if (q.get("nokernel")) return;
    setTimeout(() => {
      const { msg, buffers } = fakeDetailsReply(content.key, T);
      model.emit("msg:custom", { type: "details", id: content.id, key: content.key, ...msg }, buffers);
    }, 250);
  } else if (content?.type === "run") {
    let p = 0;
    const tick = () => {
      p += 0.25;
      model.pySet("status", p < 1 ? { state: "running", message: `tracing… ${Math.round(p * 100)}%`, progress: p } : { state: "idle", message: "", progress: 1 });
      if (p < 1) setTimeout(tick, 200);
    };
    tick();
  }
};

async function main() {
  const url = new URL("../../../lmtt_widgets/static/widget.js", import.meta.url).href;
  const mod = await import(/* @vite-ignore */ url);
  const el = document.getElementById("app")!;
  const t0 = performance.now();
  const isStatic = !!q.get("static");
  let cleanup: () => void;
  if (isStatic) {
    const report = { ...state, static: true, graph_variants: makeVariants(dense, [T - 1, T - 2], [0.01, 0.02, 0.04, 0.08, 0.16]) };
    cleanup = mod.renderStatic(el, JSON.parse(JSON.stringify(toBase64Tree(report))));
  } else {
    cleanup = mod.default.render({ model, el });
  }
  const waitPaint = () =>
    new Promise<number>((resolve) => {
      const check = () => {
        const g = el.querySelector(".lmtt-graph") as HTMLElement | null;
        if (!g || g.dataset.drawMs) resolve(performance.now() - t0);
        else requestAnimationFrame(check);
      };
      requestAnimationFrame(check);
    });
  const firstPaint = await waitPaint();
  if (sel === "edge" && !isStatic) {
    // pick the strongest attention edge into the target
    const g = state.graph;
    const dv = (d: any, C: any) => new C(d.data.buffer, d.data.byteOffset, d.data.byteLength / C.BYTES_PER_ELEMENT);
    const ek = dv(g.edge_kind, Uint8Array), es = dv(g.edge_src, Uint32Array), ed = dv(g.edge_dst, Uint32Array), ew = dv(g.edge_weight, Float32Array);
    const nl = dv(g.node_layer, Int32Array), nt = dv(g.node_token, Uint32Array);
    let best = -1;
    for (let i = 0; i < ek.length; i++) if (ek[i] === 1 && nt[es[i]] !== nt[ed[i]] && (best < 0 || ew[i] > ew[best])) best = i;
    if (best >= 0) {
      model.set("selection", { kind: "edge", layer: nl[ed[best]], source: nt[es[best]], token: nt[ed[best]] });
      model.save_changes();
    }
  }
  (window as any).__lmtt = { model, firstPaint, cleanup, el };
  document.body.dataset.ready = "1";
}
main().catch((e) => {
  document.body.dataset.error = String(e);
  console.error(e);
});
