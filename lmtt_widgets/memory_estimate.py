"""How much memory ``explain`` needs beyond the model itself, estimated before the run, and the check that uses it.

The estimate follows what the engine allocates (shapes from the model's own modules, so offloaded models work):
- what the trace keeps for every layer: residual states, the projections' inputs and outputs, values; in float32
  (views of the model's own tensors for a float32 model, float32 copies for bf16/fp16); on long prompts the
  per-position tensors are dropped once scored (tracing/rebuild.py), so all but the group being scored keep only
  their input and values;
- attention [H, T, T]: every layer's when kept (``keep_attention``, default when L*H*T*T <= KEEP_ATTENTION_LIMIT),
  else one group of layers while it is scored, and every layer's attention call (query and key states, a mask);
- the logits [T, V] in the model's dtype on short prompts, one row on long ones (projections/logits.py), and the
  per-layer scores (head-summed edges: every causal one on short prompts, those >= EDGE_FLOOR on long ones;
  head totals; sparse per-head scores);
- float32 copies of W_O and W_out for offloaded or bf16/fp16 layers, at most WEIGHT_CACHE_BYTES (or one layer's);
- the larger of two transients: the forward pass of one layer (eager attention scores and softmax, the MLP's
  intermediates) and the scoring of one group (head directions, a chunk's temporaries, bounded by CHUNK_BUDGET).
  Both are over before the logits exist, so only their excess over the logits adds to the peak;
- on the CPU, allocator slack: glibc keeps the freed transients of each layer in its heap, between the records
  that stay (tracing/memory.py hands them back after each layer only on long prompts);
- a fixed allowance for the interpreter.
Checked against measured peaks in benchmarks/bench_engine.py (README, "Big models").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .contributions.proximity import BUDGET_MEANS, CHUNK_BUDGET
from .contributions.scores import edge_floor, layers_per_group
from .errors import InputTypeError, MemoryEstimateError
from .models.loading import load_model
from .models.offload import OffloadMap, input_device
from .tracing.capture import ATTENTION_ROW_BLOCK
from .tracing.memory import FREE_LIMIT, reuses_heap
from .tracing.rebuild import REBUILD_LIMIT, droppable_bytes

# Per-head scores kept per target row and layer (those >= HEAD_FLOOR): ~20-23 measured on SmolLM2 prompts.
SPARSE_PER_ROW = 24
# Head-summed edges kept per target row and layer on long prompts (those >= EDGE_FLOOR): at most a per-head count.
SPARSE_EDGES_PER_ROW = SPARSE_PER_ROW
# One scoring chunk holds about this many [rows, parts] temporaries (coefficients, linear term, bounds, masks, and
# int64 part indices over the selected pairs) of B*m*T*H numbers each.
CHUNK_TEMPORARIES = 12
# The interpreter, Python objects and allocator slack of one run (measured: ~10-20 MB on an 8-token prompt).
FIXED_BYTES = 16 * 2**20
# CPU heap slack as a share of the layer records: without the per-layer trim (measured on SmolLM2 against
# benchmarks/bench_engine.py: ~0.3-0.6 at 128-512 tokens), and with it (long prompts).
HEAP_SLACK, HEAP_SLACK_TRIMMED = 0.5, 0.1
# A run must leave this share of the available memory free (other allocations, estimate error).
HEADROOM = 0.9


@dataclass
class MemoryEstimate:
    """Peak extra memory of one ``explain`` run, by part (bytes); ``str()`` shows a readable table."""

    n_tokens: int
    keep_attention: bool
    device: str  # where the model takes its input (the check compares each device with its own free memory)
    parts: dict[str, int] = field(default_factory=dict)
    by_device: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def __str__(self) -> str:
        rows = [f"explain on {self.n_tokens} tokens needs about {_fmt(self.total)} beyond the model "
                f"(attention {'kept' if self.keep_attention else 'streamed'}):"]
        rows += [f"  {name:<44} {_fmt(n):>10}" for name, n in self.parts.items() if n]
        if len(self.by_device) > 1:
            rows.append("  by device: " + ", ".join(f"{d} {_fmt(n)}" for d, n in self.by_device.items()))
        return "\n".join(rows)


def _fmt(n: int) -> str:
    return f"{n / 2**30:.2f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"


def _linear_shape(module) -> tuple[int, int]:
    """(out, in) of a projection, Linear or GPT-2's Conv1D ([in, out]); read from shapes only (meta is fine)."""
    out, inp = module.weight.shape
    return (inp, out) if type(module).__name__ == "Conv1D" else (out, inp)


def _device_of(module, fallback: torch.device) -> str:
    hook = getattr(module, "_hf_hook", None)
    dev = getattr(hook, "execution_device", None)
    if dev is not None:
        return str(torch.device(dev if not isinstance(dev, int) else f"cuda:{dev}"))
    for p in module.parameters():
        if p.device.type != "meta":
            return str(p.device)
    return str(fallback)


