"""Oracle round 6: lmtt_widgets' flow scores, routes, patching and logit attribution against an independent
reference (tests/flow_oracle.py: plain PyTorch hooks on the Hugging Face model, float64 maths, LM-TT's conventions).

Flow: per family / prompt, the max abs difference of every array of ``ex.scores`` (residual, bias, MLP, head totals,
head-summed edges, stored per-head scores) against the oracle in two conventions:
  project  clip at 0 over the non-zero parts, the output bias its own part, cancelling updates split evenly
           (lmtt_widgets' default, explain(..., convention="paper"));
  lmtt     LM-TT's get_contributions: clip(min=1e-5) over every (source, head) pair including future positions,
           the output bias not a part (it stays in the whole): explain(..., convention="lmtt").
Rows paper/project and lmtt/lmtt must agree to float rounding; paper/lmtt shows what the conventions change.
Routes: whether ``ex.route`` has exactly the oracle's edge set (LM-TT's apply_threshold_and_renormalize, then the
edges > tau reachable from the target) at several tau and targets.

  python benchmarks/oracle_round6.py             # tiny families + SmolLM2 (26 min on the loaded shared 2-core CPU)
  python benchmarks/oracle_round6.py --tiny      # tiny random families only (~4 min)
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import flow_oracle as fo  # noqa: E402
import tiny_models as tm  # noqa: E402
from lmtt_widgets import explain, load_model  # noqa: E402

TAUS = (0.01, 0.02, 0.04, 0.08)
ARRAYS = ("resid_attn", "bias_attn", "mlp", "resid_mlp", "head_total", "edge", "head")

NATURAL = ("The river runs through the old town, past the market square where farmers sell apples, cheese and "
           "bread every Saturday morning. Children play near the fountain while their parents talk about the "
           "weather, the harvest and the news from the capital. In the afternoon the bells of the church ring "
           "three times, and the shops close one after another. Travellers who arrive by train often stop at the "
           "small hotel on the corner, whose owner has kept the same blue shutters for forty years. She tells "
           "every guest the story of the great flood, when the water rose so high that boats sailed down the main "
           "street and the baker handed loaves out of his upstairs window. Nobody knows how much of the story is "
           "true, but the mark on the wall of the town hall is real, and visitors like to stand beside it for a "
           "photograph. When evening comes, the lamps along the river are lit one by one, the swallows return to "
           "their nests under the bridge, and the whole town seems to hold its breath before the night. Later, "
           "the last bus leaves the square, the cafe owner stacks the chairs, and a cat crosses the empty street "
           "towards the")


CONVENTION_ROWS = (("paper", "project"), ("paper", "lmtt"), ("lmtt", "lmtt"))


def flow_row(name, lm, prompt, kw, targets_of) -> dict:
    """One case: explain with each convention, against the oracle in each. Keys "<lmtt_widgets>/<oracle>"."""
    exs = {c: explain(lm, prompt, convention=c, **kw) for c in ("paper", "lmtt")}
    ex = exs["paper"]
    cap = fo.capture(lm.model, ex.trace.input_ids)
    oracle = {c: fo.scores(cap, c) for c in ("project", "lmtt")}
    targets = targets_of(ex.n_tokens)
    row = {"case": name, "T": ex.n_tokens, "identity": max(L.identity_err for L in cap.layers),
           "cancel": len(ex.cancelling_updates())}
    for mine, theirs in CONVENTION_ROWS:
        s = oracle[theirs]
        key = f"{mine}/{theirs}"
        row[key] = fo.max_diffs(fo.project_arrays(exs[mine]), fo.oracle_arrays(s))
        rr = fo.compare_routes(exs[mine], s, targets, TAUS)
        row[key + " route"] = (sum(r[2] for r in rr), len(rr), max(r[3] for r in rr),
                               max(len(set(fo.project_route_edges(exs[mine], t, tau))
                                       ^ set(fo.route_edges(s, t, tau))) for t, tau, *_ in rr))
    return row


def print_flow(rows) -> None:
    print("\nFlow: max |lmtt_widgets - oracle| per array; route: cases with the same edge set / cases, max weight "
          "difference, most edges differing in one case. convention: lmtt_widgets' / the oracle's "
          "(project = lmtt_widgets' documented definition, lmtt = LM-TT's get_contributions with its 1e-5 floor, "
          "bias no part)")
    print(f"{'case':30} {'T':>4} {'ident':>7} {'convention':13} " + " ".join(f"{a[:10]:>10}" for a in ARRAYS)
          + "  same/n   max dw  n diff  cancelling")
    for r in rows:
        for mine, theirs in CONVENTION_ROWS:
            key = f"{mine}/{theirs}"
            same, n, dw, nd = r[key + " route"]
            print(f"{r['case'][:30]:30} {r['T']:>4} {r['identity']:7.0e} {key:13} "
                  + " ".join(f"{r[key][a]:10.1e}" for a in ARRAYS)
                  + f"  {same:>3}/{n:<3} {dw:8.1e} {nd:>6}  {r['cancel']:>4}")


def tiny_flow() -> list[dict]:
    rows = []
    for fam in tm.FAMILIES:
        lm = tm.loaded(fam)
        for prompt in ("Hello world, hi there!", "aaaaaaaaaaaa", "x"):
            rows.append(flow_row(f"{fam} {prompt[:12]!r}", lm, prompt, {}, lambda T: sorted({T - 1, T // 2})))
    return rows


def smollm2_prompts(lm):
    tok = lm.tokenizer
    chat = [{"role": "user", "content": "What is the tallest mountain in Japan?"}]
    return [
        ("code", "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(", {}),
        ("chat template", chat, {"chat": True}),
        ("repeated tokens", "the the the the the the the the the the the the the the", {}),
        ("single token", "Hello", {}),
        ("BOS only", [tok.bos_token_id if tok.bos_token_id is not None else 0], {}),
        ("natural ~300 tok", NATURAL, {}),
    ]


def smollm2_flow(lm) -> list[dict]:
    rows = []
    for name, prompt, kw in smollm2_prompts(lm):
        t0 = time.time()
        rows.append(flow_row(f"smollm2 {name}", lm, prompt, kw, lambda T: sorted({T - 1, T // 2, max(T - 5, 0)})))
        print(f"  {name}: {rows[-1]['T']} tokens, {time.time() - t0:.0f} s", file=sys.stderr)
    return rows


CLEAN, CORRUPT = "Hello world, hi there!", "Jello wormd, ho thing?"


def patch_rows(name, lm, ex, corrupt_ids, corrupt_text, comps, edges) -> dict:
    """Max |ex.patch - oracle| per (ablation, metric) over heads / MLPs / residual nodes (all positions and one)
    and edges."""
    ids, T = ex.trace.input_ids, ex.n_tokens
    tgt, foil = ex.trace.logits[T - 1].double().topk(2).indices.tolist()
    worst = {}
    for corrupted in (None, corrupt_text):
        mode = "corrupted" if corrupted else "zero"
        for f in (foil, None):
            key = f"{mode}/{'logit diff' if f is not None else 'log p'}"
            tab = ex.patch(list(comps), corrupted, ablation=None if corrupted else "zero", target=tgt, foil=f)
            got = dict(zip([c.id for c in tab.components], tab.scores.tolist()))
            for cid, comp in comps.items():
                positions = comp[-1] if isinstance(comp[-1], list) else None
                ref = fo.patch_effect(lm.model, ids, comp[:-1] if positions else comp, target=tgt, foil=f,
                                      position=T - 1, corrupted_ids=corrupt_ids if corrupted else None,
                                      positions=positions)
                worst[key] = max(worst.get(key, 0.0), abs(got[cid] - ref))
            for layer, head, src, dst in edges:
                cid = f"L{layer}{'' if head is None else f'.H{head}'} {src}>{dst}"
                tab = ex.patch([cid], corrupted, ablation=None if corrupted else "zero", target=tgt, foil=f)
                ref = fo.patch_edge_effect(lm.model, ids, layer, head, src, dst, target=tgt, foil=f,
                                           position=T - 1, corrupted_ids=corrupt_ids if corrupted else None)
                worst[key + " (edges)"] = max(worst.get(key + " (edges)", 0.0), abs(float(tab.scores[0]) - ref))
    return {"case": name, **worst}


def faithfulness_row(lm, ex, corrupt_text) -> dict:
    """Max |ex.faithfulness - oracle| (route kept, the rest ablated) over tau, zero and corrupted."""
    ids, T = ex.trace.input_ids, ex.n_tokens
    tgt, foil = ex.trace.logits[T - 1].double().topk(2).indices.tolist()
    s = fo.scores(fo.capture(lm.model, ids), "project")
    taus = (0.01, 0.02, 0.04, 0.08)
    worst = 0.0
    for corrupted in (None, corrupt_text):
        f = ex.faithfulness(taus, corrupted, ablation=None if corrupted else "zero", target=tgt, foil=foil)
        ref = fo.faithfulness(lm.model, s, ids, taus, target=tgt, foil=foil, position=T - 1,
                              corrupted_ids=lm.tokenizer(corrupted, return_tensors="pt").input_ids[0]
                              if corrupted else None)
        worst = max(worst, max(abs(a - b) for a, b in zip(f.fraction, ref)))
    return {"faithfulness (fraction)": worst}


def dla_row(name, lm, ex, positions) -> dict:
    """Max |component - oracle|, |sum - model's logit difference before any soft-cap| and |sum - returned logits|."""
    ids = ex.trace.input_ids
    comp = total = returned = 0.0
    for pos in positions:
        tgt, foil = ex.trace.logits[pos].double().topk(2).indices.tolist()
        for f in (foil, None):
            tab = ex.logit_attribution(target=tgt, foil=f, position=pos)
            got = dict(zip([c.id for c in tab.components], tab.scores.tolist()))
            ref = fo.logit_attribution(lm.model, ids, target=tgt, foil=f, position=pos)
            comp = max(comp, max(abs(got[k] - ref[k]) for k in got))
            s = sum(got.values()) + tab.extra["norm_bias_term"] + tab.extra["unembed_bias_term"]
            total = max(total, abs(s - ref["model_prelogit"]))
            returned = max(returned, abs(s - ref["model_logit"]))
    m = lm.model
    tied = m.get_output_embeddings().weight.data_ptr() == m.get_input_embeddings().weight.data_ptr()
    return {"case": name, "component": comp, "sum vs pre-cap logit": total, "sum vs returned logit": returned,
            "softcap": getattr(m.config, "final_logit_softcapping", None), "tied": tied,
            "unembed bias": getattr(m.get_output_embeddings(), "bias", None) is not None}


