"""Oracle round 8: lmtt_widgets' causal numbers against ground truth computed here with plain PyTorch hooks.

The oracle path (``Oracle``) touches only the Hugging Face model: forward pre-hooks on each block's attention output
projection (its input, split into heads, is the head signal), forward hooks / pre-hooks on the MLP output projection
(its output is the MLP's write, its input the neuron activations). No lmtt_widgets code computes an oracle number.
Compared, per family / prompt / reference (zero, mean over positions, corrupted prompt of the same length):
  patch      every head, every MLP and a few neurons patched alone: ex.patch vs the oracle (max |diff|)
  check      the widget's Check (widgets.scoring.exact_patch) on the same components
  together   ex.patch(..., together=True) on a set of heads + an MLP + a neuron vs the oracle patching all at once
  faith      ex.faithfulness at one tau vs the route's heads/MLPs kept by hand, everything else ablated
  attrib     ex.attribution_patching (neurons=True) vs grad x (clean - ref), the gradient taken here by autograd
             with respect to the captured activations (the input embeddings made a leaf, no probes)
  metric     logit(target) - logit(foil) and log p(target) at a position that is not the last
and, on SmolLM2 IOI-style prompts, the rank agreement of attribution patching with exact patching over the heads
(Spearman of the signed scores, top-5 overlap of |score|).

  python benchmarks/oracle_round8.py           # tiny float64 families + SmolLM2 float32 (~40 min, loaded 2 cores)
  python benchmarks/oracle_round8.py --tiny    # tiny families only (~7 min)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

# Module paths of the oracle, written out here (not the library's adapters): blocks, attention out proj, MLP out proj.
PATHS = {
    "llama": ("model.layers", "self_attn.o_proj", "mlp.down_proj"),
    "qwen2": ("model.layers", "self_attn.o_proj", "mlp.down_proj"),
    "gemma": ("model.layers", "self_attn.o_proj", "mlp.down_proj"),
    "phi": ("model.layers", "self_attn.dense", "mlp.fc2"),
    "gpt2": ("transformer.h", "attn.c_proj", "mlp.c_proj"),
    "gpt_neox": ("gpt_neox.layers", "attention.dense", "mlp.dense_4h_to_h"),
    "gptj": ("transformer.h", "attn.out_proj", "mlp.fc_out"),
    "opt": ("model.decoder.layers", "self_attn.out_proj", "fc2"),
}

# (clean, corrupted) of the same length in characters (the tiny models' tokenizer: one token per character)
TINY_PROMPTS = {
    "ioi": ("When Zed and Kim met, Kim gave it to", "When Bob and Ann met, Tom gave it to"),
    "fact": ("The capital of Peru is Lima", "The capital of Iran is Lima"),
    "code": ("def mul(x, y): return x *", "def add(p, q): return p +"),
}


class Oracle:
    """Ground truth by hooks on the HF model. Components: ('head', l, h), ('mlp', l), ('neuron', l, n), each at all
    positions; or position masks for faithfulness."""

    def __init__(self, model, family: str, n_heads: int):
        blocks_path, o_path, f_path = PATHS[family]
        self.model = model
        blocks = list(model.get_submodule(blocks_path))
        self.o = [b.get_submodule(o_path) for b in blocks]
        self.f = [b.get_submodule(f_path) for b in blocks]
        self.blocks = blocks
        self.L, self.H = len(blocks), n_heads

    def _embed(self, ids):
        return self.model.get_input_embeddings()(ids)

    def capture(self, ids: torch.Tensor, grad_of=None):
        """Activations of one prompt (float64 copies): head [T, H, dh], mlp [T, d], neuron [T, F], and logits [T, V].
        With ``grad_of`` (a function of the logits [T, V]), also d value / d each activation by autograd."""
        acts, handles = {}, []
        for l in range(self.L):
            handles.append(self.o[l].register_forward_pre_hook(
                lambda m, a, k, l=l: acts.__setitem__(("head", l), a[0] if a else k["hidden_states"]),
                with_kwargs=True))
            handles.append(self.f[l].register_forward_pre_hook(lambda m, a, l=l: acts.__setitem__(("neuron", l), a[0])))
            handles.append(self.f[l].register_forward_hook(lambda m, a, o, l=l: acts.__setitem__(("mlp", l), o)))
            handles.append(self.blocks[l].register_forward_hook(
                lambda m, a, o, l=l: acts.__setitem__(("resid", l), o[0] if isinstance(o, tuple) else o)))
        T = ids.numel()
        try:
            with torch.enable_grad():
                emb = self._embed(ids[None]).detach().requires_grad_(grad_of is not None)
                logits = self.model(inputs_embeds=emb, use_cache=False).logits[0]
                grads = None
                if grad_of is not None:
                    keys = list(acts)
                    value = grad_of(logits)
                    gs = torch.autograd.grad(value, [acts[k] for k in keys], allow_unused=True)
                    grads = {k: self._shape(k, (torch.zeros_like(acts[k]) if g is None else g), T)
                             for k, g in zip(keys, gs)}
        finally:
            for h in handles:
                h.remove()
        out = {k: self._shape(k, v.detach(), T) for k, v in acts.items()}
        return out, logits.detach().double(), grads

    def _shape(self, key, x, T):
        x = x.double().reshape(T, -1)  # (OPT flattens [B*T, F] around its MLP)
        return x.reshape(T, self.H, -1) if key[0] == "head" else x

    @staticmethod
    def reference(clean: dict, corrupt: dict | None, ablation: str) -> dict:
        if ablation == "corrupted":
            return corrupt
        if ablation == "zero":
            return {k: torch.zeros_like(v) for k, v in clean.items()}
        return {k: v.mean(0, keepdim=True).expand_as(v).clone() for k, v in clean.items()}

    def masks(self, runs, T: int, F: list[int]):
        """Masks per run from component lists: head [B, L, T, H], mlp [B, L, T], neuron list of [B, T, F_l],
        resid [B, L, T]. A component is (kind, layer, index) at every position or (kind, layer, index, position)."""
        B = len(runs)
        head = torch.zeros(B, self.L, T, self.H, dtype=torch.bool)
        mlp = torch.zeros(B, self.L, T, dtype=torch.bool)
        resid = torch.zeros(B, self.L, T, dtype=torch.bool)
        neu = [torch.zeros(B, T, F[l], dtype=torch.bool) for l in range(self.L)]
        for b, run in enumerate(runs):
            for c in run:
                p = c[3] if len(c) > 3 else slice(None)
                if c[0] == "head":
                    head[b, c[1], p, c[2]] = True
                elif c[0] == "mlp":
                    mlp[b, c[1], p] = True
                elif c[0] == "resid":
                    resid[b, c[1], p] = True
                else:
                    neu[c[1]][b, p, c[2]] = True
        return head, mlp, neu, resid

    @torch.no_grad()
    def run_masks(self, ids, ref: dict, head, mlp, neu, metric, resid=None, chunk: int = 16) -> torch.Tensor:
        """The metric (float64 [B]) of the prompt with masked activations replaced by ``ref``."""
        out = []
        resid = torch.zeros_like(mlp) if resid is None else resid
        for s in range(0, head.shape[0], chunk):
            out.append(self._run_chunk(ids, ref, head[s:s + chunk], mlp[s:s + chunk],
                                       [n[s:s + chunk] for n in neu], metric, resid[s:s + chunk]))
        return torch.cat(out)

    def _run_chunk(self, ids, ref, head, mlp, neu, metric, resid):
        B, T = head.shape[0], ids.numel()
        handles = []
        for l in range(self.L):
            def o_pre(m, a, k, l=l):
                x = a[0] if a else k["hidden_states"]
                z = x.reshape(B, T, self.H, -1)
                z = torch.where(head[:, l, :, :, None], ref[("head", l)].to(x.dtype)[None], z).reshape(x.shape)
                return ((z, *a[1:]), k) if a else (a, {**k, "hidden_states": z})

            def f_pre(m, a, l=l):
                x = a[0]
                z = torch.where(neu[l], ref[("neuron", l)].to(x.dtype)[None], x.reshape(B, T, -1))
                return (z.reshape(x.shape), *a[1:])

            def f_post(m, a, o, l=l):
                z = torch.where(mlp[:, l, :, None], ref[("mlp", l)].to(o.dtype)[None], o.reshape(B, T, -1))
                return z.reshape(o.shape)

            def r_post(m, a, o, l=l):
                h = o[0] if isinstance(o, tuple) else o
                h = torch.where(resid[:, l, :, None], ref[("resid", l)].to(h.dtype)[None], h)
                return (h, *o[1:]) if isinstance(o, tuple) else h

            handles += [self.o[l].register_forward_pre_hook(o_pre, with_kwargs=True),
                        self.f[l].register_forward_pre_hook(f_pre), self.f[l].register_forward_hook(f_post),
                        self.blocks[l].register_forward_hook(r_post)]
        try:
            logits = self.model(input_ids=ids[None].expand(B, -1), use_cache=False).logits
        finally:
            for h in handles:
                h.remove()
        return metric(logits.double())


def component_id(c) -> str:
    """The library's id of an oracle component tuple (its documented syntax, written out here)."""
    base = {"head": f"L{c[1]}.H{c[2]}", "mlp": f"L{c[1]}.MLP", "neuron": f"L{c[1]}.N{c[2]}",
            "resid": f"L{c[1]}.R"}[c[0]]
    return base if len(c) == 3 else f"{base}@{c[3]}"


