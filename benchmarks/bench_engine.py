"""Cost of tracing plus the full importance graph, as a ratio against the model's own forward pass.

    .venv/bin/python benchmarks/bench_engine.py [--lengths 128 512 2048] [--repeats 3] [--long-repeats 1]
                                                [--text natural|random]
                                                [--threads N]

Every figure is measured in the same run on the same model (the embedded SmolLM2-135M unless --model is given), on
natural text (the repository's own Markdown, repeated as needed) unless --text random:
- forward: the model's own forward pass (no hooks) with its default attention (sdpa for SmolLM2) and with eager
  attention (what the method reads), each the median of --repeats;
- explain: trace + every update's importances (heads, sources, MLPs) + the route for the last token;
- ratios: median over repeats of explain / each forward run just before it (they alternate);
- full_graph: ex.full_graph() (every stored edge) after the last explain;
- peak extra memory: the highest resident memory seen during the first explain minus the level just before it
  (taken after handing the allocator's free pages back, so memory freed by the warm-up and reused by explain is
  not hidden), next to what the returned Explanation holds (its tensors, each storage counted once) and
  lmtt_widgets.estimate_memory's estimate for the same run.

Long prompts (past 512 tokens) run explain --long-repeats times (default once): the first run gives the memory, the
median the time. --explain-only skips
the plain forwards (the eager one alone allocates 3·H·T² floats: 7 GB at 8,192 tokens on SmolLM2).

    .venv/bin/python benchmarks/bench_engine.py --heads --lengths 2048

times instead what a user does with one Explanation after it is computed: ex.attention(layer), ex.heads(layer),
ex.top_heads(5 and 15), the widget's head details of the top 5 heads, the memory the stored attention calls
(query and key states, masks) hold when the attention is not kept, and a target change in the Explorer (route, logit
attribution, lens, neurons of the route's MLPs) next to running every block again. --slim drops the per-layer
tensors at any length, as traces past ~2,300 tokens do, to time what reads them.
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


def natural_ids(tokenizer, n_tokens: int) -> torch.Tensor:
    """[1, n_tokens] ids of the repository's own Markdown (README, docs), repeated as needed: natural text."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    text = "\n\n".join(p.read_text() for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))])
    ids = torch.tensor(tokenizer(text).input_ids)
    return ids.repeat(-(-n_tokens // ids.numel()))[:n_tokens][None]


def held_mb(ex) -> float:
    """MB of tensors the Explanation holds (trace records, attention calls, logits, scores), each storage once."""
    seen, total = set(), 0

    def add(t):
        nonlocal total
        if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in seen:
            seen.add(t.untyped_storage().data_ptr())
            total += t.untyped_storage().nbytes()

    tr = ex.trace
    logits = tr.logits if isinstance(tr.logits, torch.Tensor) else getattr(tr.logits, "_rows", {}).values()
    for t in [tr.final_resid, tr.final_rstd, *([logits] if isinstance(logits, torch.Tensor) else logits)]:
        add(t)
    for rec in tr.layers:
        for t in vars(rec).values():
            add(t)
        if rec.attention_replay is not None:
            for t in (*rec.attention_replay.args, rec.attention_replay.mask):
                add(t)
        if rec.rebuilder is not None:  # a slim record's block arguments (rotary tables, mask: shared by layers)
            for v in (*rec.rebuilder.args, *rec.rebuilder.kwargs.values()):
                for t in v if isinstance(v, (tuple, list)) else (v,):
                    add(t)
    for ls in ex.scores.layers:
        for t in vars(ls).values():
            add(t)
    return total / 2**20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 2048])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--long-repeats", type=int, default=1, help="repeats past 512 tokens")
    parser.add_argument("--text", choices=["natural", "random"], default="natural")
    parser.add_argument("--heads", action="store_true", help="time heads/top_heads/head details after one explain")
    parser.add_argument("--slim", action="store_true",
                        help="with --heads: drop per-layer tensors after scoring at any length, as traces past "
                             "rebuild.REBUILD_LIMIT do (~2,300 tokens on SmolLM2), to time what reads them")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for every call (default: torch's). On a shared machine under load, 2 "
                             "threads stall each other at every operation's barrier; 1 gives stable ratios")
    parser.add_argument("--explain-only", action="store_true",
                        help="skip the plain forwards (their columns show nan): memory of the longest prompts")
    args = parser.parse_args()

    from lmtt_widgets import estimate_memory, explain, load_model
    from lmtt_widgets.tracing.memory import release_freed_memory

    if args.threads:
        torch.set_num_threads(args.threads)
    lm = load_model(args.model)
    default = lm.model.config._attn_implementation  # what a user's forward runs (sdpa for SmolLM2)
    vocab = lm.model.get_input_embeddings().weight.shape[0]
    print(f"model {lm.name}, torch {torch.__version__}, {torch.get_num_threads()} threads, {args.text} text, "
          f"default attention {default}")
    if args.heads:
        lm.model.set_attn_implementation("eager")
        if args.slim:
            from lmtt_widgets.tracing import rebuild

            rebuild.REBUILD_LIMIT = 0
        return bench_heads(lm, args.lengths, vocab)

    def explain_and_route(ids):
        ex = explain(lm, ids, check_memory=False)  # measured, not refused
        ex.route()
        return ex

    def forward(ids, implementation):
        lm.model.set_attn_implementation(implementation)
        with torch.no_grad():
            return timed(lambda: lm.model(ids))[0]

    print(f"{'tokens':>6} | {'fwd ' + default + ' s':>11} | {'fwd eager s':>11} | {'explain s':>9} | "
          f"{'x ' + default:>7} | {'x eager':>7} | {'full_graph s':>12} | {'peak extra MB':>13} | "
          f"{'held MB':>7} | {'estimate MB':>11}")
    for T in args.lengths:
        if args.text == "natural":
            ids = natural_ids(lm.tokenizer, T)
        else:
            ids = torch.randint(100, vocab - 100, (1, T), generator=torch.Generator().manual_seed(T))
        if not args.explain_only:
            forward(ids, default)  # warm-up
        estimate = estimate_memory(lm, ids).total / 2**20
        fast, eager, runs, extra = [], [], [], None
        # forwards and explain alternate, so a change in the machine's speed hits both sides of each ratio alike
        for _ in range(args.repeats if T <= 512 else args.long_repeats):
            fast.append(float("nan") if args.explain_only else forward(ids, default))
            eager.append(float("nan") if args.explain_only else forward(ids, "eager"))
            lm.model.set_attn_implementation(default)  # explain runs on the model as the user has it
            gc.collect()
            release_freed_memory()
            base = rss_mb()
            with PeakSampler() as sampler:  # memory: the first call, before the allocator keeps anything of it
                t, ex = timed(lambda: explain_and_route(ids))
            runs.append(t)
            extra = sampler.peak - base if extra is None else extra
            t_graph = timed(ex.full_graph)[0]
            held = held_mb(ex)
            del ex
            gc.collect()
        ratio = [statistics.median(r / q for r, q in zip(runs, f)) for f in (fast, eager)]
        print(f"{T:>6} | {statistics.median(fast):>11.3f} | {statistics.median(eager):>11.3f} | "
              f"{statistics.median(runs):>9.3f} | {ratio[0]:>7.2f} | {ratio[1]:>7.2f} | {t_graph:>12.3f} | "
              f"{extra:>13.0f} | {held:>7.0f} | {estimate:>11.0f}", flush=True)


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
          f"{'top_heads(15) s':>15} | {'5 head details s':>16} | {'replay MB':>9} | {'target change s':>15} | "
          f"{'every block again s':>19}")
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
        t_target = timed(lambda: target_change(ex, T // 2))
        # what reading a slim trace's per-layer tensors cost before rebuild.layer_rows: every block run again
        slim = [rec for rec in ex.trace.layers if rec.slim]
        t_blocks = timed(lambda: [rec.rebuilder._run(rec) for rec in slim]) if slim else float("nan")
        print(f"{T:>6} | {t_explain:>9.2f} | {t_attn:>14.3f} | {t_heads:>10.4f} | {t_top5:>14.4f} | {t_top15:>15.4f} | "
              f"{t_details:>16.3f} | {replay_mb(ex):>9.0f} | {t_target:>15.3f} | {t_blocks:>19.2f}")
        del ex
        gc.collect()


def target_change(ex, target: int) -> None:
    """What the Explorer computes when the user picks another target: its route, logit attribution, logit lens and
    the neurons of the route's MLP nodes."""
    from lmtt_widgets.widgets import payload

    g = ex.route(target)
    payload.neuron_rows(ex, payload.precomputed_mlp_nodes(ex, g, target))
    payload.lens_column(ex, target)
    ex.logit_attribution(position=target)


if __name__ == "__main__":
    main()
