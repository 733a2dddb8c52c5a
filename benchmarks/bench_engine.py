"""Cost of tracing plus the full importance graph, as a ratio against a plain eager forward pass.

    .venv/bin/python benchmarks/bench_engine.py [--lengths 128 512 2048] [--repeats 3]

Every figure is measured in the same run on the same model (the embedded SmolLM2-135M unless --model is given):
- forward: the model's own eager forward pass (no hooks), median of --repeats;
- explain: trace + every update's importances (heads, sources, MLPs) + the route for the last token;
- ratio: median over repeats of explain / the forward run just before it (they alternate);
- peak extra memory: the highest resident memory seen during the first explain minus the level just before it
  (taken after handing the allocator's free pages back, so memory freed by the warm-up and reused by explain is
  not hidden), next to lmtt_widgets.estimate_memory's estimate for the same run.

    .venv/bin/python benchmarks/bench_engine.py --heads --lengths 2048

times instead what a user does with one Explanation after it is computed: ex.attention(layer), ex.heads(layer),
ex.top_heads(5 and 15), the widget's head details of the top 5 heads, and the memory the stored attention calls
(query and key states, masks) hold when the attention is not kept.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import threading
import time

import torch


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def timed(fn):
    """(seconds, result) of one call (the benchmarks' shared stopwatch)."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


class PeakSampler:
    """Highest RSS seen while the block runs (sampled every 5 ms in a thread)."""

    def __enter__(self):
        self.peak, self._stop = rss_mb(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_mb())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 2048])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--heads", action="store_true", help="time heads/top_heads/head details after one explain")
    args = parser.parse_args()

    from lmtt_widgets import estimate_memory, explain, load_model
    from lmtt_widgets.tracing.memory import release_freed_memory

    lm = load_model(args.model)
    lm.model.set_attn_implementation("eager")  # the baseline is the plain eager forward, as the method needs
    vocab = lm.model.get_input_embeddings().weight.shape[0]
    print(f"model {lm.name}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.heads:
        return bench_heads(lm, args.lengths, vocab)
    print(f"{'tokens':>6} | {'forward s':>9} | {'explain s':>9} | {'ratio':>5} | {'peak extra MB':>13} | "
          f"{'estimate MB':>11} | {'est/peak':>8}")
    for T in args.lengths:
        ids = torch.randint(100, vocab - 100, (1, T), generator=torch.Generator().manual_seed(T))
        with torch.no_grad():
            lm.model(ids)  # warm-up
        estimate = estimate_memory(lm, ids).total / 2**20
        gc.collect()
        release_freed_memory()
        base = rss_mb()
        with PeakSampler() as sampler:  # memory: the first call, before the allocator keeps anything of it
            explain(lm, ids).route()
        extra = sampler.peak - base
        gc.collect()
        fwd, runs = [], []
        repeats = args.repeats if T <= 512 else 1
        # forward and explain alternate, so a change in the machine's speed hits both sides of each ratio alike
        for _ in range(repeats):
            with torch.no_grad():
                t0 = time.perf_counter()
                lm.model(ids)
                fwd.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ex = explain(lm, ids)
            ex.route()
            runs.append(time.perf_counter() - t0)
            del ex
            gc.collect()
        f, e = statistics.median(fwd), statistics.median(runs)
        ratio = statistics.median(r / q for r, q in zip(runs, fwd))
        print(f"{T:>6} | {f:>9.3f} | {e:>9.3f} | {ratio:>5.2f} | {extra:>13.0f} | {estimate:>11.0f} | "
              f"{estimate / extra:>8.2f}")


def replay_mb(ex) -> float:
    """MB held by the stored attention calls beyond what the trace keeps anyway (the values): query and key
    states and the masks, each storage counted once."""
    seen, total = set(), 0
    for rec in ex.trace.layers:
        r = rec.attention_replay
        if r is None:
            continue
        seen.add(rec.values.untyped_storage().data_ptr())
        for t in (r.args[0], r.args[1], r.mask):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in seen:
                seen.add(t.untyped_storage().data_ptr())
                total += t.untyped_storage().nbytes()
    return total / 2**20


def bench_heads(lm, lengths, vocab) -> None:
    from lmtt_widgets import explain
    from lmtt_widgets.widgets import payload

    print(f"{'tokens':>6} | {'explain s':>9} | {'attention(l) s':>14} | {'heads(l) s':>10} | {'top_heads(5) s':>14} | "
          f"{'top_heads(15) s':>15} | {'5 head details s':>16} | {'replay MB':>9}")
    for T in lengths:
        ids = torch.randint(100, vocab - 100, (1, T), generator=torch.Generator().manual_seed(T))
        t0 = time.perf_counter()
        ex = explain(lm, ids)
        t_explain = time.perf_counter() - t0

        def timed(f):
            t0 = time.perf_counter()
            f()
            return time.perf_counter() - t0

        mid = ex.n_layers // 2
        t_attn = timed(lambda: ex.attention(mid))
        t_heads = timed(lambda: ex.heads(mid))
        t_top5 = timed(lambda: ex.top_heads(5))
        t_top15 = timed(lambda: ex.top_heads(15))
        top = [(h.layer, h.head) for h in ex.top_heads(5)]
        t_details = timed(lambda: payload.head_details(ex, top, T - 1))
        print(f"{T:>6} | {t_explain:>9.2f} | {t_attn:>14.3f} | {t_heads:>10.4f} | {t_top5:>14.4f} | {t_top15:>15.4f} | "
              f"{t_details:>16.3f} | {replay_mb(ex):>9.0f}")
        del ex
        gc.collect()


if __name__ == "__main__":
    main()