def neuron_row(name, lm, prompt, nodes_of) -> dict:
    """Max |ex.neuron_importance - oracle| per convention, and whether the two definitions rank the same top 5."""
    row = {"case": name}
    top_same = True
    for convention, oracle in (("paper", "project"), ("lmtt", "lmtt")):
        ex = explain(lm, prompt, convention=convention)
        worst = 0.0
        for layer, token in nodes_of(ex.n_tokens):
            ref = fo.neuron_importance(lm.model, ex.trace.input_ids, layer, token, oracle)
            got = ex.neuron_importance(layer, token).double()
            worst = max(worst, float((got - ref).abs().max()))
            other = fo.neuron_importance(lm.model, ex.trace.input_ids, layer, token,
                                         "lmtt" if oracle == "project" else "project")
            top_same &= set(got.topk(5).indices.tolist()) == set(other.topk(5).indices.tolist())
        row[f"{convention}/{oracle}"] = worst
    row["same top-5 in both definitions"] = top_same
    return row


def tiny_causal() -> tuple[list, list]:
    prows, drows = [], []
    for fam in tm.FAMILIES:
        lm = tm.loaded(fam)
        ex = explain(lm, CLEAN)
        T = ex.n_tokens
        comps = {"L0.H1": ("head", 0, 1), "L1.H3": ("head", 1, 3), "L0.MLP": ("mlp", 0), "L1.MLP": ("mlp", 1),
                 "L0.R": ("resid", 0), f"L1.H2@{T - 1}": ("head", 1, 2, [T - 1]),
                 f"L0.MLP@{T - 3}": ("mlp", 0, [T - 3]), f"L0.R@{T - 4}": ("resid", 0, [T - 4])}
        edges = ((1, 2, 5, T - 1), (0, None, 3, T - 1), (1, None, T - 1, T - 1))
        prows.append(patch_rows(fam, lm, ex, torch.tensor([ord(c) for c in CORRUPT]), CORRUPT, comps, edges))
        prows[-1].update(faithfulness_row(lm, ex, CORRUPT))
        exg = explain(lm, "Hello world, hi", generate=3)
        drows.append(dla_row(fam + " (+3 generated)", lm, exg, [exg.generated_positions[0], exg.n_tokens - 1]))
    return prows, drows


