"""Issue 12: signed logit attribution, targets and foils, exact and attribution patching, faithfulness, agreement."""

import pytest
import torch

from lmtt_widgets import SelectionError, explain
from lmtt_widgets.methods import Component, available_methods
from lmtt_widgets.methods.agreement import spearman, top_k_overlap
from lmtt_widgets.methods.causal import faithfulness_of_top
from lmtt_widgets.methods.interventions import Reference
from tiny_models import FAMILIES, loaded

PROMPT = "hello world, again!"
CORRUPT = "jello world, agaim!"


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("neurons", [False, True])
def test_logit_attribution_adds_up_to_the_models_logit_difference(family, neurons):
    ex = explain(loaded(family), PROMPT)
    for foil, position in [(5, None), (None, 4)]:
        t = ex.logit_attribution(foil=foil, position=position, neurons=neurons)
        logits = ex.trace.logits[t.metric.position].double()
        model = logits[t.metric.target] - (0 if foil is None else logits[foil])
        total = t.scores.sum() + t.extra["norm_bias_term"] + t.extra["unembed_bias_term"]
        if t.extra["softcap"]:  # Gemma 2: the attribution explains the logits before the final softcap
            model = torch.tensor(t.extra["model_value"], dtype=torch.float64)
        assert abs(float(total - model)) <= 1e-9
        assert not any(c.kind == "external" for c in t.components)
        kinds = {c.kind for c in t.components}
        assert {"embed", "head"} <= kinds and ("neuron" in kinds) == neurons and ("mlp" in kinds) != neurons


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma2", "gpt_neox"])
def test_logit_attribution_in_float32_within_1e5(family):
    ex = explain(loaded(family, dtype=torch.float32), PROMPT)
    t = ex.logit_attribution(foil=7)
    assert abs(t.extra["error"]) <= 1e-5 * max(1.0, float(t.scores.abs().sum()))


def test_a_steering_hook_shows_as_an_external_edit_row():
    lm = loaded("llama")
    vec = torch.randn(64, dtype=torch.float64)
    handle = lm.model.model.layers[0].register_forward_hook(lambda m, a, out: (out[0] + vec,) + tuple(out[1:])
                                                             if isinstance(out, tuple) else out + vec)
    try:
        ex = explain(lm, PROMPT)
    finally:
        handle.remove()
    t = ex.logit_attribution(foil=5)
    ext = [c for c in t.components if c.kind == "external"]
    assert [c.id for c in ext] == ["L0.EXT"]
    assert abs(t.extra["error"]) <= 1e-9  # the edit is accounted for, not hidden in the error
    assert abs(t["L0.EXT"]) > 1e-3


def test_targets_and_foils_by_text_or_id_with_clear_errors():
    ex = explain(loaded("llama"), PROMPT)
    m = ex.metric(target="a", foil=98)
    assert (m.target, m.foil) == (ord("a"), 98)
    assert m(ex.trace.logits) == pytest.approx(float(ex.trace.logits[-1, 97] - ex.trace.logits[-1, 98]))
    assert ex.metric().target == int(ex.trace.logits[-1].argmax())
    assert float(ex.metric(target=3)(ex.trace.logits)) == pytest.approx(
        float(ex.trace.logits[-1].double().log_softmax(-1)[3]), abs=1e-6)
    with pytest.raises(SelectionError, match="is 2 tokens"):
        ex.metric(foil="ab")
    with pytest.raises(SelectionError, match="foil is the target"):
        ex.metric(target=5, foil=5)
    with pytest.raises(SelectionError, match="out of range"):
        ex.metric(foil=10**6)
    with pytest.raises(SelectionError, match="not True"):
        ex.metric(foil=True)


def _manual_metric(ex, metric, hook_module, hook):
    handle = hook_module.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            logits = ex.trace.lm.model(input_ids=ex.trace.input_ids[None]).logits
    finally:
        handle.remove()
    return float(metric(logits)[0])


