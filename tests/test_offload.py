"""Models dispatched by accelerate (device_map, CPU and disk offload) explain exactly like a normal load."""

from __future__ import annotations

import pytest
import torch

from lmtt_widgets import ModelLoadError, explain, load_model

PROMPT = "The capital of France is"
LAYERS = 30  # SmolLM2


@pytest.fixture(scope="module")
def smol_dir(smollm2, tmp_path_factory):
    """SmolLM2 saved once as a plain checkpoint, so accelerate can dispatch it from disk."""
    path = tmp_path_factory.mktemp("smollm2")
    smollm2.model.save_pretrained(path)
    smollm2.tokenizer.save_pretrained(path)
    return path


def _mixed_map():
    """Every other block on the CPU, the others on disk; the final norm on disk, the (tied) head on the CPU."""
    dm = {"model.embed_tokens": "cpu", "lm_head": "cpu", "model.norm": "disk", "model.rotary_emb": "cpu"}
    dm.update({f"model.layers.{i}": "cpu" if i % 2 else "disk" for i in range(LAYERS)})
    return dm


def _load(smol_dir, tmp_path, how):
    if how == "cpu":
        return load_model(str(smol_dir), device_map={"": "cpu"})
    if how == "auto_disk":  # CPU + disk, as the README says
        return load_model(str(smol_dir), device_map="auto", max_memory={"cpu": "200MB"}, offload_folder=str(tmp_path))
    if how == "mixed":
        return load_model(str(smol_dir), device_map=_mixed_map(), offload_folder=str(tmp_path))
    if how == "dispatch_blocks":  # accelerate's own dispatch, one hook per block loading all of its submodules
        from accelerate import dispatch_model

        lm = load_model(str(smol_dir))
        dispatch_model(lm.model, device_map=_mixed_map(), offload_dir=str(tmp_path),
                       preload_module_classes=["LlamaDecoderLayer"])
        block = lm.model.model.layers[0]
        assert block._hf_hook.place_submodules and not hasattr(block.self_attn.o_proj, "_hf_hook")
        return lm
    if how == "cpu_offload":  # every weight in a CPU store, loaded module by module for the pass
        from accelerate import cpu_offload

        lm = load_model(str(smol_dir))
        cpu_offload(lm.model, execution_device=torch.device("cpu"))
        return lm
    raise AssertionError(how)


def _assert_same(ref, got, tol=1e-5):
    assert got.n_layers == ref.n_layers
    for a, b in zip(ref.scores.layers, got.scores.layers):
        for name in ("edge", "head_total", "mlp", "resid_attn", "resid_mlp", "bias_attn", "head_val"):
            x, y = getattr(a, name), getattr(b, name)
            assert x.shape == y.shape and (x - y).abs().max().item() <= tol, name
        assert torch.equal(a.head_col, b.head_col) and torch.equal(a.head_ptr, b.head_ptr)
    assert [(p.token_id, round(p.score, 5)) for p in ref.predictions()] == [
        (p.token_id, round(p.score, 5)) for p in got.predictions()]
    for layer, head in ((3, 1), (20, 4), (29, 8)):
        r, g = ref.head_tokens(layer, head), got.head_tokens(layer, head)
        assert [t.token_id for t in r.promoted] == [t.token_id for t in g.promoted]
        assert max(abs(x.score - y.score) for x, y in zip(r.promoted, g.promoted)) <= tol
    assert [e.token_id for e in ref.lens(31)] == [e.token_id for e in got.lens(31)]  # "own" norm: the final norm
    assert (ref.neuron_importance(17) - got.neuron_importance(17)).abs().max().item() <= tol
    # the signed logit attribution reads the unembedding and every layer's weights after the pass too
    assert (ref.logit_attribution().scores - got.logit_attribution().scores).abs().max().item() <= tol
    r, g = ref.route(), got.route()
    assert (r.src == g.src).all() and (r.dst == g.dst).all() and abs(r.weight - g.weight).max() <= tol
    # a causal run after the pass: accelerate swapping weights in and out is no change of the model (versions.py)
    r, g = ref.patch(["L3.H1", "L20.MLP"], ablation="zero"), got.patch(["L3.H1", "L20.MLP"], ablation="zero")
    assert (torch.as_tensor(r.scores) - torch.as_tensor(g.scores)).abs().max().item() <= 10 * tol
    r, g = ref.score("saliency"), got.score("saliency")  # input attribution runs it again from its embeddings
    assert (torch.as_tensor(r.scores) - torch.as_tensor(g.scores)).abs().max().item() <= 10 * tol


@pytest.mark.smollm2
@pytest.mark.parametrize("how", ["cpu", "auto_disk", "mixed", "dispatch_blocks", "cpu_offload"])
def test_offloaded_smollm2_explains_like_a_normal_load(smollm2_paris, smol_dir, tmp_path, how, monkeypatch):
    if how == "mixed":  # and the offloaded weights evicted at once: every use reads them again
        monkeypatch.setattr("lmtt_widgets.tracing.layer_weights.WEIGHT_CACHE_BYTES", 1)
    lm = _load(smol_dir, tmp_path, how)
    params = {p.device.type for p in lm.model.parameters()}
    assert params == ({"cpu"} if how == "cpu" else {"cpu", "meta"} if how != "cpu_offload" else {"meta"})
    _assert_same(smollm2_paris, explain(lm, PROMPT))
    assert {p.device.type for p in lm.model.parameters()} == params  # every weight put back where it was


def test_model_without_weights_is_refused_clearly():
    from accelerate import init_empty_weights
    from tiny_models import CONFIGS, ToyTokenizer
    import transformers as tf

    with init_empty_weights():
        model = tf.AutoModelForCausalLM.from_config(CONFIGS["llama"]())
    with pytest.raises(ModelLoadError, match="meta device .* no accelerate offload hook"):
        explain(load_model(model, ToyTokenizer()), "hello")


def test_low_precision_weights_are_upcast_when_used_within_a_bounded_cache(monkeypatch):
    """A bf16 model's W_O and W_out are not all copied to float32 up front (90 GB for a 70B model)."""
    from tiny_models import ToyTokenizer, build
    from lmtt_widgets.tracing.layer_weights import LazyLayerWeights

    lm = load_model(build("llama", dtype=torch.bfloat16), ToyTokenizer())
    full = explain(lm, "hello world")
    w = full.trace.weights[1]
    assert isinstance(w, LazyLayerWeights)
    o_proj = lm.model.model.layers[1].self_attn.o_proj
    assert w.w_o.dtype == torch.float32 and torch.equal(w.w_o, o_proj.weight.float())
    monkeypatch.setattr("lmtt_widgets.tracing.layer_weights.WEIGHT_CACHE_BYTES", 1)  # one matrix kept at a time
    small = explain(lm, "hello world")
    for a, b in zip(full.scores.layers, small.scores.layers):
        assert torch.equal(a.edge, b.edge) and torch.equal(a.head_total, b.head_total)
    assert torch.equal(full.neuron_importance(0), small.neuron_importance(0))
    assert len(small.trace.weights[0]._cache._items) == 1


def test_quantised_projection_is_refused_not_misread():
    from tiny_models import ToyTokenizer, build
    from lmtt_widgets import UnsupportedModelError

    model = build("llama", dtype=torch.float32)
    o_proj = model.model.layers[0].self_attn.o_proj
    o_proj.weight = torch.nn.Parameter(o_proj.weight.data.to(torch.int8), requires_grad=False)  # packed, as bnb
    with pytest.raises(UnsupportedModelError, match="quantised"):
        explain(load_model(model, ToyTokenizer()), "hello")
