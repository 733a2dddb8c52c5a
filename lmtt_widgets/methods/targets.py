"""Turn what a user says ("the prediction", " John", a token id) into a :class:`Metric` of a traced prompt."""

from __future__ import annotations

import operator

import numpy as np
import torch

from ..checks import is_integer, unicode_text
from ..errors import SelectionError
from .base import Metric


def token_id(ex, token, *, what: str) -> int:
    """A vocabulary id from an integer id (Python, NumPy or a 0-d integer tensor) or a text that is exactly one
    token. Floats of every kind are refused, 3.0 too: an id is never truncated or guessed from a number."""
    if isinstance(token, str):
        return in_vocabulary(ex, _text_id(ex, token, what), what)
    if isinstance(token, (bool, np.bool_)):
        raise SelectionError(f"The {what} must be a token id or a token's text, not {token!r}.")
    if is_integer(token) or (hasattr(token, "__index__") and not isinstance(token, (torch.Tensor, np.ndarray))):
        return in_vocabulary(ex, operator.index(token), what)
    if isinstance(token, (torch.Tensor, np.ndarray)):  # an array of one id is not an id: refused, not guessed
        raise SelectionError(f"The {what} must be a token id (an integer) or a token's text, not a "
                             f"{type(token).__name__} of dtype {token.dtype} and shape {list(token.shape)}; "
                             "use int(...) on a single integer id (floats are not truncated for you).")
    if isinstance(token, (float, np.floating)):
        raise SelectionError(f"The {what} must be an integer token id or a token's text, not the float {token!r}: "
                             "ids are not truncated for you; pass int(...) if the number is an id.")
    raise SelectionError(f"The {what} must be a token id or a token's text, not {type(token).__name__}.")


def in_vocabulary(ex, tid: int, what: str) -> int:
    """``tid`` when the model has a logit for it; else a clear error (ids from another model's tokenizer)."""
    vocab = ex.trace.logits.shape[-1]
    if not 0 <= tid < vocab:
        raise SelectionError(
            f"The {what} id {tid} is out of range: the vocabulary has {vocab} tokens (0..{vocab - 1}).")
    return tid


def _text_id(ex, token: str, what: str) -> int:
    unicode_text(token, f"The {what}", SelectionError)
    if not token:
        raise SelectionError(f"The {what} is an empty text; give a token such as ' Paris' (mind the leading space).")
    ids = _encode(ex.trace.lm.tokenizer, token)
    if len(ids) != 1:
        pieces = [ex.trace.lm.tokenizer.decode([i]) for i in ids]
        raise SelectionError(
            f"The {what} {token!r} is {len(ids)} tokens {pieces}, not one. Give a single token (mind the leading "
            f"space: ' Paris', not 'Paris') or its id."
        )
    return ids[0]


def _encode(tokenizer, text: str) -> list[int]:
    try:
        return list(tokenizer(text, add_special_tokens=False).input_ids)
    except TypeError:  # tokenizers without add_special_tokens (test stand-ins) return a [1, n] tensor
        ids = tokenizer(text).input_ids
        return [int(i) for i in (ids[0] if hasattr(ids, "dim") and ids.dim() == 2 else ids)]


def make_metric(ex, target=None, foil=None, position=None) -> Metric:
    """The metric at ``position`` (default: the last token): logit(target) - logit(foil), or log p(target).

    ``target`` defaults to the model's top prediction there; both accept a token id or a one-token text.
    """
    pos = ex._token(position)
    logits = ex.trace.logits[pos].float()
    if not bool(logits.isfinite().all()):
        raise SelectionError(f"The model's logits at token {pos} are not finite; no metric can be read there.")
    tid = int(logits.argmax()) if target is None else token_id(ex, target, what="target")
    fid = None if foil is None else token_id(ex, foil, what="foil")
    if fid is not None and fid == tid:
        raise SelectionError("The foil is the target itself; pick another token to contrast with.")
    text = lambda i: ex.trace.lm.tokenizer.decode([i], clean_up_tokenization_spaces=False)  # noqa: E731
    return Metric(pos, tid, fid, text(tid), "" if fid is None else text(fid))
