"""Input attribution by gradients and by perturbation: which input tokens drove the metric at one position.

Every method scores the tokens 0..p that the prediction at position p reads (a causal model's logits at p depend
on nothing after it, so only ``ids[:p+1]`` is run). Components are ``Component("token", position=j)``.

Gradients are taken with respect to the *input embeddings*: what the model's input-embedding module returns for
the token ids (``inputs_embeds``). Learned absolute positions (GPT-2's ``wpe``, OPT's positions) are added inside
the model after that module, so they are not part of a token and no baseline replaces them. Gemma multiplies by
sqrt(d) inside its embedding module, so its ``inputs_embeds`` are the scaled vectors, which is what the first
block reads. Gradients come from ``torch.autograd.grad`` with every parameter's ``requires_grad`` switched off for
the call (and restored), so no parameter ``.grad`` is ever written and no graph is built for the weights.

- ``saliency``: ‖∂metric/∂e_j‖₂, the L2 norm over the embedding width (unsigned).
- ``input_x_gradient``: e_j · ∂metric/∂e_j (signed; a first-order estimate of what removing e_j would change).
- ``integrated_gradients``: (e_j − b_j) · ∫₀¹ ∂metric/∂e_j(b + α(e − b)) dα, by Gauss-Legendre quadrature graded
  towards the baseline (or Captum's plain Gauss-Legendre, or the midpoint rule), the steps batched. The baseline
  b is every token's embedding replaced by one token's (default: pad, else unk, else eos) or the zero vector (``baseline="zero"``, singular for RMSNorm models: see the function),
  except position 0, which keeps its input embedding by default (``keep_first``): the first position is the
  attention sink, and interpolating it makes the integrand too jagged for any quadrature (see the function).
  Completeness: Σ_j attribution_j = metric(e) − metric(b) up to the quadrature error, reported in ``extra``
  (absolute and relative to the metric difference) on every result, with a warning above 5 %.
- ``occlusion``: metric(clean) − metric(token j occluded), for every j. ``mode="replace"`` (default) puts a
  baseline token (pad, else unk, else eos, or the one you give) in j's place, so every other token keeps its
  position; ``mode="remove"`` deletes j, so the tokens after it move one position left. Positions before j do not
  change, so their keys and values are computed once and reused: a running cache over the clean prefix, and each
  batch of occlusions continues from it.

Why not Captum (``pip install lmtt-widgets[attribution]`` installs it; the tests check agreement with it): these are
short, exact, and need no extra dependency (Captum imports matplotlib); occlusion here reuses the unchanged prefix
(Captum's runs every occluded sequence in full, T forwards of T tokens, against ~T/2 here); and freezing the
parameters skips the weight-gradient bookkeeping Captum leaves on. benchmarks/bench_attribution.py measures both.
"""

from __future__ import annotations

import copy
import inspect
import math
import warnings
from contextlib import contextmanager

import numpy as np
import torch

from .. import checks
from ..errors import SelectionError
from ..models.offload import input_device
from ..tracing.guard import exclusive
from .base import Component, ScoreTable, register_method
from .targets import in_vocabulary, make_metric, token_id

SALIENCY = "gradient norm ‖∂metric/∂e_j‖₂ (input embeddings)"
INPUT_X_GRADIENT = "input x gradient e_j · ∂metric/∂e_j"
INTEGRATED_GRADIENTS = "integrated gradients (metric units; sums to the metric change)"
OCCLUSION = "occlusion effect metric(clean) − metric(token occluded)"
IG_STEPS = 64
IG_MAX_STEPS = 1024  # Gauss-Legendre points cost O(steps^3) to find (6 s at 2,048) before any pass runs
GRADE = 4
COMPLETENESS_WARNING = 0.05
ZERO_HINT = " (a zero baseline is singular where the first norm sees the bare embedding)"
IG_BATCH = 16
# Rows x T^2 per integrated-gradients pass: each row keeps every layer's attention for the backward pass, so long
# prompts take fewer rows at once (16 rows at 128 tokens, 1 row from 512 tokens on).
IG_ATTENTION_BUDGET = 16 * 128 * 128
OCCLUSION_BATCH = 8


