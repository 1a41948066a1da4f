"""`strata bench`: run benchmarks in images, compare two images, show a tag's history, write a report."""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any

from builder.engine.client import engine_client
from builder.errors import StrataError
from builder.settings import Settings
from cli.common import settings_for
from cli.output import add_format_arg, add_progress_arg, print_json, progress_mode, wants_json
from cli.progress import Lines
from validate.bench.ledger import HistoryPoint, Ledger
from validate.bench.metrics import STEP_STATISTICS
from validate.bench.report import WorkloadComparison, compare_images, worst_verdict, write_report
from validate.bench.runner import DEFAULT_TIMEOUT_S, run_benchmarks
from validate.bench.stats import Verdict
from validate.bench.workloads import SIZES, WORKLOADS

# Exit codes of `bench compare`: a gate passes only on 0.
EXIT_OK, EXIT_FAILED, EXIT_INCONCLUSIVE = 0, 1, 3


def _add_ledger(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ledger",
        type=Path,
        default=None,
        help="SQLite ledger (default <state root>/results/bench/ledger.sqlite)",
    )


def _add_stats(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--margin", type=float, default=0.03, help="equivalence margin as a fraction (default 0.03)"
    )
    parser.add_argument("--confidence", type=float, default=0.90, help="interval confidence (default 0.90)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument(
        "--statistic",
        choices=sorted(STEP_STATISTICS),
        default="median",
        help="per-repetition step time: median (default), best-window or best-step (steadier on shared hosts)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `strata bench` with its run, compare, history and report subcommands."""
    bench = subparsers.add_parser(
        "bench",
        help="benchmark images and decide whether they are equivalent per GPU-hour",
        description="Benchmark TensorFlow images in fresh containers and compare them statistically.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = bench.add_subparsers(dest="bench_command", metavar="SUBCOMMAND", required=True)

    run = sub.add_parser(
        "run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="run workloads in images, interleaved; record every repetition",
        epilog="example: strata bench run img:2.13.1-cpu img:2.13.1-cpu-rebuild --workload matmul --repeats 5",
    )
    run.add_argument("images", nargs="+", metavar="IMAGE", help="image tags or ids present in the engine")
    run.add_argument("--workload", action="append", choices=WORKLOADS, help="repeatable (default: all)")
    run.add_argument(
        "--repeats", type=int, default=5, help="fresh containers per image and workload (default 5)"
    )
    run.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    run.add_argument("--size", choices=SIZES, default="small", help="workload size (default small)")
    run.add_argument("--steps", type=int, default=None, help="timed steps per repetition (default by size)")
    run.add_argument(
        "--threads",
        type=int,
        default=None,
        help="TF threads in the container (default TF's; 1 on shared hosts)",
    )
    run.add_argument(
        "--cpuset",
        default=None,
        metavar="CPUS",
        help="pin every container to these engine CPUs, e.g. 1 or 0-3 (default: any; pinning steadies shared hosts)",
    )
    run.add_argument("--seed", type=int, default=None, help="order seed (default random, recorded)")
    run.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per container")
    run.add_argument(
        "--out", type=Path, default=None, help="results directory (default <state root>/results/bench)"
    )
    run.add_argument("--ledger", type=Path, default=None, help="SQLite ledger (default OUT/ledger.sqlite)")
    add_progress_arg(run)
    run.set_defaults(func=run_command)

    cmp_ = sub.add_parser(
        "compare",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="is CANDIDATE equivalent to REFERENCE? exit 1 on regression or invalid, 3 if inconclusive",
        epilog="example: strata bench compare img:2.13.1-cpu img:2.13.1-cpu-rebuild --margin 0.03",
    )
    cmp_.add_argument("reference", metavar="REFERENCE", help="tag or digest benchmarked in the ledger")
    cmp_.add_argument("candidate", metavar="CANDIDATE", help="tag or digest benchmarked in the ledger")
    cmp_.add_argument(
        "--workload", action="append", choices=WORKLOADS, help="repeatable (default: all shared)"
    )
    _add_stats(cmp_)
    _add_ledger(cmp_)
    add_format_arg(cmp_, choices=("text", "json"), default="text")
    cmp_.set_defaults(func=compare_command)

    hist = sub.add_parser(
        "history",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="a tag's throughput over time, one line per run, digest and workload",
        epilog="example: strata bench history 127.0.0.1:5000/strata/tensorflow:2.13.1-cpu-py3.11-bookworm",
    )
    hist.add_argument("tag", metavar="TAG", help="tag or digest")
    _add_ledger(hist)
    add_format_arg(hist, choices=("text", "json"), default="text")
    hist.set_defaults(func=history_command)

    rep = sub.add_parser(
        "report",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="write Markdown + HTML with plots for a run (default: the latest)",
        epilog="example: strata bench report --out build/bench-report",
    )
    rep.add_argument(
        "--out", type=Path, default=None, help="directory (default <state root>/results/bench/report)"
    )
    rep.add_argument("--run", dest="run_id", default=None, help="run id (default latest)")
    rep.add_argument("--reference", default=None, help="reference image of the run (default its first)")
    _add_stats(rep)
    _add_ledger(rep)
    rep.set_defaults(func=report_command)


def run_command(args: argparse.Namespace) -> int:
    """`strata bench run`."""
    settings = settings_for(args)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    client = engine_client(settings, timeout=max(60, int(args.timeout) + 30), what="bench run: Docker engine")
    result = run_benchmarks(
        client,
        args.images,
        args.workload or list(WORKLOADS),
        args.repeats,
        args.device,
        args.out or settings.bench_dir,
        seed,
        size=args.size,
        steps=args.steps,
        timeout_s=args.timeout,
        ledger_path=_ledger(args, settings),
        threads=args.threads,
        progress=Lines(progress_mode(args)),
        cpuset=args.cpuset,
    )
    print(f"run {result.info.run_id} (seed {seed}): {len(result.repetitions)} repetitions")
    print(f"results: {result.run_dir}  ledger: {result.ledger_path}")
    return 0


def _ledger(args: argparse.Namespace, settings: Settings) -> Path:
    return Path(args.ledger) if args.ledger else settings.ledger_path


def compare_command(args: argparse.Namespace) -> int:
    """`strata bench compare`; exit 0 equivalent/improvement, 1 regression/invalid, 3 inconclusive."""
    settings = settings_for(args)
    with Ledger.open(_ledger(args, settings), create=False) as ledger:
        try:
            comparisons = compare_images(
                ledger,
                args.reference,
                args.candidate,
                workloads=args.workload,
                margin=args.margin,
                confidence=args.confidence,
                seed=args.seed,
                statistic=args.statistic,
            )
        except ValueError as exc:
            raise StrataError(f"bench compare {args.reference} {args.candidate}: {exc}") from None
    verdict = worst_verdict(comparisons)
    if wants_json(args):
        print_json(
            "bench-compare",
            {
                "reference": args.reference,
                "candidate": args.candidate,
                "verdict": verdict.value,
                "workloads": [_comparison_json(wc) for wc in comparisons],
            },
        )
    else:
        for wc in comparisons:
            print(f"{wc.workload:16} {wc.comparison.summary()} ({wc.source})")
        print(f"overall: {verdict.value}")
    if verdict.fails:
        return EXIT_FAILED
    return EXIT_INCONCLUSIVE if verdict is Verdict.INCONCLUSIVE else EXIT_OK


def history_command(args: argparse.Namespace) -> int:
    """`strata bench history`."""
    settings = settings_for(args)
    with Ledger.open(_ledger(args, settings), create=False) as ledger:
        points = ledger.history(args.tag)
    if wants_json(args):
        print_json("bench-history", {"tag": args.tag, "points": [_point_json(p) for p in points]})
        return 0
    print(
        f"{'time':25} {'image id':19} {'workload':16} {'device':24} {'samples/s':>12} {'eff/hour':>12} reps"
    )
    for p in points:
        print(
            f"{p.time:25} {p.image_id[:19]:19} {p.workload:16} {p.device.model[:24]:24} "
            f"{p.median_samples_per_s:12.4g} {p.median_effective_gpu_hour:12.4g} {p.repetitions}"
        )
    return 0


def _comparison_json(wc: WorkloadComparison) -> dict[str, Any]:
    c = wc.comparison
    return {
        "workload": wc.workload,
        "reference": wc.reference,
        "candidate": wc.candidate,
        "source": wc.source,
        "verdict": c.verdict.value,
        "ratio": c.ratio,
        "ci_low": c.ci_low,
        "ci_high": c.ci_high,
        "margin": c.margin,
        "confidence": c.confidence,
        "reference_n": c.reference_n,
        "candidate_n": c.candidate_n,
        "reference_cv": c.reference_cv,
        "candidate_cv": c.candidate_cv,
        "cv_bound": c.cv_bound,
        "repetitions_needed": c.repetitions_needed,
        "reason": c.reason,
    }


def _point_json(p: HistoryPoint) -> dict[str, Any]:
    return {
        "run_id": p.run_id,
        "time": p.time,
        "image_id": p.image_id,
        "image_ref": p.image_ref,
        "workload": p.workload,
        "device": {"device": p.device.device, "model": p.device.model, "driver": p.device.driver},
        "median_samples_per_s": p.median_samples_per_s,
        "median_effective_gpu_hour": p.median_effective_gpu_hour,
        "repetitions": p.repetitions,
    }


def report_command(args: argparse.Namespace) -> int:
    """`strata bench report`."""
    settings = settings_for(args)
    with Ledger.open(_ledger(args, settings), create=False) as ledger:
        files = write_report(
            ledger,
            args.out or settings.bench_dir / "report",
            run_id=args.run_id,
            reference=args.reference,
            margin=args.margin,
            confidence=args.confidence,
            seed=args.seed,
            statistic=args.statistic,
        )
    print(f"wrote {files.markdown} {files.html} " + " ".join(str(p) for p in files.plots))
    return 0
