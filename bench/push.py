"""Strata's push against `docker push`, side by side, on the same engine image and the same kind of registry.

    python bench/push.py                              # a small generated image (busybox, stdlib files, payload)
    python bench/push.py --image 127.0.0.1:5000/strata/tensorflow:2.13.1-cpu-py3.11-bookworm-r1 --largest-layer
    python bench/push.py --reps 5 --workers 4

Three sides: Strata with 1 compression worker, Strata with N (default: one per core, like STRATA_PUSH_WORKERS),
and `docker push`. Three scenarios, in this order for each side: first push (an empty registry, Strata's
compressed-layer cache empty), no-op push (the same image again: everything is present), and one-changed-file
push (the image plus one small layer holding one file, to the same repository). Each side of each repetition
gets a fresh embedded registry (Debian's docker-registry, like `strata registry up`; the engine trusts loopback
registries) on its own port, behind a TCP proxy counting the bytes the client sends (headers included), so
`docker push` cannot mount blobs a previous side or repetition left. Repetitions alternate the order of the
sides. Strata runs as a child process reading the layers from the engine's storage as `strata push` does;
its wall time includes starting Python, like `docker push` includes starting the CLI; its peak RSS is the
child's. Prints medians, the spread (min-max), the ratio to docker push (< 1: Strata is faster) and the median
bytes on the wire; `--largest-layer` also times compressing the image's largest layer with 1 and N workers.

Everything the bench creates (registries, proxies, caches, the variant image, the tags docker pushed) is removed
at the end; it never touches 127.0.0.1:5000 or images it did not create.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere

from registry_sync.registry.server import ServerSettings, start_registry, stop_registry  # noqa: E402

GENERATED = "strata-bench/push-small:1"
PINNED = (
    "strata-bench/push-image:{}"  # the --image, by ID: a build retagging it meanwhile changes nothing here
)
VARIANT = "strata-bench/push-variant:{}"
REPOSITORY = "bench/app"
SCENARIOS = ("first push", "no-op push", "one file changed")


def find_docker() -> str:
    """The first docker CLI that talks to the engine and can push: /usr/bin/docker, else `docker` on PATH."""
    for candidate in dict.fromkeys(filter(None, ("/usr/bin/docker", shutil.which("docker")))):
        probe = subprocess.run(
            [candidate, "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            text=True,
            check=False,
        )
        helps = subprocess.run([candidate, "push", "--help"], capture_output=True, check=False)
        if probe.returncode == 0 and probe.stdout.strip() and helps.returncode == 0:
            return candidate
    sys.exit("bench: no docker CLI reaches the engine (tried docker on PATH and /usr/bin/docker)")


DOCKER = ""


def docker(*args: str, stdin: bytes | None = None) -> str:
    done = subprocess.run([DOCKER, *args], input=stdin, capture_output=True, check=False)
    if done.returncode != 0:
        sys.exit(f"bench: docker {' '.join(args)} failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout.decode().strip()


class CountingProxy:
    """A TCP proxy on 127.0.0.1 that counts the bytes clients send upstream."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.sent = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, count: bool) -> None:
        try:
            while data := source.recv(1 << 16):
                sink.sendall(data)
                if count:
                    with self._lock:
                        self.sent += len(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def take(self) -> int:
        """Bytes sent since the last call."""
        with self._lock:
            sent, self.sent = self.sent, 0
        return sent

    def close(self) -> None:
        self._listener.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# ---------------------------------------------------------------------------------------------- images


def build_small(work: Path, payload_mb: int) -> str:
    """busybox, then this Python's standard library (real, compressible files), then random bytes: 3 layers."""
    busybox = shutil.which("busybox")
    if busybox is None:
        sys.exit("bench: busybox is not installed (apt-get install -y busybox-static)")
    context = work / "small"
    (context / "rootfs" / "bin").mkdir(parents=True)
    shutil.copy(busybox, context / "rootfs" / "bin" / "busybox")
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    shutil.copytree(
        stdlib,
        context / "stdlib",
        ignore=shutil.ignore_patterns("__pycache__", "site-packages", "dist-packages", "test", "tests"),
        symlinks=True,
    )
    (context / "payload").write_bytes(os.urandom(payload_mb << 20))
    (context / "Dockerfile").write_text(
        "FROM scratch\nCOPY rootfs /\nCOPY stdlib /stdlib\nCOPY payload /payload\n"
    )
    docker("build", "-q", "-t", GENERATED, str(context))
    return GENERATED


def build_variant(work: Path, base: str, marker: str) -> str:
    """`base` plus one small layer holding one file."""
    context = work / "variant"
    context.mkdir()
    (context / "marker").write_text(f"strata bench {marker}\n")
    (context / "Dockerfile").write_text(f"FROM {base}\nCOPY marker /strata-bench-marker\n")
    tag = VARIANT.format(marker)
    docker("build", "-q", "-t", tag, str(context))
    return tag


# ---------------------------------------------------------------------------------------------- Strata child


def child_push(args: argparse.Namespace) -> int:
    """One Strata push of an engine image (the child process the bench times); prints a JSON summary."""
    import docker as docker_sdk

    from builder.engine.store import EngineStore
    from registry_sync.publish.store import RegistryStore
    from registry_sync.registry.client import RegistryClient

    begun = time.perf_counter()
    with EngineStore(docker_sdk.from_env(timeout=900)) as engine, RegistryClient(args.registry) as client:
        image = engine.get(args.image)
        store = RegistryStore(client, cache_dir=Path(args.cache), workers=args.workers)
        started = time.perf_counter()
        layers = store.compressed_layers(image)
        compressed = time.perf_counter() - started
        result = store.push(image, REPOSITORY, [args.tag], layers=layers)
    summary = {
        "manifest_digest": result.manifest_digest,
        "blob_bytes": result.bytes_uploaded,
        "compress_seconds": compressed,
        "in_process_seconds": time.perf_counter() - begun,  # without starting Python and importing
        "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "cpu_seconds": sum(resource.getrusage(resource.RUSAGE_SELF)[:2]),  # user + system, every thread
    }
    print(json.dumps(summary))
    return 0


def child_largest(args: argparse.Namespace) -> int:
    """Compress the image's largest layer once with `args.workers` (1: one thread, else reading beside it)."""
    import docker as docker_sdk

    from builder.engine.store import EngineStore
    from registry_sync.publish.compress import CompressedLayerCache

    with EngineStore(docker_sdk.from_env(timeout=900)) as engine, tempfile.TemporaryDirectory() as cache:
        image = engine.get(args.image)
        sizes = [image.stored_layer_size(i)[0] for i in range(len(image.layers))]
        index = sizes.index(max(sizes))
        started = time.perf_counter()
        with image.open_layer_tar(index) as stream:
            layer = CompressedLayerCache(Path(cache)).add(
                stream, image.layers[index].diff_id, read_ahead=args.workers > 1
            )
        seconds = time.perf_counter() - started
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "uncompressed": layer.uncompressed_size, "peak_rss_kb": rss}))
    return 0


