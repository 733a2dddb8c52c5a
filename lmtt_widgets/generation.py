"""The sequence :func:`explain` traces when it is more than a plain prompt, and the source × generated matrix.

- ``explain(lm, prompt, generate=10)``: the model itself (no hooks) continues the prompt greedily for up to 10
  tokens (stopping after an end-of-sequence token), then prompt + continuation is traced ONCE: routes, heads,
  neurons and attributions are available at every position without running the model again.
- ``explain(lm, prompt, continuation=" Paris, of course.")``: a continuation you give, tokenized on its own (no
  special tokens) and appended to the prompt's tokens, so the prompt's tokens are the ones a plain explain() sees.
- ``explain(lm, [{"role": "user", "content": "..."}], chat=True)``: the tokenizer's chat template with the
  generation prompt; each token is marked with the role of the message whose text it carries ("user", "system",
  "assistant") or "template" (special tokens and the template's own text, a default system prompt included).

``ex.token_roles`` holds one mark per token ("text", "special", "template", a message role, "generated"),
``ex.n_prompt_tokens`` the number before the continuation and ``ex.generated_positions`` the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import InputError, PromptError, PromptTypeError, SelectionError, SelectionTypeError
from .methods.input_attribution import frozen, last_logits
from .models.offload import input_device


@dataclass
class Sequence:
    ids: torch.Tensor  # [T] prompt + continuation
    n_prompt: int
    roles: list[str]
    text: str | None  # the prompt as text (the rendered template for chats)

    def annotate(self, ex) -> None:
        ex.n_prompt_tokens = self.n_prompt
        ex.token_roles = list(self.roles)
        if self.text is not None:
            ex.trace.prompt = self.text


def build_sequence(lm, prompt, *, generate: int = 0, continuation=None, chat: bool = False) -> Sequence:
    """Prompt (or chat) ids, then the continuation given or generated; roles per token."""
    from .tracing.tracer import tokenize

    from . import checks
    from .tracing.tracer import context_length

    generate = 0 if generate is None else checks.count(generate, "generate", low=0,
                                                       what="how many tokens the model adds")
    chat = checks.flag(chat, "chat")
    if generate and continuation is not None:
        raise PromptError("Give either generate=N (the model continues) or continuation=... (your text), not both.")
    if chat:
        ids, roles, text = chat_ids(lm, prompt)
    else:
        ids, text = tokenize(lm, prompt)
        special = set(getattr(lm.tokenizer, "all_special_ids", []) or [])
        roles = ["special" if i in special else "text" for i in ids.tolist()]
    n_prompt = ids.numel()
    if continuation is not None:
        more = _continuation_ids(lm, continuation)
    elif generate:
        room = context_length(lm.model.config)
        if room is not None and ids.numel() + generate > room:  # refused before generating, not after
            raise PromptError(f"generate={generate} after {ids.numel()} prompt tokens exceeds the {room} tokens "
                              f"{lm.name} reads; ask for at most {max(room - ids.numel(), 0)}.")
        more = greedy_tokens(lm, ids, generate)
    else:
        more = []
    full = torch.cat([ids, torch.tensor(more, dtype=torch.long)])
    full, _ = tokenize(lm, full)  # checks the context length and the vocabulary
    return Sequence(full, n_prompt, roles + ["generated"] * len(more), text)


def _continuation_ids(lm, continuation) -> list[int]:
    from .methods.targets import _encode

    from . import checks
    from .tracing.prompts import read_prompt

    if isinstance(continuation, str):
        ids = _encode(lm.tokenizer, checks.unicode_text(continuation, "The continuation"))
    elif isinstance(continuation, (list, tuple, torch.Tensor)) and len(continuation) == 0:
        ids = []
    else:  # ids: checked as a prompt's are (bytes, floats, nested lists refused)
        try:
            ids = read_prompt(lm.tokenizer, continuation)[0].tolist()
        except PromptError as exc:
            raise type(exc)(f"continuation: {exc}".replace("The prompt", "the continuation")) from None
    if not ids:
        raise PromptError("The continuation has no tokens.")
    return ids


@torch.no_grad()
def greedy_tokens(lm, ids: torch.Tensor, n: int, *, stop_at_eos: bool = True) -> list[int]:
    """Up to n greedy next tokens after ids [T], run through the model's own cache (n forward calls at most)."""
    if n < 0:
        raise PromptError(f"generate must be a number of tokens >= 0, not {n}")
    model = lm.model
    eos = getattr(lm.tokenizer, "eos_token_id", None)
    dev = input_device(model)  # (an offloaded model's parameters may be on meta)
    out: list[int] = []
    with frozen(model):
        logits, cache = last_logits(model, ids=ids[None].to(dev), cache=True)
        for step in range(n):
            nxt = int(logits[0].argmax())
            out.append(nxt)
            if (stop_at_eos and nxt == eos) or step == n - 1:
                break
            logits, cache = last_logits(model, ids=torch.tensor([[nxt]], device=dev), past=cache)
    return out