@pytest.mark.parametrize("family", ["llama", "gpt2", "opt", "gpt_neox", "gemma2"])
def test_exact_patching_equals_a_hand_written_patch_and_restores_the_model(family):
    lm = loaded(family)
    ex = explain(lm, PROMPT)
    corrupted = explain(lm, CORRUPT).trace
    before, hooks = _state(lm.model), _hooks(lm.model)
    impl = lm.model.config._attn_implementation
    table = ex.patch(["L1.H2", "L0 3>5", "L1.H1 2>6"], CORRUPT, foil=5)
    metric = table.metric
    blocks = lm.model.get_submodule(lm.adapter.blocks)
    H, dh = ex.n_heads, ex.trace.head_dim

    def head_hook(mod, args):  # L1.H2 -> its corrupted signal at every position
        x = args[0].clone()
        x.view(1, -1, H, dh)[0, :, 2] = corrupted.layers[1].head_signal[:, 2]
        return (x,)

    o_proj = blocks[1].get_submodule(lm.adapter.attn_out_proj)
    assert table["L1.H2"] == pytest.approx(table.extra["clean"] - _manual_metric(ex, metric, o_proj, head_hook), abs=1e-10)

    def edge_message(tr, layer, h, j, i):
        rec = tr.layers[layer]
        return rec.attention[h, i, j] * rec.values[h // (H // rec.values.shape[0]), j]

    def edge_hook(mod, args):  # L0 3>5 through every head: swap clean messages for corrupted ones
        x = args[0].clone()
        for h in range(H):
            x.view(1, -1, H, dh)[0, 5, h] += edge_message(corrupted, 0, h, 3, 5) - edge_message(ex.trace, 0, h, 3, 5)
        return (x,)

    o_proj0 = blocks[0].get_submodule(lm.adapter.attn_out_proj)
    assert table["L0 3>5"] == pytest.approx(table.extra["clean"] - _manual_metric(ex, metric, o_proj0, edge_hook), abs=1e-10)
    # the model is bit-identical and bare afterwards
    after = _state(lm.model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert _hooks(lm.model) == hooks and lm.model.config._attn_implementation == impl
    assert all(p.grad is None for p in lm.model.parameters())


def test_removing_an_edge_subtracts_its_message_exactly():
    lm = loaded("llama")
    ex = explain(lm, PROMPT)
    last = ex.n_tokens - 1
    removed = ex.patch([f"L1.H0 2>{last}", "L0.H1 2>6", "L1.H0 2>6"], ablation="zero", foil=5)
    # removing every source of a head at a target is the same as zeroing that head there
    all_sources = ex.patch([f"L1.H0 {j}>{last}" for j in range(last + 1)], ablation="zero", foil=5, together=True)
    head_there = ex.patch([f"L1.H0@{last}"], ablation="zero", foil=5, together=True)
    assert all_sources["patched"] == pytest.approx(head_there["patched"], abs=1e-10)
    assert removed[f"L1.H0 2>{last}"] != 0 and removed["L0.H1 2>6"] != 0
    assert removed["L1.H0 2>6"] == 0  # the last layer at an earlier token reaches no later position


@pytest.mark.parametrize("family", ["llama", "gpt2", "phi"])
def test_attribution_patching_matches_exact_patching_for_small_perturbations(family):
    ex = explain(loaded(family), PROMPT)
    tr = ex.trace
    g = torch.Generator().manual_seed(1)
    eps = 1e-3  # big enough to stand out of the float32 rounding of HF RMSNorm, small enough for first order

    def nudge(x):
        return x + eps * torch.randn(x.shape, generator=g, dtype=x.dtype) * x.abs().mean()

    ref = Reference("corrupted", [nudge(r.head_signal) for r in tr.layers], [nudge(r.mlp_out) for r in tr.layers],
                    [nudge(r.neurons) for r in tr.layers], [nudge(r.resid_post) for r in tr.layers])
    approx = ex.attribution_patching(ref, foil=5)
    exact = ex.patch([c for c in approx.components], ref, foil=5)
    a = torch.tensor([approx[c] for c in exact.components], dtype=torch.float64)
    scale = exact.scores.abs().max()
    assert scale > 0
    assert (a - exact.scores).abs().max() <= 1e-2 * scale  # second-order terms only
    assert spearman(a, exact.scores) > 0.99


def test_faithfulness_ends_are_exact_and_match_patching_the_complement():
    ex = explain(loaded("llama"), PROMPT)
    dla = ex.logit_attribution(foil=5)
    f = faithfulness_of_top(ex, dla, ks=(0, ex.n_layers * ex.n_heads), ablation="mean")
    assert f.fraction[0] == pytest.approx(0.0, abs=1e-9)  # nothing kept: the all-ablated run itself
    assert f.fraction[1] == pytest.approx(1.0, abs=1e-6)  # everything kept: the clean run
    route = ex.faithfulness(thresholds=(0.02,), ablation="mean", foil=5)
    from lmtt_widgets.methods.causal import route_masks

    heads, mlp = route_masks(ex, ex.route(threshold=0.02))
    off = [f"L{l}.H{h}@{t}" for l in range(ex.n_layers) for t in range(ex.n_tokens) for h in range(ex.n_heads)
           if not heads[l, t, h]] + [f"L{l}.MLP@{t}" for l in range(ex.n_layers) for t in range(ex.n_tokens)
                                     if not mlp[l, t]]
    manual = ex.patch(off, ablation="mean", foil=5, together=True)
    assert route.kept[0] == pytest.approx(manual["patched"], abs=1e-10)


def test_rank_agreement_helpers():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486832980505138)  # ties get average ranks
    assert top_k_overlap([5, 4, 3, 2, 1], [1, 4, 5, 3, 2], 2) == 1


def test_every_method_returns_the_same_schema():
    ex = explain(loaded("gpt2"), PROMPT)
    assert {"importance", "logit_attribution", "attribution_patching", "activation_patching"} <= set(available_methods())
    for name in ["importance", "logit_attribution", "attribution_patching"]:
        opts = {"ablation": "mean"} if name == "attribution_patching" else {}
        df = ex.score(name, **opts).to_dataframe()
        assert list(df.columns) == ["component", "kind", "layer", "index", "position", "source", "score", "method",
                                    "quantity", "metric"]
        assert (df["method"] == name).all() and len(df) > 0
    agree = ex.agreement(ablation="mean", foil=5)
    assert set(agree["signal"]) == {"importance", "logit_attribution", "attribution_patching"}
    assert agree["spearman"].between(-1, 1).all()


def test_component_ids_round_trip_and_bad_ones_are_named():
    for text in ["EMB", "L23.H3", "L5.MLP", "L5.N1234", "L5.R@7", "L3.H2 5>7", "L3 5>7", "T5", "L2.BO", "L0.EXT"]:
        assert Component.parse(text).id == text
    with pytest.raises(SelectionError, match="names no component"):
        Component.parse("head 3")
    ex = explain(loaded("llama"), PROMPT)
    with pytest.raises(SelectionError, match="out of range"):
        ex.patch("L9.H0", ablation="mean")
    with pytest.raises(SelectionError, match="source at or before"):
        ex.patch("L0.H0 6>2", ablation="zero")


def test_a_corrupted_prompt_of_another_length_is_refused():
    from lmtt_widgets import PromptError

    ex = explain(loaded("llama"), PROMPT)
    with pytest.raises(PromptError, match="equally long"):
        ex.attribution_patching("hello")


@pytest.mark.smollm2
def test_ioi_causal_heads_are_found_by_attribution_patching(smollm2):
    """The issue's case: L23.H3 is the top causal head, L29.H0 pushes against; flow importance misses both."""
    ex = explain(smollm2, "When Mary and John went to the store, John gave a drink to")
    corrupt = "When Alice and Bob went to the store, Carl gave a drink to"
    approx = ex.attribution_patching(corrupt, foil=" John")
    assert approx.metric.target_text == " Mary"
    top = [c.id for c, _ in approx.of_kind("head").top(3)]
    assert "L23.H3" in top and approx["L23.H3"] > 1.5
    assert approx["L29.H0"] < -0.5
    exact = ex.patch(["L23.H3", "L29.H0"], corrupt, foil=" John")
    assert exact["L23.H3"] > 2.0 and exact["L29.H0"] < -0.5
    assert ex.score("importance")["L23.H3"] < 0.05  # flow share: tiny, though it is the decisive head


@pytest.mark.parametrize("family", ["llama", "opt", "gemma2"])
def test_the_corrupted_reference_is_the_corrupted_prompts_own_activations(family):
    from lmtt_widgets import trace
    from lmtt_widgets.methods.interventions import reference

    lm = loaded(family)
    ref = reference(explain(lm, PROMPT), CORRUPT)
    tr = trace(lm, CORRUPT)
    for l, rec in enumerate(tr.layers):
        assert torch.allclose(ref.head_signal[l], rec.head_signal, atol=1e-12)
        assert torch.allclose(ref.mlp_out[l], rec.mlp_out, atol=1e-12)
        assert torch.allclose(ref.neurons[l], rec.neurons, atol=1e-12)
        assert torch.allclose(ref.resid_post[l], rec.resid_post, atol=1e-12)
    assert torch.equal(ref.trace.input_ids, tr.input_ids)  # edges get the full trace on demand


def test_route_edges_are_estimated_like_their_exact_removal():
    ex = explain(loaded("llama"), PROMPT)
    route = ex.route(threshold=0.005)
    approx = ex.attribution_patching(ablation="zero", foil=5, edges=route).of_kind("edge")
    assert len(approx) > 10
    exact = ex.patch(approx.components, ablation="zero", foil=5)
    assert spearman(approx.scores, exact.scores) > 0.9
    assert (approx.scores - exact.scores).abs().max() <= 0.3 * exact.scores.abs().max()  # first order, whole messages


def test_patching_and_tracing_from_two_threads_do_not_see_each_others_hooks():
    import threading

    lm = loaded("llama")
    ex = explain(lm, PROMPT)
    want_patch = ex.patch(["L0.H1", "L1.MLP"], CORRUPT, foil=5).scores
    want_grad = ex.attribution_patching(CORRUPT, foil=5).scores
    want_scores = explain(lm, CORRUPT).scores.layers[1].edge
    # a user hook that sleeps makes the passes interleave if nothing serialises them
    slow = lm.model.model.layers[0].register_forward_pre_hook(lambda m, a: __import__("time").sleep(0.002))
    got, errors = [], []

    def work(i):
        try:
            for _ in range(3):
                if i % 3 == 0:
                    got.append(("patch", ex.patch(["L0.H1", "L1.MLP"], CORRUPT, foil=5).scores))
                elif i % 3 == 1:
                    got.append(("grad", ex.attribution_patching(CORRUPT, foil=5).scores))
                else:
                    got.append(("trace", explain(lm, CORRUPT).scores.layers[1].edge))
        except Exception as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        slow.remove()
    assert not errors
    want = {"patch": want_patch, "grad": want_grad, "trace": want_scores}
    assert len(got) == 18 and all(torch.allclose(v, want[k], atol=1e-9) for k, v in got)
    assert _hooks(lm.model) == 0


def test_components_print_as_their_ids_and_round_trip():
    """A table's top(k) prints as ids (before: five fields of a dataclass per component, unreadable in a notebook);
    the repr evaluates back to the same component for every kind."""
    from lmtt_widgets.methods.base import Component

    ids = ["EMB", "L23.H3", "L2.BO", "L5.MLP", "L5.BM", "L5.N12", "L5.R", "L5.EXT", "T4", "L3.H2 5>7", "L3 5>7",
           "L5.N12@3", "L1.H0@0"]
    for text in ids:
        c = Component.parse(text)
        assert repr(c) == f"Component.parse({text!r})" and eval(repr(c), {"Component": Component}) == c
    assert repr([(Component.parse("L23.H3"), 3.1)]) == "[(Component.parse('L23.H3'), 3.1)]"
