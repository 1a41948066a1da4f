"""Strata's cold build and no-op rebuild against plain `docker build` of the same Dockerfiles, in alternating rounds.

    python bench/build.py                        # the cpu cells ('*-cpu'): 3 rounds of each side, no-op once
    python bench/build.py --only 'tf2.13.1-cpu'  # one cell's chain
    python bench/build.py --repeat 5             # 5 rounds of each side (default 3, at least 1)
    python bench/build.py --skip-baseline        # Strata only (cold rounds + no-op)
    python bench/build.py --jobs 1               # Strata building one node at a time, like the baseline

Run from anywhere as root on a host set up for Strata (Docker engine, /usr/bin/docker 20.10 with BuildKit).
It takes a while: the TensorFlow wheels are hundreds of MB and every image is built twice per round.

Rounds alternate the sides so that a drift of the machine (heat, other load, a filling disk) weighs on both alike:
round 1 is Strata then baseline, round 2 baseline then Strata, round 3 Strata then baseline, and so on
(S B B S S B ...; `round_schedule`). A round that fails is reported and ends the run (images restored as below).

1. Strata cold (every Strata round): the selected nodes' engine images (every `tags` and `cache_ref` of
   `strata plan --only GLOB --format json`) are removed, `docker builder prune -af` empties BuildKit's cache,
   and `strata build --only GLOB` runs with a fresh, empty STRATA_HOME (the previous round's is removed), so
   every wheel is downloaded again. The base root filesystems (mmdebstrap tarballs; slow, the same input for
   both sides) are hard-linked from the existing STRATA_HOME's cache/rootfs into the fresh one.
2. Strata no-op, once, right after the first Strata cold round: `strata build --only GLOB` again (target < 3 s);
   then `strata build` of the whole matrix if every other node (the gpu cells) is already in the engine, else it
   says which are not.
3. Baseline (every baseline round): `DOCKER_BUILDKIT=1 /usr/bin/docker build --no-cache` of the same rendered
   Dockerfiles, in plan order, each child FROM its baseline parent, where pip fetches the locked wheels from PyPI
   itself (`--require-hashes` kept, the host CA bundle passed as a BuildKit secret, never as a layer), as the
   TensorFlow and AWS image repositories do. Each round tags its images with a run id of its own and removes them
   right after the round. Base nodes are timed on both sides (identical Dockerfile and rootfs.tar context);
   totals are also shown without them.

Prints a summary table: for the cold build of all nodes, without the base nodes, and the busy core-seconds of the
whole machine during each side (wall time is CPU work spread over the cores kept busy), each side's median over
the rounds, its min-max and relative spread ((max - min) / median), the ratio of the medians strata / baseline,
the paired per-round ratios strata_i / baseline_i with their min-max, and a PASS/FAIL verdict of the ratio of
medians against its target (cold build <= 0.5, busy core-seconds <= 1.0). Then one line per round with its raw
figures, the no-op rebuilds, Strata's fixed costs (start-up, fetch) and a per-node breakdown (context, engine
build with its pip step and export, canonicalize) of the Strata round and the baseline round whose totals are
the medians. Strata's side is read from the events each `strata build --events FILE` writes (builder/events.py),
never from its console text. Logs and event files stay in build/bench/build-<time>/. The user's Strata images are
rebuilt by every cold round, and if the last one failed the script rebuilds them with the usual STRATA_HOME or
says clearly which are missing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere: the events are Strata's own types

from builder.events import (  # noqa: E402
    BuilderChosen,
    Event,
    FetchDone,
    NodeCanonicalizing,
    NodeFinished,
    NodeStarted,
    NodeStatus,
    read_events,
)

DOCKER = "/usr/bin/docker"  # /usr/local/bin/docker has no buildx and refuses DOCKER_BUILDKIT=1
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
CA_TARGET = "/run/secrets/strata-ca.crt"
WHEELHOUSE_FIND_LINKS = '--find-links "${WHEELHOUSE_URL}"'
BASELINE_REPO = "strata-bench-baseline"
DEFAULT_ONLY = "*-cpu"
COLD_TARGET_RATIO = 0.5  # strata / baseline, medians of the cold build of all nodes (base nodes included)
BUSY_TARGET_RATIO = (
    1.0  # strata / baseline, medians of the machine's busy core-seconds during the cold builds
)
DEFAULT_REPEAT = 3
NOOP_TARGET_SECONDS = 3.0


class BenchError(Exception):
    """A one-line reason the benchmark cannot go on."""


# ---------------------------------------------------------------------------------------------- pure helpers

BASELINE_COMMENT = (
    "# bench baseline: pip downloads the locked wheels from the index itself (hashes still required)."
)
_RUN_BLOCK = re.compile(r"^RUN (?:[^\n]*\\\n)*[^\n]*", re.MULTILINE)


def baseline_dockerfile(dockerfile: str, ca_target: str = CA_TARGET) -> tuple[str, int]:
    """The Dockerfile with each wheelhouse install turned into an index install; returns (text, installs rewritten).

    `--no-index --find-links "${WHEELHOUSE_URL}"` goes, `--require-hashes` stays, and pip gets the host CA bundle
    from a BuildKit secret mount (never stored in a layer):

    >>> text, n = baseline_dockerfile('RUN pip install --no-index \\\\\\n  --find-links "${WHEELHOUSE_URL}" '
    ...                               '--require-hashes -r r.lock', "/ca")
    >>> print(text)
    # bench baseline: pip downloads the locked wheels from the index itself (hashes still required).
    RUN --mount=type=secret,id=ca,target=/ca pip install --cert /ca \\
      --require-hashes -r r.lock
    """
    rewritten = 0

    def rewrite(match: re.Match[str]) -> str:
        nonlocal rewritten
        block = match.group(0)
        if WHEELHOUSE_FIND_LINKS not in block:
            return block
        for needle in (" --no-index", WHEELHOUSE_FIND_LINKS, "--require-hashes", "pip install"):
            if block.count(needle) != 1:
                first = block.splitlines()[0][:80]
                raise ValueError(
                    f"wheelhouse install '{first}': expected one '{needle.strip()}', found {block.count(needle)}"
                )
        block = block.replace(" --no-index", "", 1)
        block = re.sub(re.escape(WHEELHOUSE_FIND_LINKS) + " ?", "", block, count=1)
        block = block.replace("pip install", f"pip install --cert {ca_target}", 1)
        block = f"{BASELINE_COMMENT}\nRUN --mount=type=secret,id=ca,target={ca_target} " + block.removeprefix(
            "RUN "
        )
        rewritten += 1
        return block

    return _RUN_BLOCK.sub(rewrite, dockerfile), rewritten


@dataclass(frozen=True)
class BuildStep:
    """One BuildKit step from `--progress plain` output: `#8 [install 3/3] RUN ...` ... `#8 DONE 41.2s`."""

    number: int
    name: str
    seconds: float | None  # None: cached, still running or failed


_STEP_LINE = re.compile(r"^#(\d+) (.*)$")
_STEP_DONE = re.compile(r"^DONE (\d+(?:\.\d+)?)s$")


def buildkit_steps(log_text: str) -> list[BuildStep]:
    """Every step of a BuildKit plain-progress log with its duration, in order of first appearance.

    >>> buildkit_steps("#5 [2/2] RUN pip install x\\n#5 0.8 Collecting x\\n#5 DONE 2.5s\\n")
    [BuildStep(number=5, name='[2/2] RUN pip install x', seconds=2.5)]
    """
    names: dict[int, str] = {}
    seconds: dict[int, float] = {}
    for line in log_text.splitlines():
        match = _STEP_LINE.match(line.strip())
        if not match:
            continue
        number, rest = int(match.group(1)), match.group(2).strip()
        done = _STEP_DONE.match(rest)
        if done:
            seconds[number] = float(done.group(1))
        elif number not in names:
            names[number] = rest
    return [BuildStep(n, name, seconds.get(n)) for n, name in names.items()]


@dataclass(frozen=True)
class StepSummary:
    """Engine time split into the pip install step, the image export and everything else (seconds)."""

    install: float | None
    export: float | None
    other: float | None


def summarize_steps(steps: Sequence[BuildStep]) -> StepSummary:
    """Sum BuildKit step times by kind; all None when the log had no timed steps (legacy builder).

    >>> summarize_steps([BuildStep(1, "[install 2/2] RUN pip install -r x", 40.0),
    ...                  BuildStep(2, "exporting to image", 9.5), BuildStep(3, "[1/1] COPY a b", 0.5)])
    StepSummary(install=40.0, export=9.5, other=0.5)
    """
    timed = [s for s in steps if s.seconds is not None]
    if not timed:
        return StepSummary(None, None, None)
    installs = [s.seconds or 0.0 for s in timed if "pip install" in s.name]
    export = sum(s.seconds or 0.0 for s in timed if s.name.startswith("exporting to image"))
    other = sum(s.seconds or 0.0 for s in timed) - sum(installs) - export
    return StepSummary(sum(installs) if installs else None, export, round(other, 3))


@dataclass
class NodeTimes:
    """When one node's phases began and it ended, seconds since `strata build` started; status from its event."""

    start: float | None = None
    build: float | None = None
    canonicalize: float | None = None
    end: float | None = None
    status: NodeStatus | None = None

    def span(self, since: float | None, until: float | None) -> float | None:
        return None if since is None or until is None else max(0.0, until - since)

    @property
    def context_seconds(self) -> float | None:
        return self.span(self.start, self.build)

    @property
    def engine_seconds(self) -> float | None:
        return self.span(self.build, self.canonicalize)

    @property
    def canonicalize_seconds(self) -> float | None:
        return self.span(self.canonicalize, self.end)


