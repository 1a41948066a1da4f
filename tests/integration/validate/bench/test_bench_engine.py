"""Benchmarks against the real engine: a planted 10% slowdown is a regression, an identical rebuild equivalent.

Three images (conftest.py): the TF 2.13.1 CPU reference, the same image with ENV STRATA_BENCH_SLEEP_FRACTION=0.10
baked in, and an identical rebuild. Each repetition is a fresh container; the order is interleaved and seeded.
Sizes are tuned for a 2-core host shared with other work (see REPEATS/STEPS); total about 5 minutes.

An undecided comparison is never a pass nor a skip. Inconclusive asks for more repetitions (Comparison.
repetitions_needed, the number `strata bench compare` prints); invalid asks for a quieter stretch. Either is rerun
as a fresh run of the reference and the undecided candidates with that many repetitions per image (REPEATS again
for invalid), at most RERUN_REPEATS_CAP, at most RERUNS times; still undecided after that, the test fails with every
round's numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from cli import bench as commands
from validate.bench.ledger import Ledger
from validate.bench.report import compare_images
from validate.bench.runner import BenchError, BenchRun, run_benchmarks
from validate.bench.stats import Comparison, Verdict

pytestmark = pytest.mark.engine

# Tuned on a 2-core host shared with other work: matmul 'tiny' steps take 7-11 ms on one thread; one TF
# thread avoids the two-thread/one-core bimodality, and 12 containers per image let the interval clear a 3%
# margin (6 left it inconclusive; so did 8 on a CI run, where the tool itself asked for about 11).
# Every container is pinned to the engine's last CPU (interrupts favour CPU 0), so TF's threads hand work to
# each other on one CPU and never migrate. The statistic is best-step, the fastest of 400 steady steps: on the
# CI's VMs, quiet inside (no run-queue delay) but time-sliced by a busy hypervisor, best-window's robust CV
# across containers was 5-7% (over the 5% bound, so every verdict came out invalid), while one uninterrupted
# step per container is enough for best-step. On this machine both are at 0.4-1.4%.
WORKLOAD = "matmul"
REPEATS = 12
STEPS = 400
THREADS = 1
STATISTIC = "best-step"
SEED = 20240601
CONTAINER_TIMEOUT_S = 300.0
# Reruns of an undecided verdict, capped for CI's 90-minute budget: a container takes ~8 s on a quiet host (~50 s
# on a 2-core host under load 10), so the first run is ~5 min and the worst case, two reruns of all three images at
# the cap (180 containers), adds ~24 min; one candidate rerun once at ~20 repetitions adds ~5.
RERUN_REPEATS_CAP = 30
RERUNS = 2
UNDECIDED = (Verdict.INVALID, Verdict.INCONCLUSIVE)


def run(
    client: docker.DockerClient,
    images: list[str],
    repeats: int,
    out: Path,
    seed: int,
    ledger: Path | None = None,
) -> BenchRun:
    return run_benchmarks(
        client,
        images,
        [WORKLOAD],
        repeats,
        "cpu",
        out,
        seed,
        size="tiny",
        steps=STEPS,
        threads=THREADS,
        timeout_s=CONTAINER_TIMEOUT_S,
        ledger_path=ledger,
        cpuset=str(int(client.info()["NCPU"]) - 1),
    )


@pytest.fixture(scope="module")
def bench_run(
    docker_client: docker.DockerClient,
    reference_image: str,
    planted_slow_image: str,
    rebuilt_image: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> BenchRun:
    # STRATA_TEST_BENCH_OUT keeps the run (JSON, ledger) for inspection; default: pytest's temporary dir.
    keep = os.environ.get("STRATA_TEST_BENCH_OUT")
    out = Path(keep) if keep else tmp_path_factory.mktemp("bench")
    return run(docker_client, [reference_image, planted_slow_image, rebuilt_image], REPEATS, out, SEED)


def rerun_repeats(comparison: Comparison) -> int:
    """Repetitions per image to rerun an undecided comparison with: what it asks for, at most the cap."""
    if comparison.verdict is Verdict.INVALID:
        return REPEATS  # too noisy: the same size again, in a quieter stretch
    return min(comparison.repetitions_needed or RERUN_REPEATS_CAP, RERUN_REPEATS_CAP)


@dataclass(frozen=True)
class Rounds:
    """Each candidate's comparison with the reference after the first run and after each rerun it took part in."""

    comparisons: dict[str, list[Comparison]]
    runs: list[BenchRun]

    def told(self, candidate: str) -> str:
        """Every round's numbers, and the host's run-queue delay in each run (why a verdict may not come)."""
        lines = [
            f"{c.reference_n}+{c.candidate_n} repetitions: {c.summary()}" for c in self.comparisons[candidate]
        ]
        for index, bench in enumerate(self.runs):
            delays = [r.result.get("run_queue_delay_fraction") or 0.0 for r in bench.repetitions]
            steal = [r.result.get("steal_fraction") or 0.0 for r in bench.repetitions]
            lines.append(
                f"run {index}: median run-queue delay {statistics.median(delays):.0%}, "
                f"hypervisor steal {statistics.median(steal):.0%} of step time"
            )
        return "\n  ".join(lines)


