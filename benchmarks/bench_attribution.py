"""Cost of input attribution as ratios against a plain eager forward pass, and a long generated continuation.

    .venv/bin/python benchmarks/bench_attribution.py [--tokens 128] [--repeats 3] [--long 512 --generate 64]

Every figure is measured in the same run on the same model (the embedded SmolLM2-135M unless --model is given),
each timed item right after a plain forward of the same prompt (they alternate, so a drift of the machine's speed
hits both sides of a ratio alike); a ratio is the median over repeats of item / the forward just before it.
- flow beyond explain: flow_attribution (and attention rollout) on an explanation already made;
- input x gradient: one forward and backward pass;
- integrated gradients: per step (--ig-steps steps in batches of 16, divided by the steps);
- occlusion of every token: in forwards (time / forward) and divided by T (the target is <= 0.6 T), once;
- Captum 0.9's IntegratedGradients on the same function, per step, when Captum is installed;
- the long run (first, so the allocator holds nothing of the others): a --long token prompt, --generate greedy
  tokens, traced once, then the flow source x generated matrix; wall time and peak extra resident memory (highest
  RSS during the run minus the level before it).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

import torch

from bench_engine import PeakSampler, rss_mb, timed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ig-steps", type=int, default=16)
    parser.add_argument("--long", type=int, default=512)
    parser.add_argument("--generate", type=int, default=64)
    args = parser.parse_args()

    from lmtt_widgets import explain, load_model

    lm = load_model(args.model)
    lm.model.set_attn_implementation("eager")  # the same baseline as bench_engine.py
    model = lm.model
    vocab = model.get_input_embeddings().weight.shape[0]
    T = args.tokens
    ids = torch.randint(100, vocab - 100, (1, T), generator=torch.Generator().manual_seed(T))
    print(f"model {lm.name}, torch {torch.__version__}, {torch.get_num_threads()} threads, {T} tokens")

    def forward():
        with torch.no_grad():
            return timed(lambda: model(ids))[0]

    # the long run first, in a fresh process, so its peak memory is not hidden by what the allocator keeps
    long_run(lm, vocab, args.long, args.generate)
    forward()  # warm-up
    ratios: dict[str, list[float]] = {}
    seconds: dict[str, list[float]] = {}

    def record(name, f, t, per=1.0):
        ratios.setdefault(name, []).append(t / per / f)
        seconds.setdefault(name, []).append(t)

    ex = explain(lm, ids)
    for _ in range(args.repeats):
        f = forward()
        t, ex = timed(lambda: explain(lm, ids))
        record("explain (trace + importances)", f, t)
        f = forward()
        t, flow = timed(lambda: ex.score("flow_attribution"))
        record("flow attribution beyond explain", f, t)
        f = forward()
        t, _ = timed(lambda: ex.score("attention_rollout"))
        record("attention rollout beyond explain", f, t)
        f = forward()
        t, _ = timed(lambda: ex.score("input_x_gradient"))
        record("input x gradient", f, t)
        f = forward()
        t, ig = timed(lambda: ex.score("integrated_gradients", steps=args.ig_steps))
        record("integrated gradients, per step", f, t, args.ig_steps)
        gc.collect()
    captum_ig(ex, forward, record, args.ig_steps)
    f = forward()
    t, occ = timed(lambda: ex.score("occlusion"))
    record("occlusion of every token (in forwards)", f, t)

    print(f"{'item':<42} | {'seconds':>8} | {'x forward':>9}")
    for name in ratios:
        print(f"{name:<42} | {statistics.median(seconds[name]):>8.3f} | {statistics.median(ratios[name]):>9.2f}")
    occ_fwd = statistics.median(ratios["occlusion of every token (in forwards)"])
    print(f"occlusion: {occ_fwd / T:.3f} x T forwards by time; {occ.extra['forward_equivalents'] / T:.3f} x T "
          f"by positions computed ({occ.extra['forward_equivalents']:.1f} forwards of {T} tokens)")
    print(f"integrated gradients ({args.ig_steps} steps): completeness error {ig.extra['completeness_relative']:.1%}")


def captum_ig(ex, forward, record, steps) -> None:
    try:
        from captum.attr import IntegratedGradients
    except ImportError:
        print("(captum not installed: no comparison)")
        return
    from lmtt_widgets.methods.input_attribution import baseline_token
    from lmtt_widgets.methods.targets import make_metric

    model = ex.trace.lm.model
    metric = make_metric(ex, None, None, None)
    emb = model.get_input_embeddings()
    ids = ex.trace.input_ids[None]
    with torch.no_grad():
        e, b = emb(ids), emb(torch.full_like(ids, baseline_token(ex, None)))

    def f(x):
        return model(inputs_embeds=x, use_cache=False).logits[:, -1].log_softmax(-1)[:, metric.target]

    ig = IntegratedGradients(f)
    fwd = forward()
    t, _ = timed(lambda: ig.attribute(e, baselines=b, n_steps=steps, internal_batch_size=16, method="gausslegendre"))
    record("Captum IntegratedGradients, per step", fwd, t, steps)
    for p in model.parameters():  # Captum's backward leaves weight gradients on the model
        p.grad = None


def long_run(lm, vocab, n_prompt, n_generate) -> None:
    from lmtt_widgets import explain

    ids = torch.randint(100, vocab - 100, (1, n_prompt), generator=torch.Generator().manual_seed(n_prompt))
    gc.collect()
    base = rss_mb()
    with PeakSampler() as sampler:
        t0 = time.perf_counter()
        ex = explain(lm, ids, generate=n_generate)
        t1 = time.perf_counter()
        matrix = ex.attribution_matrix("flow_attribution")
        t2 = time.perf_counter()
    print(f"long: {n_prompt}-token prompt + {len(ex.generated_positions)} generated tokens, traced once: "
          f"explain {t1 - t0:.1f} s, flow source x generated matrix {tuple(matrix.shape)} {t2 - t1:.1f} s, "
          f"peak extra memory {sampler.peak - base:.0f} MB (peak resident {sampler.peak:.0f} MB)")


if __name__ == "__main__":
    main()
