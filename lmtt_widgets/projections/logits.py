"""The logits of a long prompt, kept only at the positions asked for and computed for the others on demand.

The full [T, V] logits are 0.8 GB at 4,096 tokens on SmolLM2 (1.6 GB at 8,192) and the widgets read one row. On long
prompts :func:`keep_rows` makes the model's unembedding run on the kept positions alone (a forward pre-hook on the
output embedding, for the pass only), and :class:`LogitRows` stands in for the [T, V] tensor: a kept row is exactly
what the model returned; any other row is computed from the trace's final residual through the final norm and the
unembedding (no re-run of the model), equal to the model's row up to float32 rounding.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ..tracing.tracer import Trace

# Full logits are kept up to this many bytes (256 tokens of SmolLM2's 49,152-word vocabulary in float32).
KEEP_ALL_BYTES = 48 * 2**20


def keeps_all(n_tokens: int, vocab: int, itemsize: int) -> bool:
    return n_tokens * vocab * itemsize <= KEEP_ALL_BYTES


@contextlib.contextmanager
def keep_rows(model, positions: list[int]):
    """For the block's passes, the output embedding reads only ``positions`` of its input (logits [1, n, V]);
    nothing changes for ``positions`` None."""
    head = None if positions is None else model.get_output_embeddings()
    if head is None:  # no unembedding module: the model returns every row (LogitRows then picks them)
        yield
        return
    index = torch.tensor(positions)

    def pre(mod, args, kwargs):
        h = args[0] if args else kwargs["input"]
        if h.dim() != 3 or h.shape[1] <= int(index.max()):
            return None  # not the [1, T, d] input this was set up for (or already sliced): leave it
        h = h.index_select(1, index.to(h.device))
        return ((h,) + tuple(args[1:]), kwargs) if args else (args, {**kwargs, "input": h})

    handle = head.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


class LogitRows:
    """Stands in for the logits [T, V] of a traced pass: the kept rows as the model returned them, the others
    computed from the final residual when read (then cached). Indexing gives tensors; ``float()``, ``double()``
    and ``to()`` build the whole [T, V] tensor (every row computed: memory of the full logits)."""

    def __init__(self, trace: Trace, positions: list[int], rows: torch.Tensor):
        """``rows``: [len(positions), V], or [T, V] when the model returned every row (an unembedding that is no
        module of its own): the asked ones are kept."""
        if rows.shape[0] == trace.n_tokens and len(positions) != trace.n_tokens:
            rows = rows[torch.tensor(positions, device=rows.device)]
        if rows.shape[0] != len(positions):
            raise ValueError(f"{rows.shape[0]} logit rows for {len(positions)} positions")
        self._trace = trace
        self._rows = {p: rows[k] for k, p in enumerate(positions)}
        self.kept = tuple(positions)
        self.dtype, self.device = rows.dtype, rows.device
        self.shape = torch.Size((trace.n_tokens, rows.shape[-1]))

    def dim(self) -> int:
        return 2

    def __len__(self) -> int:
        return self.shape[0]

    def row(self, position: int) -> torch.Tensor:
        """[V] the logits at ``position`` (exactly the model's where kept)."""
        T = self.shape[0]
        p = int(position)
        if not -T <= p < T:
            raise IndexError(f"position {p} is out of range for {T} tokens")
        p %= T
        if p not in self._rows:
            self._rows[p] = self._compute(p)
        return self._rows[p]

    def _compute(self, p: int) -> torch.Tensor:
        from .vocab import project

        tr = self._trace
        if tr.final_resid is None:
            raise RuntimeError(f"the logits at token {p} were not kept and the trace holds no final residual to "
                               "compute them from")
        return project(tr, tr.final_resid[p], p, "own").to(self.device, self.dtype)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            if key and key[0] is Ellipsis:
                key = key[1:]
            first, rest = (key[0], key[1:]) if key else (slice(None), ())
        else:
            first, rest = key, ()
        if isinstance(first, int) or (isinstance(first, torch.Tensor) and first.dim() == 0):
            out = self.row(int(first))
        else:
            out = torch.stack([self.row(p) for p in torch.arange(self.shape[0])[first].tolist()])
            rest = (slice(None),) + tuple(rest) if rest else ()
        return out[rest] if rest else out

    def full(self) -> torch.Tensor:
        """[T, V] every row (those not kept computed now)."""
        return self[:]

    def float(self) -> torch.Tensor:
        return self.full().float()

    def double(self) -> torch.Tensor:
        return self.full().double()

    def to(self, *args, **kwargs) -> torch.Tensor:
        return self.full().to(*args, **kwargs)

    def __repr__(self) -> str:
        return f"LogitRows(shape={tuple(self.shape)}, kept={list(self.kept)}, dtype={self.dtype})"
