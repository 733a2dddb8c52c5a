"""The anywidget classes. One bundle draws every pane; a class only chooses which panes to show.

Traits are the single source of truth (see docs/widget-protocol.md). Filtering on target / threshold /
granularity changes reruns in the kernel without recomputing contributions; pane-to-pane selection sync happens
in the browser.
"""

from __future__ import annotations

import logging
import math
import numbers
import pathlib
import traceback

import anywidget
import traitlets as t

from .. import checks
from ..checks import is_integer
from ..contributions.graph import DEFAULT_THRESHOLD, check_threshold
from ..errors import InputError, InputTypeError, LmttError, PromptTypeError, SelectionError
from ..explain import Explanation, explain
from ..methods import ScoreTable, get_method
from ..methods.base import component_list
from ..methods.targets import make_metric
from ..models.loading import load_model
from . import payload, protocol, scoring
from .codec import to_message, wire_safe
from .scoring import ABLATIONS, CAUSAL, HEAD_MODES, Settings
from .protocol import TRAIT
from .selection import check_selection
from .traits import Typed

STATIC = pathlib.Path(__file__).resolve().parent.parent / "static"
log = logging.getLogger("lmtt_widgets")


class WidgetValueError(t.TraitError, InputError):
    """A refused widget value: a TraitError for traitlets (which then rolls the change back), and an InputError
    (a ValueError) for user code that sets a trait from Python."""


class Fraction(t.Float):
    """A float trait in (0, 1) whose refusal says the range (traitlets' own: "expected a float, not the str")."""

    def validate(self, obj, value):
        try:
            value = checks.fraction(value, self.name)
        except InputError as exc:
            raise WidgetValueError(str(exc)) from None
        return super().validate(obj, value)


class Position(t.Int):
    """A token position; a non-integer (a text, a float, True) is refused with the prompt's range."""

    def validate(self, obj, value):
        if not is_integer(value):  # traitlets' Int takes True as 1
            n = obj._limits()["n_tokens"]
            scope = f" 0..{n - 1} (the prompt has {n} tokens)" if n else ""
            raise WidgetValueError(f"{self.name} must be a token position, an integer{scope}, not {value!r}.")
        return super().validate(obj, int(value))


class TokenChoice(t.Union):
    """A token id or a token's text (the foil): integers of every kind (NumPy, 0-d tensors) are one id, floats of
    every kind refused (traitlets' Int reads 5.0 as 5 and refuses np.float64 and tensors in its own words)."""

    def __init__(self, **kwargs):
        super().__init__([t.Int(), t.Unicode()], allow_none=True, default_value=None, **kwargs)

    def validate(self, obj, value):
        if value is None or isinstance(value, str):
            return super().validate(obj, value)
        if is_integer(value):
            return super().validate(obj, int(value))
        hint = "; a float is not truncated to an id" if isinstance(value, numbers.Real) and value is not True \
            and value is not False else ""
        raise WidgetValueError(f"{self.name} must be a token id (an integer) or a token's text such as ' Paris', "
                               f"not {checks.show(value)} ({type(value).__name__}){hint}.")


# The widget's own code and identity (anywidget, ipywidgets): a page that wrote them would have every later view of
# the widget, and a saved notebook, load its code instead of ours.
FRAMEWORK_TRAITS = frozenset({"_esm", "_css", "_anywidget_id", "_model_name", "_model_module", "_model_module_version",
                              "_view_name", "_view_module", "_view_module_version"})

# What the constructor takes besides the explanation: the traits a user chooses, set in this order once the
# explanation is shown (the foil is read at the target; the heatmap's causal mode needs its corruption first).
USER_TRAITS = ("target", "foil", "corrupted", "ablation", "attribution_method", "attribution_options", "head_mode",
               "selection", "panes")


def _plain(value, name: str):
    """An option value as the browser's JSON holds it: NumPy and 0-d tensor numbers become Python's (the kernel's
    JSON packer refuses them, and the widget would stop syncing); anything but numbers, texts, True / False and
    None is refused."""
    if isinstance(value, (str, bool, int, float, type(None))):
        return value
    if is_integer(value):
        return int(value)
    if isinstance(value, numbers.Real) or (getattr(value, "shape", None) == () and hasattr(value, "item")):
        return value.item() if hasattr(value, "item") else float(value)
    raise InputTypeError(f"attribution option {name} must be a number, a text, True / False or None (it is sent to "
                         f"the browser), not {type(value).__name__} {checks.show(value)}.")


