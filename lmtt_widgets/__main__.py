"""Command line: explain one prediction and print a summary (and write a shareable HTML report).

    python -m lmtt_widgets "The capital of France is" [--model smollm2] [--html report.html]
"""

from __future__ import annotations

import argparse
import sys

from .contributions.scores import CONVENTIONS
from .errors import LmttError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lmtt_widgets", description=__doc__.splitlines()[0])
    parser.add_argument("prompt", nargs="?", default="The capital of France is")
    parser.add_argument("--model", default="smollm2", help="'smollm2' (embedded), a hub name or a local path")
    parser.add_argument("--html", default="lmtt-report.html", help="where to write the report ('' to skip)")
    parser.add_argument("--threshold", type=float, default=0.04)
    parser.add_argument("--no-check", action="store_true",
                        help="skip the causal check (exact patching of the components named, the route's "
                             "faithfulness: a few batched reruns of the model)")
    parser.add_argument("--convention", choices=CONVENTIONS, default="paper",
                        help="'lmtt': LM-TT's exact scores (its 1e-5 proximity floor, output bias no part)")
    args = parser.parse_args(argv)
    try:
        from . import explain, load_model
        from .summary import text_summary

        report = _checked_report_options(args)  # before the model loads: a typo must not cost a model run
        lm = load_model(args.model)
        ex = explain(lm, args.prompt, convention=args.convention)
        print(text_summary(ex, check=not args.no_check))
        if report is not None:
            from .report import write_report

            path = write_report(ex, report, threshold=args.threshold)
            print(f"Report written to {path} (open it in a browser; it works offline, no kernel needed)")
    except LmttError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the report's file could not be written (permissions, a full disk): no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _checked_report_options(args):
    """The report's path (None: no report), with --threshold and --html checked as write_report checks them."""
    if not args.html:
        return None
    from .contributions.graph import check_threshold
    from .report import check_report_path

    check_threshold(args.threshold, "head")  # the report's route; the page itself can go lower
    return check_report_path(args.html)


if __name__ == "__main__":
    sys.exit(main())