@pytest.fixture(scope="module")
def rounds(
    bench_run: BenchRun,
    docker_client: docker.DockerClient,
    reference_image: str,
    planted_slow_image: str,
    rebuilt_image: str,
) -> Rounds:
    """Compare both candidates; rerun the undecided ones as their comparisons ask (see the module docstring)."""

    def compare_now(candidate: str) -> Comparison:
        # The ledger pairs each candidate with the reference of the latest run both took part in.
        with Ledger.open(bench_run.ledger_path, create=False) as ledger:
            [result] = compare_images(ledger, reference_image, candidate, statistic=STATISTIC, seed=1)
        return result.comparison

    history = {image: [compare_now(image)] for image in (planted_slow_image, rebuilt_image)}
    runs = [bench_run]
    for rerun in range(1, RERUNS + 1):
        pending = [image for image, seen in history.items() if seen[-1].verdict in UNDECIDED]
        if not pending:
            break
        repeats = max(rerun_repeats(history[image][-1]) for image in pending)
        out = bench_run.run_dir.parent
        runs.append(
            run(docker_client, [reference_image, *pending], repeats, out, SEED + rerun, bench_run.ledger_path)
        )
        for image in pending:
            history[image].append(compare_now(image))
    return Rounds(history, runs)


def decided(rounds: Rounds, candidate: str, wrong: set[Verdict]) -> Verdict:
    """The last verdict, after checking no round made a wrong claim; fails (with every round) if none came.

    Invalid or inconclusive is the tool refusing to claim anything on a contended host: right, but it proves nothing
    about detection, so after the reruns it is a failure, never a pass or a skip.
    """
    told = rounds.told(candidate)
    assert not [c for c in rounds.comparisons[candidate] if c.verdict in wrong], f"a wrong verdict:\n  {told}"
    last = rounds.comparisons[candidate][-1]
    if last.verdict in UNDECIDED:
        pytest.fail(
            f"{candidate}: no verdict after {len(rounds.comparisons[candidate]) - 1} rerun(s) "
            f"(at most {RERUN_REPEATS_CAP} repetitions per image, {RERUNS} reruns):\n  {told}",
            pytrace=False,
        )
    return last.verdict