def chat_ids(lm, messages) -> tuple[torch.Tensor, list[str], str]:
    """Token ids of the chat template applied to ``messages`` (with the generation prompt), roles and the text."""
    tok = lm.tokenizer
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    messages = _chat_messages(messages)
    if not getattr(tok, "chat_template", None):
        raise PromptError(f"The tokenizer of {lm.name} has no chat template; pass the prompt as plain text instead.")
    try:
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as exc:  # the template is the model's own code (Jinja): its failure is said as such
        raise PromptError(f"The chat template of {lm.name} failed on these messages ({type(exc).__name__}: {exc}). "
                          "Check the roles and order it expects, or pass the prompt as plain text.") from exc
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = torch.tensor(enc["input_ids"], dtype=torch.long)
    spans = _content_spans(tok, messages, text)
    special = set(getattr(tok, "all_special_ids", []) or [])
    roles = []
    for tid, (a, b) in zip(enc["input_ids"], enc["offset_mapping"]):
        role = next((r for s, e, r in spans if a < e and b > s), "template")
        roles.append("template" if tid in special else role)
    return ids, roles, text


def _content_spans(tok, messages, text: str) -> list[tuple[int, int, str]]:
    """(start, end, role) of each message's text in the rendered template.

    The template is rendered again with a marker in place of each content, so a content that also occurs in the
    template's own text (a message "user" after the role label "user") is found where the template put it. A
    template that changes what it is given (trims, escapes) does not give the text back that way: then each content
    is searched for in order, after the previous one.
    """
    marks = [f"\ue000{n}\ue001" for n in range(len(messages))]  # private-use characters: in no message's text
    try:
        marked = tok.apply_chat_template([{**m, "content": k} for m, k in zip(messages, marks)], tokenize=False,
                                         add_generation_prompt=True)
    except Exception:
        marked = ""
    if all(marked.count(k) == 1 for k in marks):
        spans, rebuilt, cursor = [], "", 0
        for at, n in sorted((marked.index(k), n) for n, k in enumerate(marks)):
            rebuilt += marked[cursor:at]
            spans.append((len(rebuilt), len(rebuilt) + len(messages[n]["content"]), messages[n]["role"]))
            rebuilt += messages[n]["content"]
            cursor = at + len(marks[n])
        if rebuilt + marked[cursor:] == text:
            return [sp for sp in spans if sp[1] > sp[0]]
    spans, cursor = [], 0
    for m in messages:
        content = m["content"]
        at = text.find(content, cursor) if content else -1
        if at >= 0:
            spans.append((at, at + len(content), m["role"]))
            cursor = at + len(content)
    return spans