def smollm2_causal(lm) -> tuple[list, list]:
    clean = "In the kitchen, Anna handed the spoon to"
    corrupt = "In the garden, Peter handed the spoon to"
    ex = explain(lm, clean)
    ids = lm.tokenizer(corrupt, return_tensors="pt").input_ids[0]
    T = ex.n_tokens
    comps = {"L20.H3": ("head", 20, 3), "L29.H1": ("head", 29, 1), "L0.MLP": ("mlp", 0), "L25.MLP": ("mlp", 25),
             f"L10.R@{T - 1}": ("resid", 10, [T - 1]), f"L14.H5@{T - 1}": ("head", 14, 5, [T - 1])}
    prow = patch_rows("smollm2 (new names prompt)", lm, ex, ids, corrupt, comps, ((20, 3, 3, T - 1),))
    prow.update(faithfulness_row(lm, ex, corrupt))
    exg = explain(lm, "def add(a, b):\n    return", generate=4)
    drow = dla_row("smollm2 code (+4 generated)", lm, exg, [exg.generated_positions[-1], exg.n_tokens - 6])
    return [prow], [drow]


def print_table(title, rows) -> None:
    print(f"\n{title}")
    keys = [k for k in rows[0] if k != "case"]
    print(f"{'case':32} " + " ".join(f"{k:>22}" for k in keys))
    for r in rows:
        cells = [f"{r.get(k, float('nan')):22.1e}" if isinstance(r.get(k), float) else f"{str(r.get(k)):>22}"
                 for k in keys]
        print(f"{r['case'][:32]:32} " + " ".join(cells))


def main(argv) -> None:
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    rows = tiny_flow()
    prows, drows = tiny_causal()
    nodes = lambda T: [(0, 3), (1, T - 1), (1, 0)]  # noqa: E731
    nrows = [neuron_row(fam, tm.loaded(fam), CLEAN, nodes) for fam in tm.FAMILIES]
    if "--tiny" not in argv:
        lm = load_model("smollm2")
        rows += smollm2_flow(lm)
        p, d = smollm2_causal(lm)
        prows, drows = prows + p, drows + d
        nrows.append(neuron_row("smollm2", lm, "The capital of France is", lambda T: [(5, T - 1), (29, T - 1), (12, 2)]))
    print_table("Neurons: max |ex.neuron_importance - oracle| (paper: within the MLP's change; lmtt: LM-TT's "
                "get_decomposed_mlp_contributions)", nrows)
    print_flow(rows)
    print_table("Activation patching: max |ex.patch - plain-hook patching| (heads, MLPs, residual nodes; edges)", prows)
    print_table("Logit attribution: max |component - oracle|, |sum + constants - model|", drows)


if __name__ == "__main__":
    main(sys.argv[1:])
