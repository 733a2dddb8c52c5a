"""Hostile round 5: causal ground truth on unseen prompts, model state around explain, chat and generation paths,
causal-API misuse, exotic tiny configs. Prints one row per case with its outcome class:

  clear error      an LmttError that says what is wrong
  rightly accepted ran, and its numbers were checked against an independent computation (or nothing to check)
  raw error        any other exception
  silent wrong     ran, and a number disagreed with the independent computation
  hang             did not finish within the case's time limit

The causal ground truth is this file's own activation patching: plain PyTorch forward hooks on the attention output
projection's input (one head's slice) and on the MLP's output, a zero or same-length corrupted-prompt reference,
metric logit(target) - logit(foil) (or log p(target)) at a position, effect = metric(clean) - metric(patched).

  python benchmarks/hostile_round5.py            # everything (SmolLM2 parts: ~2 min on a shared 2-core CPU)
  python benchmarks/hostile_round5.py --tiny     # tiny random models only (no SmolLM2)
"""

from __future__ import annotations

import signal
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from lmtt_widgets import explain, load_model  # noqa: E402
from lmtt_widgets.errors import LmttError  # noqa: E402
from tiny_models import ToyTokenizer, build, loaded  # noqa: E402

ROWS: list[tuple[str, str, str]] = []
EXACT_TOL = 2e-5  # float32 reruns of a 30-layer model, batched against unbatched (plus 1e-5 of the effect's size)


class Hang(Exception):
    pass


def case(group: str, name: str, fn, limit: int = 120) -> None:
    """Run fn: it returns (ok, detail) when it ran; an exception is classified by its type."""
    def alarm(*_):
        raise Hang()

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(limit)
    t0 = time.time()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ok, detail = fn()
        outcome = "rightly accepted" if ok else "silent wrong"
    except Hang:
        outcome, detail = "hang", f"> {limit} s"
    except LmttError as e:
        outcome, detail = "clear error", f"{type(e).__name__}: {str(e)[:110]}"
    except Exception as e:  # noqa: BLE001 - what this benchmark is looking for
        outcome, detail = "raw error", f"{type(e).__name__}: {str(e)[:110]}"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    ROWS.append((group, name, outcome))
    print(f"{group:10s} | {name:58s} | {outcome:16s} | {detail} ({time.time() - t0:.1f}s)", flush=True)


def accepted(value=None):
    return lambda: (True, str(value() if callable(value) else value)[:110])


# ------------------------------------------------------------------ an independent activation patching (Llama family)
class OwnPatching:
    def __init__(self, lm):
        self.net, self.tok = lm.model, lm.tokenizer
        cfg = self.net.config
        self.H = cfg.num_attention_heads
        self.dh = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.H
        self.layers = self.net.model.layers

    def ids(self, text):
        return self.tok(text, return_tensors="pt").input_ids

    def capture(self, ids):
        got, hs = {}, []
        for l, b in enumerate(self.layers):
            hs.append(b.self_attn.o_proj.register_forward_pre_hook(
                lambda m, a, l=l: got.__setitem__(("h", l), a[0].detach().clone())))
            hs.append(b.mlp.register_forward_hook(lambda m, a, o, l=l: got.__setitem__(("m", l), o.detach().clone())))
        try:
            with torch.no_grad():
                logits = self.net(input_ids=ids).logits[0]
        finally:
            for h in hs:
                h.remove()
        return logits, got

    def patched_logits(self, ids, comp, ref):
        kind, l, h = comp
        if kind == "h":
            s = slice(h * self.dh, (h + 1) * self.dh)

            def pre(m, a):
                x = a[0].clone()
                x[..., s] = ref[("h", l)][..., s] if ref is not None else 0
                return (x,)

            hd = self.layers[l].self_attn.o_proj.register_forward_pre_hook(pre)
        else:
            hd = self.layers[l].mlp.register_forward_hook(
                lambda m, a, o: ref[("m", l)].clone() if ref is not None else torch.zeros_like(o))
        try:
            with torch.no_grad():
                return self.net(input_ids=ids).logits[0]
        finally:
            hd.remove()

    @staticmethod
    def metric(logits, pos, t, f):
        row = logits[pos].double()
        return float(row[t] - row[f]) if f is not None else float(row.log_softmax(-1)[t])

    def one_token(self, text):
        return None if text is None else self.tok(text, add_special_tokens=False).input_ids[0]


