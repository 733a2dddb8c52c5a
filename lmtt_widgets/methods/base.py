"""The seam every scoring method plugs into: components, metrics, one table schema, one registry.

A *component* is anything a method can score: the embeddings, a head, an attention output bias, an MLP block, a
neuron, a residual node, one edge of the information-flow graph, or an input token. A *metric* is the number a
method explains: the logit difference target - foil at a position, or log p(target) without a foil. Every method
returns a :class:`ScoreTable` (component -> signed score, with what the score means), so the widgets, the report and
the exports render any of them alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Literal

import torch

from .. import checks
from ..errors import ComponentKeyError, InputError, InputTypeError, SelectionError

Kind = Literal["embed", "head", "attn_bias", "mlp", "mlp_bias", "neuron", "resid", "edge", "token", "external"]
KINDS: tuple[str, ...] = Kind.__args__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Component:
    """One scorable part of the model's computation. ``position`` None means every position of the prompt.

    Ids are short and parseable: ``EMB``, ``L23.H3``, ``L23.BO`` (attention output bias), ``L5.MLP``, ``L5.BM``
    (MLP output bias), ``L5.N1234``, ``L5.R`` (residual after layer 5), ``L3.H2 5>7`` (edge from source 5 to target
    7 through head 2 of layer 3; ``L3 5>7`` for all heads), ``T5`` (input token 5), ``L5.EXT`` (an edit by someone
    else's hook); ``@7`` appended restricts a component to position 7.
    """

    kind: Kind
    layer: int | None = None
    index: int | None = None  # head or neuron
    position: int | None = None  # token position (an edge's target)
    source: int | None = None  # an edge's source position

    @property
    def id(self) -> str:
        k, L, i = self.kind, self.layer, self.index
        if k == "token":
            return f"T{self.position}"
        if k == "edge":
            head = "" if i is None else f".H{i}"
            return f"L{L}{head} {self.source}>{self.position}"
        base = {"embed": "EMB", "head": f"L{L}.H{i}", "attn_bias": f"L{L}.BO", "mlp": f"L{L}.MLP",
                "mlp_bias": f"L{L}.BM", "neuron": f"L{L}.N{i}", "resid": f"L{L}.R", "external": f"L{L}.EXT"}[k]
        return base if self.position is None else f"{base}@{self.position}"

    def __str__(self) -> str:
        return self.id

    def __repr__(self) -> str:  # tables' top(k) lists print as ids, not five fields each (and round-trip)
        return f"Component.parse({self.id!r})"

    @classmethod
    def parse(cls, text: "str | Component") -> "Component":
        """The component an id names (see the class docstring); a clear error for anything else."""
        if isinstance(text, Component):
            return text
        if not isinstance(text, str):
            raise SelectionError(f"A component is named by an id such as 'L23.H3', not {type(text).__name__}.")
        s = text.strip()
        m = re.fullmatch(r"L(\d+)(?:\.H(\d+))? (\d+)>(\d+)", s, re.ASCII)  # (ASCII: \d takes any script's digits)
        if m:
            layer, head, src, dst = m.groups()
            return cls("edge", int(layer), None if head is None else int(head), int(dst), int(src))
        m = re.fullmatch(r"T(\d+)", s, re.ASCII)
        if m:
            return cls("token", position=int(m.group(1)))
        m = re.fullmatch(r"(EMB|L(\d+)\.(H(\d+)|N(\d+)|BO|BM|MLP|R|EXT))(?:@(\d+))?", s, re.ASCII)
        if not m:
            raise SelectionError(
                f"{text!r} names no component. Use e.g. 'EMB', 'L23.H3', 'L5.MLP', 'L5.N1234', 'L5.R', "
                "'L3.H2 5>7' (an edge), 'T5' (an input token); add '@7' for one position."
            )
        whole, layer, part, head, neuron, position = m.groups()
        pos = None if position is None else int(position)
        if whole == "EMB":
            return cls("embed", position=pos)
        kind = {"BO": "attn_bias", "BM": "mlp_bias", "MLP": "mlp", "R": "resid", "EXT": "external"}.get(part)
        if head is not None:
            return cls("head", int(layer), int(head), pos)
        if neuron is not None:
            return cls("neuron", int(layer), int(neuron), pos)
        return cls(kind, int(layer), None, pos)


def component_list(components) -> "list[Component] | None":
    """What every method taking components reads: one id or Component, or a list (tuple, set...) of them, as a
    list of Components; None stays None (the method's default set). Anything else is refused by what it is."""
    if components is None:
        return None
    if isinstance(components, (str, Component)):  # one id, not its characters
        return [Component.parse(components)]
    if isinstance(components, (bytes, dict)) or not hasattr(components, "__iter__"):
        hint = (f"; for a table's top {components}, pass [c for c, _ in table.top({components})]"
                if checks.is_integer(components) else "")
        raise InputTypeError(f"components must be a list of ids such as ['L0.H1', 'L2.MLP'] (or one id such as "
                             f"'L0.H1', or Component values), not {type(components).__name__} "
                             f"{checks.show(components)}{hint}.")
    out = []
    for n, c in enumerate(components):
        if not isinstance(c, (str, Component)):
            raise InputTypeError(f"component {n} of the list is {checks.show(c)} ({type(c).__name__}); name each "
                                 "component by an id such as 'L0.H1', 'L2.MLP' or 'L3.N12'.")
        out.append(Component.parse(c))
    return out


@dataclass(frozen=True)
class Metric:
    """What a method explains: logit(target) - logit(foil) at ``position``, or log p(target) without a foil."""

    position: int
    target: int
    foil: int | None = None
    target_text: str = ""
    foil_text: str = ""

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """The metric of logits [..., T, V] (or [..., V] already at the position) -> [...]."""
        row = logits[..., self.position, :] if logits.dim() >= 2 and logits.shape[-2] > self.position else logits
        row = row.double()  # differences of nearby logits: keep every bit the model gave
        if self.foil is None:
            return row.log_softmax(-1)[..., self.target]
        return row[..., self.target] - row[..., self.foil]

    @property
    def name(self) -> str:
        if self.foil is None:
            return f"log p({self.target_text!r}) at token {self.position}"
        return f"logit({self.target_text!r}) - logit({self.foil_text!r}) at token {self.position}"

    def to_dict(self) -> dict:
        return {"position": self.position, "target": self.target, "foil": self.foil, "target_text": self.target_text,
                "foil_text": self.foil_text, "name": self.name}


@dataclass
class ScoreTable:
    """Signed scores of components by one method. N components.

    ``quantity`` says what a number means ("flow share", "direct logit attribution", "causal effect"...), in the
    metric's units where it has one. ``extra`` holds a method's checks (e.g. the constant terms of a logit
    attribution and its error against the model, the completeness error of integrated gradients).
    """

    method: str
    quantity: str
    metric: Metric | None
    components: list[Component]
    scores: torch.Tensor  # [N] float
    signed: bool = True
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.scores.dim() != 1 or self.scores.numel() != len(self.components):
            raise ValueError(f"{len(self.components)} components but scores of shape {tuple(self.scores.shape)}")
        self._index = {c: n for n, c in enumerate(self.components)}

    def __len__(self) -> int:
        return len(self.components)

    def __getitem__(self, component: "str | Component") -> float:
        c = Component.parse(component)
        if c not in self._index:
            raise ComponentKeyError(f"{c.id} is not scored by this {self.method} table")
        return float(self.scores[self._index[c]])

    def __contains__(self, component) -> bool:
        return Component.parse(component) in self._index

    def top(self, k: int = 10, *, by: Literal["abs", "value", "-value"] = "abs") -> list[tuple[Component, float]]:
        """The k components with the largest |score| (or largest / smallest score), with their scores."""
        k = checks.count(k, "k", low=0, what="how many components to list")
        if by not in ("abs", "value", "-value"):
            raise InputError(f"by must be 'abs', 'value' or '-value' (the order of the ranking), not {by!r}.")
        key = {"abs": self.scores.abs(), "value": self.scores, "-value": -self.scores}[by]
        idx = key.argsort(descending=True, stable=True)[:k].tolist()
        return [(self.components[i], float(self.scores[i])) for i in idx]

    def of_kind(self, kind: str) -> "ScoreTable":
        checks.choice(kind, "kind", KINDS)  # a misspelt kind would give an empty table, not an error
        keep = [n for n, c in enumerate(self.components) if c.kind == kind]
        return ScoreTable(self.method, self.quantity, self.metric, [self.components[n] for n in keep],
                          self.scores[keep], self.signed, dict(self.extra))

    def head_matrix(self, n_layers: int, n_heads: int) -> torch.Tensor:
        """[L, H] scores of the whole-prompt head components (NaN where a head is not scored)."""
        n_layers, n_heads = checks.count(n_layers, "n_layers", what="rows"), checks.count(n_heads, "n_heads",
                                                                                          what="columns")
        out = torch.full((n_layers, n_heads), float("nan"))
        for c, v in zip(self.components, self.scores.tolist()):
            if c.kind == "head":
                if c.layer >= n_layers or c.index >= n_heads:
                    raise SelectionError(f"this {self.method} table scores {c.id}, outside {n_layers} layers x "
                                         f"{n_heads} heads; give the model's (ex.n_layers, ex.n_heads).")
                out[c.layer, c.index] = v
        return out

    def to_dataframe(self):
        """One row per component: id, kind, layer, index, position, source, score, method, quantity, metric."""
        import pandas as pd

        metric = self.metric.name if self.metric else ""
        return pd.DataFrame({
            "component": [c.id for c in self.components],
            "kind": [c.kind for c in self.components],
            "layer": pd.array([c.layer for c in self.components], dtype="Int64"),
            "index": pd.array([c.index for c in self.components], dtype="Int64"),
            "position": pd.array([c.position for c in self.components], dtype="Int64"),
            "source": pd.array([c.source for c in self.components], dtype="Int64"),
            "score": self.scores.double().numpy(),
            "method": self.method,
            "quantity": self.quantity,
            "metric": metric,
        })

    def to_dict(self) -> dict:
        """JSON-ready form (the widget and the report render tables from it)."""
        return {"method": self.method, "quantity": self.quantity, "signed": self.signed,
                "metric": self.metric.to_dict() if self.metric else None,
                "components": [c.id for c in self.components], "scores": self.scores.tolist(),
                "extra": {k: v for k, v in self.extra.items() if isinstance(v, (int, float, str, bool))}}


@dataclass(frozen=True)
class MethodInfo:
    name: str
    fn: Callable[..., ScoreTable]
    quantity: str  # what its scores mean
    family: str  # "flow", "logit", "causal", "input"
    cost: str  # one line, e.g. "free from the trace"
    scores_tokens: bool = False  # its table scores input tokens (T0..Tp): it can fill an input-attribution row


_METHODS: dict[str, MethodInfo] = {}


def register_method(name: str, *, quantity: str, family: str, cost: str, scores_tokens: bool = False):
    """Decorator: register ``fn(explanation, **options) -> ScoreTable`` under ``name``; ``scores_tokens``: its
    components are the input tokens (what input attribution and the source x generated matrix show)."""

    def deco(fn):
        _METHODS[name] = MethodInfo(name, fn, quantity, family, cost, scores_tokens)
        return fn

    return deco


def get_method(name: str) -> MethodInfo:
    if not isinstance(name, str) or name not in _METHODS:
        raise SelectionError(f"No method {name!r}. Available: {', '.join(sorted(_METHODS))}.")
    return _METHODS[name]


def available_methods() -> dict[str, MethodInfo]:
    return dict(_METHODS)


def token_methods() -> list[str]:
    """Names of the registered methods whose tables score input tokens (input attribution), sorted."""
    return sorted(n for n, info in _METHODS.items() if info.scores_tokens)