@dataclass
class StrataTimeline:
    """What a timed `strata build` spent its time on."""

    total: float
    builder: str = ""  # e.g. "buildkit-cli (/usr/bin/docker 20.10 embeds BuildKit ...)"
    builder_at: float | None = None  # plan, engine check and builder probe done
    wheelhouse: str = ""  # "N downloaded (X MB), M reused"
    fetch_done_at: float | None = None
    nodes: dict[str, NodeTimes] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def fetch_seconds(self) -> float | None:
        if self.fetch_done_at is None or self.builder_at is None:
            return None
        return self.fetch_done_at - self.builder_at

    @property
    def first_node_at(self) -> float | None:
        starts = [t.start for t in self.nodes.values() if t.start is not None]
        return min(starts) if starts else None

    @property
    def last_node_end(self) -> float | None:
        ends = [t.end for t in self.nodes.values() if t.end is not None]
        return max(ends) if ends else None

    def statuses(self) -> dict[str, NodeStatus | None]:
        return {node: t.status for node, t in self.nodes.items()}


def strata_timeline(
    events: Iterable[Event], node_ids: Sequence[str], total: float, started: datetime
) -> StrataTimeline:
    """What a `strata build` run that began at `started` and took `total` seconds did, from its events.

    A node starts at its node-started event and ends at its node-finished event; a node that never finished
    (the run died) ends when the next node started, else when the command ended.
    """
    timeline = StrataTimeline(total=total, nodes={n: NodeTimes() for n in node_ids})
    for event in events:
        at = (event.time - started).total_seconds()
        if isinstance(event, BuilderChosen):
            timeline.builder, timeline.builder_at = f"{event.kind} ({event.reason})", at
        elif isinstance(event, FetchDone):
            timeline.fetch_done_at = at
            fetched = f"{event.bytes_downloaded / 1e6:.0f} MB"
            timeline.wheelhouse = f"{event.downloaded} downloaded ({fetched}), {event.reused} reused"
        times = timeline.nodes.get(event.subject or "")
        if times is None:
            continue
        if isinstance(event, NodeStarted):
            times.start = times.build = at  # the context is prepared inside the engine build step
        elif isinstance(event, NodeCanonicalizing):
            times.canonicalize = at
        elif isinstance(event, NodeFinished):
            times.status, times.end = event.status, at
            if event.status is NodeStatus.FAILED:
                timeline.errors.append(event.message)
    starts = sorted((t.start, n) for n, t in timeline.nodes.items() if t.start is not None)
    for index, (_, node) in enumerate(starts):
        times = timeline.nodes[node]
        if times.end is None:
            times.end = starts[index + 1][0] if index + 1 < len(starts) else total
    return timeline


def run_events(path: Path) -> list[Event]:
    """The events a `strata ... --events path` run wrote (none when it stopped before creating the file)."""
    return list(read_events(path)) if path.is_file() else []


def progress_line(line: str) -> bool:
    """Lines of a `strata build` run worth echoing while the bench waits: progress, not the summary table."""
    text = line.strip()
    return bool(text) and text != "strata build" and not text.startswith(("│", "┃", "┏", "┡", "└"))


_STRATA_ENTRY = re.compile(r"(^|/)strata$")


def strata_command(argv: Sequence[str]) -> str | None:
    """The subcommand if `argv` is a `strata` run that builds or uses engine images (build, verify, lock), else None.

    >>> strata_command(["/usr/bin/python3", "-m", "cli.main", "build", "--only", "*-cpu"])
    'build'
    >>> strata_command(["/venv/bin/strata", "plan"]) is None
    True
    """
    for index, arg in enumerate(argv):
        if arg == "cli.main" or _STRATA_ENTRY.search(arg):
            rest = [a for a in argv[index + 1 :] if not a.startswith("-")]
            if rest and rest[0] in ("build", "verify", "lock"):
                return rest[0]
            return None
    return None


def plan_changes(before: Iterable[tuple[str, str]], after: Iterable[tuple[str, str]]) -> list[str]:
    """Node ids whose content hash differs between two plans, or that only one plan has; (id, hash) pairs in.

    >>> plan_changes([("a", "1"), ("b", "2")], [("a", "1"), ("b", "3"), ("c", "4")])
    ['b', 'c']
    """
    old, new = dict(before), dict(after)
    return sorted(n for n in old.keys() | new.keys() if old.get(n) != new.get(n))


def busy_core_seconds(proc_stat: str, ticks_per_second: int) -> float:
    """Core-seconds the machine has spent running anything since boot, from /proc/stat's `cpu` line.

    Busy is user + nice + system + irq + softirq; idle, iowait and time stolen by a hypervisor are not.
    >>> busy_core_seconds("cpu  100 5 50 900 20 1 2 3 0 0\\ncpu0 1 1 1 1 1 1 1 1 0 0\\n", 100)
    1.58
    """
    fields = [int(x) for x in proc_stat.splitlines()[0].split()[1:8]]
    user, nice, system, _idle, _iowait, irq, softirq = fields
    return (user + nice + system + irq + softirq) / ticks_per_second


