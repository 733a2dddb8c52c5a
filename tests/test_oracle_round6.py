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
