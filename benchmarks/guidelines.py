"""The ShuffleNetV2 guideline lab (Section 2, G1-G4) at the paper's settings, as markdown for docs/benchmarks.md.

    python benchmarks/guidelines.py                          # GPU-column widths, torch's threads, cpu
    python benchmarks/guidelines.py --setting gpu arm --threads 1 2 --out runs/guidelines-bench

For each (setting, thread count) it runs ``lightnets.analysis.lab.run_guidelines`` (10 blocks, 56 x 56, batch 1,
configurations interleaved) and prints every experiment's table with the paper's speeds and ratios beside the
measured ones, the computed agreement verdicts, a summary table of the verdicts, the machine's load before and
after (the machine may be shared), and the exact command.  PNGs (one per experiment and run) and a JSON file of
all results go to ``--out``.  Not a unit test: it takes minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import torch

from lightnets.analysis.lab import EXPERIMENTS, SETTINGS, format_experiment, run_guidelines


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min) on {os.cpu_count()} CPUs"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS))
    parser.add_argument("--setting", nargs="+", choices=SETTINGS, default=["gpu"])
    parser.add_argument("--threads", nargs="+", type=int, default=[None])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument(
        "--min-time", type=float, default=2.0, help="seconds of timed calls per configuration"
    )
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default="runs/guidelines-bench")
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/guidelines.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    print(f"`{command}`  \ntorch {torch.__version__}; {load()} at the start\n")
    results, summary = [], []
    start = time.perf_counter()
    for setting in args.setting:
        for threads in args.threads:
            run_dir = out / f"{setting}-threads{threads or 'default'}"
            lab = run_guidelines(
                args.experiments, setting=setting, device=args.device, threads=threads, batch_size=args.batch_size,
                out=run_dir, min_time_s=args.min_time, repeats=args.repeats, rounds=args.rounds,
            )  # fmt: skip
            results.append(lab.to_dict())
            for exp in lab.experiments:
                print(format_experiment(exp, "markdown"), end="\n\n")
                a = exp.agreement
                pairs = a.concordant + a.tied + len(a.reversed)
                summary.append(
                    f"| {exp.key} | {setting} | {exp.threads} | {a.verdict} | {a.concordant}/{a.tied}/{len(a.reversed)} "
                    f"of {pairs} | {'yes' if a.paper_fastest_is_fastest else 'no'} | {' > '.join(a.measured_order)} |"
                )
            print(f"({load()} after {setting}, threads {threads or 'default'})\n")
    print(
        "| experiment | widths | threads | verdict | pairs agree/tie/reversed | paper's fastest fastest here | measured order (fastest first) |"
    )
    print("|---|---|---|---|---|---|---|")
    print("\n".join(summary))
    (out / "guidelines.json").write_text(json.dumps(results, indent=2))
    print(f"\n{time.perf_counter() - start:.0f} s; {load()} at the end; wrote {out}/guidelines.json and PNGs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