def machine_busy_seconds() -> float:
    """`busy_core_seconds` of this machine now: subtract two readings for the CPU a phase used."""
    return busy_core_seconds(Path("/proc/stat").read_text(), os.sysconf("SC_CLK_TCK"))


def ratio(numerator: float | None, denominator: float | None) -> str:
    """`0.53` or `-` when a side is missing.

    >>> ratio(53.0, 100.0), ratio(None, 1.0)
    ('0.53', '-')
    """
    if numerator is None or not denominator:
        return "-"
    return f"{numerator / denominator:.2f}"


def seconds_text(value: float | None) -> str:
    """`12.3` (seconds, one decimal) or `-`."""
    return "-" if value is None else f"{value:.1f}"


# ---------------------------------------------------------------------------------------------- rounds and statistics

Side = Literal["strata", "baseline"]


def round_schedule(repeat: int, with_baseline: bool = True) -> list[tuple[int, Side]]:
    """(round, side) in the order they run: Strata first in even rounds, the baseline first in odd ones.

    S B B S S B ...: a drift of the machine (heat, other load, a filling disk) weighs on both sides alike.
    >>> round_schedule(2)
    [(0, 'strata'), (0, 'baseline'), (1, 'baseline'), (1, 'strata')]
    """
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, got {repeat}")
    schedule: list[tuple[int, Side]] = []
    for index in range(repeat):
        if not with_baseline:
            schedule.append((index, "strata"))
        elif index % 2 == 0:
            schedule += [(index, "strata"), (index, "baseline")]
        else:
            schedule += [(index, "baseline"), (index, "strata")]
    return schedule


def median(values: Sequence[float]) -> float:
    """The middle value, or the mean of the two middle ones for an even count.

    >>> median([3.0, 1.0, 2.0]), median([4.0, 1.0, 3.0, 2.0])
    (2.0, 2.5)
    """
    if not values:
        raise ValueError("median of no values")
    return statistics.median(values)


@dataclass(frozen=True)
class Spread:
    """The median of a side's rounds and how far apart they were."""

    median: float
    low: float
    high: float

    @property
    def relative_percent(self) -> float | None:
        """(max - min) / median in %, None when the median is 0."""
        return (self.high - self.low) / self.median * 100 if self.median else None


def spread(values: Iterable[float | None]) -> Spread | None:
    """Median, min and max of the values that were measured (None: a round that failed or did not run).

    >>> spread([10.0, None, 14.0, 12.0])
    Spread(median=12.0, low=10.0, high=14.0)
    """
    measured = [v for v in values if v is not None]
    if not measured:
        return None
    return Spread(median(measured), min(measured), max(measured))


def paired_ratios(strata: Sequence[float | None], baseline: Sequence[float | None]) -> list[float | None]:
    """strata_i / baseline_i for each round; None where a side is missing or the baseline is 0.

    >>> paired_ratios([50.0, None, 30.0], [100.0, 80.0, 0.0])
    [0.5, None, None]
    """
    return [
        s / b if s is not None and b else None
        for s, b in zip(strata, baseline)  # rounds line up; a missing round is None
    ]


def median_round(values: Sequence[float | None]) -> int | None:
    """The round whose value is the (lower) median of the measured ones; None when none was measured.

    >>> median_round([30.0, 10.0, 20.0]), median_round([40.0, None, 10.0, 20.0, 30.0]), median_round([None])
    (2, 3, None)
    """
    measured = sorted((v, i) for i, v in enumerate(values) if v is not None)
    return measured[(len(measured) - 1) // 2][1] if measured else None


@dataclass(frozen=True)
class Quantity:
    """One measured quantity of both sides, one value per round (None: not measured in that round)."""

    name: str
    strata: tuple[float | None, ...]
    baseline: tuple[float | None, ...]
    target: float | None = None  # the ratio of medians strata / baseline must be at most this


def verdict(value: float | None, target: float | None) -> str:
    """`PASS (0.45 <= 0.5)`, `FAIL (0.62 > 0.5)`, `-` without a target, `n/a` without a value.

    >>> verdict(0.45, 0.5), verdict(0.62, 0.5), verdict(0.62, None), verdict(None, 0.5)
    ('PASS (0.45 <= 0.5)', 'FAIL (0.62 > 0.5)', '-', 'n/a')
    """
    if target is None:
        return "-"
    if value is None:
        return "n/a"
    return f"PASS ({value:.2f} <= {target:g})" if value <= target else f"FAIL ({value:.2f} > {target:g})"


SUMMARY_HEADER = (
    "quantity",
    "S median",
    "S min-max",
    "S spread",
    "B median",
    "B min-max",
    "B spread",
    "ratio",  # of the medians, S / B: what the verdict judges
    "paired ratios",
    "paired min-max",
    "target",
    "verdict",
)
SUMMARY_LEGEND = (
    "S = strata, B = baseline (plain docker build); spread = (max - min) / median; ratio = S median / B median; "
    "paired ratios = S / B of each round"
)


def range_text(s: Spread | None) -> str:
    """`812.3-830.1` or `-`."""
    return "-" if s is None else f"{s.low:.1f}-{s.high:.1f}"


def percent_text(s: Spread | None) -> str:
    """`2.2%` (relative spread) or `-`."""
    relative = None if s is None else s.relative_percent
    return "-" if relative is None else f"{relative:.1f}%"


def summary_row(quantity: Quantity) -> list[str]:
    """One line of the summary table (SUMMARY_HEADER): both sides' medians and spread, the ratios, the verdict.

    >>> summary_row(Quantity("cold", (40.0, 60.0), (100.0, 100.0), 0.5))[7:]
    ['0.50', '0.40 0.60', '0.40-0.60', '<= 0.5', 'PASS (0.50 <= 0.5)']
    """
    strata, baseline = spread(quantity.strata), spread(quantity.baseline)
    of_medians = strata.median / baseline.median if strata and baseline and baseline.median else None
    pairs = paired_ratios(quantity.strata, quantity.baseline)
    paired = spread(pairs)
    return [
        quantity.name,
        seconds_text(strata.median if strata else None),
        range_text(strata),
        percent_text(strata),
        seconds_text(baseline.median if baseline else None),
        range_text(baseline),
        percent_text(baseline),
        "-" if of_medians is None else f"{of_medians:.2f}",
        " ".join("-" if p is None else f"{p:.2f}" for p in pairs) or "-",
        "-" if paired is None else f"{paired.low:.2f}-{paired.high:.2f}",
        "" if quantity.target is None else f"<= {quantity.target:g}",
        verdict(of_medians, quantity.target),
    ]


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain fixed-width table: first column left-aligned, the others right-aligned.

    >>> print(format_table(["a", "bb"], [["x", "1.0"]]))
    a   bb
    -  ---
    x  1.0
    """
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def failure_line(output: str) -> str:
    """The most telling line of a failed build's output (its last error line, else its last line)."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for line in reversed(lines):
        if re.search(r"error|failed|did not complete|non-zero", line, re.IGNORECASE):
            return line[-240:]
    return lines[-1][-240:] if lines else "no output"


# ---------------------------------------------------------------------------------------------- engine and CLI


@dataclass(frozen=True)
class PlanNode:
    """One node of `strata plan --format json` (the `nodes` of its strata.plan/1 document)."""

    id: str
    layer: str
    parent: str | None
    content_hash: str
    cache_ref: str
    tags: tuple[str, ...]
    locked: bool

    @property
    def refs(self) -> tuple[str, ...]:
        return (self.cache_ref, *self.tags)


@dataclass(frozen=True)
class TimedRun:
    seconds: float
    returncode: int
    lines: tuple[tuple[float, str], ...]  # (seconds since start, line) of merged stdout and stderr
    started: datetime  # when the command was started (UTC), to place its events on the run's clock

    @property
    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)


