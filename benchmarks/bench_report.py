"""Size and build time of the offline HTML report by prompt length, on the real SmolLM2 (30 layers x 9 heads).

    .venv/bin/python benchmarks/bench_report.py [--tokens 8 32 128 256] [--json out.json] [--sections]

For each length: the time of `explain` and of `write_report` (which also builds an Explorer, so its traits are the
report's state) and their ratio, in wall-clock and in CPU time (the machine's load changes both alike: compare
ratios), the file's size, the size of its state (the container's text, 7 bits a character), the attention
patterns' colour steps, how many head details hold their maps, and what the report had to leave out for its 3 MB
budget (the note at its top says the same). Prompts are the browser benchmark's text cut to the length
(benchmarks/browser_bench.py make_prompt). Prints a markdown table.
``--sections`` also prints where the state's bytes go: each part of the container (its JSON and its arrays'
stored bytes) before and after gzip on its own, largest first.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from bench_engine import timed  # noqa: E402
from browser_bench import make_prompt  # noqa: E402


def measure(lm, n_tokens: int, work: Path) -> dict:
    from lmtt_widgets import explain
    from lmtt_widgets.report import read_report, write_report

    prompt = make_prompt(lm, n_tokens)
    c0 = time.process_time()
    t_explain, ex = timed(lambda: explain(lm, prompt))
    c1 = time.process_time()
    t_report, path = timed(lambda: write_report(ex, work / f"report-{n_tokens}.html"))
    c2 = time.process_time()
    page = path.read_text(encoding="utf-8")
    rep = read_report(page)
    state = page.split('id="lmtt-state">', 1)[1].split("</script>", 1)[0]
    maps = sum(1 for k, v in rep["details"].items() if k.startswith("head:") and "pattern" in v)
    vocab = rep.get("vocab", {})
    return {"tokens": ex.n_tokens, "bytes": path.stat().st_size, "state_bytes": len(state.encode("utf-8")),
            "pattern_levels": rep.get("pattern_levels"),
            "explain_s": t_explain, "report_s": t_report, "explain_cpu_s": c1 - c0, "report_cpu_s": c2 - c1,
            "head_maps": maps, "heads": ex.n_layers * ex.n_heads,
            "targets": len(rep["per_target"]) + 1, "left_out": rep["budget_omitted"] + (
                ["still over 3 MB (the page's note says so)"] if path.stat().st_size > 3_000_000 else []),
            "neuron_directions": int(vocab["neuron"]["ids"].shape[0]) if "neuron" in vocab else 0,
            "head_rows": int(vocab["head"]["ids"].shape[0]) if "head" in vocab else 0}


def sections(page: str) -> dict[str, tuple[int, int]]:
    """(stored bytes, gzip bytes) of each part of a report's container: the top-level entries, and one level
    down for the big ones (details by kind and field, vocab tables, per-target fields, state traits)."""
    import gzip
    import struct
    import zlib

    from lmtt_widgets.report_pack import from_text, unframe

    state = from_text(page.split('id="lmtt-state">', 1)[1].split("</script>", 1)[0])
    raw = b"".join(gzip.decompress(m) for m in unframe(state))
    (n,) = struct.unpack_from("<I", raw)
    body = json.loads(raw[4:4 + n])
    arrays = raw[4 + n + (-(4 + n) % 8):]

    def parts(o, out):
        if isinstance(o, dict) and isinstance(o.get("data"), dict) and "enc" in o["data"]:
            out.append(arrays[o["data"]["at"]:o["data"]["at"] + o["data"]["n"]])
        elif isinstance(o, dict):
            for v in o.values():
                parts(v, out)
        elif isinstance(o, list):
            for v in o:
                parts(v, out)
        return out

    def measure(o):
        blob = json.dumps(o, separators=(",", ":")).encode() + b"".join(parts(o, []))
        return len(blob), len(zlib.compress(blob, 9))

    groups = {k: v for k, v in body.items() if k not in ("details", "vocab", "per_target", "state")}
    heads = {k: v for k, v in body["details"].items() if k.startswith("head:")}
    for field in next(iter(heads.values()), {}):
        groups[f"details.head.{field}"] = [v.get(field) for v in heads.values()]
    groups["details.other"] = {k: v for k, v in body["details"].items() if not k.startswith("head:")}
    for name, table in body.get("vocab", {}).items():
        for field, v in table.items():
            groups[f"vocab.{name}.{field}"] = v
    snaps = list(body["per_target"].values())
    for field in {f for s in snaps for f in s}:
        groups[f"per_target.{field}"] = [s.get(field) for s in snaps]
    for k, v in body["state"].items():
        groups[f"state.{k}"] = v
    out = {k: measure(v) for k, v in groups.items()}
    out["TOTAL"] = (len(raw), len(zlib.compress(raw, 9)))
    return dict(sorted(out.items(), key=lambda kv: -kv[1][1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, nargs="+", default=[8, 32, 128, 256])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--sections", action="store_true", help="print where each report's bytes go")
    args = ap.parse_args(argv)
    from lmtt_widgets import load_model

    lm = load_model("smollm2")
    from lmtt_widgets import explain

    explain(lm, make_prompt(lm, 8))  # warm up (the scoring kernel compiles on its first call): not timed
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.tokens:
            rows.append(measure(lm, n, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
            if args.sections:
                page = (Path(tmp) / f"report-{n}.html").read_text(encoding="utf-8")
                for name, (stored, packed) in sections(page).items():
                    if packed >= 5000 or name == "TOTAL":
                        print(f"  {n} tokens  {name:32s} {stored / 1e6:7.3f} MB stored  {packed / 1e6:7.3f} MB gzip")
    print("\n| tokens | report size | state (text) | pattern steps | head maps | targets | explain | "
          "write_report | ratio | CPU ratio | left out for 3 MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['tokens']} | {r['bytes'] / 1e6:.2f} MB | {r['state_bytes'] / 1e6:.2f} MB | "
              f"{r['pattern_levels']} | {r['head_maps']}/{r['heads']} | {r['targets']} | {r['explain_s']:.1f} s | "
              f"{r['report_s']:.1f} s | "
              f"{r['report_s'] / r['explain_s']:.1f}x | {r['report_cpu_s'] / r['explain_cpu_s']:.1f}x | "
              f"{'; '.join(r['left_out']) or 'nothing'} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
