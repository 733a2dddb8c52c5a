"""``python -m lmtt_widgets.widgets.protocol [--ts | --md | --write | --check]``.

--ts prints js/protocol.gen.ts, --md the generated block of docs/widget-protocol.md, --write rewrites both,
--check exits 1 naming every generated file that is stale.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from .markdown import markdown, splice
from .typescript import typescript

ROOT = pathlib.Path(__file__).resolve().parents[3]
TS = ROOT / "js" / "protocol.gen.ts"
DOC = ROOT / "docs" / "widget-protocol.md"


def expected() -> dict[pathlib.Path, str]:
    """Each generated file with the text it must hold."""
    return {TS: typescript(), DOC: splice(DOC.read_text(encoding="utf-8"))}


def _shown(path: pathlib.Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def stale() -> list[pathlib.Path]:
    return [p for p, text in expected().items() if not p.exists() or p.read_text(encoding="utf-8") != text]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lmtt_widgets.widgets.protocol", description=__doc__)
    group = ap.add_mutually_exclusive_group(required=True)
    for flag in ("--ts", "--md", "--write", "--check"):
        group.add_argument(flag, action="store_true")
    args = ap.parse_args(argv)
    if args.ts or args.md:
        sys.stdout.write(typescript() if args.ts else markdown() + "\n")
        return 0
    if args.write:
        for path, text in expected().items():
            path.write_text(text, encoding="utf-8")
            print(f"wrote {_shown(path)}")
        return 0
    bad = stale()
    for path in bad:
        print(f"{_shown(path)} is stale: run python -m lmtt_widgets.widgets.protocol --write",
              file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
