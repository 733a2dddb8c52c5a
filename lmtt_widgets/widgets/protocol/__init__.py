"""The wire protocol between the kernel and the browser, defined once.

Everything both sides must agree on lives here: the traits (their schema, who may write them, what they mean),
the payload shapes with every array's dtype and named dimensions, the node / edge / selection kinds, the ranges,
the residual-row mapping and the detail keys. From this module come

- the typed traits of the widgets (``widgets/traits.py``: they check every value Python sets and serialise arrays),
- the TypeScript types and constants of the front end (``js/protocol.gen.ts``),
- the trait table of ``docs/widget-protocol.md``.

To add a field: declare it here, produce it in ``payload.py``, then run
``python -m lmtt_widgets.widgets.protocol --write`` (``--check`` fails while a generated file is stale).
"""

from __future__ import annotations

from ...contributions.graph import DEFAULT_THRESHOLD, EDGE_KINDS, NODE_KINDS
from ...contributions.scores import HEAD_FLOOR
from ..scoring import ABLATIONS, HEAD_MODES
from .schema import DIMS, DTYPES, Array, MapOf, ProtocolError, Struct, Trait, Value, check  # noqa: F401

# ---- kinds, published from where they are defined: NODE_KINDS / EDGE_KINDS (the engine's codes, index = the
# code in `graph.node_kind` / `graph.edge_kind`), ABLATIONS and HEAD_MODES (widgets/scoring.py)
# a node selection names a residual node; the mlp node is selected as {"kind": "mlp"}
SELECTABLE_NODE_KINDS = ("embedding", "after_attention", "after_mlp")
TOPOLOGIES = ("sequential", "parallel", "post_norm")
GRANULARITIES = ("head", "edge")
STATUS_STATES = ("idle", "running", "error")

# selection kind -> its fields, in order; every field is an integer except node_kind (one of SELECTABLE_NODE_KINDS)
SELECTION_FIELDS = {
    "node": ("layer", "token", "node_kind"),
    "edge": ("layer", "source", "token"),
    "mlp": ("layer", "token"),
    "head": ("layer", "head", "token"),
    "neuron": ("layer", "neuron", "token"),
}
# optional fields of a selection kind: an embedding node may span a word, tokens token..last (the attribution
# pane's word view; the graph highlights the routes from every one of them)
SELECTION_OPTIONAL = {"node": ("last",)}

# `details` keys: "<kind>:<field>:<field>..." (integers); "check:<component id>" is free text (see the doc)
DETAIL_KEYS = {
    "lens": ("row", "token"),
    "head": ("layer", "head", "token"),
    "mlp": ("layer", "token"),
    "neuron": ("layer", "neuron", "token"),
}
CHECK_PREFIX = "check:"
MAX_KEY_LENGTH = 200  # a details reply echoes at most this much of the key and id

# ---- ranges
THRESHOLD_DEFAULT = DEFAULT_THRESHOLD
THRESHOLD_OPEN = (0.0, 1.0)  # what Python accepts: 0 < τ < 1, and τ >= HEAD_FLOOR in "head" granularity
TAU_MIN, TAU_MAX = 0.005, 0.5  # what the slider offers (js/tau.ts ladder)


# ---- residual rows: row 0 embeddings, 2l+1 after attention of layer l, 2l+2 after the MLP of layer l.
# One formula for every kind: row = 2 * layer + ROW_OFFSET[kind] (embeddings have layer -1; the MLP node sits
# between its two residual rows, which is where the graph draws it).
ROW_OFFSET = {"embedding": 2, "after_attention": 1, "mlp": 1.5, "after_mlp": 2}


def row_of(kind: str, layer: int) -> float:
    """The residual row of a node (1.5 steps for the MLP node, drawn between its rows)."""
    return 2 * layer + ROW_OFFSET[kind]


