"""Round 6 oracle: lmtt_widgets against an independent reference (tests/flow_oracle.py: plain hooks on the Hugging
Face model, float64 maths), on every tiny family and once on SmolLM2.

- flow: every array of ``ex.scores`` and the route at several tau against the method's definition;
- causal: ``ex.patch`` (heads, MLPs, residual nodes, edges; zero and corrupted prompt; every position or one)
  against the oracle's own activation patching;
- logit attribution: each component against the oracle's and their sum against the model's own logit difference
  (before Gemma 2's final soft-cap, which the test applies to get the returned logits back).
"""

from __future__ import annotations

import math

import pytest
import torch

import flow_oracle as fo
import tiny_models as tm
from lmtt_widgets import explain

CLEAN, CORRUPT = "Hello world, hi there!", "Jello wormd, ho thing?"
TAUS = (0.01, 0.04, 0.08)


def _ids(text):
    return torch.tensor([ord(c) for c in text])


@pytest.fixture(scope="module", params=tm.FAMILIES)
def tiny(request):
    lm = tm.loaded(request.param)
    return request.param, lm, explain(lm, CLEAN)


def _assert_flow(ex, model, tol, targets):
    cap = fo.capture(model, ex.trace.input_ids)
    assert max(L.identity_err for L in cap.layers) < 1e-5  # the oracle's own decomposition adds up
    s = fo.scores(cap, "project")
    diffs = fo.max_diffs(fo.project_arrays(ex), fo.oracle_arrays(s))
    assert max(diffs.values()) < tol, diffs
    for t, tau, same, dw, n_p, n_o in fo.compare_routes(ex, s, targets, TAUS):
        assert same, f"route to {t} at tau={tau}: {n_p} edges vs the oracle's {n_o}"
        assert dw < 10 * tol, (t, tau, dw)


def test_flow_scores_and_routes_match_the_definition(tiny):
    family, lm, ex = tiny
    _assert_flow(ex, lm.model, 1e-6, [ex.n_tokens - 1, 5])


@pytest.mark.parametrize("prompt", ["aaaaaaaaaa", "x"])
def test_flow_repeated_and_single_token(prompt):
    for family in ("gpt2", "gemma2", "gpt_neox", "qwen2"):
        lm = tm.loaded(family)
        ex = explain(lm, prompt)
        _assert_flow(ex, lm.model, 1e-6, [ex.n_tokens - 1])


def test_patching_matches_plain_hooks(tiny):
    family, lm, ex = tiny
    ids, cids = ex.trace.input_ids, _ids(CORRUPT)
    T = ids.numel()
    tgt, foil = ex.trace.logits[T - 1].double().topk(2).indices.tolist()
    cases = {"L0.H1": ("head", 0, 1), "L1.H3": ("head", 1, 3), "L0.MLP": ("mlp", 0), "L1.MLP": ("mlp", 1),
             "L0.R": ("resid", 0), f"L1.H2@{T - 1}": ("head", 1, 2, [T - 1]), f"L0.MLP@{T - 3}": ("mlp", 0, [T - 3]),
             f"L0.R@{T - 4}": ("resid", 0, [T - 4])}
    for corrupted in (None, CORRUPT):
        for f in (foil, None):
            tab = ex.patch(list(cases), corrupted, ablation=None if corrupted else "zero", target=tgt, foil=f)
            got = dict(zip([c.id for c in tab.components], tab.scores.tolist()))
            for cid, comp in cases.items():
                positions = comp[-1] if isinstance(comp[-1], list) else None
                ref = fo.patch_effect(lm.model, ids, comp[:-1] if positions else comp, target=tgt, foil=f,
                                      position=T - 1, corrupted_ids=cids if corrupted else None, positions=positions)
                assert got[cid] == pytest.approx(ref, abs=1e-10), (family, cid, corrupted, f)


@pytest.mark.parametrize("family", ["gpt2", "opt", "gemma2", "gptj", "phi3"])
def test_edge_patching_matches_plain_hooks(family):
    lm = tm.loaded(family)
    ex = explain(lm, CLEAN)
    ids, T = ex.trace.input_ids, ex.n_tokens
    tgt, foil = ex.trace.logits[T - 1].double().topk(2).indices.tolist()
    for layer, head, src, dst in ((1, 2, 5, T - 1), (0, None, 3, T - 1), (1, None, T - 1, T - 1)):
        cid = f"L{layer}{'' if head is None else f'.H{head}'} {src}>{dst}"
        for corrupted in (None, CORRUPT):
            tab = ex.patch([cid], corrupted, ablation=None if corrupted else "zero", target=tgt, foil=foil)
            ref = fo.patch_edge_effect(lm.model, ids, layer, head, src, dst, target=tgt, foil=foil, position=T - 1,
                                       corrupted_ids=_ids(CORRUPT) if corrupted else None)
            assert float(tab.scores[0]) == pytest.approx(ref, abs=1e-10), (cid, corrupted)


