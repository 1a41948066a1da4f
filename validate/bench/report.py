"""Benchmark reports: verdicts from the ledger, written as Markdown and HTML with PNG plots.

    with Ledger.open(path) as ledger:
        files = write_report(ledger, Path("results/report"))

One run is reported (the latest by default). The first image of the run is the reference unless another is
named; every other image is compared against it per workload.
"""

from __future__ import annotations

import html
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from builder.errors import StrataError
from validate.bench.ledger import Ledger, RunInfo, paired_samples
from validate.bench.metrics import Repetition, compute_index, effective_gpu_hour_throughput
from validate.bench.stats import MIN_REPETITIONS, Comparison, Verdict, compare, median_interval

_CSS = (
    "body{font-family:sans-serif;max-width:1000px;margin:auto}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}"
)


@dataclass(frozen=True)
class WorkloadComparison:
    """A candidate image against a reference on one workload, with where the samples came from."""

    workload: str
    reference: str
    candidate: str
    source: str
    comparison: Comparison


def compare_images(
    ledger: Ledger,
    reference: str,
    candidate: str,
    *,
    workloads: Sequence[str] | None = None,
    margin: float = 0.03,
    confidence: float = 0.90,
    seed: int = 0,
    statistic: str = "median",
) -> list[WorkloadComparison]:
    """Compare two images (tags or digests in the ledger) on every workload both have, or those named."""
    ref_id, cand_id = ledger.resolve(reference), ledger.resolve(candidate)
    ref_reps, cand_reps = ledger.repetitions(image_id=ref_id), ledger.repetitions(image_id=cand_id)
    names = (
        list(workloads)
        if workloads
        else sorted({r.workload for r in ref_reps} & {c.workload for c in cand_reps})
    )
    if not names:
        raise StrataError(f"{reference} and {candidate}: no workload was benchmarked on both")
    out = []
    for name in names:
        ref_w = [r for r in ref_reps if r.workload == name]
        cand_w = [c for c in cand_reps if c.workload == name]
        ref_s, cand_s, source = paired_samples(ref_w, cand_w)
        for label, reps in ((reference, ref_s), (candidate, cand_s)):
            if len(reps) < MIN_REPETITIONS:
                raise StrataError(
                    f"{label}: workload {name} has {len(reps)} comparable repetitions ({source}); "
                    f"at least {MIN_REPETITIONS} are needed"
                )
        result = compare(
            [r.throughput(statistic) for r in ref_s],
            [c.throughput(statistic) for c in cand_s],
            margin=margin,
            confidence=confidence,
            seed=seed,
            device=ref_s[0].device.device,
        )
        out.append(WorkloadComparison(name, reference, candidate, source, result))
    return out


@dataclass(frozen=True)
class ReportFiles:
    """Paths of one written report."""

    markdown: Path
    html: Path
    plots: list[Path]


@dataclass(frozen=True)
class _ImageSummary:
    ref: str
    image_id: str
    tf: str
    python: str
    medians: dict[str, tuple[float, float, float]]  # workload -> (median, ci low, ci high) samples/s
    effective: dict[str, float]  # workload -> median effective samples per device-hour
    startup: dict[str, float]  # workload -> median seconds to steady state


def _summaries(
    reps: list[Repetition], images: Sequence[str], confidence: float, seed: int, statistic: str
) -> list[_ImageSummary]:
    out = []
    for ref in images:
        mine = [r for r in reps if r.image == ref]
        if not mine:
            continue
        env = mine[0].result.get("env", {})
        names = sorted({r.workload for r in mine})
        per = {w: [r for r in mine if r.workload == w] for w in names}
        out.append(
            _ImageSummary(
                ref=ref,
                image_id=mine[0].image_id,
                tf=str(env.get("tf_version", "?")),
                python=str(env.get("python", "?")),
                medians={
                    w: median_interval([r.throughput(statistic) for r in per[w]], confidence, seed)
                    for w in names
                },
                effective={
                    w: statistics.median(
                        effective_gpu_hour_throughput(r.throughput(statistic), r.startup_s) for r in per[w]
                    )
                    for w in names
                },
                startup={w: statistics.median(r.startup_s for r in per[w]) for w in names},
            )
        )
    return out