# ---------------------------------------------------------------- model access
@contextmanager
def frozen(model):
    """The model in eval mode with no parameter asking for a gradient; both put back exactly afterwards.

    As in the tracer, modes change through the model's own eval()/train() (Hugging Face models re-select kernels
    there), a mixed state is restored module by module, and a model already in eval mode is left alone. The model
    is held like a trace holds it (tracing/guard.py): another thread's trace never sees these passes.
    """
    with exclusive(model):
        needs = [(p, p.requires_grad) for p in model.parameters()]
        training = {m for m in model.modules() if m.training}
        was_training = model.training
        try:
            for p, _ in needs:
                p.requires_grad_(False)
            if training:
                model.eval()
            yield model
        finally:
            for p, flag in needs:
                p.requires_grad_(flag)
            if training:
                model.train(was_training)
                for m in model.modules():
                    m.training = m in training


def _keeps_logits(model) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def _cache_kwarg(model) -> str:
    """transformers renamed ``past_key_values`` to ``cache`` (the old name warns in 5.24)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def last_logits(model, *, ids=None, embeds=None, past=None, cache: bool = False) -> tuple[torch.Tensor, object]:
    """Logits [B, V] of the last position, and the cache (continued from ``past``) when one is given or asked for."""
    kw = {"logits_to_keep": 1} if _keeps_logits(model) else {}
    use_cache = cache or past is not None
    if past is not None:
        kw[_cache_kwarg(model)] = past
    out = model(input_ids=ids, inputs_embeds=embeds, use_cache=use_cache, **kw)
    if not use_cache:
        return out.logits[:, -1], None
    cache = getattr(out, "cache", None)
    return out.logits[:, -1], (out.past_key_values if cache is None else cache)


def metric_of(metric, rows: torch.Tensor) -> torch.Tensor:
    """The metric of last-position logits [B, V] -> [B] (float32 at least; float64 models stay float64)."""
    rows = rows if rows.dtype == torch.float64 else rows.float()
    if metric.foil is None:
        return rows.log_softmax(-1)[:, metric.target]
    return rows[:, metric.target] - rows[:, metric.foil]


def _prefix_ids(ex, metric) -> torch.Tensor:
    """The prompt up to the metric's position, where the model reads it (every run of these methods starts here:
    a model changed since the trace is refused first)."""
    ex.trace.check_model()
    dev = input_device(ex.trace.lm.model)  # (an offloaded model's parameters may be on meta)
    return ex.trace.input_ids[: metric.position + 1].to(dev)


def _tokens(metric) -> list[Component]:
    return [Component("token", position=j) for j in range(metric.position + 1)]


def baseline_token(ex, baseline) -> int:
    """A token id for a baseline: an id, a one-token text, or "pad" / "unk" / "eos" / "bos" / None (pad, else unk,
    else eos)."""
    tok = ex.trace.lm.tokenizer
    names = {"pad", "unk", "eos", "bos"}
    if baseline is None or (isinstance(baseline, str) and baseline in names):
        order = ["pad", "unk", "eos"] if baseline is None else [baseline]
        for name in order:
            tid = getattr(tok, f"{name}_token_id", None)
            if isinstance(tid, int):  # (a tokenizer's added token may lie past the model's vocabulary)
                return in_vocabulary(ex, tid, f"baseline ({name} token)")
        raise SelectionError(
            f"The tokenizer has no {' / '.join(order)} token to use as the baseline; pass baseline=<token id or "
            "one-token text>, e.g. baseline=' the'."
        )
    return token_id(ex, baseline, what="baseline")


# ---------------------------------------------------------------- gradients
def _gradients(model, metric, embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """∂metric/∂embeds for a batch [B, T, d] (each row its own sequence) and the metric values [B]."""
    # inference_mode(False): under a caller's torch.inference_mode no graph is recorded; the clone makes a normal
    # tensor of embeddings made in that mode (an inference tensor cannot require grad)
    with torch.inference_mode(False), torch.enable_grad():
        x = embeds.detach().clone().requires_grad_(True)
        logits, _ = last_logits(model, embeds=x)
        values = metric_of(metric, logits)
        (grad,) = torch.autograd.grad(values.sum(), x)
    return grad.detach(), values.detach()


def _embeddings(ex, metric) -> torch.Tensor:
    model = ex.trace.lm.model
    with torch.no_grad():
        return model.get_input_embeddings()(_prefix_ids(ex, metric)[None])  # [1, T, d]


def _check_forward(value: float, ex, metric, what: str) -> None:
    """The embeddings path must reproduce the traced logits: else the attribution explains another model."""
    traced = float(metric_of(metric, ex.trace.logits[metric.position][None].to(torch.float64))[0])
    half = ex.trace.layers[0].model_dtype in (torch.float16, torch.bfloat16)
    from .interventions import rerun_tolerance

    tol, why = rerun_tolerance(ex, 0.1 if half else 1e-2)  # bf16 rounds differently on a shorter sequence, a batch
    if not math.isclose(value, traced, rel_tol=tol, abs_tol=tol):
        hooks = why.startswith("the model's forward hooks")
        raise SelectionError(
            f"{what}: running the model from its input embeddings gives metric {value:.4g}, but the traced pass "
            f"gave {traced:.4g}. " + (f"{why[0].upper()}{why[1:]}." if hooks else
                                      "The model's input-embedding module is not what its forward pass reads; "
                                      "input attribution is not defined for it.")
        )


# Saliency and input x gradient read the same gradient: one backward pass serves both (the widget's agreement
# computes both on every target change). Kept on the explanation (it dies with it), for its last few metrics only.
_GRADIENTS_KEPT = 4


def _embedding_gradient(ex, metric, what: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(embeddings [1, T, d], ∂metric/∂embeddings [1, T, d], metric value [1]) of ``metric``, computed once."""
    kept = vars(ex).setdefault("_embedding_gradients", {})
    key = (metric.position, metric.target, metric.foil)
    if key not in kept:
        model = ex.trace.lm.model
        with frozen(model):
            e = _embeddings(ex, metric)
            grad, value = _gradients(model, metric, e)
        _check_forward(float(value[0]), ex, metric, what)
        while len(kept) >= _GRADIENTS_KEPT:
            kept.pop(next(iter(kept)))
        kept[key] = (e, grad, value)
    return kept[key]


