"""Read a prompt given in one of the forms trace() accepts; refuse anything it would have to guess about.

Accepted: text; a flat list/tuple of int token ids; an integer tensor or array of shape [T] or [1, T]; a tokenizer's
output (a BatchEncoding or a dict with ``input_ids``) that holds one unpadded sequence. Refused, with a message
saying what to pass instead: bytes (not read as ids), float or bool ids (not truncated), nested lists and lists of
prompts (explain_many takes many), padded batches, and text holding lone surrogates (not valid Unicode: the
tokenizer would fail or silently drop them; we refuse rather than replace, so the explained text is the text given).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from ..errors import PromptError, PromptTypeError

_FORMS = "text, a list of token ids, a [1, T] tensor of ids or a tokenizer's output for one prompt"
_MANY = "To explain several prompts, use lmtt_widgets.explain_many(model, [prompt, ...])."


def read_prompt(tokenizer, prompt) -> tuple[torch.Tensor, str | None]:
    """(token ids [T] int64, the text or None) of ``prompt``; ids are not yet checked against the vocabulary."""
    if isinstance(prompt, str):
        _check_text(prompt)
        return _from_encoding(tokenizer(prompt, return_tensors="pt"), "the tokenizer's output"), prompt
    if isinstance(prompt, (bytes, bytearray, memoryview)):
        raise PromptTypeError(
            "The prompt is bytes. Decode it to text first, e.g. prompt.decode('utf-8'); bytes are not read as "
            "token ids (pass a list of ints for that)."
        )
    if isinstance(prompt, Mapping) or (hasattr(prompt, "input_ids") and not isinstance(prompt, (list, tuple))):
        return _from_encoding(prompt, "the tokenizer output"), None
    if isinstance(prompt, (torch.Tensor, np.ndarray)):
        return _from_array(prompt, "the prompt tensor"), None
    if isinstance(prompt, (list, tuple, range)):
        return _from_list(prompt), None
    raise PromptTypeError(f"A prompt is {_FORMS}; got {type(prompt).__name__}.")


def _check_text(text: str) -> None:
    if not text.strip():
        raise PromptError("The prompt is empty. Type some text to explain, e.g. 'The capital of France is'.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PromptError(
            f"The prompt holds a lone surrogate {text[exc.start]!r} at character {exc.start}, which is not valid "
            "Unicode (often half of an emoji cut off, or bytes decoded with errors='surrogateescape'). Remove it, "
            "or clean the text with text.encode('utf-8', 'replace').decode('utf-8')."
        ) from None


def _from_encoding(enc, what: str) -> torch.Tensor:
    try:
        ids = enc["input_ids"] if isinstance(enc, Mapping) else enc.input_ids
    except (KeyError, AttributeError):
        keys = ", ".join(map(str, list(enc)[:5])) if isinstance(enc, Mapping) else ""
        raise PromptTypeError(
            f"A dict prompt must be a tokenizer output with 'input_ids'; this one has keys: {keys or 'none'}."
        ) from None
    mask = enc.get("attention_mask") if isinstance(enc, Mapping) else getattr(enc, "attention_mask", None)
    if mask is not None and not _all_ones(mask):
        raise PromptError(
            f"{what.capitalize()} is padded (its attention_mask has zeros). Trace one prompt at a time, "
            f"without padding: padding would change the attention rows. {_MANY}"
        )
    if isinstance(ids, (list, tuple)):
        if ids and isinstance(ids[0], (list, tuple, torch.Tensor, np.ndarray)):
            if len(ids) != 1:
                raise PromptError(f"{what.capitalize()} holds a batch of {len(ids)} sequences. {_MANY}")
            ids = ids[0]
        return _from_list(ids)
    return _from_array(ids, what)


def _from_array(x, what: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "iufcb":  # text, objects, records: torch cannot even hold them
            raise PromptTypeError(
                f"Token ids must be integers; {what} is a numpy array of dtype {x.dtype}. Pass one text, or "
                f"integer ids (np.asarray(ids, dtype=np.int64)). {_MANY}")
        # any strides or byte order; float and bool arrays go on to the tensor's own check below
        native = np.int64 if x.dtype.kind in "iu" else x.dtype.newbyteorder("=")
        x = torch.from_numpy(np.ascontiguousarray(x).astype(native, copy=False))
    if not isinstance(x, torch.Tensor):
        raise PromptTypeError(f"The tokenizer output's input_ids must be token ids (a list of ints or a tensor), "
                              f"not {type(x).__name__}.")
    if x.is_meta:
        raise PromptTypeError(f"{what.capitalize()} is on the meta device and holds no values; pass real token ids.")
    if x.dtype == torch.bool or x.is_floating_point() or x.is_complex():
        raise PromptTypeError(
            f"Token ids must be integers; {what} has dtype {x.dtype}. Floats are not rounded for you: convert "
            "exact ids with ids.long(), or pass the text."
        )
    if x.dim() == 2:
        if x.shape[0] != 1:
            raise PromptError(
                f"Got a batch of {x.shape[0]} sequences; trace one prompt at a time (padding would change the "
                f"attention rows). {_MANY}"
            )
        x = x[0]
    if x.dim() != 1:
        raise PromptError(f"Token ids must have shape [T] or [1, T]; {what} has shape {list(x.shape)}.")
    if x.numel() == 0:
        raise PromptError("The prompt has no tokens. Type some text to explain.")
    return x.detach().cpu().long()


def _from_list(seq) -> torch.Tensor:
    if len(seq) == 0:
        raise PromptError("The prompt has no tokens. Type some text to explain.")
    for pos, v in enumerate(seq):
        if isinstance(v, str):
            raise PromptTypeError(f"Got a list of {len(seq)} texts; explain() takes one prompt. {_MANY}")
        if isinstance(v, (list, tuple, torch.Tensor, np.ndarray)) and not _is_int(v):
            raise PromptTypeError(
                "Got a nested list (a batch?); a prompt of token ids is one flat list of ints, e.g. ids[0]. " + _MANY
            )
        if _is_int(v) and not -(2**63) <= int(v) < 2**63:
            raise PromptError(f"Token id {int(v)} at position {pos} lies outside any vocabulary.")
        if not _is_int(v):
            raise PromptTypeError(
                f"Token ids must be integers; item {pos} is {v!r} ({type(v).__name__}). Floats and bools are not "
                "converted for you: pass ints, or the text."
            )
    return torch.tensor([int(v) for v in seq], dtype=torch.long)


def _all_ones(mask) -> bool:
    m = mask if isinstance(mask, torch.Tensor) else torch.as_tensor(np.asarray(mask))
    return bool((m != 0).all())


def _is_int(v) -> bool:
    if isinstance(v, (bool, np.bool_)):
        return False
    if isinstance(v, (int, np.integer)):
        return True
    return isinstance(v, torch.Tensor) and v.dim() == 0 and not v.is_floating_point() and v.dtype != torch.bool \
        and not v.is_complex()
