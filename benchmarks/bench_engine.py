"""Cost of tracing plus the full importance graph, as a ratio against a plain eager forward pass.

    .venv/bin/python benchmarks/bench_engine.py [--lengths 128 512 2048] [--repeats 3]

Every figure is measured in the same run on the same model (the embedded SmolLM2-135M unless --model is given):
- forward: the model's own eager forward pass (no hooks), median of --repeats;
- explain: trace + every update's importances (heads, sources, MLPs) + the route for the last token;
- ratio: median over repeats of explain / the forward run just before it (they alternate);
- peak extra memory: the highest resident memory seen during the first explain minus the level just before it.
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
    args = parser.parse_args()

    from lmtt_widgets import explain, load_model

    lm = load_model(args.model)
    lm.model.set_attn_implementation("eager")  # the baseline is the plain eager forward, as the method needs
    vocab = lm.model.get_input_embeddings().weight.shape[0]
    print(f"model {lm.name}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'tokens':>6} | {'forward s':>9} | {'explain s':>9} | {'ratio':>5} | {'peak extra MB':>13}")
    for T in args.lengths:
        ids = torch.randint(100, vocab - 100, (1, T), generator=torch.Generator().manual_seed(T))
        with torch.no_grad():
            lm.model(ids)  # warm-up
        gc.collect()
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
        print(f"{T:>6} | {f:>9.3f} | {e:>9.3f} | {ratio:>5.2f} | {extra:>13.0f}")


if __name__ == "__main__":
    main()
