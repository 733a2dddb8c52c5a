"""Subword tokens merged into words, on demand, for any per-token scores (a table, a row, a matrix).

A word starts at the first token, at a token whose text starts with whitespace or a tokenizer's word marker
("▁" SentencePiece, "Ġ" byte-level BPE), after a token that ends with a newline, and wherever the token's role
changes (chat template vs. the user's text; special tokens are words of their own). So words are
whitespace-delimited: "Paris." is one word.

Merging: "sum" (attributions that add up, e.g. integrated gradients or flow shares, keep adding up), "mean", or
"max" (the score of largest magnitude, its sign kept). NaN scores (sources a prediction could not read) are
skipped; a word with no score at all is NaN.
"""

from __future__ import annotations

from typing import Literal

import torch

from . import checks
from .errors import InputError, InputTypeError

Merge = Literal["sum", "mean", "max"]
MERGES: tuple[str, ...] = Merge.__args__  # type: ignore[attr-defined]
MARKERS = ("▁", "Ġ")


def word_spans(tokens: list[str], roles: list[str] | None = None) -> list[tuple[int, int]]:
    """[start, end) token ranges of the words."""
    starts = []
    for t, text in enumerate(tokens):
        prev = tokens[t - 1] if t else ""
        role_change = roles is not None and t and (roles[t] != roles[t - 1] or roles[t] in ("special", "template"))
        if t == 0 or text[:1].isspace() or text.startswith(MARKERS) or prev.endswith("\n") or role_change:
            starts.append(t)
    return list(zip(starts, starts[1:] + [len(tokens)]))


def merge(values: torch.Tensor, spans: list[tuple[int, int]], how: Merge = "sum") -> torch.Tensor:
    """Per-token values [..., T] -> per-word values [..., W]."""
    checks.choice(how, "how", MERGES)
    values = torch.as_tensor(values, dtype=torch.float64)
    out = []
    for a, b in spans:
        v = values[..., a:b]
        seen = ~v.isnan()
        n = seen.sum(-1)
        if how == "max":
            mag = torch.where(seen, v.abs(), -1.0)
            word = v.gather(-1, mag.argmax(-1, keepdim=True)).squeeze(-1)
        else:
            word = torch.where(seen, v, 0.0).sum(-1)
            if how == "mean":
                word = word / n.clamp_min(1)
        out.append(torch.where(n > 0, word, float("nan")))
    return torch.stack(out, -1)


def word_table(ex, table, how: Merge = "sum"):
    """A token ScoreTable of ``ex`` as a DataFrame of words: text, first and last token, score."""
    import pandas as pd

    from .methods import ScoreTable, token_methods

    if not isinstance(table, ScoreTable):
        raise InputTypeError(f"word_table takes a ScoreTable of input tokens (e.g. ex.score('saliency')), not "
                             f"{type(table).__name__}.")
    checks.choice(how, "how", MERGES)
    values = torch.full((ex.n_tokens,), float("nan"), dtype=torch.float64)
    for c, v in zip(table.components, table.scores.tolist()):
        if c.kind != "token":
            raise InputError(f"word_table merges token scores; {c.id} of this {table.method} table is not a token. "
                             f"Use a method that scores tokens: {', '.join(token_methods())}.")
        if c.position >= ex.n_tokens:
            raise InputError(f"the table scores token {c.position}, but this prompt has {ex.n_tokens} tokens: the "
                             "table was made for another prompt.")
        values[c.position] = v
    if not len(table):
        raise InputError(f"the {table.method} table is empty: no token scores to merge into words.")
    n = max(c.position for c in table.components) + 1  # words are cut after the last scored token
    roles = None if ex.token_roles is None else ex.token_roles[:n]
    keep = [(a, b) for a, b in word_spans(ex.tokens[:n], roles) if not values[a:b].isnan().all()]
    merged = merge(values, keep, how)
    return pd.DataFrame({"word": ["".join(ex.tokens[a:b]) for a, b in keep], "first": [a for a, _ in keep],
                         "last": [b - 1 for _, b in keep], "score": merged.numpy(), "method": table.method,
                         "merge": how})
