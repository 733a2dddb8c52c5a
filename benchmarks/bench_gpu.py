"""explain on a GPU: a 1B-class Llama-shaped model (random weights from a config) in bfloat16 at 1,024 tokens.

    python benchmarks/bench_gpu.py            # CUDA: ~1.1B parameters, bf16, 1,024 tokens
    python benchmarks/bench_gpu.py --small    # a small model on whatever device there is (a CPU check of the script)

Needs only this repository, torch, transformers and accelerate (no tokenizer or weights from the hub: the prompt is
random token ids). In the same run it reports:
- the plain forward pass with the default attention (sdpa) and with eager attention, and explain (trace + every
  importance + the route), each the median of --repeats, and explain's ratio to both;
- explain's peak extra GPU memory (torch.cuda.max_memory_allocated over the level before it) against
  lmtt_widgets.estimate_memory for that device;
- checks: the maths after the pass runs in float32 (records, weights and scores) while the model stays in its
  dtype; every attention update's importances sum to 1; a model split over two devices (GPU and CPU through
  accelerate's device_map) and one with CPU- and disk-offloaded layers give the scores of a one-device model.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's lmtt_widgets, wherever it runs


class _Absent:
    """Stands in for the widgets' packages (anywidget, traitlets) where only the engine is installed: importing
    lmtt_widgets defines the widget classes, which this benchmark never uses."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return args[0] if len(args) == 1 and callable(args[0]) and not kwargs else _Absent()

    def __getattr__(self, name):
        return _Absent()


def _allow_missing_widget_packages():
    import importlib.util
    import types

    for name in ("anywidget", "traitlets"):
        if importlib.util.find_spec(name) is None:
            module = types.ModuleType(name)
            module.__getattr__ = lambda attr: _Absent
            sys.modules[name] = module
            print(f"({name} is not installed: a stand-in lets lmtt_widgets import; no widget is used here)")

BIG = dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
           intermediate_size=8192, vocab_size=32000)
SMALL = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
             intermediate_size=512, vocab_size=4096)


class IdTokenizer:
    """A stand-in tokenizer: token i reads "<i>" (prompts are given as ids)."""

    def decode(self, ids, **kwargs):
        return "".join(f"<{int(i)}>" for i in ids)

    def convert_ids_to_tokens(self, i):
        return f"<{int(i)}>"


def build(shape: dict, dtype, device, seed=0):
    import transformers as tf

    cfg = tf.LlamaConfig(max_position_embeddings=4096, **shape)
    torch.manual_seed(seed)
    with torch.device(device):  # initialised where it runs: no 2 GB copy from the CPU
        model = tf.AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    return model.eval()


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats):
    out = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def check_float32(ex, model_dtype):
    """The maths after the pass is float32 whatever the model's dtype; returns a description."""
    rec, w = ex.trace.layers[-1], ex.trace.weights[-1]
    dtypes = {rec.resid_pre.dtype, rec.head_signal.dtype, rec.neurons.dtype, rec.values.dtype, w.w_o.dtype,
              w.w_out.dtype, ex.scores.layers[-1].edge.dtype, ex.scores.layers[-1].head_total.dtype}
    assert dtypes == {torch.float32}, f"maths not in float32: {dtypes}"
    assert next(ex.trace.lm.model.parameters()).dtype == model_dtype, "the model's dtype changed"
    for ls in ex.scores.layers:
        total = ls.resid_attn + ls.bias_attn + ls.head_total.sum(-1)
        assert (total - 1).abs().max().item() < 1e-4, "attention importances do not sum to 1"
    return f"records, weights and scores float32; model stays {model_dtype}; importances sum to 1"


def max_score_diff(a, b) -> float:
    worst = 0.0
    for x, y in zip(a.scores.layers, b.scores.layers):
        for name in ("edge", "head_total", "mlp", "resid_attn", "resid_mlp"):
            worst = max(worst, (getattr(x, name) - getattr(y, name)).abs().max().item())
    return worst


