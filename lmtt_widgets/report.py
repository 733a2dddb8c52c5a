"""A single self-contained HTML file in which the Explorer still works with no kernel and no network.

The page's state is the Explorer's own: the synced traits of an ``Explorer(ex)`` (whatever traits it has), one
snapshot per target of the traits that follow the target (predictions, metric, method tables, input attribution;
the logit lens of every target in one table, ``_lens_table``, from which the page rebuilds each target's), and
what a kernel would answer to clicks: every head's detail, every MLP block's and neuron's vocabulary projection
the report can afford, and the route scores (every part of every update above τ = 0.005),
from which the page traces the route of any target at any τ and granularity itself (js/staticroute.ts), exactly as
``Explanation.route`` does. Arrays travel binary, some at reduced precision where the eye cannot tell
(report_pack.py says which and how), gzip-compressed and written as text of 7 bits a character (report_pack
``to_text``: 8/7 of the compressed size, where base64 takes 4/3); the browser decompresses them with its own
``DecompressionStream``. The page is UTF-8, as the HTML standard asks. What a report leaves out (causal methods,
long prompts past the size budget) is listed in a note at its top.

A Content-Security-Policy forbids every network request, so what renders is provably offline. Prompts and tokens
are hostile text: the state travels as that text (no ``<``, CR or NUL at all) inside its ``<script>`` block, the
bundle (CSS and script) gzip-compressed in the same form, and the note and title are HTML-escaped.
The file is replaced atomically: a failed write keeps the old one.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import html
import os
import pathlib
import re
import secrets
import stat
import struct

import anywidget
import numpy as np
import torch

from . import checks
from .contributions.graph import DEFAULT_THRESHOLD, node_id, AFTER_ATTENTION, AFTER_MLP
from .contributions.scores import convention_said
from .errors import InputError, InputTypeError
from .explain import Explanation
from .methods.flow_attribution import attention_rollout_tables, flow_attribution_tables
from .methods.logit_attribution import logit_attribution_tables
from .methods.targets import make_metric
from .report_pack import Packer, gzip_member, pack, places_in_row_before, reduced, text_size, to_text, unpack
from .report_vocab import head_projections, mlp_projections, neuron_projections
from .widgets import payload, protocol, scoring
from .widgets.codec import decode_array, encode_array, wire_text
from .widgets.explorer import STATIC, Explorer

# A report stays under this many bytes when it can: past it, the least needed parts go first, each said up front.
MAX_BYTES = 3_000_000
# Every part of the route scores above this τ is carried, so the page traces routes for any τ its slider offers
# (js/tau.ts TAU_MIN) exactly as the kernel would.
TAU_FLOOR = 0.005
# Levels of the square-root colour scale the head matrices are stored with (report_pack "sqrt"): 255 (one byte)
# is what the pane's colour ramp can show: a stored map draws within 1-2 RGB units of the float one (2-3 at the
# ramp's steepest, where the ramp's own rounding is as large). Contribution maps (sparse) always keep 255; attention
# patterns (dense, the largest part of a long prompt's report) step down through PATTERN_LEVELS when the report does
# not fit otherwise, each step said in the note with its error.
CONTRIBUTION_LEVELS = 255
# Logits of vocabulary projections (shown with 2 decimals) are stored in steps of 2**-LOGIT_BITS: off by at most
# 0.002 (a neuron's: its direction's, times its float16 scale of magnitude at most 1: 0.002 and 0.025 % of the
# value; float16 logits were off by up to 0.05 %, 0.03 at a logit of 60).
LOGIT_BITS = 8
PATTERN_LEVELS = (255, 235, 215, 181, 152, 127, 90, 63, 45, 31, 22, 15, 11, 7)
# Down to this many steps a map's colours stay within 1.25 CIEDE2000 of the exact ones (255 steps: 1.07, the ramp's
# own 8-bit rounding; 90 steps: 1.56; about 1 is a just visible difference; js/dev/color-steps.ts measures it on the
# pane's ramp, both themes): the ladder takes these steps before it leaves any content out.
UNSEEN_LEVELS = 127
FLOW_METHODS = ("flow_attribution",)  # read off the trace: every target
CHEAP_INPUT_METHODS = ("input_x_gradient", "saliency")  # one backward pass: the default target only
# Heads whose vocabulary projection the report holds at each target other than the last (besides those on its
# route): the most important ones there. All 270 heads at all 127 other targets of a 128-token SmolLM2 prompt would
# take 34,290 unembedding products (minutes) and about 2 MB.
HEADS_PER_TARGET = 27
# ...unless all heads at all targets take at most this many unembedding products (short prompts: a few seconds)
ALL_HEAD_ROWS = 8192
# Lens columns computed to estimate whether the lens at every target can fit, before computing them all, and the
# share of what the sample adds to the report (packed in place, into the lens table: ``_lens_may_fit``), scaled to
# all targets, taken as the lens's cost. That estimate against the lens's real cost in the report (the step that
# holds it less the one without), since the lens is one table (``_lens_table``): 1.18-1.43 on the tiny test models
# (gpt2, gpt_neox, llama at 31 and 49 tokens); at most 1 / 1.43, since an estimate too low only costs time (the lens
# is computed, then the step holding it is packed and found over), one too high leaves the lens out where it fits.
# At 128 tokens on SmolLM2 the lens now fits and is kept. (Before the lens table: 1.13 and 1.19 on SmolLM2 at 64 and
# 128 tokens, 1.20-1.43 on the tiny models; the sample packed alone, the estimate before that, was 1.01-1.03 of the
# real cost on SmolLM2 and up to 1.40 on the tiny models, which pay alone for the token strings the report shares.)
LENS_SAMPLE = 8
LENS_ESTIMATE = 0.68
_NOT_AT_TARGET = ("not in this report at this target: it runs a backward pass for each target; the report holds it at "
                  "the last target")
_NEEDS_KERNEL = "not in this report: it runs the model many times; open the notebook with a kernel"

_CSP = ("default-src 'none'; script-src 'unsafe-inline' blob:; style-src 'unsafe-inline'; "
        "img-src data: blob:; font-src data:; connect-src 'none'")


def widget_traits(w) -> list[str]:
    """The Explorer's own synced traits (ipywidgets' and anywidget's bookkeeping left out): the report's state."""
    base = set(anywidget.AnyWidget.class_trait_names(sync=True))
    return sorted(n for n in w.trait_names(sync=True) if n not in base and not n.startswith("_"))


def widget_state(w, names=None) -> dict:
    """Trait values as the widget sends them (its serialisers applied), arrays still as bytes."""
    return w.get_state(list(names or widget_traits(w)))


def report_state(ex: Explanation, threshold: float = DEFAULT_THRESHOLD, granularity: str = "head") -> dict:
    """The report's widget state: the Explorer's synced traits at the last token (what the page starts from; the
    rest of the report, per-target snapshots, route scores and details, is in ``report_content``)."""
    return _Content(ex, threshold, granularity).state


def report_content(ex: Explanation, threshold: float = DEFAULT_THRESHOLD, granularity: str = "head", *,
                   max_bytes: int = MAX_BYTES) -> dict:
    """Everything the page holds: the state, each target's snapshot of the traits that follow the target, the
    route scores, and the details a click asks for (arrays as bytes, marked for their reduced storage)."""
    return _Content(ex, threshold, granularity).build(max_bytes)[0]


class _Content:
    """The report's parts, computed once; ``build`` fits them under a size with the fewest omissions."""

    def __init__(self, ex: Explanation, threshold: float, granularity: str):
        self.ex, T = ex, ex.n_tokens
        self.target = T - 1
        self.threshold, self.granularity = threshold, granularity
        self.route_mlp: set[tuple[int, int]] = set()
        route_heads: set[tuple[int, int, int]] = set()
        for t in range(T):
            g = ex.route(t, threshold, granularity)
            self.route_mlp |= payload.mlp_nodes(g)
            route_heads |= _route_heads_at(g, t)
        # the neuron lists a page can show: every route's MLP blocks and each target's column (the widget's own)
        self.neuron_nodes = self.route_mlp | {(layer, t) for layer in range(ex.n_layers) for t in range(T)}
        warm_neurons(ex, self.neuron_nodes)
        w = Explorer(ex, threshold=threshold, granularity=granularity)
        causal_missing = _ship_causal_table(w)
        self.state = widget_state(w)
        self.state.update(static=True, details={}, selection=None, error="",
                          status={"state": "idle", "message": "", "progress": 1.0})
        self.attributions = self._attributions(w)
        w.close()
        self.per_target = self._targets()
        self.state["neurons"] = payload.neuron_rows(ex, self.neuron_nodes)
        # route scores, with the arrays the state's block importance already holds as references to it (once, not
        # at every pack of the size ladder)
        self.flow = _flow_state_refs(flow_scores(ex, min(TAU_FLOOR, threshold)), self.state.get("block_importance"))
        self.heads = dict(zip(*self._head_details()))
        # vocabulary projections as tables (report_vocab.py): MLP blocks on any route, heads at the other targets
        # (the most important ones there and those on its route), the neurons of every route's blocks and of the
        # last token's column
        self.all_heads = ex.n_layers * ex.n_heads * (T - 1) <= ALL_HEAD_ROWS
        # what this report holds by design (said in its note whatever the budget)
        self.coverage = _ALWAYS_OMITTED + ([] if self.all_heads else [_SOME_HEADS]) + causal_missing
        self.route_heads = route_heads
        # the heads on each other target's route now; the rest of the held heads (and the lens off the last target)
        # only once the ladder can keep them (``_add_extras``): a long prompt's report cuts them anyway
        on_route = sorted(x for x in route_heads if x[2] != self.target)
        self.vocab = {"mlp": mlp_projections(ex, sorted(self.route_mlp)), "head": head_projections(ex, on_route)}
        self.head_on_route = np.ones(len(on_route), bool)
        self.has_extras = False
        self._lens: dict[int, dict] = {}  # lens columns already computed (``_lens_may_fit``'s sample)
        self.last_blocks = (payload.mlp_nodes(ex.route(self.target, threshold, granularity))
                            | {(layer, self.target) for layer in range(ex.n_layers)})
        self.neuron_blocks = self.route_mlp | {(layer, self.target) for layer in range(ex.n_layers)}
        self.vocab["neuron"], alone = neuron_projections(ex, self.neuron_blocks)
        self.neurons = {f"neuron:{layer}:{n}:{t}": payload.details(ex, f"neuron:{layer}:{n}:{t}")
                        for layer, n, t in alone}
        self.strings = _vocab_strings(ex, self.vocab)

    def _lens_may_fit(self, without: int, max_bytes: int) -> bool:
        """Whether the logit lens at every other target may fit in ``max_bytes`` of the page's text, the report
        without it taking ``without``: a sample of its columns is packed in place, with the rest of the report (so
        tokens' strings and repeats it shares with the rest are not counted twice), and what it adds is scaled to
        every target. The columns are kept for ``_add_lens``; the lens is most of the extras and costs a product
        with the unembedding per residual row (seconds at 128 tokens)."""
        positions = list(range(self.ex.n_tokens - 1))
        if not positions:  # a one-token prompt: no other target, no lens to add
            return True
        sample = positions[::max(1, -(-len(positions) // LENS_SAMPLE))]  # at most LENS_SAMPLE, evenly spread
        self._lens = payload.lens_columns(self.ex, sample)
        for t, column in self._lens.items():
            self.per_target[str(t)]["lens"] = column
        try:
            with_sample = len(self._packed(_STEPS[_LENS_STEP][0], _notes(_LENS_STEP))[1])
        finally:
            for t in self._lens:
                self.per_target[str(t)].pop("lens", None)
        return without + LENS_ESTIMATE * (with_sample - without) * len(positions) / len(sample) <= max_bytes

    def _add_lens(self) -> None:
        """The logit lens at every target (the sample's columns reused)."""
        rest = [t for t in range(self.ex.n_tokens - 1) if t not in self._lens]
        for t, column in {**self._lens, **payload.lens_columns(self.ex, rest)}.items():
            self.per_target[str(t)]["lens"] = column
        self._lens = {}

    def _add_extras(self) -> None:
        """The extras the ladder cuts first: every held head's projection at the other targets (not only those on
        their routes) and the logit lens at every target. Computed once, when a step that holds them is tried."""
        if self.has_extras:
            return
        if not all("lens" in snap for snap in self.per_target.values()):
            self._add_lens()
        heads = sorted(self._other_target_heads(self.route_heads))
        self.vocab["head"] = head_projections(self.ex, heads)  # the route's rows again: one product, the table sorted
        self.head_on_route = np.array([x in self.route_heads for x in heads], bool)
        self.strings = _vocab_strings(self.ex, self.vocab)
        self.has_extras = True

    def _other_target_heads(self, route_heads: set[tuple[int, int, int]]) -> set[tuple[int, int, int]]:
        """(layer, head, token) whose projections the report holds at targets other than the last: the
        ``HEADS_PER_TARGET`` most important heads at each target and the heads on its route."""
        ex, H = self.ex, self.ex.n_heads
        if self.all_heads:
            return {(layer, h, t) for layer in range(ex.n_layers) for h in range(H) for t in range(self.target)}
        imp = torch.stack([ls.head_total for ls in ex.scores.layers])  # [L, T, H]
        out = {(layer, h, t) for layer, h, t in route_heads if t != self.target}
        for t in range(self.target):
            top = imp[:, t, :].reshape(-1).topk(min(HEADS_PER_TARGET, imp.shape[0] * H)).indices.tolist()
            out |= {(i // H, i % H, t) for i in top}
        return out

    def _attributions(self, w) -> dict:
        """The attribution pane's trait per method and target: at the last target the widget's own (the shown
        method and the cheap input methods, with their agreement); at the others the free flow methods computed
        batched, with the words view and the agreement among the free methods (the gradient methods' rows say
        why they are not there)."""
        out: dict[str, dict[str, dict]] = {}
        shown = w.attribution_method
        for name in (shown,) + CHEAP_INPUT_METHODS:
            if name in scoring.attribution_methods():
                w.attribution_method = name
                out.setdefault(name, {})[str(self.target)] = widget_state(w, ["attribution"])["attribution"]
        w.attribution_method = shown
        methods = scoring.attribution_methods()
        positions = list(range(self.ex.n_tokens - 1))
        free = {name: tables for name, tables in (("flow_attribution", flow_attribution_tables),
                                                  ("attention_rollout", attention_rollout_tables))
                if name in methods}
        computed = {name: fn(self.ex, positions) for name, fn in free.items()}
        for name in FLOW_METHODS:
            if name not in computed:
                continue
            matrix = (scoring.run_attribution_matrix(self.ex, name, {}) if self.ex.generated_positions else None)
            for n, t in enumerate(positions):
                table = computed[name][n]
                others = {o: computed[o][n] if o in computed else _NOT_AT_TARGET if o in scoring.CHEAP_INPUT
                          else _NEEDS_KERNEL for o in methods if o != name}
                out.setdefault(name, {})[str(t)] = payload.attribution(
                    self.ex, table, matrix, methods, options={},
                    agreement=scoring.attribution_agreement(table, others),
                    words=scoring.attribution_words(self.ex, table))
        return out

    def _targets(self) -> dict:
        """Per target, what the widget recomputes when its target changes (Explorer._refilter and _rescore):
        predictions, metric (the logit lens: ``_add_extras``), the heatmap's tables (importance and direct logit
        attribution, computed batched) and their agreement."""
        ex, snaps = self.ex, {}
        positions = list(range(ex.n_tokens - 1))
        metrics = [make_metric(ex, None, None, t) for t in positions]
        dla = logit_attribution_tables(ex, metrics)
        for n, t in enumerate(positions):
            st = scoring.Settings(t)
            tables = {"importance": scoring.run_method(ex, "importance", st), "logit_attribution": dla[n]}
            snaps[str(t)] = {
                "meta": payload.meta(ex, t),
                "metric": payload.metric_info(ex, metrics[n], st, ready=not scoring.causal_problem(ex, st)),
                "method_scores": payload.method_scores(tables, ex.n_layers, ex.n_heads),
                "agreement": scoring.head_agreement(tables, ex.n_layers, ex.n_heads),
            }
        return snaps

    def _head_details(self):
        ex, H = self.ex, self.ex.n_heads
        heads = [(layer, h) for layer in range(ex.n_layers) for h in range(H)]
        keys = [f"head:{layer}:{h}:{self.target}" for layer, h in heads]
        return keys, payload.head_details(ex, heads, self.target)

    def build(self, max_bytes: int) -> tuple[dict, list[str], "_Packed"]:
        """The report dict, the omissions it needed for its container's text to stay under ``max_bytes``, and
        that container. Every step of the ladder before the neurons' one holds less than the step before it: the
        first step without the extras is tried first (the extras are computed only if it fits), then a step that
        fits after one that does not is found by bisection among the steps before it or after it (a few packs,
        not one per step; deflate can make a coarser map a few hundred bytes larger, so the sizes fall only almost
        monotonically); at the neurons'
        step, as many route blocks keep their projections as fit (the most important first: bisection on their
        number); when even the fewest do not fit with the coarsest maps, the maps go and the neurons' projections
        take back the room they leave, as far as they fit."""
        self._packer = Packer()  # remembers each section's deflate: a step re-deflates only what it changed
        packs: dict[int, tuple] = {}

        def fits(step: int) -> bool:
            if step not in packs:
                packs[step] = self._packed(_STEPS[step][0], _notes(step))
            return len(packs[step][1]) <= max_bytes

        if fits(_EXTRAS_STEP):  # all but the extras fit: the first step that fits is one of those before
            # every step before holds the lens at every target: computed only if its sample says it may fit, and
            # the heads' projections only if the step holding the lens but not them fits
            first = _EXTRAS_STEP
            if self._lens_may_fit(len(packs[_EXTRAS_STEP][1]), max_bytes):
                self._add_lens()
                if fits(_LENS_STEP):
                    self._add_extras()
                    first = _first_fitting(0, _LENS_STEP, fits)
            return packs[first][0], _notes(first), packs[first][1]
        first = _first_fitting(_EXTRAS_STEP + 1, _NEURON_STEP, fits)  # the neurons' step: "none of these fits"
        if first < _NEURON_STEP:
            return packs[first][0], _notes(first), packs[first][1]
        found = self._most_neurons(_STEPS[_NEURON_STEP][0], _notes(_NEURON_STEP)[:-1], max_bytes)
        if found is not None:  # its fewest is the neurons' step itself
            return found
        # the last step leaves the maps out: the room they leave takes back neurons' projections, all if they fit
        last = len(_STEPS) - 1
        without = _notes(last)[:-1]  # its notes but the neurons' one
        every = self._packed({**_STEPS[last][0], "neurons": "routes"}, without)
        if len(every[1]) <= max_bytes:
            return every[0], without, every[1]
        found = self._most_neurons(_STEPS[last][0], without, max_bytes)
        if found is not None:
            return found
        fits(last)
        report, packed = packs[last]
        over = (f"Even so this report's state is {len(packed) / 1e6:.1f} MB, over its budget of "
                f"{max_bytes / 1e6:.1f} MB.")
        return report, _notes(len(_STEPS) - 1) + [over], packed

    def _packed(self, level: dict, omitted: list[str]) -> tuple[dict, "_Packed"]:
        report = self._report(level, omitted)
        return report, _Packed(self._packer.pack(report))

    def _most_neurons(self, level: dict, omitted: list[str], max_bytes: int):
        """The report with neurons' projections for the most route blocks that fit under ``max_bytes`` (the last
        token's route and column always), or None when even the fewest do not fit."""
        ranked = sorted(self.route_mlp - self.last_blocks,
                        key=lambda lt: -float(self.ex.scores.layers[lt[0]].mlp[lt[1]]))
        # sixteenths of the ranked blocks: at most 5 packs (each is a gzip of megabytes)
        lo, hi, best = 0, 15, None
        while lo <= hi:
            mid = (lo + hi) // 2
            blocks = self.last_blocks | set(ranked[:len(ranked) * mid // 16])
            note = (f"Single neurons' vocabulary projections: for the {len(blocks)} most important of the "
                    f"{len(self.neuron_blocks)} MLP blocks on the routes (the last token's route and column "
                    "included; the report's size budget). Every block's neuron list is here.")
            report, packed = self._packed({**level, "neurons": blocks}, omitted + [note])
            if len(packed) <= max_bytes:
                best, lo = (report, omitted + [note], packed), mid + 1
            else:
                hi = mid - 1
        return best

    def _report(self, level: dict, omitted: list[str]) -> dict:
        details = {}
        for key, d in self.heads.items():
            if level["maps"] is None:
                d = {k: v for k, v in d.items() if k not in ("pattern", "contribution")}
            else:
                d = {**d, "pattern": reduced(d["pattern"], "sqrt", level["maps"], rans=True),
                     "contribution": reduced(d["contribution"], "sqrt", CONTRIBUTION_LEVELS)}
            details[key] = d
        details.update(self.neurons)
        vocab = {"mlp": self.vocab["mlp"],
                 "head": self.vocab["head"] if level["heads"] != "route" else _rows(self.vocab["head"], self.head_on_route),
                 "neuron": self.vocab["neuron"] if level["neurons"] == "routes" else _neuron_subset(
                     self.vocab["neuron"], self.last_blocks if level["neurons"] == "last" else level["neurons"])}
        lens = {t: snap["lens"] for t, snap in self.per_target.items() if level["lens"] and "lens" in snap}
        texts = _texts_by_use(details, vocab, self.strings, lens.values())
        details = _compact_pairs(details, texts)
        vocab = {name: _stored_table(table, self.strings, texts, prev=name == "head") for name, table in vocab.items()}
        lens_table = _lens_table(lens, texts) if lens else None
        importance = decode_array(self.state["head_importance"]) if self.state.get("head_importance") else None
        per_target = {t: _reduced_snapshot(snap, importance, int(t)) for t, snap in self.per_target.items()}
        state = {**self.state, "neurons": _neurons_reduced(self.state["neurons"]), "lens": _lens_reduced(self.state["lens"]),
                 "head_importance": reduced(self.state["head_importance"], "f16")}
        attributions = {name: {t: _attribution_reduced(a) if t != str(self.target) else a for t, a in by_t.items()}
                        for name, by_t in self.attributions.items()}
        return {"version": 2, "state": state, "per_target": per_target, "attributions": attributions,
                "flow": self.flow, "details": details, "vocab": vocab, **({"lens": lens_table} if lens else {}),
                "texts": list(texts),
                "omitted": _said(self.coverage, omitted), "budget_omitted": omitted, "default_target": self.target,
                "pattern_levels": level["maps"]}  # the attention patterns' levels (None: no maps), as the note says


def _first_fitting(first: int, last: int, fits) -> int:
    """The first of the steps ``first..last`` that fits, by bisection (each try is a pack), ``last`` standing for
    "none before it fits"."""
    while first < last:
        mid = (first + last) // 2
        first, last = (first, mid) if fits(mid) else (mid + 1, last)
    return first


class _Packed:
    """A packed container: its size as the page's text (``len``: at most one byte over) and that text (``str``)."""

    def __init__(self, data: bytes):
        self.data = data

    def __len__(self) -> int:
        return text_size(len(self.data))

    def __str__(self) -> str:
        return to_text(self.data)


def _rows(table: dict, keep: np.ndarray) -> dict:
    """A head / mlp projection table cut to the rows ``keep`` marks."""
    return {k: v[keep] for k, v in table.items()}


def _neuron_subset(table: dict, blocks: set[tuple[int, int]]) -> dict:
    """The neuron table cut to the blocks ``blocks`` (the directions no other block uses dropped)."""
    index = np.full_like(table["index"], -1)
    for layer, t in blocks:
        index[layer, t] = table["index"][layer, t]
    used = np.unique(index[index >= 0])
    remap = np.full(len(table["ids"]) + 1, -1, np.int64)
    remap[used] = np.arange(len(used))
    return {"index": np.where(index >= 0, remap[index], -1), "scale": table["scale"],
            "ids": table["ids"][used], "vals": table["vals"][used]}


def _route_heads_at(g, target: int) -> set[tuple[int, int, int]]:
    """(layer, head, target) of every head with a part in an attention edge of the route ``g`` into ``target``'s
    column (the heads the heatmap's route view lights up there)."""
    from .contributions.graph import node_of

    heads = g.heads.reshape(len(g.src), g.n_heads)
    out = set()
    for e in np.flatnonzero(np.abs(heads).sum(1) > 0):
        _, layer, token = node_of(int(g.dst[e]), g.n_tokens)
        if token == target:
            out |= {(layer, int(h), target) for h in np.flatnonzero(heads[e])}
    return out


def _vocab_strings(ex: Explanation, vocab: dict) -> dict[int, str]:
    """Token text of every vocabulary id the tables hold, decoded once."""
    ids = np.unique(np.concatenate([t["ids"].reshape(-1) for t in vocab.values()]))
    tok = ex.trace.lm.tokenizer
    return {int(i): tok.decode([int(i)], clean_up_tokenization_spaces=False) for i in ids}


def _stored_table(table: dict, strings: dict[int, str], texts: dict[str, int], prev: bool = False) -> dict:
    """A report_vocab table for the page: token ids as indices into the report's token texts (16 bits; ``prev``:
    as references to the row before, report_pack ``prev``: a head's projections at adjacent tokens share half
    their tokens), logits in steps of 1/256 (``LOGIT_BITS``; the pane shows 2 decimals), neuron scales (at most 1
    in magnitude, report_vocab) in float16, keys in 16 bits."""
    out = {}
    for name, v in table.items():
        if name == "ids":
            ids, where = np.unique(np.asarray(v, np.int64), return_inverse=True)
            index = np.array([texts.setdefault(strings[int(i)], len(texts)) for i in ids], np.int64)
            v = index[where.reshape(-1)].reshape(np.shape(v))
            out[name] = reduced(encode_array(v.astype(np.uint32), "uint32"), "prev" if prev else "u16")
        elif name == "vals":  # rows of top-k descending, bottom-k ascending (small differences)
            out[name] = reduced(encode_array(np.asarray(v, np.float32)), "fixed", bits=LOGIT_BITS)
        elif name == "scale":
            out[name] = reduced(encode_array(np.asarray(v, np.float32)), "f16")
        elif name == "index":  # rows numbered in the order of their first use: mostly one past the largest before
            out[name] = reduced(encode_array(np.asarray(v).astype(np.int32), "int32"), "next")
        else:  # keys, sorted: column by column (layers, heads, tokens), as differences
            out[name] = reduced(encode_array(np.asarray(v).astype(np.uint32), "uint32"), "u16", delta=True, cols=True)
    return out


def _is_pairs(obj) -> bool:
    return isinstance(obj, list) and bool(obj) and all(
        isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) and isinstance(p[1], (int, float)) for p in obj)


def _texts_by_use(details: dict, vocab: dict, strings: dict[int, str], lens=()) -> dict[str, int]:
    """The report's table of token texts, the most used first: the 16-bit indices into it are then mostly small,
    so the plane of their high bytes (report_pack ``planes``) deflates to little. Texts used as often are in
    alphabetical order, so neighbours share their first letters (the table deflates 17 % smaller)."""
    counts: collections.Counter = collections.Counter()

    def walk(o):
        if _is_pairs(o):
            counts.update(p[0] for p in o)
        elif isinstance(o, dict):
            for v in o.values():
                walk(v)

    walk(details)
    for table in vocab.values():
        ids, n = np.unique(np.asarray(table["ids"]).reshape(-1), return_counts=True)
        for i, c in zip(ids.tolist(), n.tolist()):
            counts[strings[i]] += c
    for column in lens:
        ids, n = np.unique(decode_array(column["ids"]), return_counts=True)
        for i, c in zip(ids.tolist(), n.tolist()):
            counts[column["strings"][str(i)]] += c
    return {text: n for n, (text, _) in enumerate(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))}


def _compact_pairs(obj, texts: dict[str, int]):
    """Every list of [text, number] pairs (vocabulary projections) as two arrays, an index into the report's one
    table of token texts and the numbers (float32): a token text is written once, not once per list it is in."""
    if isinstance(obj, dict):
        return {k: _compact_pairs(v, texts) for k, v in obj.items()}
    if _is_pairs(obj):
        ids = [texts.setdefault(p[0], len(texts)) for p in obj]
        # values are logits shown with 2 decimals: in steps of 1/256 (sorted: small differences)
        return {"pair_texts": reduced(encode_array(ids, "uint32"), "u16"),
                "pair_values": reduced(encode_array([p[1] for p in obj]), "fixed", bits=LOGIT_BITS)}
    return obj


def _lens_reduced(lens: dict) -> dict:
    """A lens column with ids and ranks in 16 bits and probabilities in float16 (shown as percentages)."""
    if not lens:
        return lens
    return {**lens, "ids": reduced(lens["ids"], "u16"), "probs": reduced(lens["probs"], "f16", delta=True),
            "rank_prev": reduced(lens["rank_prev"], "u16", offset=1)}  # ranks up to the vocabulary's size, -1: none


# The logit lens at the targets other than the last: one table (``_lens_table``), not a column in each snapshot.
_LENS_TABLE = "lens"


def _lens_rank_guess(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For lens columns' ids [N, R, k]: (the place of each token in its column's row before it, whether it is
    there). A token listed at place j of the row before has rank j there (the k most probable are listed in
    order), but for ties (``_lens_table`` stores the ranks where that is not so)."""
    return places_in_row_before(ids)


def _lens_table(columns: dict[str, dict], texts: dict[str, int]) -> dict:
    """The lens columns of many targets (``payload.lens_columns``) as one table (js/static.ts ``fromLensTable``
    and ``_lens_columns`` here give the columns back, exactly): ``ids`` [N, R, k] stored as references to the row
    before (report_pack ``prev``); ``rank_prev`` not stored where it is the token's place in the row before
    (``_lens_rank_guess``): ``rank_rest`` holds the ranks of the tokens that are not there (row 0's -1 included),
    ``rank_fix_at`` / ``rank_fix`` the flat places and ranks of those that are but rank otherwise; the tokens'
    strings as indices into the report's texts, one per id the table holds (ascending), not one dict per column."""
    tokens = sorted(columns, key=int)
    cols = [columns[t] for t in tokens]
    ids = np.stack([decode_array(c["ids"]) for c in cols]).astype(np.int64)
    ranks = np.stack([decode_array(c["rank_prev"]) for c in cols]).astype(np.int64)
    guess, found = _lens_rank_guess(ids)
    fix = found & (ranks != guess)
    strings = {int(i): text for c in cols for i, text in c["strings"].items()}
    return {
        "tokens": [int(t) for t in tokens], "rows": [int(c["rows"]) for c in cols],
        "ids": reduced(encode_array(ids.astype(np.uint32), "uint32"), "prev"),
        "probs": reduced(encode_array(np.stack([decode_array(c["probs"]) for c in cols])), "f16", delta=True),
        "rank_rest": reduced(encode_array(ranks[~found].astype(np.int32), "int32"), "u16", offset=1),
        "rank_fix_at": encode_array(np.flatnonzero(fix).astype(np.uint32), "uint32"),
        "rank_fix": encode_array(ranks[fix].astype(np.int32), "int32"),
        "strings": reduced(encode_array(np.array([texts.setdefault(strings[i], len(texts)) for i in np.unique(ids)],
                                                 np.int64).astype(np.uint32), "uint32"), "u16"),
    }


def _lens_columns(table: dict, texts: list[str]) -> dict[str, dict]:
    """``read_report``: the lens columns of a lens table (``_lens_table``), by target, as the kernel sends them."""
    ids = np.asarray(table["ids"]).astype(np.int64)
    guess, found = _lens_rank_guess(ids)
    ranks = np.where(found, guess, 0)
    ranks[~found] = table["rank_rest"]
    ranks.reshape(-1)[np.asarray(table["rank_fix_at"], np.int64)] = table["rank_fix"]
    text_of = dict(zip(np.unique(ids).tolist(), (texts[int(i)] for i in table["strings"])))
    out = {}
    for n, (t, rows) in enumerate(zip(table["tokens"], table["rows"])):
        out[str(t)] = {"rows": rows, "token": t, "ids": ids[n].astype(np.uint32),
                       "probs": np.asarray(table["probs"][n], np.float32), "rank_prev": ranks[n].astype(np.int32),
                       "strings": {str(i): text_of[i] for i in np.unique(ids[n]).tolist()}}
    return out


def _reduced_snapshot(snap: dict, head_importance: np.ndarray | None, target: int) -> dict:
    out = {k: v for k, v in snap.items() if k != "lens"}
    # scores shown with 2-3 digits: float16 keeps 3 significant ones (NaN, "not computed", stays raw); a head table
    # that is the state's head importance at this target is held once, there
    out["method_scores"] = {name: {**t, "heads": _state_column(t["heads"], head_importance, target)
                                   or reduced(t["heads"], "f16"), "mlp": reduced(t["mlp"], "f16")}
                            for name, t in snap.get("method_scores", {}).items()}
    return out


# The page rebuilds a table marked so from the state (js/static.ts ``fromStateColumns``, ``read_report`` here).
_COLUMN_OF = "column_of"


def _state_column(heads: dict, head_importance: np.ndarray | None, target: int) -> dict | None:
    """A reference to ``head_importance[:, :, target]`` (the state's [L, H, T], stored in float16 as the tables
    are) when the head table ``heads`` [L, H] is exactly that column (the flow share table, methods/importance.py),
    else None: the table is then stored as it is."""
    values = decode_array(heads)
    if head_importance is None or values.shape != head_importance.shape[:2] or not 0 <= target < head_importance.shape[2]:
        return None
    column = head_importance[:, :, target]
    if values.dtype != column.dtype or values.tobytes() != np.ascontiguousarray(column).tobytes():
        return None
    return {_COLUMN_OF: "head_importance", "token": target}


# The route scores' per-update arrays that are, value for value, a table of the state's block importance (the same
# scores, [L, T] laid out as the flow's layer * T + token): held once, there (js/static.ts ``fromStateBlocks``).
_FLOW_IN_STATE = {"mlp": "mlp", "resid_attn": "residual_attention", "resid_mlp": "residual_mlp"}
_STATE_OF = "state_of"


def _flow_state_refs(flow: dict, blocks: dict | None) -> dict:
    """``flow`` with each per-update array that equals its block importance table (``_FLOW_IN_STATE``) replaced by
    a reference to it; an array that differs in any bit stays (the route is traced from exact scores)."""
    out = dict(flow)
    for name, key in _FLOW_IN_STATE.items():
        table = (blocks or {}).get(key)
        if table is None or name not in flow:
            continue
        mine, theirs = decode_array(flow[name]), decode_array(table)
        if mine.dtype == theirs.dtype and mine.tobytes() == np.ascontiguousarray(theirs).tobytes():
            out[name] = {_STATE_OF: "block_importance", "key": key}
    return out


def _state_columns(report: dict) -> dict:
    """``read_report``: the per-target tables held as state columns, the route scores held as state tables, and
    the lens columns held as one table, back as arrays (as the page rebuilds them)."""
    if isinstance(report.get(_LENS_TABLE), dict):
        for t, column in _lens_columns(report.pop(_LENS_TABLE), report.get("texts", [])).items():
            report["per_target"][t]["lens"] = column
    for name, ref in report.get("flow", {}).items():
        if isinstance(ref, dict) and ref.get(_STATE_OF) == "block_importance":
            report["flow"][name] = np.ascontiguousarray(report["state"]["block_importance"][ref["key"]]).reshape(-1)
    for by_target in report.get("attributions", {}).values():
        for att in by_target.values():
            _merged_from_scores(att)
    importance = report["state"].get("head_importance")
    for snap in report.get("per_target", {}).values():
        for table in snap.get("method_scores", {}).values():
            ref = table.get("heads")
            if isinstance(ref, dict) and ref.get(_COLUMN_OF) == "head_importance":
                table["heads"] = np.ascontiguousarray(importance[:, :, int(ref["token"])])
    return report


# The word view's merges of a target's scores, left to the page (js/static.ts ``fromScoreMerges``): each word's sum,
# mean or max of its tokens' scores, which the report already holds (``_attribution_reduced``).
_MERGED_FROM_SCORES = "from_scores"


def _attribution_reduced(att: dict) -> dict:
    """An attribution pane's trait with its token scores in float16 (drawn as bars and shown with 3 digits; NaN,
    after the position, keeps the array in float32) and its word merges computed in the page from those scores
    (granularity.merge's rules: the page's merges of the float16 scores are within float16's rounding of the
    kernel's), not stored."""
    if not att:
        return att
    out = {**att, "scores": reduced(att["scores"], "f16")}
    if isinstance(att.get("words"), dict):
        out["words"] = {**att["words"], "merged": _MERGED_FROM_SCORES}
    return out


def _merged_from_scores(att: dict) -> None:
    """``read_report``: an attribution's word merges, computed from its scores as the page computes them."""
    from .granularity import merge

    words = att.get("words") if isinstance(att, dict) else None
    if isinstance(words, dict) and words.get("merged") == _MERGED_FROM_SCORES:
        spans = [(a, b + 1) for a, b in words["spans"]]
        values = torch.as_tensor(np.asarray(att["scores"], np.float64))
        words["merged"] = {how: merge(values, spans, how).numpy().astype(np.float32) for how in words["merges"]}


# Steps taken, in order, while a report is over its size: first the attention patterns' precision down to what the
# eye cannot tell (UNSEEN_LEVELS), then the extras (heads' projections off the route and the lens at targets other
# than the last), then the patterns' precision further, then the neurons' projections off the last route, last the
# maps. Each step is (level, kind, note): the note of a kind replaces that kind's earlier one (a page says its
# patterns' one precision).
_FULL = {"maps": PATTERN_LEVELS[0], "lens": True, "heads": "held", "neurons": "routes"}
_UNSEEN = PATTERN_LEVELS[:PATTERN_LEVELS.index(UNSEEN_LEVELS) + 1]
_EXTRAS_CUT = {**_FULL, "maps": UNSEEN_LEVELS, "heads": "route", "lens": False}


def _maps_note(levels: int) -> str:
    seen = ("colours within 1.25 CIEDE2000 of the exact ones, a byte's within 1.07: no visible difference"
            if levels >= UNSEEN_LEVELS else "a difference the eye may see in places")
    return (f"Attention patterns are stored with {levels} levels of the heatmap's square-root colour scale instead "
            f"of {PATTERN_LEVELS[0]} (off by at most {0.5 / levels:.3f} of the scale, {1 / levels:.3f} for values "
            f"below its first step: {seen}; the report's size budget).")


_STEPS = [
    (_FULL, "", ""),
    *[({**_FULL, "maps": n}, "maps", _maps_note(n)) for n in _UNSEEN[1:]],
    ({**_FULL, "maps": UNSEEN_LEVELS, "heads": "route"}, "heads",
     "Heads' vocabulary projections at targets other than the last: only the heads on each target's route (the "
     "report's size budget)."),
    (_EXTRAS_CUT, "lens", "The logit lens is included for the last token only (the report's size budget)."),
    *[({**_EXTRAS_CUT, "maps": n}, "maps", _maps_note(n)) for n in PATTERN_LEVELS[len(_UNSEEN):]],
    ({**_EXTRAS_CUT, "maps": PATTERN_LEVELS[-1], "neurons": "last"}, "neurons",
     "Single neurons' vocabulary projections: only for the MLP blocks on the last token's route and in its column "
     "(the report's size budget)."),
    ({**_EXTRAS_CUT, "maps": None, "neurons": "last"}, "maps",
     "Head attention patterns and contribution maps are left out (the report's size budget); head importances, "
     "routes and vocabulary projections are all here."),
]


# the first step without the extras, and the first that cuts neurons' projections (``build`` bisects between;
# after that step only the one without maps, which it treats on its own)
_EXTRAS_STEP = next(i for i, (level, _, _) in enumerate(_STEPS) if not level["lens"] and level["heads"] == "route")
_NEURON_STEP = next(i for i, (level, _, _) in enumerate(_STEPS) if level["neurons"] == "last")
# the step before: the lens at every target, heads' projections of the routes only (the cheapest step with an extra)
_LENS_STEP = _EXTRAS_STEP - 1
assert _STEPS[_LENS_STEP][0]["lens"] and _STEPS[_LENS_STEP][0]["heads"] == "route"
assert _NEURON_STEP == len(_STEPS) - 2 and _STEPS[-1][0]["maps"] is None


def _notes(step: int) -> list[str]:
    """What the ladder has left out by ``step``: the latest note of each kind, in the order the kinds came."""
    notes: dict[str, str] = {}
    for _, kind, note in _STEPS[1:step + 1]:
        notes[kind] = note
    return list(notes.values())


def _subject(note: str) -> str:
    return note.split(":", 1)[0]


def _ship_causal_table(w: Explorer) -> list[str]:
    """Computes the heatmap's ≈ causal effect at the last target (attribution patching against mean ablation: one
    forward and one backward pass) so that the page shows causal effect beside flow share without a kernel; the
    heatmap opens on flow share as in the widget. Other targets' snapshots hold flow share and logit attribution.
    Returns the note's line when it could not be computed (the Explorer's message: a model changed since the
    trace, a gradient that cannot flow), so the note never claims a table the page lacks."""
    w.ablation = "mean"
    w.head_mode = scoring.CAUSAL
    w.head_mode = "importance"  # the table stays among the shown settings' tables (the Explorer caches it)
    if scoring.CAUSAL in w.method_scores:
        return []
    why = w.error or "no reason given"
    return [f"The heatmap's ≈ causal effect, even at the last target: it could not be computed ({why})."]


def _said(coverage: list[str], budget: list[str]) -> list[str]:
    """The note's list: what the report leaves out by design, then what the size budget cut; a budget note on the
    same subject (the text before its colon, e.g. "Single neurons' vocabulary projections") replaces the design's,
    so the note never says two things of one part."""
    cut = {_subject(n) for n in budget}
    return [n for n in coverage if _subject(n) not in cut] + budget


_ALWAYS_OMITTED = [
    "Causal methods need a kernel, except the heatmap's ≈ causal effect (attribution patching against mean "
    "ablation: one backward pass) at the last target: exact patching checks, a corrupted prompt, other targets. So "
    "do input-attribution methods that run the model more than once (integrated gradients, occlusion); input × "
    "gradient and saliency (one backward pass per target) are here at the last target only.",
    "Single neurons' vocabulary projections: the neurons of every MLP block on a route (at the report's threshold) "
    "and of the last token's column (every block's neuron list is here).",
]
_SOME_HEADS = (f"Heads' vocabulary projections at targets other than the last: the {HEADS_PER_TARGET} most important "
               "heads at each target and the heads on its route (every head's maps and importance are here at every "
               "target).")


def _neurons_reduced(rows: dict) -> dict:
    """The neuron lists with ids in 16 bits and scores in float16 (shown with 2-3 digits; importance, sorted in
    each block, as differences)."""
    return {**rows, "ids": reduced(rows["ids"], "u16"), "importance": reduced(rows["importance"], "f16", delta=True),
            "activation": reduced(rows["activation"], "f16")}


def warm_neurons(ex: Explanation, nodes) -> None:
    """Score the neurons of many MLP blocks one layer at a time (one batched pass per layer instead of one per
    block) into the explanation's own cache, which ``ex.neurons`` then reads."""
    from .contributions.scores import neuron_importance

    by_layer: dict[int, list[int]] = {}
    for layer, token in nodes:
        if (layer, token) not in ex._neuron_rows:
            by_layer.setdefault(layer, []).append(token)
    for layer, tokens in by_layer.items():
        tokens = sorted(tokens)
        rec = ex.trace.layers[layer]
        idx = torch.tensor(tokens)
        rows = dataclasses.replace(rec, neurons=rec.neurons[idx], mlp_update=rec.mlp_update[idx],
                                   resid_post=rec.resid_post[idx],
                                   mlp_post_rstd=None if rec.mlp_post_rstd is None else rec.mlp_post_rstd[idx])
        imp = neuron_importance(rows, ex.trace.weights[layer], convention=ex.scores.convention)
        for n, token in enumerate(tokens):
            ex._neuron_rows[(layer, token)] = imp[n]


def flow_scores(ex: Explanation, floor: float) -> dict:
    """The route scores of every update, sparse: each part above ``floor`` (and, for the per-head breakdown of an
    edge above it, every stored head score of that edge), enough to trace any route with τ >= ``floor`` exactly.
    Rows are updates (layer, token) at ``layer * T + token``; see js/staticroute.ts."""
    sc, T, H = ex.scores, ex.n_tokens, ex.n_heads
    zeros = torch.zeros(T)

    def per_update(name):
        return encode_array(torch.stack([zeros if getattr(ls, name) is None else getattr(ls, name).float()
                                         for ls in sc.layers]).reshape(-1))

    rows_i = torch.repeat_interleave(torch.arange(T), torch.arange(1, T + 1))  # packed edge -> its target row
    cols_j = torch.cat([torch.arange(i + 1) for i in range(T)])
    offset = torch.cat([torch.zeros(1, dtype=torch.long), torch.arange(1, T + 1).cumsum(0)])[:-1]
    head_ptr, head_col, head_val, edge_ptr, edge_src, edge_val = [0], [], [], [0], [], []
    for ls in sc.layers:
        rows = torch.repeat_interleave(torch.arange(T), ls.head_ptr.diff().long())
        cols, vals = ls.head_col.long(), ls.head_val.float()
        edge_of = ls.edge.float()[offset[rows] + cols // H]
        keep = (vals > floor) | (edge_of > floor)
        head_ptr += (torch.bincount(rows[keep], minlength=T).cumsum(0) + head_ptr[-1]).tolist()
        head_col.append(cols[keep])
        head_val.append(vals[keep])
        ek = ls.edge.float() > floor
        edge_ptr += (torch.bincount(rows_i[ek], minlength=T).cumsum(0) + edge_ptr[-1]).tolist()
        edge_src.append(cols_j[ek])
        edge_val.append(ls.edge.float()[ek])
    route = ex.route(T - 1, DEFAULT_THRESHOLD)  # its node flags cover the whole graph, on the route or not
    return {
        "L": ex.n_layers, "T": T, "H": H, "parallel": sc.topology == "parallel", "floor": floor,
        **{name: per_update(name) for name in ("resid_attn", "bias_attn", "external_attn", "mlp", "resid_mlp",
                                                "external_mlp")},
        # scores stay float32 where τ may compare them; indices fit 16 bits up to 65,536 sources
        # (pointers and each row's columns ascend: stored as differences)
        "head_ptr": reduced(encode_array(head_ptr, "uint32"), "u16", delta=True),
        "head_col": reduced(encode_array(torch.cat(head_col), "uint32"), "u16", delta=True),
        # the head scores above the floor exact (τ compares them); those kept only for an edge's breakdown by head
        # (at most the floor: never kept, shown with 3 digits) as float16
        "head_val": reduced(encode_array(torch.cat(head_val)), "f16lo", below=floor),
        "edge_ptr": reduced(encode_array(edge_ptr, "uint32"), "u16", delta=True),
        "edge_src": reduced(encode_array(torch.cat(edge_src), "uint32"), "u16", delta=True),
        "edge_val": encode_array(torch.cat(edge_val)),
        "cancelling": encode_array(route.cancelling, "int32"), "external": encode_array(route.external, "int32"),
    }


# Characters that reorder or break the text around them (bidi controls, line separators): the browser tab's title
# shows them as visible escapes, like the widget does (js/text.ts displayToken).
_LAYOUT = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


def _title(ex: Explanation) -> str:
    text = wire_text(f"lmtt-widgets · {ex.trace.lm.name} · {''.join(ex.tokens)[:80]}")
    return html.escape(_LAYOUT.sub(lambda m: f"⟨U+{ord(m.group()):04X}⟩", text))


def _note(ex: Explanation, omitted: list[str], cut: bool = False) -> str:
    """The visible note at the top: what the report holds and what it leaves out (HTML-escaped); ``cut``: the
    size budget cut some of what the first sentence lists (the list says what)."""
    T, L, H = ex.n_tokens, ex.n_layers, ex.n_heads
    holds = (f"Offline report: routes for all {T} target tokens at any threshold and both granularities; all "
             f"{L * H} heads' details; the neurons of every MLP block on a route and of each target's column, with "
             "their vocabulary projections; the logit lens, head importance, direct logit attribution and "
             "flow-based input attribution at every target; input × gradient at the last token."
             + (f" {said}" if (said := convention_said(ex.scores.convention)) else "")
             + (" The report's size budget cut some of this: the list below says what." if cut else ""))
    items = "".join(f"<li>{html.escape(wire_text(x))}</li>" for x in omitted)
    return (f'<div class="lmtt-report-note" role="note"><p>{html.escape(holds)}</p>'
            f"<p>Not in this report (open the notebook with a kernel for these):</p><ul>{items}</ul></div>")


def render_html(ex: Explanation, threshold: float = DEFAULT_THRESHOLD, granularity: str = "head", *,
                max_bytes: int = MAX_BYTES) -> str:
    content = _Content(ex, threshold, granularity)
    _, omitted, packed = content.build(max_bytes - _page_bytes() - 4096)  # 4 kB: the title and note
    return _page(ex, str(packed), _said(content.coverage, omitted), cut=bool(omitted))


def _page_bytes() -> int:
    """Bytes of the written page around the state (bundle, CSS, loader): what the state's budget leaves."""
    return len(_page_shell("", "", "", "").encode("utf-8"))


def read_page(path) -> str:
    """A written report's text (tools, tests): UTF-8, like any HTML page."""
    return pathlib.Path(path).read_text(encoding="utf-8")


@functools.lru_cache(maxsize=4)
def _packed_bundle(css: bytes, js: bytes) -> str:
    # one gzip member (mtime 0: the same bundle gives the same page; libdeflate where installed), then the state's
    # own text form: no "<" at all, so the bundle cannot end or re-open its block whatever esbuild emits; about a
    # third of the plain script
    return to_text(gzip_member(struct.pack("<I", len(css)) + css + js))


def _bundle() -> str:
    """The widget's CSS and script for the page, in one block: the CSS's length (4 bytes, little-endian), the CSS,
    the script; gzip-compressed (the page's loader decompresses it with the browser's own DecompressionStream), as
    text of 7 bits a character (report_pack ``to_text``)."""
    return _packed_bundle((STATIC / "widget.css").read_bytes(), (STATIC / "widget.js").read_bytes())


def _page(ex: Explanation, state: str, omitted: list[str], cut: bool = False) -> str:
    return _page_shell(_title(ex), _note(ex, omitted, cut), state, _bundle())


# What would end the module script block that holds the loader, or change how the HTML parser reads it.
_NOT_IN_SCRIPT = re.compile(r"</script|<!--|<script", re.IGNORECASE)


@functools.lru_cache(maxsize=1)
def _loader() -> str:
    """The page's loader (js/reportloader.ts, bundled by ``npm run build``): it reads the bundle with the same
    ``textBytes`` that reads the state, so the page and its tests share one decoder."""
    path = STATIC / "report-loader.js"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the front end was not built (run `npm run build` in the "
                                "repository, or reinstall lmtt-widgets).")
    code = path.read_text(encoding="utf-8").strip()
    if _NOT_IN_SCRIPT.search(code):
        raise RuntimeError(f"{path} holds text that would end its script block: rebuild the front end.")
    return code


def _page_shell(title: str, note: str, state: str, bundle: str = "") -> str:
    bundle = bundle or _bundle()
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ margin: 16px; font-family: system-ui, sans-serif; }}
.lmtt-report-note {{ font-size: 13px; margin: 0 0 12px; padding: 8px 12px; border-left: 3px solid #888; }}
.lmtt-report-note p, .lmtt-report-note ul {{ margin: 2px 0; }}</style>
</head><body>
{note}
<div id="lmtt-report"></div>
<script type="text/plain" id="lmtt-state">{state}</script>
<script type="text/plain" id="lmtt-bundle">{bundle}</script>
<script type="module">{_loader()}</script>
</body></html>
"""


_STATE_OPEN = 'id="lmtt-state">'


def read_report(page) -> dict:
    """The report dict inside a written page (tests, tools): its state block unpacked, arrays as numpy arrays,
    vocabulary projections back as [text, value] lists. ``page``: the page's text, or the path of a written report
    (a ``pathlib.Path`` or a file name)."""
    page, where = _report_text(page)
    if _STATE_OPEN not in page:
        raise InputError(f"{where} is not an lmtt-widgets report (it has no state block); give a page that "
                         "write_report wrote.")
    block = page.split(_STATE_OPEN, 1)[1]
    if "</script>" not in block:
        raise InputError(f"{where} is truncated: its state block never ends. Write the report again.")
    try:  # the page is untrusted data: whatever its bytes make the decoder raise, the answer is "corrupt"
        return _report_of(unpack(block.split("</script>", 1)[0]))
    except Exception as exc:
        raise InputError(f"{where} is corrupt or truncated: its state cannot be read ({type(exc).__name__}: "
                         f"{str(exc)[:200]}). Write the report again.") from None


def _report_text(page) -> tuple[str, str]:
    """(the page's text, how errors name it): a path is read as UTF-8; a text holding "<" is the page itself."""
    if isinstance(page, str) and ("<" in page or "\n" in page):
        return page, "the page"
    if isinstance(page, str) and not page.strip():
        raise InputError("read_report was given an empty text; give a report page's text or its path.")
    if not isinstance(page, (str, os.PathLike)) or isinstance(page, bytes):
        hint = "; decode bytes first: data.decode('utf-8')" if isinstance(page, bytes) else ""
        raise InputTypeError(f"read_report takes a report page's text or its path, not {type(page).__name__}{hint}.")
    path = pathlib.Path(os.fspath(page)).expanduser()
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except FileNotFoundError:
        raise InputError(f"there is no report at {path}: check the path (write one with write_report).") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a directory, not a report; give the path of the .html file.") from None
    except UnicodeDecodeError:
        raise InputError(f"{path} is not an lmtt-widgets report (it is not UTF-8 text).") from None
    except (OSError, ValueError) as exc:  # permissions, a name too long, a NUL in the name
        raise InputError(f"cannot read {path}: {exc}.") from None


def _report_of(report: dict) -> dict:
    texts = report.get("texts", [])

    def expand(o):
        if isinstance(o, dict) and "pair_texts" in o:
            return [[texts[int(i)], float(v)] for i, v in zip(o["pair_texts"], o["pair_values"])]
        if isinstance(o, dict):
            return {k: expand(v) for k, v in o.items()}
        return o

    return _state_columns({**report, "details": expand(report["details"])})


def write_report(ex: Explanation, path="lmtt-report.html", threshold: float = DEFAULT_THRESHOLD,
                 granularity: str = "head", *, max_bytes: int = MAX_BYTES) -> pathlib.Path:
    """Write the self-contained report; returns its absolute path. An existing file is replaced only once the
    new one is complete: any failure leaves it as it was."""
    path = check_report_path(path)
    if not isinstance(ex, Explanation):
        raise InputTypeError(f"write_report takes an Explanation (from explain(model, prompt)), not "
                             f"{type(ex).__name__}.")
    checks.count(max_bytes, "max_bytes", low=0, what="the report's size budget in bytes")
    data = render_html(ex, threshold, granularity, max_bytes=max_bytes).encode("utf-8")
    _replace_atomically(path, data)
    return path


def check_report_path(path) -> pathlib.Path:
    """Where to write, checked before any work: a file path whose directory exists."""
    if not isinstance(path, (str, os.PathLike)) or isinstance(path, bytes):
        raise InputTypeError(f"path must be a file name such as 'report.html', not {type(path).__name__}.")
    text = os.fspath(path)
    if not isinstance(text, str) or not text.strip() or "\x00" in text:
        raise InputError(f"path {text!r} is not a usable file name; give one such as 'report.html'.")
    try:  # the name itself can fail a stat: too long for the filesystem (ENAMETOOLONG), a loop of links
        path = pathlib.Path(text).expanduser().resolve()
        _writable_file(path)
    except (OSError, RuntimeError) as exc:  # (resolve() raises RuntimeError for a loop of links before 3.13)
        why = getattr(exc, "strerror", None) or str(exc)
        raise InputError(f"cannot write the report at {text[:200]!r}: {why}; give a shorter or other file "
                         "name.") from None
    return path


def _writable_file(path: pathlib.Path) -> None:
    """Refuse what the atomic rename would wrongly replace or cannot create: a directory, a FIFO or device (a
    reader waiting on it would never get the page), a read-only file (its owner protected it), an unwritable or
    missing directory."""
    if path.is_dir():
        raise InputError(f"{path} is a directory; give a file name inside it, e.g. {path / 'lmtt-report.html'}.")
    if not path.parent.is_dir():
        raise InputError(f"cannot write {path}: the directory {path.parent} does not exist (create it first).")
    if path.exists() and not path.is_file():
        raise InputError(f"{path} is not a regular file (a FIFO, socket or device); the report is written to a "
                         "file: give a file name such as 'report.html'.")
    if path.exists() and (not os.access(path, os.W_OK) or not path.stat().st_mode & 0o222):  # (root: the bits)
        raise InputError(f"{path} is read-only, so it is left as it is; make it writable (chmod u+w) or give "
                         "another file name.")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot write in {path.parent} (no permission); give a path in a directory you can "
                         "write to.")
    limit = _name_max(path.parent)
    if len(path.name.encode("utf-8", "surrogateescape")) > limit:
        raise InputError(f"the file name {path.name[:60]!r}... is {len(path.name)} characters, longer than the "
                         f"filesystem allows ({limit} bytes); give a shorter file name.")


def _name_max(directory: pathlib.Path) -> int:
    try:
        return os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # Windows has no pathconf; 255 is NTFS's limit too
        return 255


def _replace_atomically(path: pathlib.Path, data: bytes) -> None:
    """Write ``data`` to a fresh file next to ``path``, then rename it over ``path`` (atomic on POSIX and Windows)."""
    # the name cut short: a name near the filesystem's limit would not leave room for the suffix
    tmp = path.with_name(f".{path.name[:64]}.{secrets.token_hex(4)}.tmp")
    # O_EXCL: never write through a file or link someone else put there; mode 0o666 goes through the umask like a
    # plain open(), and a file being replaced keeps its permissions.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