@dataclass(frozen=True)
class Run:
    seconds: float
    wire_bytes: int
    peak_rss_kb: int = 0
    info: dict[str, object] = field(default_factory=dict)


def run_child(mode: str, *args: str) -> Run:
    """Run this script as a child in `mode`: its wall time, and the JSON summary it prints (with its peak RSS)."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), mode, *args],
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"bench: strata {mode} failed: {done.stderr.decode(errors='replace').strip()}")
    info = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return Run(seconds, 0, int(info.get("peak_rss_kb", 0)), info)


def run_strata(image: str, proxy: CountingProxy, tag: str, cache: Path, workers: int) -> Run:
    proxy.take()
    run = run_child(
        "--child-push",
        *("--image", image, "--registry", f"127.0.0.1:{proxy.port}", "--tag", tag),
        *("--cache", str(cache), "--workers", str(workers)),
    )
    return Run(run.seconds, proxy.take(), run.peak_rss_kb, run.info)


def run_docker(image: str, proxy: CountingProxy, tag: str, pushed: list[str]) -> Run:
    remote = f"127.0.0.1:{proxy.port}/{REPOSITORY}:{tag}"
    docker("tag", image, remote)
    pushed.append(remote)
    proxy.take()
    started = time.perf_counter()
    docker("push", remote)
    seconds = time.perf_counter() - started
    return Run(seconds, proxy.take())


# ---------------------------------------------------------------------------------------------- report


def spread(values: Sequence[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}"


def human(size: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size:.0f} B"


def median_of(runs: Sequence[Run], key: str) -> str:
    values = [float(str(r.info[key])) for r in runs if key in r.info]
    return f"{statistics.median(values):.2f}" if values else "-"


def cores(runs: Sequence[Run]) -> str:
    """Median CPU seconds over wall seconds of Strata's child: how many cores its push kept busy."""
    used = [float(str(r.info["cpu_seconds"])) / r.seconds for r in runs if "cpu_seconds" in r.info]
    return f"{statistics.median(used):.2f}" if used else "-"


def report(results: dict[tuple[str, str], list[Run]], sides: Sequence[str]) -> None:
    """One line per scenario and side; "in-proc s" is Strata's time after Python started and imported, "cores"
    its CPU time over its wall time."""
    print()
    print(
        f"{'scenario':<18}{'side':<18}{'median s':>9}{'spread s':>13}{'x docker':>9}{'wire':>10}"
        f"{'in-proc s':>10}{'compress s':>11}{'cores':>6}{'peak RSS':>10}"
    )
    for scenario in SCENARIOS:
        base = statistics.median(r.seconds for r in results[(scenario, "docker push")])
        for side in sides:
            runs = results[(scenario, side)]
            median = statistics.median(r.seconds for r in runs)
            rss = max(r.peak_rss_kb for r in runs) * 1024
            print(
                f"{scenario:<18}{side:<18}{median:>9.2f}{spread([r.seconds for r in runs]):>13}"
                f"{median / base:>9.2f}{human(statistics.median(r.wire_bytes for r in runs)):>10}"
                f"{median_of(runs, 'in_process_seconds'):>10}{median_of(runs, 'compress_seconds'):>11}"
                f"{cores(runs):>6}{(human(rss) if rss else '-'):>10}"
            )