@pytest.mark.parametrize("family", ["gemma2", "mistral", "qwen3", "gpt2"])
def test_faithfulness_matches_plain_hooks(family):
    """The route kept clean, every other head output and MLP output ablated (zero, and corrupted prompt)."""
    lm = tm.loaded(family)
    ex = explain(lm, CLEAN)
    ids, T = ex.trace.input_ids, ex.n_tokens
    tgt, foil = ex.trace.logits[T - 1].double().topk(2).indices.tolist()
    s = fo.scores(fo.capture(lm.model, ids), "project")
    taus = (0.01, 0.02, 0.04)
    for corrupted in (None, CORRUPT):
        f = ex.faithfulness(taus, corrupted, ablation=None if corrupted else "zero", target=tgt, foil=foil)
        assert f.sizes == [int(h.sum() + m.sum()) for h, m in (fo.route_keep(s, T - 1, t) for t in taus)]
        ref = fo.faithfulness(lm.model, s, ids, taus, target=tgt, foil=foil, position=T - 1,
                              corrupted_ids=_ids(CORRUPT) if corrupted else None)
        assert f.fraction == pytest.approx(ref, abs=1e-9)


@pytest.mark.parametrize("family", tm.FAMILIES)
def test_logit_attribution_adds_up_with_generation(family):
    lm = tm.loaded(family)
    ex = explain(lm, "Hello world, hi", generate=3)
    ids = ex.trace.input_ids
    cap = getattr(lm.model.config, "final_logit_softcapping", None)
    for pos in (ex.generated_positions[0], ids.numel() - 1):
        tgt, foil = ex.trace.logits[pos].double().topk(2).indices.tolist()
        for f in (foil, None):
            tab = ex.logit_attribution(target=tgt, foil=f, position=pos)
            got = dict(zip([c.id for c in tab.components], tab.scores.tolist()))
            ref = fo.logit_attribution(lm.model, ids, target=tgt, foil=f, position=pos)
            comps = [k for k in ref if k == "EMB" or k.startswith("L")]
            assert sorted(got) == sorted(comps)
            # HF's RMSNorms compute in float32 even in a float64 model: the oracle's float64 scale differs by ~1e-8
            assert max(abs(got[k] - ref[k]) for k in comps) < 1e-6
            total = sum(got.values()) + tab.extra["norm_bias_term"] + tab.extra["unembed_bias_term"]
            assert total == pytest.approx(ref["model_prelogit"], abs=1e-9)
            logits = ex.trace.logits[pos].double()
            if cap:  # the soft-cap comes after the sum: cap * tanh(logit / cap) per logit
                pre_t = cap * math.atanh(float(logits[tgt]) / cap)
                pre_f = cap * math.atanh(float(logits[f]) / cap) if f is not None else 0.0
                assert total == pytest.approx(pre_t - pre_f, abs=1e-5)
            else:
                assert total == pytest.approx(float(logits[tgt] - (logits[f] if f is not None else 0)), abs=1e-9)