def split_checks(device, tol=1e-4):
    """Scores of a small float32 model split over devices / offloaded, against the same model on one device."""
    from accelerate import dispatch_model

    from lmtt_widgets import explain, load_model

    ids = torch.randint(0, SMALL["vocab_size"], (1, 200), generator=torch.Generator().manual_seed(1))
    L = SMALL["num_hidden_layers"]
    ref = explain(load_model(build(SMALL, torch.float32, device), IdTokenizer()), ids)
    lines = []
    cuda = torch.device(device).type == "cuda"
    with tempfile.TemporaryDirectory() as tmp:
        if cuda:  # two execution devices: the first half of the blocks on the GPU, the rest on the CPU
            dm = {"model.embed_tokens": 0, "model.rotary_emb": 0, "model.norm": 0, "lm_head": 0}
            dm.update({f"model.layers.{i}": 0 if i < L // 2 else "cpu" for i in range(L)})
            model = dispatch_model(build(SMALL, torch.float32, "cpu"), device_map=dm, main_device="cpu")
            got = explain(load_model(model, IdTokenizer()), ids)
            devices = {str(r.resid_pre.device) for r in got.trace.layers}
            assert len(devices) == 2, devices
            diff = max_score_diff(ref, got)
            assert diff <= tol, f"split model differs by {diff}"
            lines.append(f"split over {sorted(devices)}: max score difference {diff:.1e}")
        # offloaded blocks: CPU- and disk-offloaded layers loaded onto the execution device for the pass
        main = 0 if cuda else "cpu"
        dm = {"model.embed_tokens": main, "model.rotary_emb": main, "model.norm": "disk", "lm_head": "cpu"}
        dm.update({f"model.layers.{i}": [main, "cpu", "disk"][i % 3] for i in range(L)})
        model = dispatch_model(build(SMALL, torch.float32, "cpu"), device_map=dm, offload_dir=tmp,
                               main_device=None if cuda else "cpu")
        got = explain(load_model(model, IdTokenizer()), ids)
        diff = max_score_diff(ref, got)
        assert diff <= tol, f"offloaded model differs by {diff}"
        lines.append(f"cpu+disk offload (execution on {device}): max score difference {diff:.1e}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", action="store_true", help="a small model (runs on a CPU in seconds)")
    parser.add_argument("--tokens", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="bfloat16")
    args = parser.parse_args()

    _allow_missing_widget_packages()
    from lmtt_widgets import estimate_memory, explain, load_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    shape = SMALL if args.small else BIG
    T = args.tokens or (256 if args.small else 1024)
    dtype = getattr(torch, args.dtype)
    if device == "cpu" and not args.small:
        print("no GPU here: use --small for a CPU check of this script")
    model = build(shape, dtype, device)
    n_params = sum(p.numel() for p in model.parameters())
    lm = load_model(model, IdTokenizer())
    ids = torch.randint(0, shape["vocab_size"], (1, T), generator=torch.Generator().manual_seed(0))
    on_dev = ids.to(device)
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"{name}, torch {torch.__version__}; Llama-shaped, {n_params / 1e6:,.0f}M parameters, {dtype}, {T} tokens")

    def forward():
        with torch.no_grad():
            model(input_ids=on_dev, use_cache=False)

    times = {}
    for impl in ("sdpa", "eager"):
        model.set_attn_implementation(impl)
        forward()  # warm-up (kernels, allocator)
        times[impl] = timed(forward, device, args.repeats)
    model.set_attn_implementation("sdpa")  # the model as users have it; explain traces through eager itself

    explain(lm, ids).route()  # warm-up
    estimate = estimate_memory(lm, T)
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    ex = explain(lm, ids)
    ex.route()
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    del ex
    times["explain"] = timed(lambda: explain(lm, ids).route(), device, args.repeats)

    print(f"forward sdpa   {times['sdpa']:8.3f} s")
    print(f"forward eager  {times['eager']:8.3f} s")
    print(f"explain        {times['explain']:8.3f} s   ratio {times['explain'] / times['sdpa']:.2f}x vs sdpa, "
          f"{times['explain'] / times['eager']:.2f}x vs eager (median of {args.repeats})")
    if device == "cuda":
        est = estimate.by_device.get(str(torch.device("cuda", torch.cuda.current_device())), estimate.total)
        print(f"peak extra GPU memory {peak / 2**20:,.0f} MB; estimate {est / 2**20:,.0f} MB "
              f"(estimate / measured {est / peak:.2f})")
    print(estimate)
    ex = explain(lm, ids)
    print("float32 check:", check_float32(ex, dtype))
    for line in split_checks(device):
        print(line)
    print("all checks passed")


if __name__ == "__main__":
    main()