def test_every_repetition_is_recorded_on_disk_and_in_the_ledger(
    bench_run: BenchRun, reference_image: str
) -> None:
    run_doc = json.loads((bench_run.run_dir / "run.json").read_text())
    assert run_doc["seed"] == SEED
    assert len(run_doc["schedule"]) == 3 * REPEATS
    assert [tuple(e) for e in run_doc["schedule"]] == bench_run.info.schedule
    files = sorted((bench_run.run_dir / "repetitions").glob("*.json"))
    assert len(files) == 3 * REPEATS
    with sqlite3.connect(bench_run.ledger_path) as db:
        (count,) = db.execute(
            "SELECT COUNT(*) FROM repetitions WHERE run_id = ?", (bench_run.info.run_id,)
        ).fetchone()
    assert count == 3 * REPEATS
    ids = {image.ref: image.image_id for image in bench_run.images}
    assert len(set(ids.values())) == 3 and all(i.startswith("sha256:") for i in ids.values())
    first = json.loads(files[0].read_text())
    assert first["env"]["tf_version"] == "2.13.1" and first["env"]["python"].startswith("3.11")
    assert first["cold_start_s"] > first["tf_import_s"] > 0  # the runner's start stamp reached the container
    assert first["engine_started_at"].startswith(
        run_doc["created_at"][:4]
    )  # a real start time, not 0001-01-01


def test_the_slowdown_comes_from_the_image_not_the_runner(
    bench_run: BenchRun, planted_slow_image: str
) -> None:
    fractions = {(r.image, r.result["sleep_fraction"]) for r in bench_run.repetitions}
    assert {f for image, f in fractions if image == planted_slow_image} == {0.10}
    assert {f for image, f in fractions if image != planted_slow_image} == {0.0}


def test_planted_slowdown_is_a_regression(rounds: Rounds, planted_slow_image: str) -> None:
    verdict = decided(rounds, planted_slow_image, {Verdict.EQUIVALENT, Verdict.IMPROVEMENT})
    c = rounds.comparisons[planted_slow_image][-1]
    assert verdict is Verdict.REGRESSION, c.summary()
    # The hook sleeps 10% of each step's compute time; a sleep never ends early, and on a time-sliced VM it ends
    # late (CI measured 0.878 once: 14% slower). So the ratio may fall further below 1/1.10 than above it: down
    # to 1/1.20 (20% slower) is the planted slowdown; above 1/1.10 + 0.03 (under 6.5%) the hook did not act.
    assert 1 / 1.20 <= c.ratio <= 1 / 1.10 + 0.03, c.summary()


def test_identical_rebuild_is_equivalent(rounds: Rounds, rebuilt_image: str) -> None:
    verdict = decided(rounds, rebuilt_image, {Verdict.REGRESSION, Verdict.IMPROVEMENT})
    assert verdict is Verdict.EQUIVALENT, rounds.comparisons[rebuilt_image][-1].summary()


def test_an_undecided_verdict_asks_for_a_capped_rerun() -> None:
    """The rerun size follows the comparison: its estimate when inconclusive, the first size when invalid."""

    def comparison(verdict: Verdict, needed: int | None) -> Comparison:
        return Comparison(0.97, 0.95, 1.0, verdict, 0.03, 0.9, REPEATS, REPEATS, 0.01, 0.01, 0.05, needed, "")

    assert rerun_repeats(comparison(Verdict.INCONCLUSIVE, 17)) == 17
    assert rerun_repeats(comparison(Verdict.INCONCLUSIVE, 400)) == RERUN_REPEATS_CAP
    assert rerun_repeats(comparison(Verdict.INCONCLUSIVE, None)) == RERUN_REPEATS_CAP
    assert rerun_repeats(comparison(Verdict.INVALID, None)) == REPEATS


EXIT_FOR = {
    Verdict.EQUIVALENT: 0,
    Verdict.IMPROVEMENT: 0,
    Verdict.REGRESSION: 1,
    Verdict.INVALID: 1,
    Verdict.INCONCLUSIVE: 3,
}