def plot_throughput(
    summaries: list[_ImageSummary], reference: str, margin: float, confidence: float, path: Path
) -> Path:
    """One panel per workload: each image's median samples/s with its interval; shaded: reference ± margin."""
    names = sorted({w for s in summaries for w in s.medians})
    # The object API (no pyplot): no GUI backend is chosen, no global figure state is left behind.
    fig = Figure(figsize=(8, 1.2 + 0.55 * len(summaries) * len(names) + 0.6 * len(names)))
    axes = fig.subplots(len(names), 1, squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        rows = [s for s in summaries if name in s.medians]
        ys = list(range(len(rows)))
        medians = [s.medians[name][0] for s in rows]
        lows = [s.medians[name][0] - s.medians[name][1] for s in rows]
        highs = [s.medians[name][2] - s.medians[name][0] for s in rows]
        ref = next((s for s in rows if s.ref == reference), None)
        if ref is not None:
            center = ref.medians[name][0]
            ax.axvspan(
                center * (1 - margin),
                center * (1 + margin),
                color="#2ca02c",
                alpha=0.12,
                label=f"reference ±{margin:.0%}",
            )
            ax.legend(fontsize=7, loc="lower left")
        ax.errorbar(medians, ys, xerr=[lows, highs], fmt="o", capsize=4, color="#1f5fa8")
        ax.set_yticks(ys, [s.ref for s in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"{name}: median samples/s per device, {confidence:.0%} CI", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        lo = min([m - e for m, e in zip(medians, lows)] + ([center * (1 - margin)] if ref else []))
        hi = max([m + e for m, e in zip(medians, highs)] + ([center * (1 + margin)] if ref else []))
        pad = (hi - lo) * 0.15 or hi * 0.05
        ax.set_xlim(max(0.0, lo - pad), hi + pad)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def plot_repetitions(reps: list[Repetition], images: Sequence[str], statistic: str, path: Path) -> Path:
    """Every repetition's throughput in run order, one panel per workload: drift and outliers show here."""
    names = sorted({r.workload for r in reps})
    fig = Figure(figsize=(8, 2.6 * len(names)))
    axes = fig.subplots(len(names), 1, squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        for image in images:
            mine = [r for r in reps if r.workload == name and r.image == image]
            ax.plot(
                [r.order_index for r in mine],
                [r.throughput(statistic) for r in mine],
                "o-",
                label=image,
                alpha=0.8,
            )
        ax.set_title(f"{name}: each repetition in run order", fontsize=10)
        ax.set_xlabel("position in interleaved schedule", fontsize=8)
        ax.set_ylabel(f"samples/s per device ({statistic})", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> tuple[str, str]:
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(row) + " |" for row in rows]
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return "\n".join(md), f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


def write_report(
    ledger: Ledger,
    out_dir: Path,
    *,
    run_id: str | None = None,
    reference: str | None = None,
    margin: float = 0.03,
    confidence: float = 0.90,
    seed: int = 0,
    statistic: str = "median",
) -> ReportFiles:
    """Write report.md, report.html, throughput.png and repetitions.png for one run into out_dir."""
    run_id = run_id or ledger.latest_run_id()
    runs = {r.run_id: r for r in ledger.runs()}
    if run_id not in runs:
        raise StrataError(f"{ledger.path}: no run {run_id!r} in the ledger")
    run: RunInfo = runs[run_id]
    reps = ledger.repetitions(run_id=run_id)
    if not reps:
        raise StrataError(f"run {run_id}: no repetitions finished, nothing to report")
    reference = reference or run.images[0]
    if reference not in run.images:
        raise StrataError(f"{reference}: not an image of run {run_id} ({', '.join(run.images)})")
    out_dir.mkdir(parents=True, exist_ok=True)
    summaries = _summaries(reps, run.images, confidence, seed, statistic)
    plots = [
        plot_throughput(summaries, reference, margin, confidence, out_dir / "throughput.png"),
        plot_repetitions(reps, run.images, statistic, out_dir / "repetitions.png"),
    ]
    ref_summary = next(s for s in summaries if s.ref == reference)

    sections: list[tuple[str, str, str]] = []  # (title, markdown, html)
    device = reps[0].device
    intro = (
        f"Run `{run.run_id}` on {device.device} ({device.model}{', driver ' + device.driver if device.driver else ''}), "
        f"size {run.size}, {run.repeats} repetitions per image and workload, fresh container each, "
        f"interleaved in a random order (seed {run.seed}). Reference: `{reference}`. "
        f"Equivalence margin ±{margin:.1%}, {confidence:.0%} bootstrap intervals of the ratio of medians; "
        f"each repetition's throughput from its {statistic} step time."
    )
    sections.append(("", intro, f"<p>{html.escape(intro)}</p>"))

    image_rows = [[s.ref, s.image_id[:19], s.tf, s.python] for s in summaries]
    sections.append(("Images", *_table(["image", "id", "TF", "Python"], image_rows)))

    verdict_rows = []
    for s in summaries:
        if s.ref == reference:
            continue
        for wc in compare_run(reps, reference, s.ref, margin, confidence, seed, statistic):
            c = wc.comparison
            needed = f"; ~{c.repetitions_needed} reps needed" if c.repetitions_needed else ""
            verdict_rows.append(
                [
                    s.ref,
                    wc.workload,
                    f"{c.ratio:.4f}",
                    f"[{c.ci_low:.4f}, {c.ci_high:.4f}]",
                    f"{c.reference_cv:.2%} / {c.candidate_cv:.2%}",
                    c.verdict.value.upper(),
                    c.reason + needed,
                ]
            )
    if verdict_rows:
        header = [
            "candidate",
            "workload",
            "ratio",
            f"{confidence:.0%} CI",
            "robust CV ref / cand",
            "verdict",
            "why",
        ]
        sections.append(("Verdicts against the reference", *_table(header, verdict_rows)))

    throughput_rows = [
        [
            s.ref,
            w,
            f"{m[0]:.2f}",
            f"[{m[1]:.2f}, {m[2]:.2f}]",
            f"{m[0] * 3600:.4g}",
            f"{s.effective[w]:.4g}",
            f"{s.startup[w]:.1f}",
        ]
        for s in summaries
        for w, m in sorted(s.medians.items())
    ]
    header = [
        "image",
        "workload",
        "samples/s/device",
        "CI",
        "per device-hour",
        "effective first hour",
        "startup s",
    ]
    sections.append(("Throughput", *_table(header, throughput_rows)))

    index_rows = []
    for s in summaries:
        try:
            index_rows.append([s.ref, f"{compute_index(s.effective, ref_summary.effective):.4f}"])
        except ValueError:
            index_rows.append([s.ref, "no shared workload"])
    sections.append(
        (
            "Compute index (geometric mean of effective throughput vs reference)",
            *_table(["image", "index"], index_rows),
        )
    )

    title = f"Benchmark report: {run.run_id}"
    md_parts = [f"# {title}", ""]
    html_parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for heading, md, markup in sections:
        if heading:
            md_parts += [f"## {heading}", ""]
            html_parts.append(f"<h2>{html.escape(heading)}</h2>")
        md_parts += [md, ""]
        html_parts.append(markup)
    for plot in plots:
        md_parts += [f"![{plot.stem}]({plot.name})", ""]
        html_parts.append(f"<p><img src='{plot.name}' alt='{plot.stem}'></p>")
    html_parts.append("</body></html>")
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    md_path.write_text("\n".join(md_parts))
    html_path.write_text("\n".join(html_parts))
    return ReportFiles(md_path, html_path, plots)


def compare_run(
    reps: list[Repetition],
    reference: str,
    candidate: str,
    margin: float,
    confidence: float,
    seed: int,
    statistic: str = "median",
) -> list[WorkloadComparison]:
    """Compare two images within one run's repetitions (already interleaved), per shared workload."""
    out = []
    for name in sorted({r.workload for r in reps}):
        ref_s = [r.throughput(statistic) for r in reps if r.image == reference and r.workload == name]
        cand_s = [r.throughput(statistic) for r in reps if r.image == candidate and r.workload == name]
        if len(ref_s) < MIN_REPETITIONS or len(cand_s) < MIN_REPETITIONS:
            continue  # reported in the throughput table; too few repetitions for a verdict
        kind = reps[0].device.device
        result = compare(ref_s, cand_s, margin=margin, confidence=confidence, seed=seed, device=kind)
        out.append(WorkloadComparison(name, reference, candidate, "this run", result))
    return out


def worst_verdict(comparisons: Sequence[WorkloadComparison]) -> Verdict:
    """The verdict a gate acts on: invalid over regression over inconclusive over the rest."""
    order = [
        Verdict.INVALID,
        Verdict.REGRESSION,
        Verdict.INCONCLUSIVE,
        Verdict.IMPROVEMENT,
        Verdict.EQUIVALENT,
    ]
    present = {c.comparison.verdict for c in comparisons}
    return next(v for v in order if v in present)