def run_timed(
    argv: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    echo: Callable[[str], bool] = lambda line: False,
) -> TimedRun:
    """Run `argv`, timestamp every output line, write them to `log_path`; echo lines `echo` accepts to stderr."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    lines: list[tuple[float, str]] = []
    started = datetime.now(timezone.utc)
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            bufsize=1,
            env=dict(env or os.environ),
            cwd=REPO,
        )
    except OSError as exc:
        raise BenchError(f"cannot run {argv[0]}: {exc}") from None
    assert proc.stdout is not None
    with open(log_path, "w", encoding="utf-8") as log:
        log.write(f"# {' '.join(argv)}\n")
        try:
            for raw in proc.stdout:
                at = time.monotonic() - start
                line = raw.rstrip("\n")
                lines.append((at, line))
                log.write(f"{at:9.2f} {line}\n")
                if echo(line):
                    print(f"    {line.strip()[:150]}", file=sys.stderr, flush=True)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        returncode = proc.wait()
    return TimedRun(time.monotonic() - start, returncode, tuple(lines), started)


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(
            [DOCKER, *args], capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
        )
    except OSError as exc:
        raise BenchError(f"cannot run {DOCKER}: {exc}") from None
    if check and done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise BenchError(
            f"docker {' '.join(args[:3])}: {detail[-1] if detail else f'exit {done.returncode}'}"
        )
    return done


def image_id(ref: str) -> str | None:
    done = docker("image", "inspect", "--format", "{{.Id}}", ref, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def strata_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli.main", *args]


def strata_env(home: Path | None = None) -> dict[str, str]:
    """The environment of a `strata` run; with a fresh `home`, also without the registry cache (a cold build)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "1000"}
    if home is not None:
        env["STRATA_HOME"] = str(home)
        env["STRATA_REGISTRY_CACHE"] = "off"  # else nodes the registry has are pulled, not built
    return env


def plan_nodes(only: str | None) -> list[PlanNode]:
    argv = strata_argv("plan", "--format", "json", *(["--only", only] if only else []))
    done = subprocess.run(
        argv, capture_output=True, text=True, cwd=REPO, check=False, stdin=subprocess.DEVNULL
    )
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise BenchError(f"strata plan: {lines[-1] if lines else f'exit {done.returncode}'}")
    return [
        PlanNode(
            n["id"], n["layer"], n["parent"], n["content_hash"], n["cache_ref"], tuple(n["tags"]), n["locked"]
        )
        for n in json.loads(done.stdout)["nodes"]
    ]


