"""One call from a prompt to everything the widgets show: trace, scores, routes, heads, neurons, projections."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from .contributions.graph import DEFAULT_THRESHOLD, Route, Granularity, full_graph, route
from .contributions.proximity import BUDGET_MEANS, CHUNK_BUDGET
from .contributions.scores import (CONVENTIONS, ContributionScores, LayerScores, edge_floor, layers_per_group,
                                   neuron_importance, score_layers)
from . import checks
from .errors import InputTypeError, LmttError, PromptTypeError
from .models.loading import load_model
from .projections.vocab import Norm, project, rank_of, top_tokens
from .tracing.tracer import Trace, trace


@dataclass
class TokenScore:
    text: str
    score: float
    token_id: int


@dataclass
class LensEntry:
    text: str
    prob: float
    token_id: int
    rank: int  # 0-based rank at this node
    previous_rank: int | None  # rank at the previous residual node (None for the embeddings)

    @property
    def rank_change(self) -> int | None:
        """Positive when the token climbed since the previous node."""
        return None if self.previous_rank is None else self.previous_rank - self.rank


@dataclass
class HeadScore:
    layer: int
    head: int
    token: int
    importance: float
    attention: torch.Tensor  # [T] attention of this head from `token` to every source


@dataclass
class NeuronScore:
    layer: int
    neuron: int
    token: int
    importance: float
    activation: float


@dataclass
class Projection:
    promoted: list[TokenScore]
    suppressed: list[TokenScore]


@dataclass
class Explanation:
    """A traced prediction with the importance of every part. All indices are 0-based."""

    trace: Trace
    scores: ContributionScores
    # per-node neuron importances, computed on first use: widgets and reports ask for the same nodes repeatedly
    _neuron_rows: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict, repr=False, compare=False)
    _neuron_acts: dict[tuple[int, int], MlpRows] = field(default_factory=dict, repr=False, compare=False)

    # ---- basics
    @property
    def tokens(self) -> list[str]:
        return self.trace.tokens

    @property
    def n_layers(self) -> int:
        return self.trace.n_layers

    @property
    def n_tokens(self) -> int:
        return self.trace.n_tokens

    @property
    def n_heads(self) -> int:
        return self.trace.n_heads

    def predictions(self, token: int | None = None, k: int = 5) -> list[TokenScore]:
        """Top-k next-token probabilities after ``token`` (default: the last)."""
        token, k = self._token(token), checks.count(k)
        probs = self.trace.logits[token].float().softmax(-1)
        return [TokenScore(t, p, i) for t, p, i in top_tokens(self.trace, probs, k)]

    # ---- graph
    def route(self, target: int | None = None, threshold: float = DEFAULT_THRESHOLD,
              granularity: Granularity = "head") -> Route:
        """The important subgraph for the prediction at ``target`` (default: last token)."""
        return route(self.scores, target, threshold, granularity)

    def full_graph(self) -> Route:
        return full_graph(self.scores)

    def cancelling_updates(self) -> list[tuple[int, int, str]]:
        """(layer, token, "attention" | "mlp") of every cancelling update: each of its parts is farther from the
        update's result than 0 is (e.g. an MLP that cancels the residual), so its importances are an even split
        over its parts instead of proximities (the limit of LM-TT's floor). Parallel blocks have one update, listed
        as "attention"."""
        out = []
        for layer, ls in enumerate(self.scores.layers):
            for flags, update in ((ls.cancel_attn, "attention"), (ls.cancel_mlp, "mlp")):
                if flags is not None:
                    out += [(layer, t, update) for t in flags.nonzero().flatten().tolist()]
        return sorted(out)

    def external_edits(self):
        """Every place where code outside the model's modules (a hook, a steering vector) changed the residual
        stream, with its size: a list of :class:`lmtt_widgets.tracing.edits.ExternalEdit`. Edits inside a block
        are scored as an "external edit" part of that update (``scores.layers[l].external_attn`` /
        ``external_mlp``); edits between blocks are reported only."""
        return list(self.trace.external_edits)

    # ---- heads and neurons
    def heads(self, layer: int, token: int | None = None) -> list[HeadScore]:
        """Heads of ``layer`` ranked by importance in the attention update at ``token``."""
        layer, token = self._layer(layer), self._token(token)
        imp = self.scores.layers[layer].head_total[token]
        attn = self.trace.layers[layer].attention_row(token)
        order = imp.argsort(descending=True).tolist()
        return [HeadScore(layer, h, token, float(imp[h]), attn[h]) for h in order]

    def top_heads(self, k: int = 10, token: int | None = None) -> list[HeadScore]:
        """The k most important heads over all layers at ``token``."""
        token, k = self._token(token), checks.count(k)
        imp = torch.stack([ls.head_total[token] for ls in self.scores.layers])  # [L, H]
        flat = imp.flatten().topk(min(k, imp.numel()))
        rows: dict[int, torch.Tensor] = {}  # one [H, T] row per layer, whatever the number of its heads
        out = []
        for v, idx in zip(flat.values.tolist(), flat.indices.tolist()):
            layer, head = divmod(idx, self.n_heads)
            if layer not in rows:
                rows[layer] = self.trace.layers[layer].attention_row(token)
            out.append(HeadScore(layer, head, token, v, rows[layer][head]))
        return out

    def neurons(self, layer: int, token: int | None = None, k: int = 10) -> list[NeuronScore]:
        """The k neurons of ``layer``'s MLP most important for its change to the residual at ``token``."""
        layer, token, k = self._layer(layer), self._token(token), checks.count(k)
        imp = self.neuron_importance(layer, token)
        top = imp.topk(min(k, imp.numel()))
        acts = self._neuron_row(layer, token).neurons[0]
        return [NeuronScore(layer, n, token, v, float(acts[n])) for v, n in zip(top.values.tolist(), top.indices.tolist())]

    def neuron_importance(self, layer: int, token: int | None = None) -> torch.Tensor:
        """[F] importance of every neuron of ``layer``'s MLP in its change to the residual at ``token``."""
        layer, token = self._layer(layer), self._token(token)
        key = (layer, token)
        if key not in self._neuron_rows:
            self._neuron_rows[key] = neuron_importance(self._neuron_row(layer, token), self.trace.weights[layer],
                                                       convention=self.scores.convention)[0]
        return self._neuron_rows[key]

    def _neuron_row(self, layer: int, token: int) -> MlpRows:
        """What neuron scores read of one MLP at one token; a long trace's slim layer runs its MLP alone on that row
        rather than its whole block (rebuild.neuron_rows)."""
        key = (layer, token)
        if key not in self._neuron_acts:
            from .tracing.rebuild import neuron_rows

            rec = self.trace.layers[layer]
            acts, rows = neuron_rows(rec, self.trace.weights[layer], [token])
            rstd = None if rec.mlp_post_rstd is None else rec.mlp_post_rstd[token : token + 1]
            self._neuron_acts[key] = MlpRows(neurons=acts, mlp_update=rows.mlp_update, mlp_post_rstd=rstd,
                                             resid_post=rows.resid_post)
        return self._neuron_acts[key]

    def attention(self, layer: int) -> torch.Tensor:
        """[H, T, T] attention probabilities of ``layer``. Long prompts do not keep them: they are computed again
        from that layer's stored attention call (its query and key states), bit-identical, without re-running the
        model."""
        return self.trace.layers[self._layer(layer)].attention_probs()

    def head_attention(self, layer: int, head: int) -> torch.Tensor:
        """[T, T] attention probabilities of one head (long prompts: that head's alone computed again, exactly)."""
        layer, head = self._layer(layer), self._head(head)
        return self.trace.layers[layer].head_attention(head)

    def head_contributions(self, layer: int, head: int) -> torch.Tensor:
        """[T, T] importance of head ``head`` for target i (rows) from source j (cols); values < 1e-3 read 0."""
        layer, head = self._layer(layer), self._head(head)
        ls = self.scores.layers[layer]
        T, H = self.n_tokens, self.n_heads
        out = torch.zeros(T, T)
        rows = torch.repeat_interleave(torch.arange(T), ls.head_ptr.diff())
        mine = (ls.head_col % H) == head
        out[rows[mine], (ls.head_col[mine] // H).long()] = ls.head_val[mine]
        return out

    # ---- vocabulary projections
    def residual(self, row: int, token: int) -> torch.Tensor:
        """Residual state [d] at a graph row: 0 embeddings, 2l+1 after attention of layer l, 2l+2 after its MLP.

        Parallel blocks have no state between attention and MLP: row 2l+1 is then the block input plus the
        attention update alone.
        """
        token = self._token(token)
        row = checks.index(row, "row", 2 * self.n_layers + 1, "0 is the embeddings, 2l+1 / 2l+2 after layer l's "
                           "attention / MLP")
        if row == 0:
            return self.trace.layers[0].resid_pre[token]
        layer, after_mlp = divmod(row - 1, 2)
        rec = self.trace.layers[layer]
        if after_mlp:
            return rec.resid_post[token]
        return self._rows(layer, token).resid_mid[0]

    def lens(self, row: int, token: int | None = None, k: int = 10, norm: Norm = "own") -> list[LensEntry]:
        """Top-k tokens of a residual node, with their rank at the previous node."""
        token, k = self._token(token), checks.count(k)
        vec = self.residual(row, token)
        row = int(row)
        logits = project(self.trace, vec, token, norm)
        probs = logits.softmax(-1)
        top = top_tokens(self.trace, probs, k)
        ids = torch.tensor([i for _, _, i in top])
        prev = rank_of(project(self.trace, self.residual(row - 1, token), token, norm), ids).tolist() if row > 0 else [None] * len(top)
        return [LensEntry(t, p, i, r, pr) for r, ((t, p, i), pr) in enumerate(zip(top, prev))]

    def logit_lens(self, token: int | None = None, k: int = 5, norm: Norm = "own") -> list[list[LensEntry]]:
        """The lens of every residual row at ``token``, bottom (embeddings) to top."""
        return [self.lens(r, token, k, norm) for r in range(2 * self.n_layers + 1)]

    def head_output(self, layer: int, head: int, token: int | None = None) -> torch.Tensor:
        """What head ``head`` adds to the residual at ``token`` [d] (post-norm included)."""
        layer, head, token = self._layer(layer), self._head(head), self._token(token)
        rec, w = self.trace.layers[layer], self.trace.weights[layer]
        dh = self.trace.head_dim
        out = self._rows(layer, token).head_signal[0, head] @ w.w_o[:, head * dh : (head + 1) * dh].t()
        return out * self._post_scale(w.attn_post_norm, rec.attn_post_rstd, token)

    def neuron_output(self, layer: int, neuron: int, token: int | None = None) -> torch.Tensor:
        """activation x output row of one neuron at ``token`` [d] (sign included, post-norm included)."""
        layer, token = self._layer(layer), self._token(token)
        rec, w = self.trace.layers[layer], self.trace.weights[layer]
        F = w.w_out.shape[1]
        neuron = checks.index(neuron, "neuron", F, f"layer {layer} has {F} neurons")
        out = self._neuron_row(layer, token).neurons[0, neuron] * w.w_out[:, neuron]
        return out * self._post_scale(w.mlp_post_norm, rec.mlp_post_rstd, token)

    def mlp_output(self, layer: int, token: int | None = None) -> torch.Tensor:
        layer, token = self._layer(layer), self._token(token)
        return self._rows(layer, token).mlp_update[0]

    def _rows(self, layer: int, token: int):
        """One layer's tensors at one token (a long trace's slim layer computes them without running its block)."""
        from .tracing.rebuild import layer_rows

        return layer_rows(self.trace.layers[layer], self.trace.weights[layer], [token])

    def project(self, vec: torch.Tensor, token: int | None = None, k: int = 10, norm: Norm = "final") -> Projection:
        """Promoted (top-k) and suppressed (bottom-k) tokens of a vector written at ``token``."""
        token, k = self._token(token), checks.count(k)
        vec = checks.vector(vec, self.trace.layers[0].resid_pre.shape[-1])
        logits = project(self.trace, vec, token, norm)
        up = [TokenScore(*t) for t in top_tokens(self.trace, logits, k)]
        down = [TokenScore(*t) for t in top_tokens(self.trace, logits, k, largest=False)]
        return Projection(up, down)

    def head_tokens(self, layer, head, token=None, k=10, norm: Norm = "final") -> Projection:
        return self.project(self.head_output(layer, head, token), token, k, norm)

    def mlp_tokens(self, layer, token=None, k=10, norm: Norm = "final") -> Projection:
        return self.project(self.mlp_output(layer, token), token, k, norm)

    def neuron_tokens(self, layer, neuron, token=None, k=10, norm: Norm = "final") -> Projection:
        return self.project(self.neuron_output(layer, neuron, token), token, k, norm)

    # ---- signed and causal scores (lmtt_widgets.methods): every one returns a ScoreTable in the metric's units
    def metric(self, target=None, foil=None, position=None):
        """logit(target) - logit(foil) at ``position`` (default: last token, target: the prediction), or
        log p(target) without a foil. Targets and foils are token ids or one-token texts (' John')."""
        from .methods.targets import make_metric

        return make_metric(self, target, foil, position)

    def score(self, method: str, **options):
        """Any registered method by name (``lmtt_widgets.methods.available_methods()``)."""
        from .methods import get_method

        info = get_method(method)
        checks.options(info.fn, options, f"The method {method!r}")
        return info.fn(self, **options)

    def logit_attribution(self, target=None, foil=None, position=None, *, neurons: bool = False):
        """Signed direct logit attribution of the embeddings, every head, attention bias and MLP (or neuron)."""
        return self.score("logit_attribution", target=target, foil=foil, position=position, neurons=neurons)

    def attribution_patching(self, corrupted=None, *, ablation=None, target=None, foil=None, position=None,
                             neurons: bool = False, edges=None):
        """First-order causal effect of every head and MLP (and neurons, route edges) vs ``corrupted`` (a prompt of
        the same length) or ``ablation='mean'`` / ``'zero'``: one forward and one backward pass."""
        return self.score("attribution_patching", target=target, foil=foil, position=position, corrupted=corrupted,
                          ablation=ablation, neurons=neurons, edges=edges)

    def patch(self, components, corrupted=None, *, ablation=None, target=None, foil=None, position=None,
              together: bool = False):
        """Exact activation patching: the effect of each component alone (a ScoreTable), or of all of them at once
        (``together=True``: a dict with clean, patched and effect). Ids: 'L23.H3', 'L5.MLP', 'L5.N12', 'L5.R@7',
        'L3.H2 5>7' (an edge), or Component values."""
        from .methods import causal

        if checks.flag(together, "together"):
            return causal.patch_together(self, components, target=target, foil=foil, position=position,
                                         corrupted=corrupted, ablation=ablation)
        return self.score("activation_patching", components=components, target=target, foil=foil,
                          position=position, corrupted=corrupted, ablation=ablation)

    def faithfulness(self, thresholds=(0.01, 0.02, 0.04, 0.08, 0.16), corrupted=None, *, ablation=None, target=None,
                     foil=None, position=None):
        """The fraction of the metric the route keeps at each tau when everything off it is ablated."""
        from .methods import causal

        return causal.faithfulness(self, thresholds, target=target, foil=foil, position=position,
                                   corrupted=corrupted, ablation=ablation)

    def agreement(self, corrupted=None, *, ablation=None, target=None, foil=None, position=None, k: int = 10,
                  exact: bool = True):
        """Rank agreement over the heads of importance, logit attribution and attribution patching with exact
        patching (``exact=False``: with attribution patching), as a DataFrame."""
        from .methods.compare import agreement

        return agreement(self, corrupted=corrupted, ablation=ablation, target=target, foil=foil,
                         position=position, k=k, exact=exact)

    # ---- index checks
    def _token(self, token):
        T = self.n_tokens
        if token is None:
            return T - 1
        return checks.index(token, "token", T, f"the prompt has {T} tokens; None means the last")

    def _layer(self, layer):
        return checks.index(layer, "layer", self.n_layers, f"the model has {self.n_layers} layers")

    def _head(self, head):
        return checks.index(head, "head", self.n_heads, f"the model has {self.n_heads} heads")

    @staticmethod
    def _post_scale(norm, rstd, token):
        if norm is None:
            return 1.0
        return rstd[token] * norm.weight

    # ---- generated continuations and input attribution (generation.py, methods/input_attribution.py)
    n_prompt_tokens: int | None = None  # tokens before a continuation (None: explain() was given a plain prompt)
    token_roles: list[str] | None = None  # per token: "text", "special", "template", a chat role, "generated"

    @property
    def generated_positions(self) -> list[int]:
        return [] if self.n_prompt_tokens is None else list(range(self.n_prompt_tokens, self.n_tokens))

    def attribution_matrix(self, method: str = "integrated_gradients", **options):
        """Source x generated attributions (DataFrame); see :func:`lmtt_widgets.generation.attribution_matrix`."""
        from .generation import attribution_matrix

        return attribution_matrix(self, method, **options)


@dataclass(frozen=True)
class MlpRows:
    """The fields of a LayerRecord that :func:`~.contributions.scores.neuron_importance` reads, at a few rows."""

    neurons: torch.Tensor  # [P, F]
    mlp_update: torch.Tensor  # [P, d]
    mlp_post_rstd: torch.Tensor | None  # [P] or None
    resid_post: torch.Tensor | None = None  # [P, d] (convention "lmtt" scores neurons within the residual)


def _on_cpu(ls: LayerScores) -> LayerScores:
    if ls.edge.device.type == "cpu":
        return ls
    return LayerScores(**{f.name: _cpu(getattr(ls, f.name)) for f in dataclasses.fields(ls)})


def _cpu(value):
    return value.cpu() if isinstance(value, torch.Tensor) else value


def explain(model, prompt, *, budget: int = CHUNK_BUDGET, keep_attention: bool | None = None,
            on_layer=None, check_memory: bool = True, generate: int = 0, continuation=None,
            chat: bool = False, convention: str = "paper") -> Explanation:
    """Trace ``prompt`` through ``model`` and score every part of every update, in one forward pass.

    ``model`` is anything :func:`load_model` accepts (``"smollm2"``, a hub name, a path, a LoadedModel).
    Contributions are computed block by block while the forward pass runs, so long prompts never hold all
    attention matrices at once. ``on_layer(record, weights)`` is called after each block is scored (progress bars).
    Before the pass, the run's peak memory is estimated (:func:`lmtt_widgets.estimate_memory`) and a run that
    would not fit is refused with a :class:`MemoryEstimateError` saying what to change; ``check_memory=False``
    skips the check.
    ``generate=N`` (greedy), ``continuation="..."`` and ``chat=True`` (``prompt`` a list of messages) extend the
    traced sequence, still traced once: see :mod:`lmtt_widgets.generation`.
    ``convention="lmtt"`` scores exactly as LM-TT does (its 1e-5 proximity floor on every part, future source
    positions included, and the attention output bias no part); the default ``"paper"`` clips proximities at 0
    (README, "What the numbers mean").
    """
    from .tracing.tracer import _n_heads

    checks.choice(convention, "convention", CONVENTIONS)
    checks.count(budget, "budget", what=BUDGET_MEANS)
    checks.flag(check_memory, "check_memory")
    if keep_attention is not None and not isinstance(keep_attention, bool):
        raise InputTypeError(f"keep_attention must be True, False or None (automatic), not {keep_attention!r}.")
    if on_layer is not None and not callable(on_layer):
        raise InputTypeError(f"on_layer must be a function (record, weights) -> None, not {type(on_layer).__name__}.")
    if isinstance(prompt, (bool, float)) or checks.is_integer(prompt):  # estimate_memory reads a number as a length
        raise PromptTypeError(f"explain takes a prompt (text or token ids), not the number {prompt!r}; "
                              "estimate_memory(model, n_tokens) is the one that takes a length.")
    lm = load_model(model)
    sequence = None
    if generate or continuation is not None or chat:
        from .generation import build_sequence

        sequence = build_sequence(lm, prompt, generate=generate, continuation=continuation, chat=chat)
        prompt = sequence.ids
    if check_memory:
        from .memory_estimate import check_memory as check, estimate_memory

        check(estimate_memory(lm, prompt, keep_attention=keep_attention, budget=budget))
    n_heads = _n_heads(lm.model.config)
    topology = lm.adapter.resolve_topology(lm.model.config)
    n_layers = len(lm.model.get_submodule(lm.adapter.blocks))
    layers, pending = [], []

    def score_pending():
        # each layer is scored on its own device; only the reduced scores move (to the CPU, where graphs are read)
        floor = edge_floor(pending[0][0].resid_pre.shape[0], n_layers)
        layers.extend(_on_cpu(ls) for ls in score_layers([rec for rec, _ in pending], [w for _, w in pending],
                                                         n_heads, topology, budget=budget, edge_floor=floor,
                                                         convention=convention))
        if on_layer is not None:
            for rec, w in pending:
                on_layer(rec, w)
        pending.clear()

    def score(rec, w):
        # Layers are scored in groups. On long prompts the tracer drops a record's attention once this returns,
        # so the group holds a shallow copy of the record, which keeps the attention alive until it is scored.
        if pending and pending[0][0].resid_pre.device != rec.resid_pre.device:
            score_pending()  # a group lies on one device (models split over several by accelerate's device_map)
        pending.append((copy.copy(rec), w))
        T = rec.resid_pre.shape[0]
        group = layers_per_group(T, n_heads, rec.resid_pre.shape[1], n_layers, budget)
        if len(pending) == group or rec.index == n_layers - 1:
            score_pending()

    tr = trace(lm, prompt, on_layer=score, keep_attention=keep_attention, logits_at=_kept_logits(lm, prompt))
    if pending:
        score_pending()
    ex = Explanation(tr, ContributionScores(tr.topology, tr.n_heads, layers, convention))
    if sequence is not None:
        sequence.annotate(ex)
    return ex


def _kept_logits(lm, prompt) -> list[int] | None:
    """Positions whose logits the Explanation keeps: all (None) on short prompts, else the last one (the prediction;
    ``trace.logits`` computes any other row from the final residual when read)."""
    from .projections.logits import keeps_all
    from .tracing.tracer import tokenize

    T = int(tokenize(lm, prompt)[0].numel())
    vocab = lm.model.config.get_text_config().vocab_size if hasattr(lm.model.config, "get_text_config") else None
    vocab = vocab or lm.model.get_input_embeddings().weight.shape[0]
    itemsize = next(lm.model.parameters()).element_size()
    return None if keeps_all(T, vocab, itemsize) else [T - 1]


def explain_many(model, prompts, **kwargs) -> list[Explanation]:
    """:func:`explain` over a list of prompts, one forward pass each (no padding)."""
    if isinstance(prompts, (str, bytes, bytearray, torch.Tensor)) or isinstance(prompts, Mapping):
        raise InputTypeError(
            f"explain_many takes a list of prompts (texts or lists of token ids), not {type(prompts).__name__}. "
            "For one prompt use explain(model, prompt); for a tokenizer's batch, pass the texts."
        )
    try:
        prompts = list(prompts)
    except TypeError:
        raise InputTypeError(f"explain_many takes a list of prompts, not {type(prompts).__name__}.") from None
    lm = load_model(model)
    out = []
    for n, p in enumerate(prompts):
        try:
            out.append(explain(lm, p, **kwargs))
        except LmttError as exc:  # which of many prompts failed, in an error of the same kind
            raise type(exc)(f"prompt {n} of {len(prompts)}: {exc}") from exc
    return out
