"""An independent reference for Information Flow Routes (Ferrando & Voita, 2024) and activation patching.

Written from the method's definition and LM-TT's public conventions (facebookresearch/llm-transparency-tool,
routes/contributions.py and routes/graph.py), with plain PyTorch hooks on the Hugging Face model, in float64, using
nothing from lmtt_widgets. Used by tests/test_oracle_round6.py and benchmarks/oracle_round6.py.

Per layer l and target token i:
- attention update: y = residual after attention (parallel blocks: the block output); parts: the residual x_i,
  one part per (source j, head h) = A_h[i, j] * v_j W_O,h (post-norm families: times the post-norm's frozen scale),
  the output bias (own part, "project" convention only), and the MLP output for parallel blocks;
- MLP update (sequential): y = block output, parts: residual after attention, MLP output.
Proximity = ||y||_1 - ||y - part||_1, then
- convention "lmtt": clip(min=1e-5) over every part including future (zero) sources, bias not a part (LM-TT);
- convention "project": clip(min=0) over the non-zero parts, bias a part, an update with no positive proximity split
  evenly over its non-zero parts (lmtt_widgets' documented choice).
The route: LM-TT's apply_threshold_and_renormalize per update, then every edge of weight > tau reachable backwards
from the top node of the target (build_paths_to_predictions).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch

LMTT_EPS = 1e-5
PARALLEL = {"gpt_neox", "gptj", "phi"}


# ----------------------------------------------------------------------------------------------- architecture
@dataclass
class Arch:
    layers: list
    v_module: callable  # block -> module whose output holds the values
    v_slice: callable  # (output [T, *], cfg) -> [T, n_kv, dh]
    o_module: callable  # block -> output projection (Linear or Conv1D)
    mlp_module: callable  # block -> module whose output is the MLP's write into the residual
    post_attn_norm: callable | None  # block -> post-norm after o_proj (gemma2) or None
    parallel: bool
    final_norm: torch.nn.Module
    n_heads: int
    n_kv: int
    head_dim: int


def _cfg(model, *names):
    for n in names:
        v = getattr(model.config, n, None)
        if v is not None:
            return v
    raise AttributeError(names)


def arch(model) -> Arch:
    cfg = model.config
    mt = cfg.model_type
    H = _cfg(model, "num_attention_heads", "n_head")
    D = _cfg(model, "hidden_size", "n_embd")
    dh = getattr(cfg, "head_dim", None) or D // H
    KV = getattr(cfg, "num_key_value_heads", None) or H
    post = None
    if mt == "gpt2":
        layers, fn = model.transformer.h, model.transformer.ln_f
        v_mod, o_mod, mlp = (lambda b: b.attn.c_attn), (lambda b: b.attn.c_proj), (lambda b: b.mlp)
        v_sl = lambda out: out[..., 2 * D:3 * D].reshape(out.shape[0], H, dh)  # noqa: E731
    elif mt == "opt":
        layers, fn = model.model.decoder.layers, model.model.decoder.final_layer_norm
        v_mod, o_mod, mlp = (lambda b: b.self_attn.v_proj), (lambda b: b.self_attn.out_proj), (lambda b: b.fc2)
        v_sl = lambda out: out.reshape(out.shape[0], KV, dh)  # noqa: E731
    elif mt == "gpt_neox":
        layers, fn = model.gpt_neox.layers, model.gpt_neox.final_layer_norm
        v_mod, o_mod, mlp = (lambda b: b.attention.query_key_value), (lambda b: b.attention.dense), (lambda b: b.mlp)
        v_sl = lambda out: out.reshape(out.shape[0], H, 3 * dh)[..., 2 * dh:]  # noqa: E731
    elif mt == "gptj":
        layers, fn = model.transformer.h, model.transformer.ln_f
        v_mod, o_mod, mlp = (lambda b: b.attn.v_proj), (lambda b: b.attn.out_proj), (lambda b: b.mlp)
        v_sl = lambda out: out.reshape(out.shape[0], H, dh)  # noqa: E731
    elif mt == "phi":
        layers, fn = model.model.layers, model.model.final_layernorm
        v_mod, o_mod, mlp = (lambda b: b.self_attn.v_proj), (lambda b: b.self_attn.dense), (lambda b: b.mlp)
        v_sl = lambda out: out.reshape(out.shape[0], KV, dh)  # noqa: E731
    elif mt == "phi3":
        layers, fn = model.model.layers, model.model.norm
        v_mod, o_mod, mlp = (lambda b: b.self_attn.qkv_proj), (lambda b: b.self_attn.o_proj), (lambda b: b.mlp)
        v_sl = lambda out: out[..., (H + KV) * dh:].reshape(out.shape[0], KV, dh)  # noqa: E731
    elif mt in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text"):
        layers, fn = model.model.layers, model.model.norm
        v_mod, o_mod = (lambda b: b.self_attn.v_proj), (lambda b: b.self_attn.o_proj)
        v_sl = lambda out: out.reshape(out.shape[0], KV, dh)  # noqa: E731
        if mt in ("gemma2", "gemma3_text"):
            mlp, post = (lambda b: b.post_feedforward_layernorm), (lambda b: b.post_attention_layernorm)
        else:
            mlp = lambda b: b.mlp  # noqa: E731
    else:
        raise NotImplementedError(mt)
    return Arch(list(layers), v_mod, v_sl, o_mod, mlp, post, mt in PARALLEL, fn, H, KV, dh)


def head_weights(o: torch.nn.Module, H: int, dh: int):
    """(W [H, dh, D] such that a head's write is z_h @ W[h], bias [D] or None) of an output projection."""
    if type(o).__name__ == "Conv1D":  # x @ weight + bias, weight [in, out]
        W = o.weight
    else:  # Linear: x @ weight.T + bias
        W = o.weight.t()
    return W.reshape(H, dh, -1).double(), (None if o.bias is None else o.bias.double())


def _rms_scale(norm: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """[T, D] frozen scale of a Gemma-style RMSNorm at input x: (1 + w) / sqrt(mean(x^2) + eps)."""
    eps = getattr(norm, "eps", None) or getattr(norm, "variance_epsilon")
    rstd = torch.rsqrt(x.double().pow(2).mean(-1, keepdim=True) + eps)
    return rstd * (1 + norm.weight.double())


# --------------------------------------------------------------------------------------------------- capture
@dataclass
class Layer:
    x: torch.Tensor  # [T, D] block input
    y_attn: torch.Tensor  # [T, D] residual after attention (parallel: block output)
    out: torch.Tensor  # [T, D] block output
    mlp_out: torch.Tensor  # [T, D] MLP write
    vw: torch.Tensor  # [T, H, D] v_j,h W_O,h (times the post-norm scale of target i: applied later)
    attn: torch.Tensor  # [H, T, T]
    bias: torch.Tensor | None  # [T, D] the output bias's write at each target (post-norm scaled)
    post_scale: torch.Tensor | None  # [T, D]
    identity_err: float = 0.0  # |x + sum parts + bias - y_attn| max (self-check of the decomposition)


@dataclass
class Capture:
    ids: torch.Tensor
    layers: list[Layer] = field(default_factory=list)
    logits: torch.Tensor | None = None
    final_in: torch.Tensor | None = None


def _first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def _seq(t: torch.Tensor) -> torch.Tensor:
    """[T, ...] of a recorded batch-1 tensor (OPT's MLP runs on [T, D], the others on [1, T, D])."""
    return t[0] if t.dim() == 3 else t


@torch.no_grad()
def capture(model, ids: torch.Tensor) -> Capture:
    """One forward pass of ``model`` on ``ids`` [T] with eager attention, recording what the method needs."""
    a = arch(model)
    saved = {}
    hooks = []

    def keep(name, fn=lambda m, i, o: _first(o)):
        def hook(m, inp, out):
            saved[name] = fn(m, inp, out).detach()
        return hook

    for l, b in enumerate(a.layers):
        hooks.append(b.register_forward_pre_hook(
            lambda m, args, kwargs, l=l: saved.__setitem__(("x", l), (args[0] if args else kwargs["hidden_states"])
                                                          .detach()), with_kwargs=True))
        hooks.append(b.register_forward_hook(keep(("out", l))))
        hooks.append(a.v_module(b).register_forward_hook(keep(("v", l))))
        hooks.append(a.o_module(b).register_forward_hook(keep(("o_out", l))))
        hooks.append(a.o_module(b).register_forward_pre_hook(
            lambda m, args, l=l: saved.__setitem__(("z", l), args[0].detach())))
        hooks.append(a.mlp_module(b).register_forward_hook(keep(("mlp", l))))
    hooks.append(a.final_norm.register_forward_pre_hook(
        lambda m, args: saved.__setitem__("final_in", args[0].detach())))
    impl = model.config._attn_implementation
    try:
        model.set_attn_implementation("eager")
        res = model(input_ids=ids.view(1, -1), output_attentions=True, use_cache=False)
    finally:
        for h in hooks:
            h.remove()
        model.set_attn_implementation(impl)
    cap = Capture(ids=ids.view(-1), logits=res.logits[0].double(), final_in=saved["final_in"][0].double())
    H, KV, dh = a.n_heads, a.n_kv, a.head_dim
    for l, b in enumerate(a.layers):
        x, out = saved[("x", l)][0].double(), saved[("out", l)][0].double()
        T = x.shape[0]
        v = a.v_slice(saved[("v", l)][0].double())  # [T, KV or H, dh]
        v = v.repeat_interleave(H // v.shape[1], dim=1)  # GQA: head h reads kv head h // (H / KV)
        A = res.attentions[l][0].double()  # [H, T, T]
        z = torch.einsum("hij,jhd->ihd", A, v)
        z_model = saved[("z", l)][0].double().reshape(T, H, dh)
        err_z = (z - z_model).abs().max().item() / max(z_model.abs().max().item(), 1e-30)
        W, bo = head_weights(a.o_module(b), H, dh)
        vw = torch.einsum("jhd,hdk->jhk", v, W)  # [T, H, D]
        mlp_out = _seq(saved[("mlp", l)]).double()
        post = None
        if a.post_attn_norm is not None:
            post = _rms_scale(a.post_attn_norm(b), saved[("o_out", l)][0])
        if a.parallel:
            y_attn = out
        else:
            y_attn = out - mlp_out
        bias = None
        if bo is not None:
            bias = bo.expand(T, -1) * (post if post is not None else 1)
        recon = torch.einsum("hij,jhk->ik", A, vw)
        if post is not None:
            recon = recon * post
        recon = x + recon + (bias if bias is not None else 0) + (mlp_out if a.parallel else 0)
        err = (recon - y_attn).abs().max().item() / max(y_attn.abs().max().item(), 1e-30)
        cap.layers.append(Layer(x, y_attn, out, mlp_out, vw, A, bias, post, max(err, err_z)))
    return cap


# ------------------------------------------------------------------------------------------------ importances
@dataclass
class Scores:
    """Importances per layer, float64. heads[l]: [T(i), T(j), H] (0 for j > i)."""

    resid_attn: list
    bias_attn: list
    heads: list
    mlp: list
    resid_mlp: list  # None for parallel blocks
    cancel_attn: list
    cancel_mlp: list
    convention: str
    parallel: bool


def _prox(y, part):
    return y.abs().sum(-1) - (y - part).abs().sum(-1)


def _normalise(proxs: list[torch.Tensor], nonzero: list[torch.Tensor], convention: str, n_missing=None):
    """proxs: list of [T, ...] raw proximities (any sign); returns importances and the cancelling mask."""
    T = proxs[0].shape[0]
    flat = [p.reshape(T, -1) for p in proxs]
    nz = [m.reshape(T, -1) for m in nonzero]
    if convention == "lmtt":
        cl = [p.clamp_min(LMTT_EPS) for p in flat]
        total = sum(c.sum(-1) for c in cl) + (LMTT_EPS * n_missing if n_missing is not None else 0)
        out = [c / total[:, None] for c in cl]
        cancel = sum((p > LMTT_EPS).sum(-1) for p in flat) == 0
    else:
        cl = [p.clamp_min(0) * m for p, m in zip(flat, nz)]
        total = sum(c.sum(-1) for c in cl)
        cancel = total <= 0
        out = [c / total.clamp_min(1e-300)[:, None] for c in cl]
        count = sum(m.sum(-1) for m in nz).clamp_min(1)
        for c, m in zip(out, nz):
            c[cancel] = (m[cancel].double() / count[cancel, None])
    return [o.reshape(p.shape) for o, p in zip(out, proxs)], cancel


def scores(cap: Capture, convention: str = "project", *, chunk: int = 2**24) -> Scores:
    parallel = cap.layers[0].y_attn is cap.layers[0].out
    s = Scores([], [], [], [], [], [], [], convention, parallel)
    for L in cap.layers:
        T, H, D = L.vw.shape
        y = L.y_attn
        p_res = _prox(y, L.x)
        p_heads = torch.empty(T, T, H, dtype=torch.float64)
        step = max(1, chunk // (T * H * D))
        for a in range(0, T, step):
            b = min(T, a + step)
            part = L.attn[:, a:b, :].permute(1, 2, 0)[..., None] * L.vw[None]  # [i, j, H, D]
            if L.post_scale is not None:
                part = part * L.post_scale[a:b, None, None, :]
            p_heads[a:b] = _prox(y[a:b, None, None, :], part)
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        nz_heads = (L.attn.permute(1, 2, 0) != 0) & causal[..., None]
        proxs, nzs = [p_res[:, None]], [torch.ones(T, 1, dtype=torch.bool)]
        if convention == "lmtt":
            # every (source, head) pair is a part, future ones are zero vectors (proximity 0 -> floor)
            proxs.append(torch.where(causal[..., None], p_heads, torch.zeros(())))
            nzs.append(torch.ones(T, T, H, dtype=torch.bool))
        else:
            proxs.append(torch.where(causal[..., None], p_heads, torch.zeros(())))
            nzs.append(nz_heads)
            if L.bias is not None:
                proxs.append(_prox(y, L.bias)[:, None])
                nzs.append(torch.full((T, 1), bool((L.bias != 0).any())))
        if parallel:
            proxs.append(_prox(y, L.mlp_out)[:, None])
            nzs.append((L.mlp_out != 0).any(-1, keepdim=True))
        imps, cancel = _normalise(proxs, nzs, convention)
        s.resid_attn.append(imps[0][:, 0])
        s.heads.append(imps[1])  # ("lmtt": future sources hold the floor's share, as in LM-TT's c_attn)
        s.bias_attn.append(imps[2][:, 0] if (convention != "lmtt" and L.bias is not None)
                           else torch.zeros(T, dtype=torch.float64))
        s.mlp.append(imps[-1][:, 0] if parallel else None)
        s.cancel_attn.append(cancel)
        if not parallel:
            resid_mid = L.out - L.mlp_out
            pm = [_prox(L.out, L.mlp_out)[:, None], _prox(L.out, resid_mid)[:, None]]
            nzm = [(L.mlp_out != 0).any(-1, keepdim=True), (resid_mid != 0).any(-1, keepdim=True)]
            (m, r), cm = _normalise(pm, nzm, convention)
            s.mlp[-1] = m[:, 0]
            s.resid_mlp.append(r[:, 0])
            s.cancel_mlp.append(cm)
        else:
            s.resid_mlp.append(None)
            s.cancel_mlp.append(None)
    return s


# ------------------------------------------------------------------------------------------------------ route
def _keep(v, tau):
    return v * (v > tau)


def route_edges(s: Scores, target: int, tau: float) -> dict:
    """{(src node, dst node): weight} of LM-TT's route (residual and self-attention edges merged, as LM-TT does).

    Nodes: ("X", -1, t) embedding, ("A", l, t) after attention, ("M", l, t) MLP, ("I", l, t) after the layer.
    Per update: parts > tau kept, renormalised (nothing kept: no edge); then every edge > tau reachable backwards
    from ("I", L-1, target)."""
    L = len(s.heads)
    edges: dict = {}

    def add(u, v, w):
        edges[(u, v)] = edges.get((u, v), 0.0) + w

    def below(l, t):
        return ("X", -1, t) if l == 0 else ("I", l - 1, t)

    # backward search over nodes, building edges per update lazily (as LM-TT's full graph, filtered by > tau)
    stack, seen = [("I", L - 1, target)], set()
    out: dict = {}
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        kind, l, i = node
        incoming = {}
        if kind == "I" and not s.parallel:
            m, r = float(_keep(s.mlp[l][i], tau)), float(_keep(s.resid_mlp[l][i], tau))
            tot = m + r
            if tot > 0:
                incoming[("M", l, i)] = m / tot
                incoming[("A", l, i)] = r / tot
        elif kind == "M":
            if s.parallel:
                w = _attn_update(s, l, i, tau)[2]
                incoming[below(l, i)] = w
            else:
                m, r = float(_keep(s.mlp[l][i], tau)), float(_keep(s.resid_mlp[l][i], tau))
                tot = m + r
                incoming[("A", l, i)] = m / tot if tot > 0 else 0.0
        elif (kind == "A") or (kind == "I" and s.parallel):
            r, src, m = _attn_update(s, l, i, tau)
            for j, w in src.items():
                incoming[below(l, j)] = incoming.get(below(l, j), 0.0) + w
            incoming[below(l, i)] = incoming.get(below(l, i), 0.0) + r
            if s.parallel:
                incoming[("M", l, i)] = m
        for u, w in incoming.items():
            if w > tau:
                out[(u, node)] = w
                stack.append(u)
    return out


def _attn_update(s: Scores, l: int, i: int, tau: float):
    r = float(_keep(s.resid_attn[l][i], tau))
    heads = _keep(s.heads[l][i], tau)  # [T, H] ("lmtt": future sources hold the floor's share, as in LM-TT)
    b = float(_keep(s.bias_attn[l][i], tau))
    m = float(_keep(s.mlp[l][i], tau)) if s.parallel else 0.0
    tot = r + float(heads.sum()) + b + m
    if tot <= 0:
        return 0.0, {}, 0.0
    per_src = heads.sum(-1) / tot
    return r / tot, {j: float(per_src[j]) for j in per_src.nonzero().flatten().tolist()}, m / tot


# ------------------------------------------------------------------------ reading lmtt_widgets' public outputs
_KIND = {0: "X", 1: "A", 2: "M", 3: "I"}


def project_route_edges(ex, target: int, tau: float, granularity: str = "head") -> dict:
    """{(src node, dst node): weight} of ``ex.route``, nodes as in :func:`route_edges`, parallel edges merged."""
    r = ex.route(target=target, threshold=tau, granularity=granularity)
    T = r.n_tokens
    out: dict = {}

    def node(nid):
        block, t = divmod(int(nid), T)
        if block == 0:
            return ("X", -1, t)
        layer, kind = divmod(block - 1, 3)
        return (_KIND[kind + 1], layer, t)

    for s, d, w in zip(r.src, r.dst, r.weight):
        key = (node(s), node(d))
        out[key] = out.get(key, 0.0) + float(w)
    return out


def project_arrays(ex) -> dict:
    """Per-layer arrays of ``ex.scores`` as dense float64 tensors, keyed like :func:`oracle_arrays`."""
    out = {k: [] for k in ("resid_attn", "bias_attn", "mlp", "resid_mlp", "head_total", "edge", "head")}
    H = ex.n_heads
    for ls in ex.scores.layers:
        T = ls.resid_attn.shape[0]
        out["resid_attn"].append(ls.resid_attn.double())
        out["bias_attn"].append(ls.bias_attn.double())
        out["mlp"].append(ls.mlp.double())
        out["resid_mlp"].append(None if ls.resid_mlp is None else ls.resid_mlp.double())
        out["head_total"].append(ls.head_total.double())
        e = torch.zeros(T, T, dtype=torch.float64)
        for i in range(T):
            e[i, : i + 1] = ls.edge_row(i).double()
        out["edge"].append(e)
        h = torch.zeros(T, T * H, dtype=torch.float64)
        for i in range(T):
            c, v = ls.head_row(i)
            h[i, c.long()] = v.double()
        out["head"].append(h.reshape(T, T, H))
    return out


def oracle_arrays(s: Scores) -> dict:
    causal = [torch.ones(h.shape[:2], dtype=torch.bool).tril()[..., None] for h in s.heads]
    return {"resid_attn": s.resid_attn, "bias_attn": s.bias_attn, "mlp": s.mlp, "resid_mlp": s.resid_mlp,
            "head_total": [h.sum(1) for h in s.heads], "edge": [(h * c).sum(-1) for h, c in zip(s.heads, causal)],
            "head": [h * c for h, c in zip(s.heads, causal)]}


def max_diffs(proj: dict, ora: dict) -> dict:
    """Max abs difference per array over all layers. 'head' (lmtt_widgets stores per-head scores >= 1e-3 only):
    |stored - oracle| over the stored ones, and for the ones not stored, by how much the oracle's exceeds 1e-3."""
    out = {}
    for k in proj:
        d = 0.0
        for a, b in zip(proj[k], ora[k]):
            if a is None and b is None:
                continue
            if k == "head":
                stored = a > 0
                d = max(d, float((a - b)[stored].abs().max()) if stored.any() else 0.0)
                d = max(d, float((b[~stored] - 1e-3).clamp_min(0).max()) if (~stored).any() else 0.0)
            else:
                d = max(d, float((a - b).abs().max()))
        out[k] = d
    return out


def compare_routes(ex, s: Scores, targets, taus) -> list[tuple]:
    """(target, tau, same edge set, max weight difference, n edges project, n edges oracle) per case."""
    rows = []
    for t in targets:
        for tau in taus:
            p, o = project_route_edges(ex, t, tau), route_edges(s, t, tau)
            same = set(p) == set(o)
            common = set(p) & set(o)
            dw = max((abs(p[k] - o[k]) for k in common), default=0.0)
            rows.append((t, tau, same, dw, len(p), len(o)))
    return rows


# ----------------------------------------------------------------------------------------- activation patching
# per model: {(kind, token ids): result} of the unpatched passes patching reads again and again (tests stay fast)
_PASSES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _cached(model, kind: str, ids: torch.Tensor, fn):
    per_model = _PASSES.setdefault(model, {})
    key = (kind, tuple(ids.view(-1).tolist()))
    if key not in per_model:
        per_model[key] = fn()
    return per_model[key]


@torch.no_grad()
def _clean_logits(model, ids: torch.Tensor) -> torch.Tensor:
    return _cached(model, "logits", ids, lambda: model(input_ids=ids.view(1, -1), use_cache=False).logits)


@torch.no_grad()
def _record(model, ids: torch.Tensor) -> dict:
    """Head signals (o_proj input), MLP writes and block outputs of a plain forward pass."""
    return _cached(model, "record", ids, lambda: _record_now(model, ids))


def _record_now(model, ids: torch.Tensor) -> dict:
    a = arch(model)
    got, hooks = {}, []
    for l, b in enumerate(a.layers):
        hooks.append(a.o_module(b).register_forward_pre_hook(
            lambda m, args, l=l: got.__setitem__(("head", l), args[0].detach().clone())))
        hooks.append(a.mlp_module(b).register_forward_hook(
            lambda m, i, o, l=l: got.__setitem__(("mlp", l), _first(o).detach().clone())))
        hooks.append(b.register_forward_hook(
            lambda m, i, o, l=l: got.__setitem__(("resid", l), _first(o).detach().clone())))
    try:
        model(input_ids=ids.view(1, -1), use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    return got


def metric_value(logits: torch.Tensor, target: int, foil: int | None, position: int) -> float:
    """logit(target) - logit(foil) at ``position``, or log p(target) without a foil (model dtype, then float64)."""
    row = logits.view(-1, logits.shape[-1])[position].double()
    if foil is None:
        return float(row.log_softmax(-1)[target])
    return float(row[target] - row[foil])


@torch.no_grad()
def patch_effect(model, ids, component: str, *, target: int, foil: int | None, position: int,
                 corrupted_ids=None, positions=None) -> float:
    """metric(clean) - metric(clean with ``component`` replaced by zero (no corrupted_ids) or by its value in the
    corrupted run). component: ("head", l, h), ("mlp", l) or ("resid", l); ``positions`` None: every position."""
    a = arch(model)
    kind, l = component[0], component[1]
    ref = _record(model, corrupted_ids) if corrupted_ids is not None else None
    H, dh = a.n_heads, a.head_dim
    b = a.layers[l]
    T = ids.numel()
    pos = torch.zeros(T, dtype=torch.bool)
    pos[list(range(T)) if positions is None else positions] = True

    def replace(x, key, sl=None):
        x = x.clone()
        view = x.view(-1, x.shape[-1])  # [T, width]
        new = torch.zeros_like(view) if ref is None else ref[key].view(-1, x.shape[-1]).to(x.dtype)
        cols = slice(None) if sl is None else sl
        view[pos, cols] = new[pos, cols]
        return x

    if kind == "head":
        h = component[2]
        hook = a.o_module(b).register_forward_pre_hook(
            lambda m, args: (replace(args[0], ("head", l), slice(h * dh, (h + 1) * dh)), *args[1:]))
    elif kind == "mlp":
        hook = a.mlp_module(b).register_forward_hook(
            lambda m, i, o: replace(o, ("mlp", l)) if not isinstance(o, tuple)
            else (replace(o[0], ("mlp", l)), *o[1:]))
    elif kind == "resid":
        hook = b.register_forward_hook(
            lambda m, i, o: replace(o, ("resid", l)) if not isinstance(o, tuple)
            else (replace(o[0], ("resid", l)), *o[1:]))
    else:
        raise ValueError(kind)
    return _effect(model, ids, hook, target, foil, position)


# ------------------------------------------------------------------------------------- direct logit attribution
@torch.no_grad()
def logit_attribution(model, ids, *, target: int, foil: int | None, position: int) -> dict:
    """{component id: value} of the direct logit attribution with the final norm's scale frozen at ``position``,
    plus "norm_bias", "unembed_bias", "sum" (everything), "model_prelogit" (the model's logit difference before any
    final soft-capping) and "model_logit" (what the model returned). foil None: logit(target) alone."""
    a = arch(model)
    cap = capture(model, ids)
    norm = a.final_norm
    x = cap.final_in[position]
    head = model.get_output_embeddings()
    W = head.weight.double()
    d = W[target] - (W[foil] if foil is not None else 0)
    ub = getattr(head, "bias", None)
    dub = 0.0 if ub is None else float(ub.double()[target] - (ub.double()[foil] if foil is not None else 0))
    is_ln = isinstance(norm, torch.nn.LayerNorm)
    eps = getattr(norm, "eps", None) or getattr(norm, "variance_epsilon", None)
    w = norm.weight.double()
    if type(norm).__name__.startswith("Gemma"):
        w = 1 + w
    if is_ln:
        rstd = 1 / torch.sqrt(x.var(unbiased=False) + eps)
    else:
        rstd = torch.rsqrt(x.pow(2).mean() + eps)

    def write(v):
        v = v.double()
        if is_ln:
            v = v - v.mean()
        return float((v * rstd * w) @ d)

    out = {"EMB": write(cap.layers[0].x[position])}
    H, dh = a.n_heads, a.head_dim
    for l, L in enumerate(cap.layers):
        for h in range(H):
            v = (L.attn[h, position, :, None] * L.vw[:, h]).sum(0)
            if L.post_scale is not None:
                v = v * L.post_scale[position]
            out[f"L{l}.H{h}"] = write(v)
        if L.bias is not None:
            out[f"L{l}.BO"] = write(L.bias[position])
        out[f"L{l}.MLP"] = write(L.mlp_out[position])
    nb = getattr(norm, "bias", None)
    out["norm_bias"] = 0.0 if nb is None else float(nb.double() @ d)
    out["unembed_bias"] = dub
    out["sum"] = sum(out.values())
    normed = norm(cap.final_in[position].to(head.weight.dtype)[None])[0].double()
    out["model_prelogit"] = float(normed @ d) + dub
    logits = cap.logits[position]
    out["model_logit"] = float(logits[target] - (logits[foil] if foil is not None else 0))
    return out


@torch.no_grad()
def patch_edge_effect(model, ids, layer: int, head: int | None, src: int, dst: int, *, target: int,
                      foil: int | None, position: int, corrupted_ids=None) -> float:
    """Effect of removing the message A_h[dst, src] v_src^h (every head when ``head`` is None) from the head signal
    at ``dst`` (zero), or of replacing it with the corrupted run's message."""
    a = arch(model)
    dh = a.head_dim
    heads = range(a.n_heads) if head is None else [head]

    clean_L = _cached(model, "capture", ids, lambda: capture(model, ids))
    ref_L = _cached(model, "capture", corrupted_ids, lambda: capture(model, corrupted_ids)) \
        if corrupted_ids is not None else None
    vals = {}
    for which, cap in (("clean", clean_L), ("ref", ref_L)):
        if cap is None:
            continue
        vals[which] = _cached(model, f"values {layer}", cap.ids, lambda: _values(model, cap.ids, layer)), \
            cap.layers[layer].attn
    delta = torch.zeros(a.n_heads * dh, dtype=torch.float64)
    for h in heads:
        v, A = vals["clean"]
        m = A[h, dst, src] * v[src, h]
        if "ref" in vals:
            v2, A2 = vals["ref"]
            m = m - A2[h, dst, src] * v2[src, h]
        delta[h * dh:(h + 1) * dh] -= m

    def pre(mod, args):
        x = args[0].clone()
        x.view(-1, x.shape[-1])[dst] += delta.to(x.dtype)
        return (x, *args[1:])

    return _effect(model, ids, a.o_module(a.layers[layer]).register_forward_pre_hook(pre), target, foil, position)


def _effect(model, ids, hook, target, foil, position) -> float:
    """metric(clean) - metric(with ``hook``), the hook removed afterwards."""
    try:
        patched = model(input_ids=ids.view(1, -1), use_cache=False).logits
    finally:
        hook.remove()
    return metric_value(_clean_logits(model, ids), target, foil, position) - metric_value(patched, target, foil, position)


@torch.no_grad()
def _values(model, ids, layer: int) -> torch.Tensor:
    """[T, H, dh] values per query head (GQA repeated) of ``layer``."""
    a = arch(model)
    got = {}
    hook = a.v_module(a.layers[layer]).register_forward_hook(lambda m, i, o: got.__setitem__("v", _first(o)))
    try:
        model(input_ids=ids.view(1, -1), use_cache=False)
    finally:
        hook.remove()
    v = a.v_slice(got["v"][0].double())
    return v.repeat_interleave(a.n_heads // v.shape[1], dim=1)


# ---------------------------------------------------------------------------------------------- faithfulness
def route_keep(s: Scores, target: int, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(heads [L, T, H], mlps [L, T]) the oracle's route at ``tau`` uses: a head at (layer, token) when one of its
    (source, head) parts into that token's attention update is kept (> tau) and the update is on the route; an MLP
    when its node is on the route."""
    edges = route_edges(s, target, tau)
    L, T, H = len(s.heads), s.heads[0].shape[0], s.heads[0].shape[2]
    heads = torch.zeros(L, T, H, dtype=torch.bool)
    mlps = torch.zeros(L, T, dtype=torch.bool)
    attn_kind = "I" if s.parallel else "A"
    for (u, v) in edges:
        if v[0] == attn_kind and u != ("M", v[1], v[2]):
            heads[v[1], v[2]] |= (s.heads[v[1]][v[2]] > tau).any(0)
        if v[0] == "M" or u[0] == "M":
            mlps[(v if v[0] == "M" else u)[1], (v if v[0] == "M" else u)[2]] = True
    return heads, mlps


@torch.no_grad()
def run_ablated(model, ids, heads: torch.Tensor, mlps: torch.Tensor, corrupted_ids=None) -> torch.Tensor:
    """Logits with every head signal where ``heads`` [L, T, H] is True and every MLP write where ``mlps`` [L, T] is
    True replaced by zero (or by the corrupted run's)."""
    a = arch(model)
    ref = _record(model, corrupted_ids) if corrupted_ids is not None else None
    dh, hooks = a.head_dim, []

    def swap(x, key, mask):  # mask [T, width] bool
        x = x.clone()
        view = x.view(-1, x.shape[-1])
        new = torch.zeros_like(view) if ref is None else ref[key].view(-1, x.shape[-1]).to(x.dtype)
        view[mask] = new[mask]
        return x

    for l, b in enumerate(a.layers):
        hm = heads[l].repeat_interleave(dh, dim=1)  # [T, H * dh]
        hooks.append(a.o_module(b).register_forward_pre_hook(
            lambda m, args, l=l, hm=hm: (swap(args[0], ("head", l), hm), *args[1:])))
        hooks.append(a.mlp_module(b).register_forward_hook(
            lambda m, i, o, l=l: swap(_first(o), ("mlp", l), mlps[l][:, None].expand(-1, _first(o).shape[-1]))
            if not isinstance(o, tuple) else (swap(o[0], ("mlp", l), mlps[l][:, None].expand(-1, o[0].shape[-1])),
                                              *o[1:])))
    try:
        return model(input_ids=ids.view(1, -1), use_cache=False).logits
    finally:
        for h in hooks:
            h.remove()


@torch.no_grad()
def faithfulness(model, s: Scores, ids, taus, *, target: int, foil: int | None, position: int,
                 corrupted_ids=None) -> list[float]:
    """fraction kept = (metric(route kept) - metric(all ablated)) / (clean - all ablated), per tau."""
    L, T, H = len(s.heads), ids.numel(), s.heads[0].shape[2]
    value = lambda lg: metric_value(lg, target, foil, position)  # noqa: E731
    clean = value(_clean_logits(model, ids))
    none = value(run_ablated(model, ids, torch.ones(L, T, H, dtype=torch.bool), torch.ones(L, T, dtype=torch.bool),
                             corrupted_ids))
    out = []
    for tau in taus:
        kh, km = route_keep(s, position, tau)
        kept = value(run_ablated(model, ids, ~kh, ~km, corrupted_ids))
        out.append((kept - none) / (clean - none))
    return out


# --------------------------------------------------------------------------------------------------- neurons
_OUT_PROJ = {"gpt2": "mlp.c_proj", "opt": "fc2", "gpt_neox": "mlp.dense_4h_to_h", "gptj": "mlp.fc_out",
             "phi": "mlp.fc2"}


@torch.no_grad()
def neuron_importance(model, ids, layer: int, token: int, convention: str = "project") -> torch.Tensor:
    """[F] importance of each neuron's write a_n * W_out[:, n] at (layer, token).

    "project": within the MLP's change (y = the MLP's write, parts: every neuron and the output bias, clip at 0);
    "lmtt": LM-TT's get_decomposed_mlp_contributions (y = the residual after the MLP, parts: every neuron plus the
    residual before it as one more part, floor 1e-5, the output bias no part)."""
    a = arch(model)
    b = a.layers[layer]
    out_proj = b.get_submodule(_OUT_PROJ.get(model.config.model_type, "mlp.down_proj"))
    got = {}
    hooks = [out_proj.register_forward_pre_hook(lambda m, args: got.__setitem__("act", args[0].detach())),
             out_proj.register_forward_hook(lambda m, i, o: got.__setitem__("raw", o.detach()))]
    try:
        cap = capture(model, ids)
        model(input_ids=ids.view(1, -1), use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    act = _seq(got["act"]).double()[token]  # [F]
    W = (out_proj.weight.double() if type(out_proj).__name__ == "Conv1D" else out_proj.weight.double().t())  # [F, D]
    bias = None if out_proj.bias is None else out_proj.bias.double()
    L = cap.layers[layer]
    scale = 1.0
    if model.config.model_type in ("gemma2", "gemma3_text"):
        scale = _rms_scale(b.post_feedforward_layernorm, _seq(got["raw"])[token][None])[0]
    parts = act[:, None] * W * scale  # [F, D]
    if convention == "lmtt":
        y = L.out[token]
        prox = _prox(y, parts).clamp_min(LMTT_EPS)
        resid = _prox(y, y - L.mlp_out[token]).clamp_min(LMTT_EPS)
        return prox / (prox.sum() + resid)
    y = L.mlp_out[token]
    prox = _prox(y, parts).clamp_min(0) * (act != 0)
    total = prox.sum() + (_prox(y, bias * scale).clamp_min(0) if bias is not None else 0.0)
    return prox / total