def metric_fn(position: int, target: int, foil: int | None):
    """logit(target) - logit(foil) at ``position`` of logits [..., T, V]; log p(target) without a foil."""
    def m(logits):
        row = logits[..., position, :].double()
        if foil is None:
            return row.log_softmax(-1)[..., target]
        return row[..., target] - row[..., foil]
    return m


def route_keep(route, T: int, L: int, H: int):
    """Head/MLP keep masks [L, T, H], [L, T] decoded by hand from a route's arrays (node id = block * T + token;
    edge kinds: 0 residual, 1 attention, 2 mlp; an edge's update lands at its target's token)."""
    keep_h = torch.zeros(L, T, H, dtype=torch.bool)
    keep_m = torch.zeros(L, T, dtype=torch.bool)
    for e in range(len(route.src)):
        tok, layer, kind = int(route.dst[e]) % T, int(route.layer[e]), int(route.kind[e])
        if kind == 1:
            keep_h[layer, tok] |= torch.as_tensor(route.heads[e] > 0)
        elif kind == 2:
            keep_m[layer, tok] = True
    return keep_h, keep_m


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra = a.double().argsort().argsort().double()
    rb = b.double().argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def top_overlap(a: torch.Tensor, b: torch.Tensor, k: int) -> int:
    return len(set(a.abs().topk(k).indices.tolist()) & set(b.abs().topk(k).indices.tolist()))