def node_of_row(row: int) -> tuple[str, int]:
    """(node kind, layer) of a residual row."""
    if row <= 0:
        return "embedding", -1
    return ("after_attention", (row - 1) // 2) if row % 2 else ("after_mlp", row // 2 - 1)


def detail_key(kind: str, *values: int) -> str:
    fields = DETAIL_KEYS[kind]
    if len(values) != len(fields):
        raise ValueError(f"a {kind!r} details key takes {', '.join(fields)}")
    return ":".join([kind, *map(str, values)])


# ---- payloads
_int, _num, _str, _bool = (int,), (int, float), (str,), (bool,)
_float_or_null = Value("number | null", py=(int, float, type(None)))

PREDICTION = Struct("Prediction", {
    "token": Value("string", "text of the predicted token", _str),
    "prob": Value("number", "its probability", _num),
    "top": Value("[string, number][]", "the top 5 as [text, probability]", (list,), optional=True),
})

META = Struct("Meta", {
    "model": Value("string", "model name", _str),
    "n_layers": Value("number", "L", _int),
    "n_heads": Value("number", "H", _int),
    "n_tokens": Value("number", "T", _int),
    "topology": Value("Topology", "residual topology", _str),
    "node_kinds": Value("NodeKindName[]", "index = `graph.node_kind` code (= NODE_KINDS)", (list,)),
    "edge_kinds": Value("EdgeKindName[]", "index = `graph.edge_kind` code (= EDGE_KINDS)", (list,)),
    "prediction": PREDICTION,
    "position": Value("number", "the position `prediction` is read at (the `target` it was computed for): the "
                      "browser changes `target` before this arrives, so panes label the prediction by it",
                      _int, optional=True),
}, "what is explained, for the `target` position", empty_ok=True)

GRAPH = Struct("Graph", {
    "node_kind": Array("uint8", ("N",), "index into `meta.node_kinds`"),
    "node_layer": Array("int32", ("N",), "layer, -1 for embeddings"),
    "node_token": Array("uint32", ("N",), "token position"),
    "node_cancelling": Array("uint8", ("N",), "1 where the update into the node cancelled: its importances are an "
                             "even split", optional=True),
    "node_external": Array("uint8", ("N",), "1 where the update into the node holds an external edit (a hook "
                           "changed the stream)", optional=True),
    "edge_src": Array("uint32", ("E",), "source node index"),
    "edge_dst": Array("uint32", ("E",), "destination node index"),
    "edge_weight": Array("float32", ("E",), "renormalised importance"),
    "edge_kind": Array("uint8", ("E",), "index into `meta.edge_kinds`"),
    "edge_heads": Array("float32", ("E", "H"), "per-head share of attention edges, 0 elsewhere"),
}, "the important subgraph for (`target`, `threshold`, `granularity`)", empty_ok=True)

BLOCK_IMPORTANCE = Struct("BlockImportance", {
    "attention": Array("float32", ("L", "T"), "sum of all head parts"),
    "mlp": Array("float32", ("L", "T")),
    "residual_attention": Array("float32", ("L", "T")),
    "residual_mlp": Array("float32", ("L", "T")),
}, "importance of each block's parts at each token", empty_ok=True)

NEURONS = Struct("Neurons", {
    "ids": Array("uint32", ("L", "T", "K"), "top-K neurons of each MLP block"),
    "importance": Array("float32", ("L", "T", "K")),
    "activation": Array("float32", ("L", "T", "K")),
    "available": Array("uint8", ("L", "T"), "1 where the block's rows are filled (the rest: the `mlp:` details "
                       "key); absent = all", optional=True),
}, "top neurons of the MLP blocks on the route and at the target", empty_ok=True)

LENS = Struct("Lens", {
    "rows": Value("number", "R = 2L+1 residual rows", _int),
    "token": Value("number", "the position the column describes", _int),
    "ids": Array("uint32", ("R", "K"), "top tokens of each residual row at `token`"),
    "probs": Array("float32", ("R", "K")),
    "rank_prev": Array("int32", ("R", "K"), "rank of the same token in the previous row (-1 for row 0)"),
    "strings": MapOf(Value("string"), doc="token id -> text for every id above"),
}, "logit lens of the `target` column", empty_ok=True)

STATUS = Struct("Status", {
    "state": Value("StatusState", "", _str),
    "message": Value("string", "", _str),
    "progress": Value("number", "0..1", _num),
})

# Python's `Metric.to_dict()` as it travels inside tables and replies
METRIC_REF = Struct("MetricRef", {
    "position": Value("number", "= `target`", _int),
    "target": Value("number", "id of the prediction there", _int, optional=True),
    "target_text": Value("string", "", _str, optional=True),
    "foil": Value("number | null", "id or null", (int, type(None)), optional=True),
    "foil_text": Value("string | null", "", (str, type(None)), optional=True),
    "name": Value("string", "Python's `Metric.name`", _str, optional=True),
})

METRIC = Struct("Metric", {
    "units": Value("string", '"logits" with a foil, "nats" (log p) without', _str, optional=True),
    "candidates": Value("[number, string, number][]", "top 10 at `position` as [id, text, prob] (the foil picker)",
                        (list,)),
    "corrupted": Value("string", "", _str),
    "ablation": Value("Ablation", "", _str),
    "causal_ready": Value("boolean", "a causal method can run", _bool),
}, "what the signed methods explain; absent keys when the metric cannot be formed (the reason is in `error`)",
    empty_ok=True, base=METRIC_REF)

METHOD_SCORES = Struct("MethodScores", {
    "method": Value("string", "", _str),
    "quantity": Value("string", "", _str),
    "signed": Value("boolean", "", _bool),
    "metric": Value("MetricRef | null", "", (dict, type(None))),
    "heads": Array("float32", ("L", "H"), "whole-prompt head components `L{l}.H{h}`; NaN = not scored"),
    "mlp": Array("float32", ("L",), "`L{l}.MLP`"),
    "extra": MapOf(Value("string | number | boolean | null"), doc="scalars"),
})

AGREEMENT = Struct("Agreement", {
    "pairs": Value("[string, string, number | null, number][]", "[method a, method b, Spearman ρ, top-k overlap]",
                   (list,)),
    "n": Value("number", "heads", _int),
    "k": Value("number", "", _int),
    "of": Value("string", '"|score| per head"', _str),
    "position": Value("number | null", "", (int, type(None))),
}, "agreement of the head tables, `{}` until causal scores exist", empty_ok=True)

ATTRIBUTION = Struct("Attribution", {
    "method": Value("string", "", _str),
    "quantity": Value("string", "", _str),
    "signed": Value("boolean", "diverging scale when true, sequential share when false", _bool),
    "position": Value("number", "= `target`", _int),
    "metric": Value("MetricRef | null", "null for flow methods (target-independent)", (dict, type(None))),
    "units": Value("string", '"nats" / "logits" / ""', _str),
    "scores": Array("float32", ("T",), "per source token; NaN after `position`"),
    "extra": MapOf(Value("string | number | boolean | null"), doc="scalars"),
    "methods": Value("string[]", "the picker's names", (list,)),
    "options": MapOf(Value("string | number | boolean"), doc="the chosen method's options"),
    "generated": Value("number[]", "positions of generated tokens", (list,)),
    "n_prompt_tokens": Value("number | null", "null for a plain prompt", (int, type(None))),
    "matrix_state": Value('"ready" | "on_demand" | "none"', "", _str),
    "matrix": Array("float32", ("G", "T"), "row r explains generated token `matrix_rows[r]`; NaN at or after it",
                    nullable=True),
    "matrix_rows": Value("number[]", "", (list,)),
    "matrix_metric": Value("string", "", _str),
    "agreement": Value("AttributionAgreement", "the shown method against the others on this target (Explorer only)",
                       (dict,), optional=True),
    "words": Value("AttributionWords", "the tokens merged into words (Explorer only)", (dict,), optional=True),
}, "the attribution pane's scores, `{}` when they cannot be computed", empty_ok=True)

# the attribution pane's agreement table: one row per other method of `attribution.methods`
ATTRIBUTION_AGREEMENT_ROW = Struct("AttributionAgreementRow", {
    "method": Value("string", "", _str),
    "cost": Value("string", "the registry's one line", _str),
    "state": Value('"ready" | "on_demand" | "error"', '"on_demand": not computed yet (the `attribution_agreement` '
                   'message computes it); "error": it cannot run here, the text is in `error`', _str),
    "error": Value("string", "", _str, optional=True),
    "signed": Value("boolean | null", "the other method's; null when not computed", (bool, type(None))),
    "spearman": Value("number | null", "Spearman ρ over tokens 0..`position` (NaN pairs dropped); null when not "
                      "computed or undefined (a constant side)", (int, float, type(None))),
    "compared": Value("string", '"signed" when both methods are signed, "|score|" otherwise, "" when not computed',
                      _str),
    "top_k": Value("number | null", "how many of the `k` tokens of largest |score| both share", (int, type(None))),
})
ATTRIBUTION_AGREEMENT = Struct("AttributionAgreement", {
    "method": Value("string", "the shown method", _str),
    "k": Value("number", "min(3, `n`)", _int),
    "n": Value("number", "tokens 0..`position`", _int),
    "position": Value("number", "", _int),
    "measures": Value("string", "the caption: what the numbers measure", _str),
    "rows": Value("AttributionAgreementRow[]", "", (list,)),
}, "the shown method against every other input-attribution method on the same target and foil; cheap methods "
   "(flow family, saliency, input_x_gradient) computed on every change, the others once computed or asked for")
ATTRIBUTION_WORDS = Struct("AttributionWords", {
    "spans": Value("[number, number][]", "[first, last] token of each word (granularity.word_spans: a word starts "
                   "at whitespace / a word marker, after a newline, and where the token role changes)", (list,)),
    "merges": Value("string[]", '["sum", "mean", "max"]', (list,)),
    "merged": MapOf(Array("float32", ("W",), "per word"), doc="merge -> the shown `scores` merged per word "
                    "(granularity.merge: sum; mean; max = the score of largest magnitude, sign kept; NaN tokens "
                    "skipped, NaN when none is read)"),
}, "the attribution pane's word view (its subword / word control is view state, not synced)")

# `details` results, by key kind (arrays inside travel like trait arrays; in a message `data` is a buffer index)
_PAIRS = Value("[string, number][]", "[text, score]", (list,))
DETAIL_RESULTS = {
    "lens": Struct("LensDetail", {"top": Value("[string, number, number][]", "[text, prob, rank change]", (list,))}),
    "head": Struct("HeadDetail", {
        "promoted": _PAIRS, "suppressed": _PAIRS, "importance": Value("number", "", _num),
        "pattern": Array("float32", ("T", "T"), "attention pattern of the head"),
        "contribution": Array("float32", ("T", "T"), "its contribution map"),
    }),
    "mlp": Struct("MlpDetail", {"promoted": _PAIRS, "suppressed": _PAIRS, "neurons": Value(
        "[number, number, number][]", "top-K [neuron, importance, activation]", (list,))}),
    "neuron": Struct("NeuronDetail", {"promoted": _PAIRS, "suppressed": _PAIRS}),
}

DETAILS = MapOf(Value("DetailResult", py=(dict,)), doc="details key -> result", by_prefix=DETAIL_RESULTS)
SELECTION = Value("Selection", py=(dict, type(None)), nullable=True)

_selection_doc = ("null or one of " + ", ".join(
    "`{\"kind\": \"%s\", %s}`" % (k, ", ".join(f'"{f}"' for f in fs)) for k, fs in SELECTION_FIELDS.items())
    + "; `node_kind` is one of " + ", ".join(SELECTABLE_NODE_KINDS) + " (embeddings have layer -1), an `edge` is "
    "attention from `source` to `token` in `layer`. Python validates every selection; a bad one from the browser "
    "is reverted with `error` set")

# ---- the traits, in the order the doc lists them
TRAITS = [
    Trait("panes", Value("string[]", py=(list,)), "py", "pane names the widget draws (the class chooses them)"),
    Trait("tokens", Value("string[]", py=(list,)), "py",
          "decoded text of each prompt token (raw: spaces, `\\n`, `<` ... travel as they are)"),
    Trait("meta", META, "py", META.doc),
    Trait("target", Value("number", py=(int,)), "both",
          "token position whose route is shown (default last); Python refilters `graph`"),
    Trait("threshold", Value("number", py=(int, float)), "both",
          f"τ: Python accepts {THRESHOLD_OPEN[0]:g} < τ < {THRESHOLD_OPEN[1]:g} (τ ≥ {HEAD_FLOOR:g} in head granularity); "
          f"the slider offers [{TAU_MIN}, {TAU_MAX}]; default {THRESHOLD_DEFAULT}"),
    Trait("granularity", Value("Granularity", py=(str,)), "both",
          '"head" (threshold each head, then sum) or "edge" (threshold the head-summed edge)'),
    Trait("graph", GRAPH, "py", GRAPH.doc),
    Trait("head_importance", Array("float32", ("L", "H", "T"), nullable=True), "py",
          "importance of head h in the attention update at (layer, target token), summed over sources"),
    Trait("block_importance", BLOCK_IMPORTANCE, "py", BLOCK_IMPORTANCE.doc),
    Trait("neurons", NEURONS, "py", NEURONS.doc),
    Trait("lens", LENS, "py", LENS.doc),
    Trait("selection", SELECTION, "both", _selection_doc),
    Trait("details", DETAILS, "py", "pre-filled detail results (the report's) and the cache of fetched ones; "
          "keys: " + ", ".join(f"`{k}:<{'>:<'.join(v)}>`" for k, v in DETAIL_KEYS.items()) + ", `check:<id>`"),
    Trait("status", STATUS, "py", "progress of a run or a computation"),
    Trait("error", Value("string", py=(str,)), "py", '"" when none: shown in a visible error bar'),
    Trait("prompt", Value("string", py=(str,)), "both", "the prompt box; Run sends a `run` message"),
    Trait("static", Value("boolean", py=(bool,)), "py", "true in a report: no Run button, read-only prompt"),
    Trait("foil", Value("number | string | null", py=(int, str, type(None)), nullable=True), "both",
          "token id the prediction is contrasted with, or null; the browser may send one-token text, which "
          "Python turns into its id (or refuses)"),
    Trait("corrupted", Value("string", py=(str,)), "both", 'the corrupted prompt causal methods patch in, "" = none'),
    Trait("ablation", Value("Ablation", py=(str,)), "both", "what a causal method patches in"),
    Trait("head_mode", Value("HeadMode", py=(str,)), "both", "the quantity of the head heatmap"),
    Trait("metric", METRIC, "py", METRIC.doc),
    Trait("method_scores", MapOf(METHOD_SCORES), "py",
          "method name -> its head matrix and MLP vector with what they mean"),
    Trait("agreement", AGREEMENT, "py", AGREEMENT.doc),
    Trait("attribution_method", Value("string", py=(str,)), "both",
          "the attribution pane's method, by registry name (flow or input family)"),
    Trait("attribution_options", MapOf(Value("Record<string, unknown>", py=(dict,))), "both",
          'method name -> its keyword options, e.g. `{"integrated_gradients": {"steps": 8}}`; unknown methods '
          'or options, and the metric\'s own (target, foil, position), are refused and put back'),
    Trait("attribution", ATTRIBUTION, "py", ATTRIBUTION.doc),
    Trait("graph_variants", MapOf(GRAPH), "report",
          'report only: `"<target>|<threshold>|<granularity>"` -> graph, the routes a report can switch to'),
]
TRAIT = {tr.name: tr for tr in TRAITS}
PYTHON_ONLY = tuple(tr.name for tr in TRAITS if tr.writer == "py")
BROWSER_WRITABLE = tuple(tr.name for tr in TRAITS if tr.writer == "both")

# every struct, for the generated types and the doc (a struct reached from several places is listed once)
STRUCTS = [PREDICTION, META, GRAPH, BLOCK_IMPORTANCE, NEURONS, LENS, STATUS, METRIC_REF, METRIC, METHOD_SCORES,
           AGREEMENT, ATTRIBUTION, ATTRIBUTION_AGREEMENT_ROW, ATTRIBUTION_AGREEMENT, ATTRIBUTION_WORDS,
           *DETAIL_RESULTS.values()]

# string enums the generated TypeScript names
ENUMS = {
    "NodeKindName": ("NODE_KINDS", NODE_KINDS),
    "EdgeKindName": ("EDGE_KINDS", EDGE_KINDS),
    "SelectableNodeKind": ("SELECTABLE_NODE_KINDS", SELECTABLE_NODE_KINDS),
    "Topology": ("TOPOLOGIES", TOPOLOGIES),
    "Granularity": ("GRANULARITIES", GRANULARITIES),
    "StatusState": ("STATUS_STATES", STATUS_STATES),
    "Ablation": ("ABLATIONS", ABLATIONS),
    "HeadMode": ("HEAD_MODES", HEAD_MODES),
}