CAUSAL_CASES = [  # clean, corrupted (same token count), target, foil, position (None: last)
    ("When Sarah and Tom arrived at the party, Tom handed a gift to",
     "When Lucy and Mark arrived at the party, Paul handed a gift to", " Sarah", " Tom", None),
    ("The Eiffel Tower is located in the city of", "The Colosseum is located in the city of", " Paris", " London",
     None),
    ("The year after 1999 is 2", "The year after 1492 is 2", None, None, None),  # log p of a digit
    ("Alice went home. Bob stayed at work. Later, Alice called",
     "Bob went home. Alice stayed at work. Later, Bob called", " Alice", " Bob", 10),  # metric at token 10
]
COMPONENTS = [("h", 0, 0), ("h", 5, 2), ("h", 23, 3), ("h", 29, 1), ("m", 0, None), ("m", 10, None), ("m", 29, None)]


def cid(c):
    return f"L{c[1]}.H{c[2]}" if c[0] == "h" else f"L{c[1]}.MLP"


def causal_ground_truth(lm) -> None:
    own = OwnPatching(lm)
    for clean, corrupt, target, foil, pos in CAUSAL_CASES:
        ex = explain(lm, clean)
        ci, ri = own.ids(clean), own.ids(corrupt)
        logits, _ = own.capture(ci)
        _, ref = own.capture(ri)
        P = ci.shape[1] - 1 if pos is None else pos
        t = int(logits[P].argmax()) if target is None else own.one_token(target)
        f = own.one_token(foil)
        m0 = own.metric(logits, P, t, f)
        for ablation in ("corrupted", "zero"):
            kw = dict(corrupted=corrupt) if ablation == "corrupted" else dict(ablation="zero")

            def run(kw=kw, ablation=ablation):
                table = ex.patch([cid(c) for c in COMPONENTS], target=target, foil=foil, position=pos, **kw)
                worst, ok = 0.0, True
                for c in COMPONENTS:
                    mine = m0 - own.metric(own.patched_logits(ci, c, ref if ablation == "corrupted" else None), P, t, f)
                    worst = max(worst, abs(mine - table[cid(c)]))
                    ok &= abs(mine - table[cid(c)]) < EXACT_TOL + 1e-5 * abs(mine)
                right_metric = table.metric.position == P and table.metric.target == t and table.metric.foil == f
                return ok and right_metric, f"max |own - ex.patch| {worst:.1e} over 7; {table.metric.name}"

            case("causal", f"{clean[:26]}... {ablation}", run, limit=300)

        def ap_sign(kw=dict(corrupted=corrupt)):
            # attribution patching estimates the same signed quantity: the largest exact effect has its sign
            exact = ex.patch([cid(c) for c in COMPONENTS], target=target, foil=foil, position=pos, **kw)
            approx = ex.attribution_patching(target=target, foil=foil, position=pos, **kw)
            heads = [cid(c) for c in COMPONENTS if c[0] == "h"]
            top = max(heads, key=lambda c: abs(exact[c]))
            return (exact[top] > 0) == (approx[top] > 0), f"{top}: exact {exact[top]:+.3f}, first-order {approx[top]:+.3f}"

        case("causal", f"{clean[:26]}... attribution-patching sign", ap_sign, limit=300)