def compare(ex, model, family, ids, cids, position, target, foil, *, ablations=("zero", "mean", "corrupted"),
            all_heads=True, head_layers=None, n_neurons=3, tau=0.01, corrupted_text=None, log=print):
    """Every comparison for one prompt; returns {name: max abs diff} (and prints each)."""
    from lmtt_widgets.methods.base import Component
    from lmtt_widgets.widgets.scoring import Settings, exact_patch

    tr = ex.trace
    H, L, T = tr.n_heads, tr.n_layers, tr.n_tokens
    orc = Oracle(model, family, H)
    metric = metric_fn(position, target, foil)
    clean, logits, grads = orc.capture(ids, grad_of=metric)
    corrupt = orc.capture(cids)[0]
    F = [clean[("neuron", l)].shape[1] for l in range(L)]
    layers = range(L) if head_layers is None else head_layers
    comps = [("head", l, h) for l in layers for h in range(H)] + [("mlp", l, None) for l in range(L)]
    comps += [("neuron", l, (7 * l + 3 * i) % F[l]) for l in range(L) for i in range(n_neurons)]
    # one position each too (the prompt's 3rd token and the metric's), and residual nodes
    at = [2, position]
    comps += [(k, l, i, p) for p in at for k, l, i in [("head", L - 1, H - 1), ("mlp", 0, None),
                                                       ("neuron", L - 1, 5), ("resid", 0, None)]]
    name = component_id
    res = {}

    def record(key, diff):
        res[key] = float(diff)
        log(f"  {key:<42} max|diff| {float(diff):.3e}")

    # the metric itself, against the logits the oracle's plain forward gave
    lib = float(ex.score("activation_patching", components=["L0.MLP"], target=target, foil=foil,
                         position=position, ablation="zero").extra["clean"])
    record("metric clean (ex.patch extra)", abs(lib - float(metric(logits))))
    from lmtt_widgets.methods.targets import make_metric
    for f in (foil, None):
        mo = make_metric(ex, target, f, position)
        record(f"metric {'logit diff' if f is not None else 'log p'} @pos{position} (make_metric)",
               abs(float(mo(tr.logits)) - float(metric_fn(position, target, f)(logits))))
    kw = dict(target=target, foil=foil, position=position)
    for abl in ablations:
        ref = orc.reference(clean, corrupt, abl)
        opts = dict(corrupted=corrupted_text if abl == "corrupted" else None, ablation=abl)
        base = float(metric(logits))
        # single components
        head_m, mlp_m, neu_m, res_m = orc.masks([[c] for c in comps], T, F)
        truth = base - orc.run_masks(ids, ref, head_m, mlp_m, neu_m, metric, res_m)
        tab = ex.patch([name(c) for c in comps], **opts, **kw)
        got = torch.tensor([tab[name(c)] for c in comps], dtype=torch.float64)
        for kind in ("head", "mlp", "neuron", "resid"):
            sel = torch.tensor([c[0] == kind for c in comps])
            record(f"{abl:<9} patch {kind}s ({int(sel.sum())}, {len(at)} @position)",
                   (got[sel] - truth[sel]).abs().max())
        if foil is not None:  # the widget's Check: the target is always the prediction there
            pred = int(logits[position].argmax())
            if pred == target:
                st = Settings(position=position, foil=foil, corrupted=corrupted_text or "", ablation=abl)
                chk = exact_patch(ex, [name(c) for c in comps[:H + 1]], st)
                g2 = torch.tensor([chk[name(c)] for c in comps[:H + 1]], dtype=torch.float64)
                record(f"{abl:<9} widget Check ({H + 1})", (g2 - truth[:H + 1]).abs().max())
        # together: two heads of different layers, the last MLP and a neuron
        group = [("head", 0, 1 % H), ("head", L - 1, (H - 1)), ("mlp", L - 1, None), comps[-1], comps[-2]]
        gm = orc.masks([group], T, F)
        t_eff = base - float(orc.run_masks(ids, ref, *gm[:3], metric, gm[3])[0])
        lib_eff = ex.patch([name(c) for c in group], **opts, **kw, together=True)["effect"]
        record(f"{abl:<9} patch_together ({len(group)})", abs(lib_eff - t_eff))
        # faithfulness of the route at tau
        fa = ex.faithfulness([tau], **opts, **kw)
        kh, km = route_keep(ex.route(position, tau), T, L, H)
        hm = torch.stack([torch.ones(L, T, H, dtype=torch.bool), ~kh])
        mm = torch.stack([torch.ones(L, T, dtype=torch.bool), ~km])
        nm = [torch.zeros(2, T, F[l], dtype=torch.bool) for l in range(L)]
        vals = orc.run_masks(ids, ref, hm, mm, nm, metric)
        frac = (vals[1] - vals[0]) / (base - vals[0])
        record(f"{abl:<9} faithfulness tau={tau} kept", abs(fa.kept[0] - float(vals[1])))
        record(f"{abl:<9} faithfulness all-ablated", abs(fa.ablated - float(vals[0])))
        record(f"{abl:<9} faithfulness fraction", abs(fa.fraction[0] - float(frac)))
        # attribution patching: grad x (clean - ref)
        ap = ex.attribution_patching(**opts, **kw, neurons=True)
        est, comps_all, comps = [], comps, [c for c in comps if len(c) == 3]  # (AP scores all positions)
        for c in comps:
            k = (c[0], c[1])
            d = (clean[k] - ref[k]) * grads[k]
            est.append(d[:, c[2]].sum() if c[0] in ("head", "neuron") else d.sum())
        est = torch.stack(est)
        got = torch.tensor([ap[name(c)] for c in comps], dtype=torch.float64)
        for kind in ("head", "mlp", "neuron"):
            sel = torch.tensor([c[0] == kind for c in comps])
            record(f"{abl:<9} attribution patching {kind}s", (got[sel] - est[sel]).abs().max())
        comps = comps_all
        # faithfulness_of_top: the table's top-k heads (|score|) kept clean at every position, every other head
        # ablated, MLPs clean
        from lmtt_widgets.methods.causal import faithfulness_of_top
        k = 2
        heads_ap = [(c, float(v)) for c, v in zip(comps, got) if c[0] == "head"]
        keep = sorted(heads_ap, key=lambda cv: -abs(cv[1]))[:k]
        hm = torch.ones(2, L, T, H, dtype=torch.bool)
        for c, _ in keep:
            hm[1, c[1], :, c[2]] = False
        mm = torch.zeros(2, L, T, dtype=torch.bool)
        vals2 = orc.run_masks(ids, ref, hm, mm, nm, metric)
        ft = faithfulness_of_top(ex, ap, [k], **opts)
        record(f"{abl:<9} faithfulness_of_top k={k} kept", abs(ft.kept[0] - float(vals2[1])))
        log(f"  {abl:<9} (scale: max|effect| {truth.abs().max():.3e}, max|estimate| {est.abs().max():.3e}, "
            f"together {abs(t_eff):.3e}, faithfulness kept {float(vals[1]):.3e} of clean {base:.3e})")
        keep = torch.tensor([len(c) == 3 for c in comps])
        res[f"{abl}:truth"], res[f"{abl}:attrib"] = truth[keep], est
    res["comps"] = [c for c in comps if len(c) == 3]
    return res