def test_smollm2_chat_prompt_flow_matches_the_definition(smollm2):
    ex = explain(smollm2, [{"role": "user", "content": "What is the tallest mountain in Japan?"}], chat=True)
    # float32 model: the oracle runs its maths in float64 on the same float32 activations
    _assert_flow(ex, smollm2.model, 2e-5, [ex.n_tokens - 1, ex.n_tokens // 2])
    # logit attribution adds up to the model's final normed state unembedded exactly (its returned float32 logits
    # round by up to ~2e-5 themselves)
    pos = ex.n_tokens - 1
    tgt, foil = ex.trace.logits[pos].double().topk(2).indices.tolist()
    tab = ex.logit_attribution(target=tgt, foil=foil, position=pos)
    ref = fo.logit_attribution(smollm2.model, ex.trace.input_ids, target=tgt, foil=foil, position=pos)
    assert tab.extra["sum"] == pytest.approx(ref["model_prelogit"], abs=2e-6)
    assert tab.extra["sum"] == pytest.approx(ref["model_logit"], abs=5e-5)


# ---- convention="lmtt": LM-TT's get_contributions exactly (1e-5 floor on every part, future sources included;
# the output bias no part). Before round 6 there was no way to get LM-TT's numbers: the default clips at 0, which
# on SmolLM2 moves importances by up to 1.1e-3 at 231 tokens (the floor's mass grows with T * H) and flips edges
# near tau (1 of ~12,000 at tau=0.01), and on families with an output bias by up to 0.98.
@pytest.mark.parametrize("family", tm.FAMILIES)
def test_lmtt_convention_matches_lmtt_get_contributions(family):
    lm = tm.loaded(family)
    for prompt in (CLEAN, "x"):
        ex = explain(lm, prompt, convention="lmtt")
        assert ex.scores.convention == "lmtt"
        cap = fo.capture(lm.model, ex.trace.input_ids)
        s = fo.scores(cap, "lmtt")
        diffs = fo.max_diffs(fo.project_arrays(ex), fo.oracle_arrays(s))
        assert max(diffs.values()) < 1e-6, diffs
        for t, tau, same, dw, n_p, n_o in fo.compare_routes(ex, s, [ex.n_tokens - 1, ex.n_tokens // 2], TAUS):
            assert same and dw < 1e-6, (t, tau, n_p, n_o, dw)


@pytest.mark.parametrize("family", ["gpt2", "gemma2", "gpt_neox", "llama", "opt"])
def test_neuron_scores_match_both_definitions(family):
    """Default: within the MLP's change; "lmtt": LM-TT's get_decomposed_mlp_contributions. The offline report's
    batched scoring (warm_neurons) gives the same numbers as ex.neuron_importance in either convention."""
    from lmtt_widgets.report import warm_neurons

    lm = tm.loaded(family)
    for convention, oracle in (("paper", "project"), ("lmtt", "lmtt")):
        ex = explain(lm, CLEAN, convention=convention)
        nodes = [(0, 3), (1, ex.n_tokens - 1), (1, 0)]
        for layer, token in nodes:
            ref = fo.neuron_importance(lm.model, ex.trace.input_ids, layer, token, oracle)
            got = ex.neuron_importance(layer, token).double()
            assert float((got - ref).abs().max()) < 1e-6, (convention, layer, token)
        warm = explain(lm, CLEAN, convention=convention)
        warm_neurons(warm, nodes)
        for layer, token in nodes:
            assert torch.allclose(warm.neuron_importance(layer, token), ex.neuron_importance(layer, token), atol=1e-7)


def test_lmtt_convention_differs_from_the_default_where_lmtt_does():
    """The two conventions differ where they should (the floor's mass; the bias) and nowhere else."""
    lm = tm.loaded("gpt2")
    paper, lmtt = explain(lm, CLEAN), explain(lm, CLEAN, convention="lmtt")
    assert float(lmtt.scores.layers[0].bias_attn.abs().max()) == 0.0  # no part in LM-TT
    assert float(paper.scores.layers[0].bias_attn.max()) > 0.01  # a part in the default
    # MLP updates have no bias part: only the floor separates them
    for a, b in zip(paper.scores.layers, lmtt.scores.layers):
        assert torch.allclose(a.mlp, b.mlp, atol=1e-3)
    with pytest.raises(ValueError, match="convention"):
        explain(lm, CLEAN, convention="LM-TT")


def _floor_dominated(family):
    """A tiny model whose every residual update is ~1e-6 in size: LM-TT's 1e-5 floor dominates every importance
    (~1 / (T * H + 1) each), so future source positions carry as much as causal ones."""
    model = tm.build(family)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(1e-7)
        for name, p in model.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight", "o_proj.bias", "down_proj.bias")):
                p.mul_(1e-7)
    from lmtt_widgets import load_model

    return load_model(model, tm.ToyTokenizer())


@pytest.mark.parametrize("budget", [None, 3000])
def test_lmtt_convention_floor_dominated_long_prompt(monkeypatch, budget):
    """Long prompts store head-summed edges >= EDGE_FLOOR only: with the floor everywhere, no future pair may slip
    in, and every chunk of targets (small ``budget``: a few rows each) counts the future sources past it."""
    from lmtt_widgets.contributions import scores as sc

    monkeypatch.setattr(sc, "DENSE_EDGE_LIMIT", 10)
    lm = _floor_dominated("llama")
    ex = explain(lm, CLEAN, convention="lmtt", **({} if budget is None else {"budget": budget}))
    assert ex.scores.edge_floor == sc.EDGE_FLOOR
    s = fo.scores(fo.capture(lm.model, ex.trace.input_ids), "lmtt")
    assert float(s.heads[0][0].sum()) > 0.5  # the floor dominates: token 0's future sources hold most of it
    diffs = fo.max_diffs(fo.project_arrays(ex), fo.oracle_arrays(s))
    assert max(diffs["resid_attn"], diffs["head_total"], diffs["mlp"], diffs["head"]) < 1e-6, diffs
    for ls, heads in zip(ex.scores.layers, s.heads):
        T = heads.shape[0]
        for i in range(T):
            cols, vals = ls.edge_sparse_row(i)
            assert bool((cols <= i).all()), f"a future source stored as an edge into {i}"
            want = heads[i, : i + 1].sum(-1)
            kept = (want >= sc.EDGE_FLOOR + 1e-6).nonzero().flatten()
            assert set(kept.tolist()) <= set(cols.tolist())
            assert torch.allclose(vals.double(), want[cols.long()], atol=1e-6)


def test_explorer_rerun_keeps_the_convention():
    from lmtt_widgets import Explorer

    lm = tm.loaded("llama")
    w = Explorer(explain(lm, "abc", convention="lmtt"))
    w.run("abcd")
    assert w.explanation.n_tokens == 4 and w.explanation.scores.convention == "lmtt"


def test_cli_convention(monkeypatch, capsys):
    import lmtt_widgets
    from lmtt_widgets.__main__ import main

    lm = tm.loaded("gpt2")
    seen = []
    real = lmtt_widgets.explain
    monkeypatch.setattr(lmtt_widgets, "load_model", lambda name, *a, **k: lm)
    monkeypatch.setattr(lmtt_widgets, "explain", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    assert main(["abc", "--html", "", "--convention", "lmtt"]) == 0
    assert seen[-1].scores.convention == "lmtt"
    with pytest.raises(SystemExit):
        main(["abc", "--html", "", "--convention", "LM-TT"])