# ------------------------------------------------------------------ model state around explain
def model_state(lm) -> None:
    net = lm.model
    P = "When Sarah and Tom arrived at the party, Tom handed a gift to"
    C = "When Lucy and Mark arrived at the party, Paul handed a gift to"
    base = explain(lm, P)
    effect = base.patch(["L23.H3"], C, foil=" Tom")["L23.H3"]
    ap = base.attribution_patching(C, foil=" Tom")["L23.H3"]

    def same(ex, what=""):
        return ex.patch(["L23.H3"], C, foil=" Tom")["L23.H3"], what

    def sdpa_between():
        ex, old = explain(lm, P), net.config._attn_implementation
        net.set_attn_implementation("sdpa" if old != "sdpa" else "eager")
        try:
            got = ex.patch(["L23.H3"], C, foil=" Tom")["L23.H3"]
        finally:
            net.set_attn_implementation(old)
        return abs(got - effect) < EXACT_TOL, f"{got:+.5f} vs {effect:+.5f}"

    case("state", "attention implementation switched between explain and patch", sdpa_between)

    def hook_after(scale):
        def run():
            ex = explain(lm, P)
            v = torch.randn(net.config.hidden_size, generator=torch.Generator().manual_seed(0)) * scale
            h = net.model.layers[12].register_forward_hook(lambda m, a, o: o + v)
            try:
                got = same(ex)[0]  # accepted only where the hook's change is below float32 noise
                return abs(got - effect) < EXACT_TOL, f"patched with the hook on: {got:+.6f} vs {effect:+.6f}"
            finally:
                h.remove()
        return run

    case("state", "small steering hook added after explain, then patch", hook_after(0.02))
    case("state", "tiny steering hook (1e-4) added after explain, then patch", hook_after(1e-4))
    case("state", "large steering hook added after explain, then patch", hook_after(2.0))

    def steering_during():
        v = torch.randn(net.config.hidden_size, generator=torch.Generator().manual_seed(0)) * 2
        h = net.model.layers[12].register_forward_hook(lambda m, a, o: o + v)
        try:
            ex = explain(lm, P)
            own = OwnPatching(lm)
            ci, ri = own.ids(P), own.ids(C)
            logits, _ = own.capture(ci)
            _, ref = own.capture(ri)
            t, f = own.one_token(" Sarah"), own.one_token(" Tom")
            mine = own.metric(logits, -1, t, f) - own.metric(own.patched_logits(ci, ("h", 23, 3), ref), -1, t, f)
            got = ex.patch(["L23.H3"], C, foil=" Tom")["L23.H3"]
            return (abs(mine - got) < EXACT_TOL and len(ex.external_edits()) == 1,
                    f"own {mine:+.5f} ex.patch {got:+.5f}, {len(ex.external_edits())} external edit")
        finally:
            h.remove()

    case("state", "steering hook on during explain and patching", steering_during)

    def logging_hook():
        ex, seen = explain(lm, P), []
        h = net.model.layers[12].register_forward_hook(lambda m, a, o: seen.append(1))
        try:
            got = ex.patch(["L23.H3"], C, foil=" Tom")["L23.H3"]
        finally:
            h.remove()
        return abs(got - effect) < EXACT_TOL and bool(seen), f"{got:+.5f} vs {effect:+.5f}"

    case("state", "logging hook (changes nothing) added after explain", logging_hook)

    def grad_off():
        ex = explain(lm, P)
        net.requires_grad_(False)
        try:
            got = ex.attribution_patching(C, foil=" Tom")["L23.H3"]
            return abs(got - ap) < 1e-4 and all(p.grad is None for p in net.parameters()), f"{got:+.4f} vs {ap:+.4f}"
        finally:
            net.requires_grad_(True)

    case("state", "requires_grad_(False) after explain (not refused)", grad_off)

    def inference_mode():
        with torch.inference_mode():
            ex = explain(lm, P)
            got = ex.attribution_patching(C, foil=" Tom")["L23.H3"]
        return abs(got - ap) < 1e-4, f"{got:+.4f} vs {ap:+.4f}"

    case("state", "torch.inference_mode around explain + attribution patching", inference_mode)

    def no_grad():
        with torch.no_grad():
            got = explain(lm, P).attribution_patching(C, foil=" Tom")["L23.H3"]
        return abs(got - ap) < 1e-4, f"{got:+.4f} vs {ap:+.4f}"

    case("state", "torch.no_grad around explain + attribution patching", no_grad)

    def flags(setup, undo):
        def run():
            setup()
            try:
                got = explain(lm, P).patch(["L23.H3"], C, foil=" Tom")["L23.H3"]
            finally:
                undo()
            return abs(got - effect) < EXACT_TOL, f"{got:+.5f} vs {effect:+.5f}"
        return run

    n = torch.get_num_threads()
    case("state", "set_num_threads(1)", flags(lambda: torch.set_num_threads(1), lambda: torch.set_num_threads(n)))
    case("state", "use_deterministic_algorithms(True)", flags(lambda: torch.use_deterministic_algorithms(True),
                                                              lambda: torch.use_deterministic_algorithms(False)))
    case("state", "set_default_dtype(float64)", flags(lambda: torch.set_default_dtype(torch.float64),
                                                      lambda: torch.set_default_dtype(torch.float32)))

    def reloaded_state():
        ex = explain(lm, P)
        net.load_state_dict(net.state_dict())
        return False, f"patch after load_state_dict: {same(ex)[0]}"

    case("state", "load_state_dict after explain (refused)", reloaded_state)

    def cast(dtype):
        def run():
            ex = explain(lm, P)
            saved = {k: v.clone() for k, v in net.state_dict().items()}
            net.to(dtype)
            try:
                return False, f"logit attribution after a cast: {ex.logit_attribution(foil=' Tom')['L23.H3']}"
            finally:
                net.to(torch.float32)
                net.load_state_dict(saved)  # (a float16 round trip would leave rounded weights behind)
        return run

    case("state", "model.to(float64) after explain (refused: see report)", cast(torch.float64))
    case("state", "model.half() after explain (refused)", cast(torch.float16))

    def tuple_block():
        h = net.model.layers[3].register_forward_hook(lambda m, a, o: (o,))
        try:
            return True, explain(lm, P).predictions(k=1)
        finally:
            h.remove()

    case("state", "hook makes a block return a 1-tuple (model broken)", tuple_block)