@register_method("saliency", quantity=SALIENCY, family="input", scores_tokens=True,
                 cost="one forward and one backward pass")
def saliency(ex, target=None, foil=None, position=None) -> ScoreTable:
    """L2 norm of the metric's gradient with respect to each input token's embedding (unsigned)."""
    metric = make_metric(ex, target, foil, position)
    _, grad, value = _embedding_gradient(ex, metric, "saliency")
    scores = grad[0].double().norm(dim=-1)
    return ScoreTable("saliency", SALIENCY, metric, _tokens(metric), scores.cpu(), False,
                      {"position": metric.position, "metric_value": float(value[0])})


@register_method("input_x_gradient", quantity=INPUT_X_GRADIENT, family="input", scores_tokens=True,
                 cost="one forward and one backward pass")
def input_x_gradient(ex, target=None, foil=None, position=None) -> ScoreTable:
    """e_j · ∂metric/∂e_j per input token (signed)."""
    metric = make_metric(ex, target, foil, position)
    e, grad, value = _embedding_gradient(ex, metric, "input_x_gradient")
    scores = (e[0].double() * grad[0].double()).sum(-1)
    return ScoreTable("input_x_gradient", INPUT_X_GRADIENT, metric, _tokens(metric),
                      scores.cpu(), True, {"position": metric.position, "metric_value": float(value[0])})