def bench(args: argparse.Namespace) -> int:
    global DOCKER
    DOCKER = find_docker()
    workers = args.workers or len(os.sched_getaffinity(0))
    sides = ("strata 1 worker", f"strata {workers} workers", "docker push")
    work = Path(tempfile.mkdtemp(prefix="strata-bench-push-"))
    created: list[str] = []
    pushed: list[str] = []
    results: dict[tuple[str, str], list[Run]] = {(s, side): [] for s in SCENARIOS for side in sides}
    digests: dict[str, set[str]] = {side: set() for side in sides[:2]}
    try:
        if args.image:
            image = PINNED.format(os.getpid())
            docker("tag", docker("image", "inspect", "--format", "{{.Id}}", args.image), image)
        else:
            image = build_small(work, args.payload_mb)
        created.append(image)
        variant = build_variant(work, image, str(os.getpid()))
        created.append(variant)
        print(f"bench: {image} (+ {variant}), docker CLI {DOCKER}, {args.reps} repetitions", flush=True)
        print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
        for rep in range(args.reps):
            order = sides[rep % len(sides) :] + sides[: rep % len(sides)]
            for side in order:
                settings = ServerSettings(
                    data_dir=work / f"registry-{rep}-{sides.index(side)}", port=free_port()
                )
                start_registry(settings)
                proxy = CountingProxy(settings.port)
                cache = work / f"cache-{rep}-{sides.index(side)}"
                try:
                    for scenario, ref, tag in zip(SCENARIOS, (image, image, variant), ("1", "1", "2")):
                        if side == "docker push":
                            run = run_docker(ref, proxy, f"{tag}-{rep}", pushed)
                        else:
                            count = 1 if side == sides[0] else workers
                            run = run_strata(ref, proxy, f"{tag}-{rep}", cache, count)
                            if scenario == SCENARIOS[0]:
                                digests[side].add(str(run.info["manifest_digest"]))
                        results[(scenario, side)].append(run)
                        print(f"  rep {rep + 1} {side:<16} {scenario:<18} {run.seconds:8.2f} s", flush=True)
                finally:
                    proxy.close()
                    stop_registry(settings.data_dir)
                    shutil.rmtree(settings.data_dir, ignore_errors=True)
                    shutil.rmtree(cache, ignore_errors=True)
                    for remote in pushed:
                        subprocess.run([DOCKER, "rmi", remote], capture_output=True, check=False)
                    pushed.clear()
        report(results, sides)
        print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        same = digests[sides[0]] == digests[sides[1]] and len(digests[sides[0]]) == 1
        print(f"first push manifest digest, 1 vs {workers} workers: {'identical' if same else 'DIFFERENT'}")
        if args.largest_layer:
            timings: dict[int, list[float]] = {1: [], workers: []}
            for rep in range(args.reps):
                for count in (1, workers) if rep % 2 == 0 else (workers, 1):
                    run = run_child("--child-largest", "--image", image, "--workers", str(count))
                    timings[count].append(float(str(run.info["seconds"])))
            size = int(str(run.info["uncompressed"])) / 1e6
            print(f"largest layer ({size:.0f} MB uncompressed), compression alone:")
            for count, values in timings.items():
                print(
                    f"  {count} worker(s): median {statistics.median(values):.2f} s, spread {spread(values)} s"
                )
            print(f"  peak RSS of that child: {run.peak_rss_kb / 1024:.0f} MB")
        return 0 if same else 1
    finally:
        for remote in pushed:
            subprocess.run([DOCKER, "rmi", remote], capture_output=True, check=False)
        for ref in reversed(created):
            subprocess.run([DOCKER, "rmi", ref], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image", help="an engine image to push (default: a small generated one)")
    parser.add_argument("--payload-mb", type=int, default=20, help="random bytes in the generated image")
    parser.add_argument("--reps", type=int, default=3, help="repetitions, alternating the sides (default 3)")
    parser.add_argument("--workers", type=int, default=0, help="Strata's N (default: one per core)")
    parser.add_argument("--largest-layer", action="store_true", help="also time the largest layer alone")
    parser.add_argument("--child-push", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-largest", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--registry", help=argparse.SUPPRESS)
    parser.add_argument("--tag", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_push:
        return child_push(args)
    if args.child_largest:
        return child_largest(args)
    return bench(args)


if __name__ == "__main__":
    sys.exit(main())