def _parent_pid(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state; the name may hold spaces


def _is_ours(pid: int) -> bool:
    """True for this process and its descendants (the strata runs this bench starts)."""
    seen = 0
    while pid > 1 and seen < 64:
        if pid == os.getpid():
            return True
        pid, seen = _parent_pid(pid), seen + 1
    return False


def other_strata_runs() -> list[str]:
    """`pid: command` of every other `strata build|verify|lock` on this host (they share build/ and the engine)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if strata_command(argv) and not _is_ours(int(proc.name)):
            found.append(f"{proc.name}: {' '.join(a for a in argv if a)[:120]}")
    return found


class ConcurrentRunWatcher:
    """Notes every other Strata run seen while the bench measures (they share 2 cores, the engine and build/)."""

    def __init__(self, phase: Callable[[], str], interval: float = 5.0) -> None:
        self.phase = phase
        self.seen: dict[str, str] = {}  # run → the bench phase it was first seen in
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, args=(interval,), daemon=True)

    def _watch(self, interval: float) -> None:
        while not self._stop.is_set():
            for run in other_strata_runs():
                self.seen.setdefault(run, self.phase())
            self._stop.wait(interval)

    def __enter__(self) -> ConcurrentRunWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def user_strata_home() -> Path:
    return Path(os.environ.get("STRATA_HOME") or REPO / ".strata").absolute()


def link_file(source: str | Path, dest: str | Path) -> None:
    """A hard link, or a copy across filesystems."""
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy2(source, dest)


def link_tree(source: Path, dest: Path) -> None:
    """Hard-link every file of `source` under `dest`."""
    shutil.copytree(source, dest, copy_function=link_file)


def rendered_nodes(only: str) -> dict[str, tuple[str, str, str | None]]:
    """node id → (rendered Dockerfile, lock text, rootfs sha256), from the same plan `strata plan` prints."""
    from builder.errors import StrataError
    from builder.matrix.load import load_matrix
    from builder.plan.graph import build_plan

    try:
        plan = build_plan(load_matrix(REPO / "matrix.yaml")).select([only])
    except StrataError as exc:
        raise BenchError(f"plan: {exc}") from None
    out: dict[str, tuple[str, str, str | None]] = {}
    for node in plan.nodes:
        lock_text = node.lock.render() if node.lock and node.lock.wheels else ""
        rootfs = node.lock.rootfs.sha256 if node.lock and node.lock.rootfs else None
        out[node.id] = (node.dockerfile, lock_text, rootfs)
    return out


# ---------------------------------------------------------------------------------------------- the phases


@dataclass
class BaselineNode:
    seconds: float | None = None
    steps: StepSummary = StepSummary(None, None, None)
    status: NodeStatus | None = None  # built | failed | skipped
    message: str = ""


@dataclass
class StrataRound:
    """One cold `strata build` round (0-based `index`)."""

    index: int
    timeline: StrataTimeline | None = None
    failed: str = ""
    steps: dict[str, StepSummary] = field(default_factory=dict)  # node → BuildKit steps of its engine build
    cpu: float | None = None  # busy core-seconds of the whole machine during the build
    purge_seconds: float | None = None  # removing the images and BuildKit's cache first (not counted)


@dataclass
class BaselineRound:
    """One round of plain `docker build --no-cache` of every node (0-based `index`), tagged `run_id`."""

    index: int
    run_id: str
    nodes: dict[str, BaselineNode] = field(default_factory=dict)
    total: float | None = None
    cpu: float | None = None  # busy core-seconds of the whole machine during the builds

    @property
    def failed(self) -> str:
        """`node: reason` of the first node that failed, else empty (skipped children follow a failed parent)."""
        return next((f"{n}: {b.message}" for n, b in self.nodes.items() if b.status is NodeStatus.FAILED), "")


@dataclass
class Results:
    only: str
    nodes: list[PlanNode]
    logs: Path
    repeat: int = 1
    skip_baseline: bool = False
    strata_rounds: list[StrataRound] = field(default_factory=list)
    baseline_rounds: list[BaselineRound] = field(default_factory=list)
    failed: str = ""  # the round failure that ended the run early
    noop: StrataTimeline | None = None
    noop_whole: StrataTimeline | None = None
    whole_note: str = ""
    home: Path | None = None  # the STRATA_HOME of the latest Strata round
    baseline_images_removed: int = 0
    concurrent: list[str] = field(default_factory=list)  # other Strata runs seen while measuring
    jobs: int | None = None  # `strata build --jobs` for the cold builds; None: Strata's default
    phase: str = "setup"
    notes: list[str] = field(default_factory=list)


def purge_strata(nodes: Sequence[PlanNode]) -> None:
    """Remove the nodes' engine images (every tag) and BuildKit's cache, so `strata build` starts cold."""
    for node in reversed(nodes):
        for ref in (*node.refs, f"strata-build/{node.id}:{node.content_hash[:16]}"):
            done = docker("rmi", ref, check=False)
            if done.returncode != 0 and "No such image" not in done.stderr:
                raise BenchError(f"cannot remove {ref}: {done.stderr.strip().splitlines()[-1]}")
        if image_id(node.cache_ref) is not None:
            raise BenchError(f"{node.cache_ref} is still in the engine after removing it")
    docker("builder", "prune", "-af")


def check_no_containers(nodes: Sequence[PlanNode], before: Mapping[str, str | None]) -> None:
    for node in nodes:
        if before.get(node.id):
            users = docker("ps", "-a", "-q", "--filter", f"ancestor={node.cache_ref}").stdout.split()
            if users:
                raise BenchError(
                    f"container {users[0]} uses {node.cache_ref}: remove it first (docker rm -f {users[0]})"
                )


def fresh_strata_home(results: Results) -> Path:
    """An empty STRATA_HOME with the base root filesystems hard-linked in; the previous round's is removed."""
    if results.home is not None:
        shutil.rmtree(results.home, ignore_errors=True)
    results.home = Path(tempfile.mkdtemp(prefix="strata-bench-home-"))
    rootfs = user_strata_home() / "cache" / "rootfs"
    if rootfs.is_dir():
        link_tree(rootfs, results.home / "cache" / "rootfs")
    return results.home


def strata_round(results: Results, index: int) -> StrataRound:
    """One cold Strata round: a fresh STRATA_HOME, the nodes' images and BuildKit's cache purged, `strata build`."""
    round_ = StrataRound(index)
    results.strata_rounds.append(round_)
    home = fresh_strata_home(results)
    started = time.monotonic()
    purge_strata(results.nodes)
    round_.purge_seconds = time.monotonic() - started
    cold_build(results, round_, home)
    return round_


def cold_build(results: Results, round_: StrataRound, home: Path) -> None:
    name = f"round {round_.index + 1}"
    print(
        f"bench: {name}: strata cold build of '{results.only}' (STRATA_HOME={home})",
        file=sys.stderr,
        flush=True,
    )
    jobs = ["--jobs", str(results.jobs)] if results.jobs else []
    stem = f"strata-cold-r{round_.index + 1}"
    busy_before = machine_busy_seconds()
    events = results.logs / f"{stem}.events.jsonl"
    run = run_timed(
        strata_argv("build", "--only", results.only, *jobs, "--events", str(events)),
        results.logs / f"{stem}.log",
        strata_env(home),
        echo=progress_line,
    )
    round_.cpu = machine_busy_seconds() - busy_before
    timeline = strata_timeline(run_events(events), [n.id for n in results.nodes], run.seconds, run.started)
    round_.timeline = timeline
    if run.returncode != 0:
        why = timeline.errors[0] if timeline.errors else failure_line(run.text)
        round_.failed = f"exit {run.returncode}: {why}"
    not_built = [n for n, s in timeline.statuses().items() if s is not NodeStatus.BUILT]
    if not_built and not round_.failed:
        results.notes.append(
            f"{name}: the cold build did not build {', '.join(not_built)} (cached?): not a cold measurement"
        )
    for node in results.nodes:
        log = REPO / "build" / "logs" / f"{node.id}.log"
        if log.is_file() and timeline.nodes[node.id].status is NodeStatus.BUILT:
            shutil.copy2(log, results.logs / f"strata-r{round_.index + 1}-{node.id}.log")
            round_.steps[node.id] = summarize_steps(buildkit_steps(log.read_text(errors="replace")))


def measure_noops(results: Results, others: Sequence[PlanNode], others_missing: Sequence[str]) -> None:
    """The no-op rebuilds of the selection, then of the whole matrix when every other node is built."""
    results.phase = "strata no-op"
    results.noop = noop_build(results, results.only, results.only, results.nodes)
    if not others:
        results.whole_note = f"'{results.only}' is the whole matrix"
    elif others_missing:
        results.whole_note = f"not measured: not built locally: {', '.join(others_missing)}"
    else:
        results.noop_whole = noop_build(results, None, "whole matrix", [*results.nodes, *others])


def noop_build(
    results: Results, only: str | None, name: str, expected: Sequence[PlanNode]
) -> StrataTimeline | None:
    """Time `strata build` on what the cold build just built; None (and a note) if the plan changed since."""
    changed = plan_changes(
        ((n.id, n.content_hash) for n in expected), ((n.id, n.content_hash) for n in plan_nodes(only))
    )
    if changed:
        results.notes.append(
            f"no-op ({name}) not measured: the plan changed since the cold build (new content hashes: "
            f"{', '.join(changed[:4])}{', ...' if len(changed) > 4 else ''}; a commit or edit landed)"
        )
        return None
    node_ids = [n.id for n in expected]
    print(f"bench: strata no-op rebuild ({name})", file=sys.stderr, flush=True)
    args = ["build", *(["--only", only] if only else [])]
    stem = f"strata-noop-{name.replace(' ', '-')}"
    events = results.logs / f"{stem}.events.jsonl"
    run = run_timed(strata_argv(*args, "--events", str(events)), results.logs / f"{stem}.log", strata_env())
    timeline = strata_timeline(run_events(events), node_ids, run.seconds, run.started)
    if run.returncode != 0:
        why = timeline.errors[0] if timeline.errors else failure_line(run.text)
        raise BenchError(f"no-op `strata {' '.join(args)}` failed: {why}")
    rebuilt = [n for n, s in timeline.statuses().items() if s is not None and s is not NodeStatus.CACHED]
    if rebuilt:
        results.notes.append(f"no-op ({name}) was not a no-op: {', '.join(rebuilt)} not cached")
    return timeline


def baseline_context(results: Results, node: PlanNode, rendered: tuple[str, str, str | None]) -> Path:
    """The build context of a baseline node: the index-install Dockerfile, its lock and root filesystem."""
    dockerfile, lock_text, rootfs_sha = rendered
    text, rewritten = baseline_dockerfile(dockerfile)
    if node.layer != "base" and rewritten == 0:
        raise BenchError(
            f"node {node.id}: rendered Dockerfile has no wheelhouse install to turn into an index install"
        )
    context = results.logs / "baseline-context" / node.id
    context.mkdir(parents=True, exist_ok=True)
    (context / "Dockerfile").write_text(text, encoding="utf-8")
    if lock_text:
        (context / "requirements.lock").write_text(lock_text, encoding="utf-8")
    if rootfs_sha:
        homes = [h for h in (results.home, user_strata_home()) if h is not None]
        tars = [h / "cache" / "rootfs" / f"{rootfs_sha}.tar" for h in homes]
        tar = next((t for t in tars if t.is_file()), None)
        if tar is None:
            raise BenchError(
                f"node {node.id}: root filesystem {tars[0]} is missing (the cold build should have made it)"
            )
        target = context / "rootfs.tar"
        target.unlink(missing_ok=True)
        link_file(tar, target)
    return context


def baseline_argv(node: PlanNode, context: Path, run_id: str) -> list[str]:
    argv = [
        DOCKER,
        "build",
        "--no-cache",
        "--progress",
        "plain",
        "--tag",
        f"{BASELINE_REPO}/{node.id}:{run_id}",
        "--secret",
        f"id=ca,src={CA_BUNDLE}",
        "--file",
        str(context / "Dockerfile"),
    ]
    if node.parent:
        argv += ["--build-arg", f"PARENT_IMAGE={BASELINE_REPO}/{node.parent}:{run_id}"]
    return [*argv, str(context)]


def baseline_round(results: Results, index: int, run_id: str, created: list[str]) -> BaselineRound:
    """Build every node with plain `docker build --no-cache`, tagged `run_id`; its images are removed right after.

    Tags go into `created` as they are made, so an interrupted round's images are removed too.
    """
    round_ = BaselineRound(index, run_id)
    results.baseline_rounds.append(round_)
    rendered = rendered_nodes(results.only)
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    try:
        start, busy_before = time.monotonic(), machine_busy_seconds()
        for node in results.nodes:
            outcome = round_.nodes.setdefault(node.id, BaselineNode())
            parent = round_.nodes.get(node.parent) if node.parent else None
            if parent is not None and parent.status is not NodeStatus.BUILT:
                outcome.status, outcome.message = NodeStatus.SKIPPED, f"parent {node.parent} {parent.status}"
                continue
            context = baseline_context(results, node, rendered[node.id])
            print(f"bench: round {index + 1}: baseline docker build {node.id}", file=sys.stderr, flush=True)
            run = run_timed(
                baseline_argv(node, context, run_id),
                results.logs / f"baseline-r{index + 1}-{node.id}.log",
                env,
                echo=lambda ln: bool(re.match(r"#\d+ \[", ln)),
            )
            outcome.seconds = run.seconds
            outcome.steps = summarize_steps(buildkit_steps(run.text))
            if run.returncode == 0:
                outcome.status = NodeStatus.BUILT
                created.append(f"{BASELINE_REPO}/{node.id}:{run_id}")
            else:
                outcome.status, outcome.message = NodeStatus.FAILED, failure_line(run.text)
                print(f"bench: baseline {node.id} failed: {outcome.message}", file=sys.stderr, flush=True)
        round_.total = time.monotonic() - start
        round_.cpu = machine_busy_seconds() - busy_before
    finally:
        results.baseline_images_removed += remove_baseline_images(created)
    return round_


def remove_baseline_images(created: list[str]) -> int:
    """Remove the baseline images `created` lists (children first), empty the list; how many there were."""
    count = len(created)
    for tag in reversed(created):
        docker("rmi", tag, check=False)
    created.clear()
    return count


def restore_images(results: Results, before: Mapping[str, str | None], interrupted: bool) -> None:
    """Make sure every Strata image the user had before is in the engine again; say clearly if not.

    If the plan changed during the run (a commit landed), the current plan's images are what the user needs.
    """
    nodes = results.nodes
    try:
        current = plan_nodes(results.only)
    except BenchError as exc:
        print(f"bench: cannot check the Strata images against the current plan ({exc})", file=sys.stderr)
        current = nodes
    changed = plan_changes(((n.id, n.content_hash) for n in nodes), ((n.id, n.content_hash) for n in current))
    if changed:
        results.notes.append(
            f"the plan changed during the run ({len(changed)} nodes have new content hashes): timings are for the "
            "plan at the start; the images of the current plan were checked and rebuilt where missing"
        )
        nodes = current
        before = {
            n.id: (before.get(n.id) if n.id not in changed else ("changed" if before.get(n.id) else None))
            for n in current
        }
    missing = [n for n in nodes if before.get(n.id) and image_id(n.cache_ref) is None]
    if missing and not interrupted:
        names = ", ".join(n.id for n in missing)
        print(
            f"bench: the cold rounds did not bring back {names}; rebuilding them with your STRATA_HOME",
            file=sys.stderr,
            flush=True,
        )
        run = run_timed(
            strata_argv("build", "--only", results.only),
            results.logs / "strata-restore.log",
            strata_env(),
            echo=progress_line,
        )
        if run.returncode != 0:
            print(f"bench: restore build failed: {failure_line(run.text)}", file=sys.stderr)
        missing = [n for n in missing if image_id(n.cache_ref) is None]
    if missing:
        print(
            f"bench: WARNING: these Strata images were deleted and are NOT rebuilt: "
            f"{', '.join(n.id for n in missing)}; run `python -m cli.main build --only '{results.only}'` in {REPO}",
            file=sys.stderr,
        )
    else:
        had = [n for n in nodes if before.get(n.id) and before[n.id] != "changed"]
        now = {n.id: image_id(n.cache_ref) for n in had}
        differ = [
            f"{n.id} {str(before[n.id])[7:19]} -> {str(now[n.id])[7:19]}"
            for n in had
            if now[n.id] != before[n.id]
        ]
        if had:
            results.notes.append(
                f"Strata images back in the engine; rebuilt with the same image ID: {len(had) - len(differ)}/{len(had)}"
                + (f" (different: {', '.join(differ)})" if differ else "")
            )
        fresh = [n.id for n in nodes if not before.get(n.id)]
        if fresh:
            results.notes.append(f"not in the engine before the run (now built): {', '.join(fresh)}")


# ---------------------------------------------------------------------------------------------- report


@dataclass(frozen=True)
class RoundFigures:
    """What one side measured in one round (None: not measured, e.g. the round failed)."""

    cold: float | None  # seconds for all the selected nodes
    without_base: float | None  # seconds without the base nodes
    busy: float | None  # busy core-seconds of the machine

    @classmethod
    def missing(cls) -> RoundFigures:
        return cls(None, None, None)


def strata_figures(round_: StrataRound, base_ids: Collection[str]) -> RoundFigures:
    """A Strata round's figures; a failed round measured nothing comparable.

    Without the base nodes is the total minus the base nodes' spans (only when every base node finished).
    """
    timeline = round_.timeline
    if round_.failed or timeline is None:
        return RoundFigures.missing()
    spans = [timeline.nodes[n].span(timeline.nodes[n].start, timeline.nodes[n].end) for n in base_ids]
    known = [s for s in spans if s is not None]
    has_others = len(base_ids) < len(timeline.nodes)
    without_base = timeline.total - sum(known) if len(known) == len(spans) and has_others else None
    return RoundFigures(timeline.total, without_base, round_.cpu)


def baseline_figures(round_: BaselineRound, base_ids: Collection[str]) -> RoundFigures:
    """A baseline round's figures; without the base nodes is the sum of the other nodes' builds."""
    if round_.failed or round_.total is None:
        return RoundFigures.missing()
    others = [b.seconds or 0.0 for n, b in round_.nodes.items() if n not in base_ids]
    return RoundFigures(round_.total, sum(others) if others else None, round_.cpu)


def rounds_run(results: Results) -> int:
    """How many rounds began (on either side)."""
    indexes = [r.index for r in results.strata_rounds] + [r.index for r in results.baseline_rounds]
    return max(indexes) + 1 if indexes else 0


def figures_by_round(results: Results) -> tuple[list[RoundFigures], list[RoundFigures]]:
    """(strata, baseline) figures, one per round that began; a side that did not run that round is missing."""
    base_ids = {n.id for n in results.nodes if n.layer == "base"}
    strata = [RoundFigures.missing() for _ in range(rounds_run(results))]
    baseline = list(strata)
    for s in results.strata_rounds:
        strata[s.index] = strata_figures(s, base_ids)
    for b in results.baseline_rounds:
        baseline[b.index] = baseline_figures(b, base_ids)
    return strata, baseline


def quantities(results: Results) -> list[Quantity]:
    """The summary's measured quantities, one value per round and side."""
    strata, baseline = figures_by_round(results)
    base_count = sum(1 for n in results.nodes if n.layer == "base")
    return [
        Quantity(
            f"cold build, all {len(results.nodes)} nodes, s",
            tuple(f.cold for f in strata),
            tuple(f.cold for f in baseline),
            COLD_TARGET_RATIO,
        ),
        Quantity(
            f"cold build without the {base_count} base nodes, s",
            tuple(f.without_base for f in strata),
            tuple(f.without_base for f in baseline),
        ),
        Quantity(
            f"busy core-s of the machine ({os.cpu_count()} cpus)",
            tuple(f.busy for f in strata),
            tuple(f.busy for f in baseline),
            BUSY_TARGET_RATIO,
        ),
    ]


ROUND_HEADER = (
    "round",
    "order",
    "strata s",
    "w/o base",
    "core-s",
    "baseline s",
    "w/o base",
    "core-s",
    "ratio s",
    "ratio core-s",
    "outcome",
)


def round_outcome(results: Results, index: int) -> str:
    """`ok`, or what failed or did not run in this round."""
    strata = next((r for r in results.strata_rounds if r.index == index), None)
    baseline = next((r for r in results.baseline_rounds if r.index == index), None)
    problems = []
    if strata is None:
        problems.append("strata not run")
    elif strata.failed:
        problems.append(f"strata FAILED: {strata.failed}")
    if baseline is None and not results.skip_baseline:
        problems.append("baseline not run")
    elif baseline is not None and baseline.failed:
        problems.append(f"baseline FAILED: {baseline.failed}")
    return "; ".join(problems) or "ok"


def round_rows(results: Results) -> list[list[str]]:
    """One line of raw figures per round (ROUND_HEADER), in round order."""
    strata, baseline = figures_by_round(results)
    schedule = round_schedule(results.repeat, not results.skip_baseline)
    rows = []
    for index, (s, b) in enumerate(zip(strata, baseline)):
        order = " ".join(side[0].upper() for i, side in schedule if i == index)
        rows.append(
            [
                str(index + 1),
                order,
                seconds_text(s.cold),
                seconds_text(s.without_base),
                seconds_text(s.busy),
                seconds_text(b.cold),
                seconds_text(b.without_base),
                seconds_text(b.busy),
                ratio(s.cold, b.cold),
                ratio(s.busy, b.busy),
                round_outcome(results, index),
            ]
        )
    return rows


def median_strata_round(results: Results) -> StrataRound | None:
    """The Strata round whose total is the median of the rounds that succeeded, else the last one that ran."""
    totals = [None if r.failed or r.timeline is None else r.timeline.total for r in results.strata_rounds]
    index = median_round(totals)
    if index is not None:
        return results.strata_rounds[index]
    return results.strata_rounds[-1] if results.strata_rounds else None


def median_baseline_round(results: Results) -> BaselineRound | None:
    """The baseline round whose total is the median of the rounds that succeeded, else the last one that ran."""
    index = median_round([None if r.failed else r.total for r in results.baseline_rounds])
    if index is not None:
        return results.baseline_rounds[index]
    return results.baseline_rounds[-1] if results.baseline_rounds else None


def fixed_costs(timeline: StrataTimeline) -> list[list[str]]:
    first = timeline.first_node_at
    wheelhouse_ready = timeline.fetch_done_at or timeline.builder_at or 0.0
    last = timeline.last_node_end
    return [
        ["start-up: plan, engine check, builder probe", seconds_text(timeline.builder_at)],
        [f"fetch wheels ({timeline.wheelhouse or 'none'})", seconds_text(timeline.fetch_seconds)],
        [
            "wheelhouse links, loopback server",
            seconds_text(None if first is None else first - wheelhouse_ready),
        ],
        [
            "after the last node (summary, exit)",
            seconds_text(None if last is None else timeline.total - last),
        ],
    ]


NODE_HEADER = (
    "node",
    "strata",
    "total",
    "context",
    "engine",
    "pip/export",
    "canon",
    "baseline",
    "pip/export",
    "status",
)


def node_rows(
    nodes: Sequence[PlanNode], timeline: StrataTimeline, strata: StrataRound, baseline: BaselineRound | None
) -> list[list[str]]:
    """Per node: Strata's phases (context, engine with pip step / export, canonicalize) next to its baseline build."""
    rows = []
    for node in nodes:
        t = timeline.nodes[node.id]
        st = strata.steps.get(node.id, StepSummary(None, None, None))
        b = baseline.nodes.get(node.id) if baseline else None
        rows.append(
            [
                node.id,
                t.status or "-",
                seconds_text(t.span(t.start, t.end)),
                seconds_text(t.context_seconds),
                seconds_text(t.engine_seconds),
                f"{seconds_text(st.install)} / {seconds_text(st.export)}",
                seconds_text(t.canonicalize_seconds),
                seconds_text(b.seconds) if b else "-",
                f"{seconds_text(b.steps.install)} / {seconds_text(b.steps.export)}" if b else "-",
                (b.status or "-") if b else "-",
            ]
        )
    return rows


def noop_rows(results: Results) -> list[list[str]]:
    noop, whole = results.noop, results.noop_whole
    target = f"< {NOOP_TARGET_SECONDS:.0f} s"
    return [
        [f"no-op rebuild '{results.only}'", seconds_text(noop.total if noop else None), target],
        ["no-op rebuild, whole matrix", seconds_text(whole.total) if whole else "not run", target],
    ]


def round_label(round_: StrataRound | BaselineRound, completed: int) -> str:
    """`round 2 (median total of 3)`, `round 1`, or `round 1 (failed)` when no round of that side completed."""
    if round_.failed:
        return f"round {round_.index + 1} (failed)"
    return f"round {round_.index + 1}" + (f" (median total of {completed})" if completed > 1 else "")


def summary_section(results: Results) -> list[str]:
    """The summary table, one line per round, the no-op rebuilds and what may have disturbed the figures."""
    order = " ".join(side[0].upper() for _, side in round_schedule(results.repeat, not results.skip_baseline))
    out = [
        f"cold builds of '{results.only}': {rounds_run(results)} of {results.repeat} round(s) run, sides "
        f"alternating ({order}); medians and spreads over the rounds each side completed",
        format_table(SUMMARY_HEADER, [summary_row(q) for q in quantities(results)]),
        SUMMARY_LEGEND,
        "",
        "per round (raw figures):",
        format_table(ROUND_HEADER, round_rows(results)),
        "",
        format_table(
            ["no-op (once, after the first strata round)", "strata s", "target"], noop_rows(results)
        ),
    ]
    if results.concurrent:
        out.append(
            f"WARNING: {len(results.concurrent)} other Strata run(s) shared the machine (and maybe BuildKit steps) "
            "while measuring: " + "; ".join(results.concurrent[:3])
        )
    if results.whole_note:
        out.append(f"whole matrix: {results.whole_note}")
    if results.failed:
        out.append(f"stopped early: {results.failed}")
    return out


def breakdown_section(results: Results) -> list[str]:
    """Fixed costs and per-node times of the Strata round and the baseline round whose totals are the medians."""
    strata, baseline = median_strata_round(results), median_baseline_round(results)
    if strata is None or strata.timeline is None:
        return []
    strata_name = round_label(strata, sum(1 for r in results.strata_rounds if not r.failed))
    baseline_name = "no baseline round"
    if baseline is not None:
        completed = sum(1 for r in results.baseline_rounds if not r.failed)
        baseline_name = f"baseline {round_label(baseline, completed)}"
    return [
        "",
        f"strata cold build, fixed costs (s), {strata_name}:",
        format_table(["", "s"], fixed_costs(strata.timeline)),
        f"builder: {strata.timeline.builder or '?'}",
        "",
        f"per node (s), strata {strata_name}, {baseline_name}: "
        "strata = context + engine (pip step / export) + canonicalize; baseline = docker build",
        format_table(NODE_HEADER, node_rows(results.nodes, strata.timeline, strata, baseline)),
    ]


def report(results: Results) -> str:
    out = [*summary_section(results), *breakdown_section(results)]
    if results.notes:
        out += ["", *(f"note: {n}" for n in results.notes)]
    out.append(f"logs: {results.logs}")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- main


def measure(
    results: Results,
    others: Sequence[PlanNode],
    others_missing: Sequence[str],
    stamp: str,
    created: list[str],
) -> None:
    """The rounds in `round_schedule` order, the no-op rebuilds right after the first Strata round.

    A round that fails ends the run (its failure goes into `results.failed`); baseline tags go into `created`.
    """
    for index, side in round_schedule(results.repeat, not results.skip_baseline):
        label = f"round {index + 1}/{results.repeat} {side}"
        results.phase = label
        if side == "strata":
            failed = strata_round(results, index).failed
            if not failed and index == 0:
                measure_noops(results, others, others_missing)
        else:
            run_id = f"{stamp.replace('-', '')}r{index + 1}"
            failed = baseline_round(results, index, run_id, created).failed
        if failed:
            results.failed = f"{label} failed: {failed}"
            print(f"bench: {results.failed}; no further rounds", file=sys.stderr, flush=True)
            return


def check_can_run(skip_baseline: bool) -> None:
    if not Path(DOCKER).is_file():
        raise BenchError(f"{DOCKER} not found (the baseline needs the docker.io 20.10 CLI with BuildKit)")
    if not skip_baseline and not CA_BUNDLE.is_file():
        raise BenchError(f"{CA_BUNDLE} not found: the baseline passes it to pip as a BuildKit secret")
    docker("version", "--format", "{{.Server.Version}}")
    busy = other_strata_runs()
    if busy:
        raise BenchError(
            f"another Strata run would race with this one (pid {busy[0]}); run the bench when it is done"
        )


def run_bench(
    only: str, skip_baseline: bool, jobs: int | None = None, repeat: int = DEFAULT_REPEAT
) -> Results:
    check_can_run(skip_baseline)
    nodes = plan_nodes(only)
    unlocked = [n.id for n in nodes if not n.locked]
    if unlocked:
        raise BenchError(f"locks missing or stale for {', '.join(unlocked)}: run `python -m cli.main lock`")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results = Results(
        only=only,
        nodes=nodes,
        logs=REPO / "build" / "bench" / f"build-{stamp}",
        repeat=repeat,
        skip_baseline=skip_baseline,
        jobs=jobs,
    )
    results.logs.mkdir(parents=True, exist_ok=True)
    results.notes.append(
        f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cpus)"
    )
    selected = {n.id for n in nodes}
    others = [n for n in plan_nodes(None) if n.id not in selected]
    others_missing = [n.id for n in others if image_id(n.cache_ref) is None]
    before = {n.id: image_id(n.cache_ref) for n in nodes}
    check_no_containers(nodes, before)
    rootfs = user_strata_home() / "cache" / "rootfs"
    jobs_args = ["--only", only, *(["--jobs", str(jobs)] if jobs else [])]
    results.notes += [
        "each strata round: engine images of the selected nodes and BuildKit's cache purged (docker builder "
        "prune -af), then `strata build " + " ".join(jobs_args) + "` with an empty STRATA_HOME and "
        "STRATA_REGISTRY_CACHE=off",
        f"base root filesystems reused: {rootfs} hard-linked into each fresh STRATA_HOME"
        if rootfs.is_dir()
        else f"no {rootfs}: each cold round also ran mmdebstrap for the base root filesystems",
    ]
    created: list[str] = []
    interrupted = False
    try:
        with ConcurrentRunWatcher(lambda: results.phase) as watcher:
            try:
                measure(results, others, others_missing, stamp, created)
            finally:
                results.concurrent = [f"during {phase}: pid {run}" for run, phase in watcher.seen.items()]
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        results.baseline_images_removed += remove_baseline_images(created)
        if results.baseline_images_removed:
            results.notes.append(
                f"removed {results.baseline_images_removed} baseline images ({BASELINE_REPO}/*) after their "
                "rounds; BuildKit cache left as is"
            )
        purges = [f"{r.purge_seconds:.1f}" for r in results.strata_rounds if r.purge_seconds is not None]
        if purges:
            results.notes.append(f"purge before each strata round took {', '.join(purges)} s (not counted)")
        if results.home is not None:
            shutil.rmtree(results.home, ignore_errors=True)
        restore_images(results, before, interrupted)
        results.notes.append(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return results


def repeat_count(text: str) -> int:
    """`--repeat`'s value: a whole number of rounds, at least 1.

    >>> repeat_count("5")
    5
    """
    try:
        count = int(text)
    except ValueError:
        raise ValueError(f"--repeat wants a whole number of rounds, got '{text}'") from None
    if count < 1:
        raise ValueError(f"--repeat must be at least 1, got {count}")
    return count


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only",
        default=DEFAULT_ONLY,
        metavar="GLOB",
        help=f"cells or nodes to build, as for `strata build --only` (default '{DEFAULT_ONLY}')",
    )
    parser.add_argument(
        "--repeat",
        default=str(DEFAULT_REPEAT),
        metavar="N",
        help=f"rounds of each side, alternating S B B S ... (default {DEFAULT_REPEAT}, at least 1)",
    )
    parser.add_argument("--skip-baseline", action="store_true", help="measure only Strata (cold and no-op)")
    parser.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="pass --jobs N to Strata's cold builds (default: Strata's own default)",
    )
    args = parser.parse_args(argv)
    try:
        repeat = repeat_count(args.repeat)
    except ValueError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    try:
        results = run_bench(args.only, args.skip_baseline, args.jobs, repeat)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    print(report(results))
    return 1 if results.failed else 0


if __name__ == "__main__":
    sys.exit(main())