def estimate_memory(model, prompt, *, keep_attention: bool | None = None, budget: int = CHUNK_BUDGET) -> MemoryEstimate:
    """Estimate the peak extra memory of ``explain(model, prompt, ...)``.

    ``prompt`` is what :func:`explain` takes (text, ids) or simply a number of tokens.
    """
    from .tracing.tracer import KEEP_ATTENTION_LIMIT, TRIM_ATTENTION_LIMIT, _n_heads, _n_kv_heads, tokenize

    from . import checks

    budget = checks.count(budget, "budget", what=BUDGET_MEANS)
    if keep_attention is not None and not isinstance(keep_attention, bool):
        raise InputTypeError(f"keep_attention must be True, False or None (automatic), not {keep_attention!r}.")
    if isinstance(prompt, bool):
        raise InputTypeError(f"estimate_memory takes a prompt or a number of tokens, not {prompt!r}.")
    lm = load_model(model)
    net, adapter, config = lm.model, lm.adapter, lm.model.config
    if checks.is_integer(prompt):
        T = checks.count(prompt, "the number of tokens", what="the prompt's length")
    else:
        T = int(tokenize(lm, prompt)[0].numel())
    blocks = list(net.get_submodule(adapter.blocks))
    L, H = len(blocks), _n_heads(config)
    K = _n_kv_heads(config, H)
    d, hd = _linear_shape(blocks[0].get_submodule(adapter.attn_out_proj))  # hd = H * head width
    F = _linear_shape(blocks[0].get_submodule(adapter.mlp_out_proj))[1]
    V = net.get_output_embeddings().weight.shape[0]
    model_dtype = next(net.parameters()).dtype
    m = torch.finfo(model_dtype).bits // 8
    f = 8 if model_dtype == torch.float64 else 4  # the maths' float
    copies = model_dtype not in (torch.float32, torch.float64)  # records are float32 copies, not views
    parallel = adapter.resolve_topology(config) == "parallel"
    post_norms = 2 * d if adapter.attn_post_norm else 0
    if keep_attention is None:
        keep_attention = L * H * T * T <= KEEP_ATTENTION_LIMIT
    B = layers_per_group(T, H, d, L, budget)
    offload = OffloadMap(net, check=False)  # shapes suffice: a model built on meta (no weights) is estimated too
    main = input_device(net)

    # per layer, kept to the end of the run: the block's input (its output is the next one's), values (and a
    # float32 copy of the output for bf16/fp16), and, unless a long trace drops them after scoring (rebuild.py),
    # the residual after attention, the projections' outputs (and post-norm outputs), head signals and neurons
    kept = T * f * (d + K * hd // H + (d if copies else 0))
    dropped = droppable_bytes(1, T, d, hd, F, parallel=parallel, post_norms=bool(post_norms)) * f // 4
    slim = not keep_attention and droppable_bytes(L, T, d, hd, F, parallel=parallel,
                                                  post_norms=bool(post_norms)) > REBUILD_LIMIT
    attention = H * T * T * f
    # without kept attention, each layer keeps its attention call instead (tracer.py): the query and key states
    # (and a low-precision model's own values) in the model's dtype, plus one [T, T] mask shared by the layers
    kv = K * hd // H
    replay = 0 if keep_attention else T * (hd + kv + (kv if copies else 0)) * m
    offloaded = [offload.is_offloaded(b.get_submodule(adapter.attn_out_proj)) for b in blocks]
    weight_copy = (d * hd + d * F) * 4
    # transients of one layer / group
    # eager attention, in blocks of query rows past ATTENTION_ROW_BLOCK (capture.py): one block's scores and
    # probabilities (and a float32 softmax for bf16/fp16) beside the [H, T, T] probabilities they fill; the MLP's
    # gate, up and activation; queries, keys and values repeated for GQA
    rows_at_once = min(T, ATTENTION_ROW_BLOCK) if T > ATTENTION_ROW_BLOCK else T
    forward = (H * rows_at_once * T * (2 * m + (4 if m < 4 else 0)) + (H * T * T * m if rows_at_once < T else 0)
               + 3 * T * F * m + 4 * T * hd * m)
    rows = max(1, min(256, budget // max(1, B * T * H * 8)))  # score_layers' rows per chunk
    scoring = (B * T * H * d + 4 * B * T * d + CHUNK_TEMPORARIES * B * min(rows, T) * T * H) * f
    if not keep_attention:
        scoring += B * attention  # the group's attention, held until it is scored
    # CSR rows (int64 pointers, int32 columns, float32 values): edges, then per-head scores; head totals; 4 vectors
    edges = T * (T + 1) // 2 if edge_floor(T, L) == 0 else T * min((T + 1) // 2, SPARSE_EDGES_PER_ROW)
    scores = ((T + 1) * 8 + edges * 8 + T * H * 4 + 4 * T * 4 + (T + 1) * 8
              + T * min(H * (T + 1) // 2, SPARSE_PER_ROW) * 8)
    from .projections.logits import keeps_all

    logit_rows = T if keeps_all(T, V, m) else 1

    from .tracing.layer_weights import WEIGHT_CACHE_BYTES

    parts = {
        "layer records (residuals, heads, neurons)": L * kept + T * d * f + (B + 1 if slim else L) * dropped,
        "attention of every layer (kept)": L * attention if keep_attention else 0,
        "attention calls kept instead (q, k, mask)": L * replay + (0 if keep_attention else T * T * m),
        "logits [T, V] (one row on long prompts)": logit_rows * V * m,
        "scores (edges, heads)": L * scores,
        "float32 W_O and W_out copies": min(sum(o or copies for o in offloaded) * weight_copy,
                                            max(WEIGHT_CACHE_BYTES, weight_copy)),
        "offloaded block loaded for the pass": _block_bytes(blocks[0]) if any(offloaded) else 0,
        "transient beyond the logits": max(0, max(forward, scoring) - logit_rows * V * m),
        "allocator slack (CPU heap)": 0,
        "interpreter": FIXED_BYTES,
    }
    if main.type == "cpu":
        trimmed = not keep_attention and H * T * T >= TRIM_ATTENTION_LIMIT
        parts["allocator slack (CPU heap)"] = int(
            (HEAP_SLACK_TRIMMED if trimmed else HEAP_SLACK) * parts["layer records (residuals, heads, neurons)"])
        if trimmed and reuses_heap(attention):  # freed memory kept for the next layer, up to FREE_LIMIT (memory.py)
            parts["allocator slack (CPU heap)"] += max(0, FREE_LIMIT - parts["transient beyond the logits"])
    layer_devices = [_device_of(b, main) for b in blocks]
    return MemoryEstimate(T, keep_attention, str(main), parts, _by_device(parts, layer_devices, str(main)))


def _by_device(parts: dict[str, int], layer_devices: list[str], main: str) -> dict[str, int]:
    """Where each part lives: per-layer parts on each layer's device, the logits and weight copies where the model
    takes its input, the reduced scores on the CPU; each device used by layers gets its own transients."""
    out: dict[str, int] = {}

    def add(dev, n):
        out[dev] = out.get(dev, 0) + int(n)

    L, devices = len(layer_devices), sorted(set(layer_devices))
    layered = (parts["layer records (residuals, heads, neurons)"] + parts["attention of every layer (kept)"]
               + parts["attention calls kept instead (q, k, mask)"])
    shares = {dev: layered * layer_devices.count(dev) // L for dev in devices}
    shares[layer_devices[0]] += layered - sum(shares.values())  # what integer division left over
    slack = parts["allocator slack (CPU heap)"]
    for dev in devices:
        add(dev, shares[dev] + parts["transient beyond the logits"] + parts["offloaded block loaded for the pass"])
        add(dev, slack // len(devices) + (slack % len(devices) if dev == devices[0] else 0))
    add(main, parts["logits [T, V] (one row on long prompts)"] + parts["float32 W_O and W_out copies"])
    add("cpu", parts["scores (edges, heads)"] + parts["interpreter"])
    return out


def _block_bytes(block) -> int:
    return sum(p.numel() * p.element_size() for p in block.parameters())


def available_memory(device: str | torch.device) -> int | None:
    """Bytes free for new allocations on ``device``: MemAvailable on Linux CPUs, the CUDA driver's free memory
    plus what PyTorch has cached on a GPU; None where it cannot be known (then nothing is checked)."""
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return None
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def check_memory(estimate: MemoryEstimate) -> None:
    """Raise :class:`MemoryEstimateError` when some device lacks the memory the estimate says the run needs."""
    for dev, need in estimate.by_device.items():
        free = available_memory(dev)
        if free is None or need <= HEADROOM * free:
            continue
        advice = [f"shorten the prompt (memory grows with its length, squared for attention; "
                  f"{estimate.n_tokens} tokens now)"]
        if estimate.keep_attention:
            advice.append("pass keep_attention=False (attention is then streamed, layer by layer)")
        advice.append("load the model with device_map='auto', max_memory=... and offload_folder=... so that "
                      "part of it leaves this device")
        if torch.device(dev).type == "cuda":
            advice.append("free GPU memory (other models, torch.cuda.empty_cache())")
        advice.append("or pass check_memory=False to run anyway")
        raise MemoryEstimateError(
            f"This run would not fit in memory: {dev} has {_fmt(free)} available and the run needs about "
            f"{_fmt(need)} there.\n{estimate}\nTo fit: " + "; ".join(advice) + "."
        )

