"""`strata smoke IMAGE...`: run the smoke checks inside images and report pass, fail or not-run per check."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from builder.errors import StrataError
from cli.common import settings_for
from cli.output import add_progress_arg, envelope, progress_mode
from cli.progress import Lines
from cli.summary import smoke_summary, write_step_summary
from validate.smoke import runner
from validate.smoke.report import FORMATS, render

EXAMPLE = """example:
  strata smoke --expect-gpu --gpus 1 --format junit --out smoke.xml \\
      127.0.0.1:5000/strata/tensorflow:2.13.1-gpu-cuda11.8-cudnn8.6-py3.11-bookworm

Exit status: 0 when no check failed, 1 when any did. A check that could not run says why (not-run);
with --expect-gpu a missing GPU fails the GPU checks instead."""


def gpu_count(value: str) -> str:
    if value == "all" or (value.isdigit() and int(value) > 0):
        return value
    raise argparse.ArgumentTypeError(f"--gpus takes a positive count or 'all', not {value!r}")


def positive_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"--timeout takes seconds > 0, not {value!r}")
    return seconds


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "smoke",
        help="run smoke checks inside images (TF, CUDA libraries, labels, secrets, GPU)",
        description=__doc__,
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image reference in the local engine")
    parser.add_argument(
        "--expect-gpu", action="store_true", help="a missing GPU fails the GPU checks (default: not-run)"
    )
    parser.add_argument("--gpus", type=gpu_count, default=None, help="GPUs to request: a count or 'all'")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="table",
        help="report format (default: table); json: one strata.smoke/1 document (docs/cli-json.md)",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the report here instead of stdout")
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=runner.DEFAULT_TIMEOUT_S,
        help=f"seconds per image before the container is killed (default: {runner.DEFAULT_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=None,
        help="per-digest JSON results go here (default: <state root>/results/smoke)",
    )
    add_progress_arg(parser)
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    client = runner.connect(settings)
    say = Lines(progress_mode(args))
    reports = []
    for number, image in enumerate(args.images, 1):
        say(f"smoke {number}/{len(args.images)}: running the checks", image)
        (report,) = runner.smoke_images(
            client,
            [image],
            expect_gpu=args.expect_gpu,
            gpus=args.gpus,
            timeout_s=args.timeout,
            results_dir=args.results_dir or settings.smoke_results_dir,
        )
        counts = report.counts()
        say(
            f"{report.status} in {report.duration_s:.1f}s "
            f"({counts['pass']} pass, {counts['fail']} fail, {counts['not-run']} not-run)",
            image,
        )
        reports.append(report)
    if args.format == "json":
        text = json.dumps(envelope("smoke", {"images": [r.to_dict() for r in reports]}), indent=2) + "\n"
    else:
        text = render(reports, args.format)
    if args.out is None:
        sys.stdout.write(text)
    else:
        try:
            args.out.write_text(text)
        except OSError as exc:
            raise StrataError(f"smoke: cannot write report {args.out}: {exc.strerror}") from exc
    write_step_summary(smoke_summary(reports))
    for report in reports:
        for check in report.failures:
            print(f"strata: smoke {report.image}: {check.name}: {check.detail}", file=sys.stderr)
    return 1 if any(r.failures for r in reports) else 0
