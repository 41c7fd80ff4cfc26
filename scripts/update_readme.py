"""Regenerate README.md's model table from the project's own commands (never typed by hand).

    python scripts/update_readme.py            # params / MACs from `lightnets models`, latency from `lightnets bench`
    python scripts/update_readme.py --no-latency   # keep the latency column as it is (only static columns)

The table sits between the markers <!-- models:begin --> and <!-- models:end -->.
tests/test_readme.py checks that the static columns are current.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lightnets.analysis.zoo import readme_table  # noqa: E402

BEGIN, END = "<!-- models:begin -->", "<!-- models:end -->"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-latency", action="store_true", help="reuse the latency column already in README.md")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    old = text[start:end]
    latency = None
    if args.no_latency:
        latency = {m.group(1): m.group(2) for m in re.finditer(r"^\| (\S+) \|.*\| ([0-9.]*) \|$", old, re.M)}
    table = readme_table(latency=latency, threads=args.threads)
    readme.write_text(text[:start] + "\n" + table + "\n" + text[end:])
    print(table)


if __name__ == "__main__":
    main()