def test_cli_compare_history_and_report_agree_with_the_library(
    bench_run: BenchRun,
    rounds: Rounds,
    reference_image: str,
    planted_slow_image: str,
    rebuilt_image: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = argparse.ArgumentParser(prog="strata")
    commands.register(parser.add_subparsers(dest="command"))
    ledger = ["--ledger", str(bench_run.ledger_path)]
    stat = ["--statistic", STATISTIC, "--seed", "1"]
    with Ledger.open(bench_run.ledger_path, create=False) as db:
        verdicts = {
            image: compare_images(db, reference_image, image, statistic=STATISTIC, seed=1)[
                0
            ].comparison.verdict
            for image in (planted_slow_image, rebuilt_image)
        }
    # compare reads the latest run holding both images: after any rerun, that rerun's.
    assert verdicts == {image: seen[-1].verdict for image, seen in rounds.comparisons.items()}
    for image, verdict in verdicts.items():
        args = parser.parse_args(["bench", "compare", reference_image, image, *stat, *ledger])
        assert args.func(args) == EXIT_FOR[verdict]
        assert f"overall: {verdict.value}" in capsys.readouterr().out

    args = parser.parse_args(["bench", "history", reference_image, *ledger])
    assert args.func(args) == 0
    assert f"{bench_run.images[0].image_id[:19]} {WORKLOAD}" in capsys.readouterr().out

    # The report is of one run; the first holds all three images (a rerun holds only the undecided ones).
    out = tmp_path / "report"
    args = parser.parse_args(
        ["bench", "report", "--run", bench_run.info.run_id, "--out", str(out), *stat, *ledger]
    )
    assert args.func(args) == 0
    html = (out / "report.html").read_text()
    for image, seen in rounds.comparisons.items():
        row = html.split(f"<td>{image}</td><td>{WORKLOAD}</td>", 1)
        assert len(row) == 2, f"{image}: no verdict row in the report"
        assert f"<td>{seen[0].verdict.value.upper()}</td>" in row[1].split("</tr>", 1)[0]
    for plot in ("throughput.png", "repetitions.png"):
        assert (out / plot).read_bytes()[:4] == b"\x89PNG"


# ---------------------------------------------------------------- failures a user must be able to read


def test_missing_image_names_it(docker_client: docker.DockerClient, tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="strata-test/does-not-exist:1: image not found in the engine"):
        run_benchmarks(docker_client, ["strata-test/does-not-exist:1"], [WORKLOAD], 1, "cpu", tmp_path, 0)


def test_gpu_request_on_an_engine_without_gpus_fails_clearly(
    docker_client: docker.DockerClient, reference_image: str, tmp_path: Path
) -> None:
    if any("nvidia" in name for name in docker_client.info().get("Runtimes", {})):
        pytest.skip("this engine has an NVIDIA runtime; the no-GPU failure cannot be provoked here")
    with pytest.raises(BenchError, match=r"matmul repetition 0: --device gpu but the (engine|container)"):
        run_benchmarks(docker_client, [reference_image], [WORKLOAD], 1, "gpu", tmp_path, 0, size="tiny")


def test_container_timeout_is_reported_and_the_container_removed(
    docker_client: docker.DockerClient, reference_image: str, tmp_path: Path
) -> None:
    def ours() -> set[str]:
        return {c.id for c in docker_client.containers.list(all=True, filters={"label": "io.strata.bench"})}

    before = ours()
    with pytest.raises(BenchError, match=r"matmul repetition 0: timed out after 1s"):
        run_benchmarks(docker_client, [reference_image], [WORKLOAD], 1, "cpu", tmp_path, 0, timeout_s=1.0)
    assert ours() - before == set()


def test_a_failing_workload_process_shows_its_exit_code(
    docker_client: docker.DockerClient, reference_image: str, tmp_path: Path
) -> None:
    with pytest.raises(BenchError, match=r"matmul repetition 0: .*(exited 127|the engine refused)"):
        run_benchmarks(
            docker_client, [reference_image], [WORKLOAD], 1, "cpu", tmp_path, 0, python="no-such-python"
        )