def _chat_messages(messages) -> list[dict]:
    """A non-empty list of {"role": text, "content": text} messages, checked before the template reads them (a
    template fails deep inside Jinja on anything else, or reads a list of ids or bytes as messages)."""
    from . import checks

    example = '[{"role": "user", "content": "Hello"}]'
    if not isinstance(messages, (list, tuple)):
        raise PromptTypeError(f"chat=True takes a text or a list of messages such as {example}, not "
                              f"{type(messages).__name__}.")
    if not messages:
        raise PromptError(f"The chat has no messages; give at least one, such as {example}.")
    for n, m in enumerate(messages):
        if not isinstance(m, dict):
            raise PromptTypeError(f"Chat message {n} is a {type(m).__name__}, not a message such as {example[1:-1]}"
                                  " (token ids and bytes cannot be read as a chat).")
        for key in ("role", "content"):
            if not isinstance(m.get(key), str):
                raise PromptTypeError(f"Chat message {n} needs a text {key!r}, not {m.get(key)!r}; a message is "
                                      f"such as {example[1:-1]}.")
        checks.unicode_text(m["content"], f"Chat message {n}", PromptError)
    return list(messages)


def attribution_matrix(ex, method: str = "integrated_gradients", *, positions=None, foil=None, progress=None,
                       **options):
    """Source × generated attributions as a pandas DataFrame [n_generated, T] (Inseq's main view).

    Row g explains the prediction of token g (made at position g - 1): the metric is log p(token g), or
    logit(token g) - logit(foil) with a foil. Columns are the source tokens; sources at or after g are NaN (the
    prediction could not read them). ``positions`` defaults to the generated positions. ``progress(i, n)`` is
    called after each row. Flow methods do not depend on the target: their row g is the flow into position g - 1.
    """
    import pandas as pd

    from . import checks
    from .methods import get_method, token_methods

    info = get_method(method)
    if not info.scores_tokens:  # its table scores heads, MLPs or edges: no column would be filled
        raise InputError(f"{method!r} does not score input tokens (it is a {info.family} method: {info.quantity}), "
                         f"so it cannot fill a source x generated matrix; use one of {', '.join(token_methods())}.")
    if progress is not None and not callable(progress):  # checked before the rows run, not after the first
        raise SelectionTypeError(f"progress must be a function progress(done, total) or None, not "
                                 f"{type(progress).__name__}.")
    if checks.is_integer(positions):
        positions = [positions]  # one position, as a list of one
    elif positions is not None and (isinstance(positions, (str, bytes, dict)) or not hasattr(positions, "__iter__")):
        raise SelectionTypeError(f"positions must be a list of token positions such as [5, 6], not "
                                 f"{type(positions).__name__}.")
    rows = list(ex.generated_positions if positions is None else positions)
    if not rows:
        raise SelectionError("No generated tokens to explain: use explain(..., generate=N) or pass positions=[...].")
    T, ids = ex.n_tokens, ex.trace.input_ids
    rows = [ex._token(g) for g in rows]
    if 0 in rows:
        raise SelectionError("Token 0 is predicted by nothing; rows start at position 1.")
    out = torch.full((len(rows), T), float("nan"), dtype=torch.float64)
    if method == "flow_attribution" and not options:  # every row in one propagation down the graph
        from .methods.flow_attribution import flow_shares

        shares, _ = flow_shares(ex.scores, [g - 1 for g in rows])
        causal = torch.arange(T)[None, :] < torch.tensor(rows)[:, None]
        out[causal] = shares[causal]
        rows_done = len(rows)
    else:
        rows_done = 0
    for n, g in enumerate(rows[rows_done:]):
        table = info.fn(ex, target=int(ids[g]), foil=foil, position=g - 1, **options)
        for c, v in zip(table.components, table.scores.tolist()):
            out[n, c.position] = v
        if progress is not None:
            progress(n + 1, len(rows))
    def label(ps):
        return pd.MultiIndex.from_arrays([ps, [ex.tokens[p] for p in ps]], names=["position", "token"])

    df = pd.DataFrame(out.numpy(), index=label(rows), columns=label(list(range(T))))
    df.attrs.update(method=method, quantity=info.quantity,
                    metric="log p(token)" if foil is None else f"logit(token) - logit({foil!r})")
    return df