def _check_option_types(fn, given: dict) -> None:
    """A browser's option value of the wrong kind is refused up front (the method checks the rest when it runs):
    a count where the method's default is an int (steps, batch_size), True / False where it is a bool."""
    import inspect

    params = inspect.signature(fn).parameters
    for key, value in given.items():
        default = params[key].default
        if isinstance(default, bool):
            checks.flag(value, key)
        elif isinstance(default, int):
            checks.count(value, key, what=f"default {default}")


class _ExplanationWidget(anywidget.AnyWidget):
    _esm = STATIC / "widget.js"
    _css = STATIC / "widget.css"

    # Traits typed by the protocol (widgets/protocol: schema, writer, meaning); Python-only ones ("py") are
    # refused when the browser sends them (set_state).
    panes = t.List(t.Unicode(), default_value=["graph"]).tag(sync=True)
    tokens = t.List(t.Unicode()).tag(sync=True)
    meta = Typed(TRAIT["meta"])
    target = Position(0).tag(sync=True)
    threshold = Fraction(DEFAULT_THRESHOLD).tag(sync=True)
    granularity = t.Enum(list(protocol.GRANULARITIES), default_value="head").tag(sync=True)
    graph = Typed(TRAIT["graph"])
    head_importance = Typed(TRAIT["head_importance"])
    block_importance = Typed(TRAIT["block_importance"])
    neurons = Typed(TRAIT["neurons"])
    lens = Typed(TRAIT["lens"])
    selection = t.Dict(allow_none=True, default_value=None).tag(sync=True)
    details = Typed(TRAIT["details"])
    status = Typed(TRAIT["status"], default_value={"state": "idle", "message": "", "progress": 0.0})
    error = t.Unicode("").tag(sync=True)
    prompt = t.Unicode("").tag(sync=True)
    static = t.Bool(False).tag(sync=True)
    # the metric the signed methods explain, and what the causal ones patch in (docs/widget-protocol.md)
    foil = TokenChoice().tag(sync=True)
    corrupted = t.Unicode("").tag(sync=True)
    ablation = t.Enum(list(ABLATIONS), default_value="corrupted").tag(sync=True)
    head_mode = t.Enum(list(HEAD_MODES), default_value="importance").tag(sync=True)
    metric = Typed(TRAIT["metric"])
    method_scores = Typed(TRAIT["method_scores"])
    agreement = Typed(TRAIT["agreement"])
    # the attribution pane: an input-attribution method by registry name, its keyword options, and its scores
    attribution_method = t.Unicode(scoring.DEFAULT_ATTRIBUTION).tag(sync=True)
    attribution_options = t.Dict().tag(sync=True)  # method name -> its keyword options, e.g. {"integrated_gradients": {"steps": 8}}
    attribution = Typed(TRAIT["attribution"])

    # Every trait and every custom message goes to the browser through these two: token text with a lone surrogate
    # would make the kernel's strict UTF-8 JSON packer fail, and the widget would never display.
    @staticmethod
    def _trait_to_json(x, self):
        return wire_safe(x)

    def send(self, content, buffers=None):
        super().send(wire_safe(content), buffers)

    def __init__(self, explanation: Explanation | None = None, prompt: str | None = None, *, model=None,
                 threshold: float = DEFAULT_THRESHOLD, granularity: str = "head", **kwargs):
        """Build from an :class:`Explanation`, or from ``model`` (anything load_model takes) and ``prompt``.

        ``Explorer("smollm2", "The capital of France is")`` is short for
        ``Explorer(explain(load_model("smollm2"), "The capital of France is"))``.
        """
        if explanation is not None and not isinstance(explanation, Explanation):
            model, explanation = explanation, None  # Explorer("smollm2", "prompt")
        chosen = self._chosen_traits(kwargs)
        super().__init__(**kwargs)
        self._lm = None if model is None else load_model(model)
        self.explanation: Explanation | None = None
        self._tables_cache: dict = {}
        self.tables: dict = {}  # method name -> ScoreTable shown in the heatmap / attribution pane (Python values)
        self.matrices: dict = {}  # attribution method -> source x generated DataFrame computed for the shown options
        self._attr_cache: dict = {}
        self.last_check = None  # ScoreTable (or faithfulness result) of the latest Check action
        with self.hold_trait_notifications():
            self.threshold, self.granularity = threshold, granularity
        self.on_msg(self._on_message)
        if explanation is None and prompt is not None:
            explanation = explain(self._lm, prompt)
        if explanation is not None:
            self._lm = explanation.trace.lm
            self.show(explanation)
        for name in USER_TRAITS:  # validated as a setter's value is (show() would reset a target set before it)
            if name in chosen:
                setattr(self, name, chosen[name])

    def _chosen_traits(self, kwargs: dict) -> dict:
        """The user-chosen traits among the constructor's keywords (taken out of ``kwargs``); computed traits and
        unknown names are refused rather than silently dropped."""
        computed = [k for k in kwargs if k in protocol.PYTHON_ONLY and k not in USER_TRAITS]
        unknown = [k for k in kwargs if not self.has_trait(k)]
        if computed or unknown:
            what = (f"no keyword {', '.join(map(repr, unknown))}" if unknown else
                    f"{', '.join(map(repr, computed))}: Python computes {'it' if len(computed) == 1 else 'them'} "
                    "from the explanation")
            raise InputTypeError(f"{type(self).__name__} takes {what}; its keywords are model, prompt, threshold, "
                                 f"granularity, {', '.join(USER_TRAITS)}.")
        return {k: kwargs.pop(k) for k in list(kwargs) if k in USER_TRAITS}

    # ---- state from an explanation
    def show(self, ex: Explanation) -> None:
        """Display a new explanation; the selection is cleared, the target is the last token."""
        if not isinstance(ex, Explanation):
            raise InputTypeError(f"show takes an Explanation (from explain(model, prompt)), not {type(ex).__name__}.")
        self.explanation = ex
        self._lm = ex.trace.lm  # Run explains the next prompt with the model shown, not the one constructed with
        self._tables_cache, self._attr_cache, self.matrices = {}, {}, {}
        target = ex.n_tokens - 1
        with self.hold_sync():
            self._updating = True
            try:
                self.selection = None
                self.tokens = list(ex.tokens)
                self.target = target
                self.prompt = ex.trace.prompt or self.prompt
                self.meta = payload.meta(ex, target)
                self.head_importance = payload.head_importance(ex)
                self.block_importance = payload.block_importance(ex)
                self.details = {}
                self.error = ""
                self.foil = self._foil_for(ex, target)
            finally:
                self._updating = False
            self._refilter()
            self._rescore()

    def _refilter(self) -> None:
        ex = self.explanation
        if ex is None:
            return
        g = ex.route(self.target, self.threshold, self.granularity)
        nodes = payload.precomputed_mlp_nodes(ex, g, self.target)
        try:  # these read the model's weights live; the graph is the trace's own scores
            neurons, lens = payload.neuron_rows(ex, nodes), payload.lens_column(ex, self.target)
        except LmttError as exc:  # e.g. the weights changed since the trace (StaleTraceError): say so, show none
            neurons, lens = payload.neuron_rows(ex, set()), {}
            self.error = str(exc)
        with self.hold_sync():
            self.graph = payload.graph_arrays(g)
            self.neurons = neurons
            self.lens = lens
            self.meta = payload.meta(ex, self.target)

    @property
    def route(self):
        """The important subgraph currently shown (a Route: arrays, DataFrames, networkx, JSON)."""
        return self.explanation.route(self.target, self.threshold, self.granularity)

    # ---- validation: Python callers get an exception, browser changes get reverted with a visible error
    def _limits(self) -> dict:
        ex = self.explanation
        if ex is None:
            return dict(n_layers=0, n_tokens=0, n_heads=0, n_neurons=0)
        return dict(n_layers=ex.n_layers, n_tokens=ex.n_tokens, n_heads=ex.n_heads,
                    n_neurons=ex.trace.layer_weights[0].w_out.shape[1])  # (a long trace's records dropped neurons)

    @t.validate("selection")
    def _valid_selection(self, proposal):
        try:
            return check_selection(proposal["value"], **self._limits())
        except SelectionError as exc:
            raise WidgetValueError(str(exc)) from None

    @t.validate("target")
    def _valid_target(self, proposal):
        n = self._limits()["n_tokens"]
        value = int(proposal["value"])  # (an integer: the Position trait checked it)
        if n and not 0 <= value < n:
            raise WidgetValueError(f"target token {value} is out of range 0..{n - 1}")
        return value

    @t.validate("threshold")
    def _valid_threshold(self, proposal):
        try:
            check_threshold(proposal["value"], self.granularity)
        except ValueError as exc:
            raise WidgetValueError(str(exc)) from None
        return proposal["value"]

    @t.observe("target", "threshold", "granularity")
    def _on_filter_change(self, change):
        if getattr(self, "_updating", False):
            return
        self._refilter()
        if change["name"] == "target":
            self._rescore()

    def set_state(self, sync_data):
        """Changes from the browser: an invalid one is refused, reverted in the browser and reported."""
        if not isinstance(sync_data, dict):
            self.error = f"the browser sent a state update that is not an object ({type(sync_data).__name__}); ignored"
            return
        if self.error and "error" not in sync_data:
            self.error = ""  # cleared first: what the change computes may report an error of its own
        refused = [k for k in sync_data if k in protocol.PYTHON_ONLY or k in FRAMEWORK_TRAITS]
        if refused:  # computed by Python: the browser's copy is put back, whatever it sent
            sync_data = {k: v for k, v in sync_data.items() if k not in refused}
            self.send_state(refused)
            self.error = (f"the browser may not change {', '.join(refused[:5])}: Python computes "
                          f"{'it' if len(refused) == 1 else 'them'}; the change is refused")
            if not sync_data:
                return
        try:
            super().set_state(sync_data)
        except Exception as exc:  # TraitError for a refused value; anything else must not reach the kernel either
            if not isinstance(exc, t.TraitError):
                log.exception("state update %s failed", list(sync_data)[:5])
            self.error = str(exc) if isinstance(exc, t.TraitError) else f"internal error: {exc}"
            self.send_state([k for k in sync_data if k in self.keys])  # put the browser back on the valid values

    # ---- scoring methods: the heatmap's modes (tables) and the Check action; only these recompute, not the trace
    @property
    def settings(self) -> Settings:
        """The metric position, foil and causal setting every method is computed for."""
        foil = self.foil if isinstance(self.foil, int) else None
        return Settings(self.target, foil, self.corrupted, self.ablation)

    @t.validate("foil")
    def _valid_foil(self, proposal):
        value = proposal["value"]
        if value is None or self.explanation is None:
            return value
        try:  # a text becomes its token id; a foil equal to the prediction is refused
            return make_metric(self.explanation, None, value, self.target).foil
        except SelectionError as exc:
            raise WidgetValueError(str(exc)) from None

    def _foil_for(self, ex: Explanation, position: int):
        """The foil as an id for a newly shown explanation (a text given before there was one is resolved now)."""
        if self.foil is None:
            return None
        try:
            return make_metric(ex, None, self.foil, position).foil
        except SelectionError as exc:
            self.error = f"{exc} The foil is cleared."
            return None

    @t.validate("head_mode")
    def _valid_head_mode(self, proposal):
        mode = proposal["value"]
        if mode != "importance" and not scoring.has_method(mode):
            raise WidgetValueError(f"The heatmap mode {mode!r} needs the {mode!r} method, which this version lacks.")
        problem = scoring.causal_problem(self.explanation, self.settings) if self.explanation is not None else ""
        if mode == CAUSAL and problem:
            raise WidgetValueError(problem)
        return mode

    @t.validate("attribution_method")
    def _valid_attribution_method(self, proposal):
        try:
            scoring.check_attribution(proposal["value"], {})
        except LmttError as exc:
            raise WidgetValueError(str(exc)) from None
        return proposal["value"]

    @t.validate("attribution_options")
    def _valid_attribution_options(self, proposal):
        """Per method, a dict of the keyword options that method takes (their values are checked when it runs)."""
        value = {}
        try:
            for name, opts in proposal["value"].items():
                scoring.check_attribution(name, opts)
                given = {k: _plain(v, f"{name}'s {k}") for k, v in opts.items() if k not in Settings.METRIC_OPTIONS}
                if len(given) < len(opts):
                    raise LmttError(f"attribution options may not set {', '.join(Settings.METRIC_OPTIONS)}: the "
                                    "widget's target and foil do")
                checks.options(get_method(name).fn, given, f"The method {name!r}")
                _check_option_types(get_method(name).fn, given)
                value[name] = given
        except LmttError as exc:
            raise WidgetValueError(str(exc)) from None
        return value

    @t.observe("foil", "corrupted", "ablation", "head_mode", "attribution_method", "attribution_options", "panes")
    def _on_score_change(self, change):
        if getattr(self, "_updating", False):
            return
        self._rescore()

    def _table(self, name: str, st: Settings):
        """A method's table for these settings, computed once (switching modes back and forth is free)."""
        key = (name, st if name == CAUSAL else Settings(st.position, st.foil))
        if key not in self._tables_cache:
            busy = name == CAUSAL
            if busy:
                self.status = {"state": "running", "message": "computing ≈ causal effect (attribution patching)…",
                               "progress": 0.0}
            try:
                self._tables_cache[key] = scoring.run_method(self.explanation, name, st)
            finally:
                if busy:
                    self.status = {"state": "idle", "message": "", "progress": 1.0}
        return self._tables_cache[key]

    def _rescore(self) -> None:
        """Recompute the method tables for the current settings and send their matrices; errors go to `error`."""
        ex = self.explanation
        if ex is None:
            return
        st, errors, tables, metric = self.settings, [], {}, None
        problem = scoring.causal_problem(ex, st)
        if problem and (st.causal_ready or self.head_mode == CAUSAL):
            errors.append(problem)  # a corrupted prompt that cannot be used is reported when it is pasted
        if self.head_mode == CAUSAL and problem:
            errors.append("The heatmap shows logit attribution until the causal setting is usable.")
            self._updating = True
            try:
                self.head_mode = "logit_attribution"
            finally:
                self._updating = False
        try:
            metric = make_metric(ex, None, st.foil, st.position)
        except SelectionError as exc:
            errors.append(str(exc))
        if metric is not None:
            causal_cached = (CAUSAL, st) in self._tables_cache
            for name in ("importance", "logit_attribution", CAUSAL):
                if name == CAUSAL and self.head_mode != CAUSAL and not causal_cached:
                    continue  # on demand: only when the causal mode is shown (or was, for these settings)
                try:
                    tables[name] = self._table(name, st)
                except (LmttError, ValueError) as exc:
                    errors.append(str(exc))
                except Exception as exc:  # a bug must not leave the heatmap silently stale
                    log.error("%s failed:\n%s", name, traceback.format_exc())
                    errors.append(f"internal error in {name}: {exc}")
        # the attribution pane's gradients cost a backward pass or more: only a widget that shows it pays for them
        shown = metric is not None and "attribution" in self.panes
        attribution = self._attribution_payload(st, tables, errors) if shown else {}
        self.tables = tables
        L, H = ex.n_layers, ex.n_heads
        with self.hold_sync():
            self.metric = payload.metric_info(ex, metric, st, ready=not problem)
            self.method_scores = payload.method_scores(tables, L, H)
            self.agreement = scoring.head_agreement(tables, L, H)
            self.attribution = attribution
            if errors:
                self.error = " ".join(errors)

    # ---- input attribution (the attribution pane): the token scores follow the target; the matrix is on demand
    @property
    def _attr_options(self) -> dict:
        """The chosen method's own options (``attribution_options`` holds them per method name)."""
        return self._options_of(self.attribution_method)

    def _options_of(self, name: str) -> dict:
        opts = self.attribution_options.get(name, {})
        return opts if isinstance(opts, dict) else {"<not a dict>": opts}  # refused by check_attribution

    def _attr_key(self, *rest, name: str | None = None):
        name = name or self.attribution_method
        return (name, repr(sorted(self._options_of(name).items())), *rest)

    def _busy(self, message: str, progress: float = 0.0) -> None:
        self.status = {"state": "running", "message": message, "progress": progress}

    def _attribution_table(self, st: Settings, name: str | None = None, *, quiet: bool = False) -> ScoreTable:
        """The method's table (default: the pane's), computed once per options and target; progress in `status`
        unless free or ``quiet`` (the cheap methods the agreement computes on every target change)."""
        name = name or self.attribution_method
        key = self._attr_key(st.position, st.foil, name=name)
        if key not in self._attr_cache:
            free = quiet or scoring.is_free(name)
            if not free:
                self._busy(f"computing {name} at #{st.position}…")
            try:
                self._attr_cache[key] = scoring.run_attribution(self.explanation, name, self._options_of(name), st)
            finally:
                if not free:
                    self.status = {"state": "idle", "message": "", "progress": 1.0}
        return self._attr_cache[key]

    def _attribution_agreement(self, st: Settings, table: ScoreTable, *, compute_all: bool = False) -> dict:
        """Agreement of the shown method with every other one on this target: the cheap ones are computed, the
        expensive ones (integrated gradients, occlusion) only when already computed or when ``compute_all``."""
        others = {}
        for other in scoring.attribution_methods():
            if other == table.method:
                continue
            key = self._attr_key(st.position, st.foil, name=other)
            failed = key + ("error",)  # a method that cannot run here is reported, not retried on every change
            if (compute_all or scoring.is_cheap(other)) and failed not in self._attr_cache:
                try:
                    self._attribution_table(st, other, quiet=scoring.is_cheap(other))
                except (LmttError, ValueError, TypeError) as exc:
                    self._attr_cache[failed] = str(exc)
            others[other] = self._attr_cache.get(key, self._attr_cache.get(failed))
        return scoring.attribution_agreement(table, others)

    def _attribution_payload(self, st: Settings, tables: dict, errors: list) -> dict:
        """The chosen method's table (kept in ``tables`` under its registry name) and matrix; errors go to the bar."""
        name = self.attribution_method
        try:
            table = self._attribution_table(st)
            matrix = self._attr_cache.get(self._attr_key("matrix"))  # computed for this method and options
            if matrix is not None:
                self.matrices[name] = matrix
            elif self.explanation.generated_positions and scoring.is_free(name):
                matrix = self.attribution_matrix(update=False)
        except (LmttError, ValueError, TypeError) as exc:  # TypeError: an option the method does not take
            errors.append(f"{name}: {exc}")
            return {}
        except Exception as exc:
            log.error("%s failed:\n%s", name, traceback.format_exc())
            errors.append(f"internal error in {name}: {exc}")
            return {}
        tables[name] = table
        return payload.attribution(self.explanation, table, matrix, scoring.attribution_methods(),
                                   options=self._attr_options, agreement=self._attribution_agreement(st, table),
                                   words=scoring.attribution_words(self.explanation, table))

    def attribution_matrix(self, method: str | None = None, *, update: bool = True):
        """Source x generated attributions of ``method`` (default: the pane's) as a DataFrame [generated, source],
        computed once per method and options with progress in ``status``; kept in ``matrices[method]`` and shown
        in the pane. Needs an explanation with generated tokens (``explain(..., generate=N)``)."""
        ex = self._need_explanation()
        if method is not None and method != self.attribution_method:
            self.attribution_method = method  # the pane follows (and recomputes the token scores)
        name, key = self.attribution_method, self._attr_key("matrix")
        if key not in self._attr_cache:
            free = scoring.is_free(name)

            def progress(i, n):
                self._busy(f"{name}: generated token {i}/{n}", i / n)

            if not free:
                self._busy(f"{name}: source × generated matrix…")
            try:
                self._attr_cache[key] = scoring.run_attribution_matrix(ex, name, self._attr_options,
                                                                       None if free else progress)
            finally:
                if not free:
                    self.status = {"state": "idle", "message": "", "progress": 1.0}
        self.matrices[name] = self._attr_cache[key]
        if update:
            self._rescore()
        return self.matrices[name]

    def attribution_agreement(self):
        """Agreement of the pane's method with every input-attribution method on the current target, computing the
        expensive ones (integrated gradients, occlusion) too; a DataFrame (what the pane's agreement table shows)."""
        import pandas as pd

        ex = self._need_explanation()
        st = self.settings
        make_metric(ex, None, st.foil, st.position)  # a bad foil is refused before any work
        agreement = self._attribution_agreement(st, self._attribution_table(st), compute_all=True)
        self._rescore()
        return pd.DataFrame(agreement["rows"])

    def check(self, components) -> ScoreTable:
        """Exact patching of each component separately (metric(clean) - metric(patched)), for the current foil and
        corruption; what the Check button runs. ``components``: an id such as 'L0.H1', a list of ids or Components,
        or None for every head and MLP (activation patching's default). Also kept as ``last_check``."""
        ex = self._need_explanation()
        comps = component_list(components)
        if comps is not None:  # checked against the model and prompt before the settings' corruption is read
            comps = [scoring.check_component(ex, c) for c in comps]
        self.last_check = scoring.exact_patch(ex, comps, self.settings)
        return self.last_check

    def check_route(self, threshold: float | None = None):
        """Faithfulness of the route at τ (default: the widget's threshold); also kept as ``last_check``."""
        ex = self._need_explanation()
        tau = self.threshold if threshold is None else checks.fraction(threshold, "threshold")
        self.last_check = scoring.route_check(ex, tau, self.settings)
        return self.last_check

    def _need_explanation(self) -> Explanation:
        if self.explanation is None:
            raise LmttError("nothing is explained yet: run a prompt first")
        return self.explanation

    def _check_reply(self, what: str) -> dict:
        """The result of a ``check:<component id>`` or ``check:route:<tau>`` key; progress shows in `status`."""
        self.status = {"state": "running", "message": f"exact patching: {what}…", "progress": 0.0}
        try:
            if what.startswith("route:"):
                tau = payload.key_number(what[len("route:"):], "route check threshold (route:<threshold>)")
                return payload.route_check_result(self.check_route(tau), tau, self.settings)
            component = scoring.check_component(self._need_explanation(), what)
            return payload.check_result(component, self.check([component]), self.tables, self.settings)
        finally:
            self.status = {"state": "idle", "message": "", "progress": 1.0}

    # ---- messages from the browser
    def _on_message(self, _widget, content, buffers):
        try:
            if not isinstance(content, dict):
                raise InputError(f"a message from the browser must be an object, not {type(content).__name__}")
            kind = content.get("type")
            if kind == "details":
                self._reply_details(content)
            elif kind == "attribution_matrix":
                try:
                    self.attribution_matrix()
                except LmttError as exc:
                    raise InputError(str(exc)) from None
            elif kind == "attribution_agreement":
                try:
                    self.attribution_agreement()
                except LmttError as exc:
                    raise InputError(str(exc)) from None
            elif kind == "run":
                prompt = content.get("prompt", self.prompt)
                if not isinstance(prompt, str):
                    raise InputError(f"a run message's prompt must be text, not {type(prompt).__name__}")
                self.run(prompt)
            else:
                raise InputError(f"unknown message type {kind!r} from the browser; expected 'run', 'details', "
                                 "'attribution_matrix' or 'attribution_agreement'")
        except InputError as exc:
            self._refuse(str(exc))
        except Exception as exc:  # a bug must not escape into the kernel's message loop
            log.exception("a message from the browser failed")
            self._refuse(f"internal error: {exc}")

    def _refuse(self, message: str) -> None:
        """Report a refused browser message in the error bar and as a reply (the browser ignores unknown replies)."""
        self.error = message
        try:
            self.send({"type": "error", "ok": False, "error": message})
        except Exception:  # no comm (closed widget): the error trait is all there is
            log.exception("could not send an error reply")

    def _reply_details(self, content) -> None:
        key = content.get("key", "")
        key = key if isinstance(key, str) else repr(key)[:protocol.MAX_KEY_LENGTH]  # the browser matches by id
        msg_id = content.get("id")
        msg_id = msg_id if isinstance(msg_id, (str, int, float, type(None))) else repr(msg_id)
        if isinstance(msg_id, float) and not math.isfinite(msg_id):  # the kernel's strict JSON refuses NaN / inf
            msg_id = repr(msg_id)
        if isinstance(msg_id, str) and len(msg_id) > protocol.MAX_KEY_LENGTH:  # echoed back: never megabytes
            msg_id = msg_id[:protocol.MAX_KEY_LENGTH] + "…"
        # echoed back cut short: a hostile page may send megabytes (no valid key is that long)
        shown = key if len(key) <= protocol.MAX_KEY_LENGTH else key[:protocol.MAX_KEY_LENGTH] + "…"
        reply = {"type": "details", "id": msg_id, "key": shown}
        try:
            if self.explanation is None:
                raise LmttError("nothing is explained yet: run a prompt first")
            if key.startswith(protocol.CHECK_PREFIX):
                result, buffers = to_message(self._check_reply(key[len(protocol.CHECK_PREFIX):]))
            else:
                result, buffers = to_message(payload.details(self.explanation, key))
            self.send({**reply, "ok": True, "result": result}, buffers)
        except (LmttError, ValueError) as exc:
            self.send({**reply, "ok": False, "error": str(exc)})
        except Exception as exc:  # a bug must still answer the browser, which would otherwise wait
            log.exception("details %s failed", key)
            self.send({**reply, "ok": False, "error": f"internal error: {exc}"})

    def run(self, prompt: str) -> None:
        """Explain a new prompt with the same model (what the Run button does); progress shows in the widget.

        An interrupt (KeyboardInterrupt, the notebook's stop button) puts the status back to idle with an
        "interrupted" message, keeps the previous explanation on display and is raised again for the kernel.
        """
        if self._lm is None:
            self.error = "no model loaded: construct the widget with a model or an explanation"
            return
        if not isinstance(prompt, str):
            raise PromptTypeError(f"Explorer.run takes the prompt as text, not {type(prompt).__name__}.")
        previous = self.explanation
        self.prompt = prompt
        self.status = {"state": "running", "message": "tracing…", "progress": 0.0}
        n_layers = self._lm.model.config.num_hidden_layers if hasattr(self._lm.model.config, "num_hidden_layers") else 0
        done = [0]

        def progress(_rec, _w):
            done[0] += 1
            if n_layers:
                self.status = {"state": "running", "message": f"layer {done[0]}/{n_layers}",
                               "progress": done[0] / n_layers}

        try:
            convention = previous.scores.convention if previous is not None else "paper"
            self.show(explain(self._lm, prompt, on_layer=progress, convention=convention))
        except LmttError as exc:
            self._failed(str(exc), previous)
            return
        except Exception as exc:
            log.error("run failed:\n%s", traceback.format_exc())
            self._failed(f"internal error: {exc}", previous)
            return
        except BaseException:  # KeyboardInterrupt, SystemExit: leave the widget usable, then let the kernel see it
            self._restore(previous)
            self.status = {"state": "idle", "message": "interrupted: the previous explanation is still shown",
                           "progress": 0.0}
            raise
        self.status = {"state": "idle", "message": "", "progress": 1.0}

    def _failed(self, message: str, previous: Explanation | None) -> None:
        self._restore(previous)
        self.status = {"state": "error", "message": message, "progress": 0.0}
        self.error = message

    def _restore(self, previous: Explanation | None) -> None:
        """Show ``previous`` again if a failure landed while the new explanation was half shown."""
        if self.explanation is not previous and previous is not None:
            self.show(previous)


class Explorer(_ExplanationWidget):
    """All panes with one shared selection: prompt box, flow graph, head heatmap, neurons, vocabulary."""

    panes = t.List(t.Unicode(), default_value=["prompt", "graph", "heads", "neurons", "vocab", "attribution"]).tag(sync=True)


class FlowGraph(_ExplanationWidget):
    """The tokens x layers graph of the important subgraph, with target, threshold and granularity controls."""

    panes = t.List(t.Unicode(), default_value=["graph"]).tag(sync=True)


class HeadHeatmap(_ExplanationWidget):
    """Layers x heads importance; click a head for its attention pattern and contribution map."""

    panes = t.List(t.Unicode(), default_value=["heads"]).tag(sync=True)


class NeuronView(_ExplanationWidget):
    """Top neurons of the selected MLP block."""

    panes = t.List(t.Unicode(), default_value=["neurons"]).tag(sync=True)


class VocabView(_ExplanationWidget):
    """Vocabulary projections of the selected node, head, MLP or neuron, and the logit lens of the target."""

    panes = t.List(t.Unicode(), default_value=["vocab"]).tag(sync=True)