# ------------------------------------------------------------------ tiny models: state, exotic configs, misuse
def tiny_cases() -> None:
    import sys as _sys

    _sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_contributions import brute_force_attention

    def train_mode():
        m = build("gpt2", dtype=torch.float32, config_overrides=dict(resid_pdrop=0.5, attn_pdrop=0.5, embd_pdrop=0.5))
        lm = load_model(m, ToyTokenizer())
        P, C = "The quick brown fox jumps", "The quick brown cat jumps"

        def run():
            ex = explain(lm, P, generate=4)
            return torch.cat([torch.tensor([h.importance for h in ex.top_heads(5)]), ex.trace.input_ids.double(),
                              ex.patch(["L1.H0", "L0.MLP"], C + "abcd", target=5).scores,
                              ex.attribution_patching(C + "abcd", target=5).scores,
                              ex.score("integrated_gradients", target=5, baseline="zero", steps=4).scores])

        ref = run()
        m.train()
        got = run()
        return torch.equal(ref, got) and m.training, "train() with dropout 0.5: same numbers as eval, mode kept"

    case("state", "train() with dropout 0.5 before explain/patch/IG/generate", train_mode)

    def exotic(family, overrides):
        def run():
            model = build(family, config_overrides=overrides)
            ex = explain(load_model(model, ToyTokenizer()), "The quick brown fox jumps over the lazy dog.")
            with torch.no_grad():
                logits = model(input_ids=ex.trace.input_ids[None]).logits[0]
            err = (ex.trace.logits.double() - logits.double()).abs().max().item()
            for layer in range(ex.n_layers):
                heads, extras = brute_force_attention(ex.trace, layer)  # asserts the parts add up to the update
                ls = ex.scores.layers[layer]
                err = max(err, (ls.head_total - heads.sum(1).float()).abs().max().item())
            dla = abs(ex.logit_attribution(foil=5).extra.get("error", 0.0))
            return err < 1e-5 and dla < 1e-8, f"max error vs float64 brute force {err:.1e}, DLA {dla:.1e}"
        return run

    for family, ov in [("llama", dict(attention_bias=True, mlp_bias=True)), ("llama", dict(head_dim=32)),
                       ("llama", dict(tie_word_embeddings=True)), ("mistral", dict(sliding_window=1)),
                       ("qwen2", dict(use_sliding_window=True, sliding_window=3, max_window_layers=1)),
                       ("gemma2", dict(sliding_window=2)), ("gemma2", dict(attn_logit_softcapping=1.0)),
                       ("gemma2", dict(query_pre_attn_scalar=7)), ("gpt2", dict(scale_attn_by_inverse_layer_idx=True)),
                       ("gpt2", dict(tie_word_embeddings=False)), ("gpt_neox", dict(use_parallel_residual=False)),
                       ("phi", dict(qk_layernorm=True)), ("opt", dict(do_layer_norm_before=False)),
                       ("opt", dict(enable_bias=False)), ("phi3", dict(partial_rotary_factor=0.5))]:
        case("config", f"{family} {ov}", exotic(family, ov))

    from lmtt_widgets.methods import causal

    lm = loaded("llama", dtype=torch.float32)
    ex = explain(lm, "The quick brown fox jumps over the lazy dog.")
    ex2 = explain(lm, "A short one")
    C = "The quick brown cat jumps over the lazy dog."
    misuse = [
        ("attribution_patching(edges=another prompt's route)", lambda: ex.attribution_patching(C, edges=ex2.route())),
        ("attribution_patching(edges='yes')", lambda: ex.attribution_patching(C, edges="yes")),
        ("patch(ablation=0) (was taken for mean)", lambda: ex.patch(["L1.H0"], ablation=0)),
        ("patch(corrupted=Reference of another prompt)", lambda: ex2.patch(["L1.H0"], causal.reference(ex, C))),
        ("table['L99.H0']", lambda: ex.logit_attribution()["L99.H0"]),
        ("table.top(3, by='x')", lambda: ex.logit_attribution().top(3, by="x")),
        ("table.top(-1)", lambda: ex.logit_attribution().top(-1)),
        ("faithfulness_of_top(ks=[-1])", lambda: causal.faithfulness_of_top(ex, ex.logit_attribution(), ks=[-1])),
        ("faithfulness_of_top(saliency table)", lambda: causal.faithfulness_of_top(ex, ex.score("saliency"), ks=[2])),
        ("attribution_matrix(positions='1')", lambda: ex.attribution_matrix("saliency", positions="1")),
    ]
    for name, fn in misuse:
        case("misuse", name, lambda fn=fn: (False, str(fn())[:80]))
    case("misuse", "faithfulness_of_top(ks=5)", accepted(
        lambda: causal.faithfulness_of_top(ex, ex.logit_attribution(), ks=5).fraction))
    case("misuse", "attribution_matrix(positions=3)", accepted(
        lambda: ex.attribution_matrix("saliency", positions=3).shape))
    case("chat", "chat=True on a tokenizer without a template", lambda: (False, explain(
        loaded("gpt2", dtype=torch.float32), "Hi", chat=True).n_tokens))


