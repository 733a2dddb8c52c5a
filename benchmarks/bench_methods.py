"""Cost of the verified-explanation methods (issue 12), as ratios against a plain forward pass in the same run.

    .venv/bin/python benchmarks/bench_methods.py [--tokens 128] [--repeats 3]

On the embedded SmolLM2 (its default attention implementation), a natural-text prompt cut to --tokens tokens and
a corrupted copy of the same length (a few words swapped). Each method is timed right after a plain forward and
reported as the median of time(method) / time(forward) over --repeats:
- logit attribution: signed DLA of every head, MLP and the embeddings, beyond the explain() already paid;
- attribution patching: every head and MLP plus the route's attention edges, against the corrupted prompt
  (includes tracing the corrupted prompt);
- exact patching of 20 components (the top 20 heads by attribution patching), batched.
"""

from __future__ import annotations

import argparse
import statistics
import torch

from bench_engine import timed

TEXT = ("When Mary and John went to the store, John gave a drink to Mary because she had asked for one. "
        "The capital of France is Paris, and the capital of Italy is Rome. ") * 40


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from lmtt_widgets import explain, load_model

    lm = load_model("smollm2")
    ids = lm.tokenizer(TEXT, return_tensors="pt").input_ids[0, : args.tokens]
    corrupted = ids.clone()
    swap = {lm.tokenizer(" Mary").input_ids[-1]: lm.tokenizer(" Alice").input_ids[-1],
            lm.tokenizer(" John").input_ids[-1]: lm.tokenizer(" Bob").input_ids[-1]}
    for a, b in swap.items():
        corrupted[ids == a] = b
    ex = explain(lm, ids)
    foil = int(ex.trace.logits[-1].topk(2).indices[1])

    def forward():
        with torch.no_grad():
            lm.model(input_ids=ids[None], use_cache=False)

    ratios: dict[str, list[float]] = {"logit attribution": [], "attribution patching (+ route edges)": [],
                                      "exact patching, 20 components": []}
    top20 = None
    for _ in range(args.repeats):
        for name in ratios:
            base, _ = timed(forward)
            if name.startswith("logit"):
                t, _ = timed(lambda: ex.logit_attribution(foil=foil))
            elif name.startswith("attribution"):
                t, table = timed(lambda: ex.attribution_patching(corrupted, foil=foil, edges=True))
                top20 = [c for c, _ in table.of_kind("head").top(20)]
            else:
                t, _ = timed(lambda: ex.patch(top20, corrupted, foil=foil))
            ratios[name].append(t / base)
    base, _ = timed(forward)
    print(f"SmolLM2-135M, {args.tokens} tokens, plain forward {base:.3f} s ({lm.model.config._attn_implementation})")
    print("| method | ratio to a plain forward (median) | runs |")
    print("|---|---:|---|")
    for name, rs in ratios.items():
        print(f"| {name} | {statistics.median(rs):.2f}x | {', '.join(f'{r:.2f}' for r in rs)} |")


if __name__ == "__main__":
    main()
