"""``lightnets check-data``: try every file of an image folder before training on it."""

from __future__ import annotations

import argparse

from .common import command


def _check_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", help="image folder: root/<class>/... or root/train|val|test/<class>/...")
    p.add_argument("--quick", action="store_true", help="cheaper check: headers, PNG checksums, JPEG end markers")
    p.add_argument("--in-chans", type=int, choices=[1, 3], default=3, help="decode as RGB (3) or grayscale (1)")
    p.add_argument("--workers", type=int, default=0, help="decoding threads (0: in the main thread)")
    p.add_argument("--format", choices=["table", "json"], default="table")


@command("check-data", "try every file of an image folder; counts per class, bad files, warnings", _check_data_arguments)
def cmd_check_data(args: argparse.Namespace) -> int:
    import json

    from ..data.checks import check_data

    report = check_data(args.folder, full_decode=not args.quick, in_chans=args.in_chans, workers=args.workers)
    print(json.dumps(report.to_dict(), indent=2) if args.format == "json" else report.to_table())
    return 0 if report.ok else 1