# ------------------------------------------------------------------ chat and generation (SmolLM2)
def chat_and_generation(lm) -> None:
    def greedy():
        ex = explain(lm, "The capital of France is", generate=6)
        ids = ex.trace.input_ids
        bad = [g for g in ex.generated_positions if int(ex.trace.logits[g - 1].argmax()) != int(ids[g])]
        return not bad, f"generated {[ex.tokens[g] for g in ex.generated_positions]} = the traced argmax"

    case("generate", "generate=6: tokens are the traced pass's argmax", greedy)
    case("generate", "generate=0", accepted(lambda: explain(lm, "Hi there", generate=0).n_tokens))
    for name, kw in [("generate=True", dict(generate=True)), ("generate=-1", dict(generate=-1)),
                     ("generate=2.0", dict(generate=2.0)), ("generate=10**9", dict(generate=10**9)),
                     ("continuation=''", dict(continuation="")), ("continuation=b' x'", dict(continuation=b" x")),
                     ("continuation=[1.5]", dict(continuation=[1.5])), ("continuation='\\ud800'",
                                                                         dict(continuation="\ud800")),
                     ("continuation and generate", dict(continuation=" x", generate=2))]:
        case("generate", name, lambda kw=kw: (False, explain(lm, "Hi there", **kw).n_tokens))

    def joined():
        ex = explain(lm, "The capital of France is", continuation="Paris")
        return ex.tokens[-1] == "Paris" and ex.n_prompt_tokens == 5, f"appended as its own tokens: {ex.tokens[-2:]}"

    case("generate", "continuation that joins differently ('Paris' after 'is')", joined)

    def eos_inside():
        ex = explain(lm, "Say hi", continuation=" hi<|im_end|> more")
        return ex.token_roles[-3:] == ["generated"] * 3, f"{ex.tokens[-3:]}"

    case("generate", "continuation with EOS inside", eos_inside)
    for name, messages in [("chat: list of texts", ["Hello"]), ("chat: one dict, not a list", {"role": "user",
                                                                                               "content": "Hi"}),
                           ("chat: []", []), ("chat: message without content", [{"role": "user"}]),
                           ("chat: content=5", [{"role": "user", "content": 5}]), ("chat: token ids", [1, 2, 3]),
                           ("chat: bytes", b"hi"), ("chat: lone surrogate", [{"role": "user", "content": "a\ud800"}])]:
        case("chat", name, lambda m=messages: (False, explain(lm, m, chat=True).n_tokens))

    def roles():
        ex = explain(lm, [{"role": "system", "content": "user"}, {"role": "user", "content": "user"}], chat=True)
        marked = [(t, r) for t, r in zip(ex.tokens, ex.token_roles) if r != "template"]
        n = [i for i, r in enumerate(ex.token_roles) if r == "user"]
        return marked == [("user", "system"), ("user", "user")] and ex.tokens[n[0] - 2] == "user", str(marked)

    case("chat", "content equal to the template's own text ('user')", roles)


def main() -> None:
    tiny_only = "--tiny" in sys.argv
    tiny_cases()
    if not tiny_only:
        lm = load_model("smollm2")
        causal_ground_truth(lm)
        chat_and_generation(lm)
        model_state(lm)
    print("\noutcomes:", {k: sum(1 for r in ROWS if r[2] == k) for k in
                          ("clear error", "rightly accepted", "raw error", "silent wrong", "hang")})


if __name__ == "__main__":
    main()
