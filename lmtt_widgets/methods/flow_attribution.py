"""Input attribution read off the information-flow graph (no forward pass), and attention rollout to compare with.

``flow_attribution``: the share of the target's final residual (the top node at position p) that each input token's
embedding accounts for, propagating importances down the full graph. Each node passes its share to the parts of
its update in proportion to their importances (every update's importances sum to 1):

- after the MLP of layer l at token i: the residual part goes to the state after attention at i; the MLP part goes
  to the MLP node, which is fed by that same state (an MLP at token i reads the residual at token i only), so the
  state after attention at i receives all of it;
- after attention at i: the residual part goes to the block input at i, each source j's head-summed part to the
  block input at j; the output bias's part goes nowhere (a bias is no token's) and is *lost*;
- parallel blocks (one update): residual and MLP parts go to the block input at i, sources to j, the bias is lost.

So the shares of tokens 0..p sum to 1 minus the share lost to attention output biases (``extra["lost_to_bias"]``,
0 for models without them). On long prompts, whose scores store head-summed edges only from
``scores.edge_floor`` on (contributions/scores.py), the share that flowed through the smaller edges is not followed:
``extra["below_edge_floor"]`` says how much it was (1 - the shares - the bias's; 0 on short prompts). The share is the sum over all paths of the product of importances along the path
(Ferrando & Voita's graph read as a flow). It does not depend on the target token or the foil: flow says where the
information came from, not what it did.

``attention_rollout`` (Abnar & Zuidema 2020), the naive baseline: per layer the head-averaged attention mixed
with the identity for the residual, Â = 0.5·A + 0.5·I, multiplied from the top layer down; row p is the
attribution (rows sum to 1). Read from the attention the trace stored (one extra traced pass only when the prompt
was too long to keep it).
"""

from __future__ import annotations

import torch

from ..contributions.scores import ContributionScores
from .base import Component, ScoreTable, register_method

FLOW = "flow share of the target's final residual (importance propagated to the input)"
ROLLOUT = "attention rollout share (0.5·A + 0.5·I, heads averaged)"


def _edge_matrix(edge: torch.Tensor, T: int, tril: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Packed lower triangle [T(T+1)/2] -> dense [T, T] (row: target i, column: source j <= i), float64."""
    dense = torch.zeros(T, T, dtype=torch.float64)
    dense[tril] = edge.double().cpu()
    return dense


def flow_shares(scores: ContributionScores, positions: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Embedding shares [n, T] of the top node of each position, and the share each lost to biases [n]."""
    T = scores.n_tokens
    v = torch.zeros(len(positions), T, dtype=torch.float64)
    v[torch.arange(len(positions)), torch.tensor(positions, dtype=torch.long)] = 1.0
    lost = torch.zeros(len(positions), dtype=torch.float64)
    parallel = scores.topology == "parallel"
    tril = tuple(torch.tril_indices(T, T))
    for ls in reversed(scores.layers):
        # after the MLP -> after attention: residual and MLP parts both land on the same token's state
        stay = ls.resid_attn.double().cpu() + (ls.mlp.double().cpu() if parallel else 0.0)
        if not parallel:
            v = v * (ls.resid_mlp.double().cpu() + ls.mlp.double().cpu())
        lost += (v * ls.bias_attn.double().cpu()).sum(-1)
        v = v * stay + v @ _edge_matrix(ls.edge, T, tril)
    return v, lost


@register_method("flow_attribution", quantity=FLOW, family="flow", scores_tokens=True,
                 cost="free from the trace (no forward pass)")
def flow_attribution(ex, target=None, foil=None, position=None) -> ScoreTable:
    """Each input token's share of the final residual at ``position`` through the flow graph (target-independent)."""
    return flow_attribution_tables(ex, [ex._token(position)])[0]


def flow_attribution_tables(ex, positions: list[int]) -> list[ScoreTable]:
    """:func:`flow_attribution` at many positions from one pass down the graph (the offline report holds all)."""
    v, lost = flow_shares(ex.scores, positions)
    return [_flow_table(ex, p, v[n], float(lost[n])) for n, p in enumerate(positions)]


def _flow_table(ex, p: int, shares: torch.Tensor, lost: float) -> ScoreTable:
    comps = [Component("token", position=j) for j in range(p + 1)]
    total = float(shares.sum())
    extra = {"position": p, "lost_to_bias": lost, "sum": total, "edge_floor": ex.scores.edge_floor,
             "below_edge_floor": max(0.0, 1 - total - lost) if ex.scores.edge_floor else 0.0}
    return ScoreTable("flow_attribution", FLOW, None, comps, shares[: p + 1], False, extra)


def mean_attentions(ex) -> list[torch.Tensor]:
    """Head-averaged attention [T, T] of every layer, from the trace (one re-trace if it did not keep them)."""
    tr = ex.trace
    if tr.attention_kept:
        return [rec.attention.double().mean(0).cpu() for rec in tr.layers]
    from ..tracing.tracer import trace

    got: list[torch.Tensor] = []
    trace(tr.lm, tr.input_ids, on_layer=lambda rec, _w: got.append(rec.attention.double().mean(0).cpu()),
          keep_attention=False)
    return got


def rollout_shares(attentions: list[torch.Tensor], positions: list[int]) -> torch.Tensor:
    """Rows ``positions`` of Â_{L-1} ··· Â_0 with Â = 0.5·A + 0.5·I. [n, T]."""
    T = attentions[0].shape[-1]
    v = torch.zeros(len(positions), T, dtype=torch.float64)
    v[torch.arange(len(positions)), torch.tensor(positions, dtype=torch.long)] = 1.0
    for A in reversed(attentions):
        v = 0.5 * v + 0.5 * (v @ A)
    return v


@register_method("attention_rollout", quantity=ROLLOUT, family="flow", scores_tokens=True,
                 cost="free from the stored attention (one traced pass if it was not kept)")
def attention_rollout(ex, target=None, foil=None, position=None) -> ScoreTable:
    """Attention rollout at ``position`` (target-independent)."""
    return attention_rollout_tables(ex, [ex._token(position)])[0]


def attention_rollout_tables(ex, positions: list[int]) -> list[ScoreTable]:
    """:func:`attention_rollout` at many positions from one product down the layers."""
    v = rollout_shares(mean_attentions(ex), positions)
    return [ScoreTable("attention_rollout", ROLLOUT, None, [Component("token", position=j) for j in range(p + 1)],
                       v[n, : p + 1], False, {"position": p, "sum": float(v[n].sum())})
            for n, p in enumerate(positions)]