def edge_compare(ex, model, ids, cids, position, target, foil, corrupted_text, log=print):
    """Edges j -> i through head h (llama-style modules only: v_proj, eager attention weights): removing one
    subtracts A_h[i, j] v_j^h from head h's signal at i; corrupted puts the corrupted prompt's message in its place.
    Exact (ex.patch) and first-order (attribution_patching(edges=route)) against this oracle."""
    tr = ex.trace
    H, L, T = tr.n_heads, tr.n_layers, tr.n_tokens
    orc = Oracle(model, "llama", H)
    metric = metric_fn(position, target, foil)
    clean, logits, grads = orc.capture(ids, grad_of=metric)

    def messages(x):  # attention [L, H, T, T] and values [L, T, H, dh] of one prompt
        vs, hs = [], []
        for l in range(L):
            v = model.get_submodule("model.layers")[l].self_attn.v_proj
            hs.append(v.register_forward_hook(lambda m, a, o: vs.append(o.detach().double())))
        try:
            with torch.no_grad():
                out = model(input_ids=x[None], output_attentions=True, use_cache=False)
        finally:
            for h in hs:
                h.remove()
        att = torch.stack([a[0].double() for a in out.attentions])
        val = torch.stack([v[0].reshape(T, -1, tr.head_dim) for v in vs])
        return att, val.repeat_interleave(H // val.shape[2], dim=2)

    (ac, vc), (ax, vx) = messages(ids), messages(cids)
    base = float(metric(logits))
    res = {}
    for tau in (0.01, 0.005, 0.002, 0.001):  # the first route with attention edges (tiny random models are sparse)
        route = ex.route(position, tau)
        pairs = sorted({(int(route.layer[e]), int(route.src[e]) % T, int(route.dst[e]) % T)
                        for e in range(len(route.src)) if int(route.kind[e]) == 1})[:6]
        if pairs:
            break
    else:
        raise AssertionError("no route down to tau=0.001 has an attention edge to check")
    for abl in ("zero", "corrupted"):
        runs, names, ests = [], [], []
        for l, j, i in pairs:
            delta = torch.zeros(T, H, tr.head_dim, dtype=torch.float64)
            for h in range(H):
                msg = ac[l, h, i, j] * vc[l, j, h]
                if abl == "corrupted":
                    msg = msg - ax[l, h, i, j] * vx[l, j, h]
                delta[i, h] = -msg
            for hsel, nm in [(0, f"L{l}.H0 {j}>{i}"), (None, f"L{l} {j}>{i}")]:
                d = delta.clone()
                if hsel is not None:
                    d[:, [h for h in range(H) if h != hsel]] = 0
                runs.append((l, d))
                names.append(nm)
            ests.append(float((delta * grads[("head", l)]).sum().neg()))  # (clean - ref) . g, head-summed
        vals = []
        for l, d in runs:
            hook = orc.o[l].register_forward_pre_hook(
                lambda m, a, k, d=d: (((a[0] + d.reshape(T, -1).to(a[0].dtype)[None]), *a[1:]), k)
                if a else (a, {**k, "hidden_states": k["hidden_states"] + d.reshape(T, -1)[None]}),
                with_kwargs=True)
            try:
                with torch.no_grad():
                    vals.append(base - float(metric(model(input_ids=ids[None], use_cache=False).logits.double())[0]))
            finally:
                hook.remove()
        opts = dict(corrupted=corrupted_text if abl == "corrupted" else None, ablation=abl, target=target,
                    foil=foil, position=position)
        tab = ex.patch(names, **opts)
        diff = max(abs(tab[n] - v) for n, v in zip(names, vals))
        res[f"{abl} edge patch"] = diff
        log(f"  {abl:<9} {'edge patch (' + str(len(names)) + ')':<32} max|diff| {diff:.3e}  "
            f"(scale max|effect| {max(abs(v) for v in vals):.3e})")
        ap = ex.attribution_patching(**opts, edges=route)
        diff = max(abs(ap[f"L{l} {j}>{i}"] - e) for (l, j, i), e in zip(pairs, ests))
        res[f"{abl} edge attribution"] = diff
        log(f"  {abl:<9} {'edge attribution (' + str(len(pairs)) + ')':<32} max|diff| {diff:.3e}  "
            f"(scale max|estimate| {max(abs(e) for e in ests):.3e})")
    return res


def tiny_case(family, prompt_key, log=print, edges=False, **kw):
    import tiny_models as tm
    from lmtt_widgets import explain, load_model

    model = tm.build(family, dtype=torch.float64, attn="eager")
    lm = load_model(model, tm.ToyTokenizer())
    text, corrupt = TINY_PROMPTS[prompt_key]
    ex = explain(lm, text)
    ids = tm.ToyTokenizer()(text).input_ids[0]
    cids = tm.ToyTokenizer()(corrupt).input_ids[0]
    pos = ex.n_tokens - 3  # not the last position
    with torch.no_grad():
        row = model(input_ids=ids[None]).logits[0, pos]
    target, foil = [int(i) for i in row.topk(2).indices]
    log(f"{family} / {prompt_key}: {ex.n_tokens} tokens, position {pos}, target {target}, foil {foil}")
    res = compare(ex, model, family, ids, cids, pos, target, foil, corrupted_text=corrupt, log=log, **kw)
    if edges:
        res.update(edge_compare(ex, model, ids, cids, pos, target, foil, corrupt, log=log))
    return res


SMOL_PROMPTS = [  # (clean, corrupted, foil), IOI-style with names not in the test suite
    ("When Sarah and Tom arrived at the party, Tom handed the cake to", "When Emma and Jack arrived at the party, "
     "Mike handed the cake to", " Tom"),
    ("After Lucy and David finished lunch, David passed the salt to", "After Anna and Peter finished lunch, Chris "
     "passed the salt to", " David"),
    ("The Eiffel Tower is located in the city of", "The Colosseum is located in the city of", " Rome"),
    ("def square(x):\n    return x *", "def double(x):\n    return x +", " 2"),
]


# the README's own IOI prompt (its agreement numbers are re-measured here, not an unseen prompt)
README_PROMPT = ("When Mary and John went to the store, John gave a drink to",
                 "When Alice and Bob went to the store, Carl gave a drink to", " John")


def smol_case(lm, clean, corrupt, foil, log=print, **kw):
    from lmtt_widgets import explain

    ex = explain(lm, clean)
    tok = lm.tokenizer
    ids = ex.trace.input_ids
    cids = torch.tensor(tok(corrupt, add_special_tokens=False).input_ids)
    if cids.numel() != ids.numel():
        log(f"SKIP {clean!r}: corrupted has {cids.numel()} tokens, clean {ids.numel()}")
        return None
    pos = ex.n_tokens - 1
    target = int(ex.trace.logits[pos].argmax())
    fid = tok(foil, add_special_tokens=False).input_ids
    fid = fid[0] if len(fid) == 1 and fid[0] != target else int(ex.trace.logits[pos].topk(2).indices[1])
    log(f"SmolLM2 {clean!r}: {ex.n_tokens} tokens, target {tok.decode([target])!r}, foil {tok.decode([fid])!r}")
    return compare(ex, lm.model, "llama", ids, cids, pos, target, fid, corrupted_text=corrupt, log=log, **kw)


def main(tiny_only: bool):
    worst = 0.0
    t0 = time.time()
    for fam in ("llama", "gpt2", "gpt_neox", "gptj", "phi", "qwen2", "gemma", "opt"):
        for key in TINY_PROMPTS:
            r = tiny_case(fam, key, edges=fam in ("llama", "qwen2", "gemma"))
            worst = max(worst, max(v for k, v in r.items() if isinstance(v, float)))
    print(f"tiny float64 families: worst max|diff| {worst:.3e} ({time.time() - t0:.0f} s)")
    if tiny_only:
        return
    from lmtt_widgets import load_model

    lm = load_model("smollm2")
    for i, (clean, corrupt, foil) in enumerate(SMOL_PROMPTS + [README_PROMPT]):
        ioi = i < 2 or i == len(SMOL_PROMPTS)
        r = smol_case(lm, clean, corrupt, foil, ablations=("corrupted",) if ioi else ("zero", "mean", "corrupted"),
                      head_layers=None if ioi else [0, 15, 29], n_neurons=2)
        if r is None:
            continue
        if ioi:
            H = lm.model.config.num_attention_heads
            heads = torch.tensor([c[0] == "head" for c in r["comps"]])
            truth, est = r["corrupted:truth"][heads], r["corrupted:attrib"][heads]
            print(f"  RANK heads ({int(heads.sum())}, H={H}): Spearman(signed) {spearman(truth, est):.3f}, "
                  f"Spearman(|.|) {spearman(truth.abs(), est.abs()):.3f}, top-5 overlap {top_overlap(truth, est, 5)}"
                  f"/5, top-10 overlap {top_overlap(truth, est, 10)}/10")
            top = truth.abs().topk(5).indices.tolist()
            print("  exact top 5 (layer, head), exact, estimate:",
                  [(divmod(j, H), round(float(truth[j]), 3), round(float(est[j]), 3)) for j in top])
    print(f"total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main("--tiny" in sys.argv)