def quadrature(steps: int, rule: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Points α in (0, 1) and weights summing to 1 for ∫₀¹ f(α) dα.

    "graded": Gauss-Legendre in u with α = u^GRADE (dα = GRADE·u^(GRADE-1) du), the same integral with most points
    near the baseline, where a norm that sees the bare embedding changes fastest (zero baseline: its scale
    α·rms(e) passes sqrt(eps) at α ~ 1e-3). "gausslegendre": Captum's rule. "midpoint": the Riemann midpoint sum.
    """
    if steps < 1:
        raise SelectionError(f"steps must be at least 1, not {steps}")
    if rule in ("gausslegendre", "graded"):
        x, w = np.polynomial.legendre.leggauss(steps)
        u, w = (x + 1) / 2, w / 2
        if rule == "graded":
            u, w = u**GRADE, w * GRADE * u ** (GRADE - 1)
        return torch.from_numpy(u), torch.from_numpy(w)
    if rule == "midpoint":
        return (torch.arange(steps, dtype=torch.float64) + 0.5) / steps, torch.full((steps,), 1.0 / steps)
    raise SelectionError(f"rule must be 'graded', 'gausslegendre' or 'midpoint', not {rule!r}")


@register_method("integrated_gradients", quantity=INTEGRATED_GRADIENTS, family="input", scores_tokens=True,
                 cost="steps forward and backward passes, batched")
def integrated_gradients(ex, target=None, foil=None, position=None, *, baseline=None, steps: int = IG_STEPS,
                         rule: str = "graded", batch_size: int = IG_BATCH, keep_first: bool = True) -> ScoreTable:
    """Integrated gradients along the straight path from the baseline embeddings to the input's.

    ``baseline``: a token (id, one-token text, "pad", "eos"...; default: pad, else unk, else eos) whose embedding
    replaces every token's, or "zero" (every token embedding 0). The zero baseline is singular for models whose
    first norm sees the bare embedding (RMSNorm or LayerNorm without additive positions: Llama, Gemma, Qwen...):
    the norm of α·e is the same for every α > 0, so the whole metric change happens in a sliver near α = 0 that
    no quadrature resolves (tiny models: 10-100 % completeness error at 64 and 512 steps).

    ``keep_first`` (default True): position 0 keeps its input embedding in the baseline, so only tokens 1..p are
    interpolated and token 0's attribution is 0 by construction (``extra["kept_first"]``), as attribution libraries
    keep a BOS token. Every causal LM puts its attention sink on the first position; moving that embedding moves
    every later token's attention at once, and the metric along the path swings by tens of nats. Measured on
    SmolLM2 ("The capital of France is" -> " Paris", pad baseline, float32 and float64 alike): interpolating
    position 0 leaves 186 % (Gauss-Legendre), 13 % (graded) and 324 % (midpoint) completeness error at 16 steps
    and 9 % at 64 graded; keeping it, 9 %, 22 % and 1.5 % at 16 steps and 0.0 % (Gauss-Legendre) / 0.3 % (graded)
    at 64. On the tiny test models it settles the zero baseline too (16 graded steps: llama 23 % -> 0.09 %,
    qwen3 99 % -> 1.7 %). ``keep_first=False`` interpolates every position (Captum's default with a uniform baseline). A warning
    says so whenever the relative completeness error passes 5 %. The completeness error
    Σ attributions − (metric(x) − metric(baseline)) is in ``extra["completeness_error"]`` and, divided by
    |metric(x) − metric(baseline)|, in ``extra["completeness_relative"]``. ``rule``: see :func:`quadrature`.
    """
    steps = checks.count(steps, "steps", what="points on the path, a forward and backward pass each")
    if steps > IG_MAX_STEPS:
        raise SelectionError(f"steps must be at most {IG_MAX_STEPS}, not {steps}: 64 graded steps already settle "
                             "most prompts (see extra['completeness_relative']).")
    batch_size = checks.count(batch_size, "batch_size", what="path points per pass")
    keep_first = checks.flag(keep_first, "keep_first")
    metric = make_metric(ex, target, foil, position)
    model = ex.trace.lm.model
    e = _embeddings(ex, metric)
    if isinstance(baseline, str) and baseline == "zero":  # (a token's text "zero" is " zero" or an id)
        b, described = torch.zeros_like(e), "zero embedding"
    else:
        tid = baseline_token(ex, baseline)
        with torch.no_grad():
            b = model.get_input_embeddings()(torch.full_like(_prefix_ids(ex, metric)[None], tid))
        described = f"embedding of token {tid}"
    if keep_first:  # the attention sink stays put: only the tokens after it travel from the baseline
        b = b.clone()
        b[:, 0] = e[:, 0]
        described += ", position 0 kept at its input"
    alphas, weights = quadrature(int(steps), rule)
    batch_size = max(1, min(int(batch_size), IG_ATTENTION_BUDGET // e.shape[1] ** 2))
    total = torch.zeros_like(e[0], dtype=torch.float64)
    passes = 0
    with frozen(model):
        with torch.no_grad():
            ends, _ = last_logits(model, embeds=torch.cat([e, b]))
            f_x, f_b = metric_of(metric, ends).double().tolist()
        for a, w in zip(alphas.split(batch_size), weights.split(batch_size)):
            path = b + a.to(e.dtype).view(-1, 1, 1).to(e.device) * (e - b)
            grad, _ = _gradients(model, metric, path)
            total += (grad.double() * w.view(-1, 1, 1).to(grad.device)).sum(0)
            passes += 1
    _check_forward(f_x, ex, metric, "integrated_gradients")
    scores = ((e[0] - b[0]).double() * total).sum(-1).cpu()
    delta = f_x - f_b
    err = float(scores.sum()) - delta
    relative = abs(err) / abs(delta) if delta else (float("inf") if err else 0.0)
    if relative > COMPLETENESS_WARNING:
        warnings.warn(
            f"integrated gradients: the attributions sum to {float(scores.sum()):.4g} but the metric changed by "
            f"{delta:.4g} from the baseline ({relative:.0%} off): the metric changes too abruptly along the path "
            f"for {steps} steps{ZERO_HINT if described == 'zero embedding' else ''}. Read these attributions with "
            "care; try more steps, another rule or another baseline token.", RuntimeWarning, stacklevel=2)
    extra = {"position": metric.position, "baseline": described, "steps": int(steps), "rule": rule,
             "metric_value": f_x, "baseline_value": f_b, "sum": float(scores.sum()), "completeness_error": err,
             "completeness_relative": relative, "kept_first": bool(keep_first),
             "backward_passes": passes}
    return ScoreTable("integrated_gradients", INTEGRATED_GRADIENTS, metric, _tokens(metric), scores, True, extra)


# ---------------------------------------------------------------- perturbation
@register_method("occlusion", quantity=OCCLUSION, family="input", scores_tokens=True,
                 cost="about T/2 forwards (the unchanged prefix is reused)")
def occlusion(ex, target=None, foil=None, position=None, *, baseline=None, mode: str = "replace",
              batch_size: int = OCCLUSION_BATCH) -> ScoreTable:
    """Leave-one-out: metric(clean) − metric(token j replaced by ``baseline`` or removed), for every j ≤ position.

    With ``mode="remove"`` the prediction at token 0 is refused: removing the only token it reads leaves no
    sequence to run, so there is no occluded metric to compare with.
    """
    batch_size = checks.count(batch_size, "batch_size", what="occluded rows per pass")
    if mode not in ("replace", "remove"):
        raise SelectionError(f"mode must be 'replace' (keeps positions) or 'remove' (shifts them), not {mode!r}")
    metric = make_metric(ex, target, foil, position)
    if mode == "remove" and metric.position == 0:
        raise SelectionError("occlusion with mode='remove' at token 0: removing the only token the prediction reads "
                             "leaves nothing to run. Use mode='replace' (a baseline token in its place) or explain "
                             "a later position.")
    model = ex.trace.lm.model
    ids = _prefix_ids(ex, metric)
    T = ids.numel()
    tid = baseline_token(ex, baseline) if mode == "replace" else None
    g = max(1, int(batch_size))
    occluded, computed, running = [], 0, None  # running: cache of the clean prefix ids[:j0]
    with frozen(model), torch.no_grad():
        for j0 in range(0, T, g):
            j1 = min(T, j0 + g)
            rows = _occluded_rows(ids, j0, j1, tid)
            if rows.shape[1]:
                past = None if running is None else _repeat(copy.deepcopy(running), rows.shape[0])
                logits, _ = last_logits(model, ids=rows, past=past)
                occluded.append(metric_of(metric, logits).double())
                computed += rows.numel()
            else:  # removing the last token leaves the clean prefix: its last logits (T > 1, refused above)
                occluded.append(metric_of(metric, last).double())
            last, running = last_logits(model, ids=ids[None, j0:j1], past=running, cache=True)
            computed += j1 - j0
    clean = float(metric_of(metric, last)[0])
    _check_forward(clean, ex, metric, "occlusion")
    effects = clean - torch.cat([o.cpu() for o in occluded])
    extra = {"position": metric.position, "mode": mode, "baseline_token": tid, "metric_value": clean,
             "forward_equivalents": computed / T}
    return ScoreTable("occlusion", OCCLUSION, metric,
                      _tokens(metric), effects, True, extra)


def _occluded_rows(ids: torch.Tensor, j0: int, j1: int, tid: int | None) -> torch.Tensor:
    """[j1 - j0, n] suffixes ids[j0:] with token j (row j - j0) replaced by ``tid``, or removed when tid is None."""
    tail = ids[j0:]
    rows = []
    for j in range(j0, j1):
        if tid is None:
            rows.append(torch.cat([tail[: j - j0], tail[j - j0 + 1:]]))
        else:
            row = tail.clone()
            row[j - j0] = tid
            rows.append(row)
    return torch.stack(rows)


def _repeat(cache, n: int):
    """The cache repeated n times along the batch (every occluded row continues from the same clean prefix)."""
    if n > 1:
        cache.batch_repeat_interleave(n)
    return cache
