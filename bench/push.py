"""Strata's push against `docker push`, side by side, on the same images and fresh local registries.

Three rounds: first push, no-op push (same image again), push after changing one file in the top layer.
Each side pushes to its own embedded registry behind a byte-counting TCP proxy, so "bytes sent" counts what
each client really put on the wire (headers included). Target: the no-op push sends 0 blob bytes and is at
least 5x faster than `docker push`.

    python bench/push.py                  # tiny local test images (busybox + 20 MB payload)
    python bench/push.py --image my/img:1 # an image already in the local engine as the base
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from registry_sync.publish.push import push_archive
from registry_sync.registry.client import RegistryClient
from registry_sync.registry.server import ServerSettings, start_registry, stop_registry

DOCKER = "/usr/bin/docker"
BASE_TAG = "strata-bench/push-base:1"


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


def docker(*args: str, stdin: bytes | None = None) -> str:
    done = subprocess.run([DOCKER, *args], input=stdin, capture_output=True, check=False)
    if done.returncode != 0:
        sys.exit(f"bench: docker {' '.join(args)} failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout.decode().strip()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def build_base(work: Path, payload_mb: int) -> str:
    busybox = shutil.which("busybox")
    if busybox is None:
        sys.exit("bench: busybox is not installed (apt-get install -y busybox-static)")
    rootfs = work / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy(busybox, rootfs / "bin" / "busybox")
    tar = subprocess.run(["tar", "-C", str(rootfs), "-c", "."], capture_output=True, check=True).stdout
    docker("import", "-", BASE_TAG + "-rootfs", stdin=tar)
    context = work / "base"
    context.mkdir()
    (context / "payload").write_bytes(os.urandom(payload_mb << 20))
    (context / "Dockerfile").write_text(f"FROM {BASE_TAG}-rootfs\nCOPY payload /payload\n")
    docker("build", "-q", "-t", BASE_TAG, str(context))
    return BASE_TAG


def build_variant(work: Path, base: str, marker: str, tag: str) -> None:
    context = work / f"ctx-{marker}"
    context.mkdir()
    (context / "marker").write_text(marker)
    (context / "Dockerfile").write_text(f"FROM {base}\nCOPY marker /strata-bench-marker\n")
    docker("build", "-q", "-t", tag, str(context))


@dataclass
class Round:
    name: str
    strata_seconds: float
    strata_bytes: int
    strata_blob_bytes: int
    docker_seconds: float
    docker_bytes: int


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image", help="local image to use as the base (default: tiny generated image)")
    parser.add_argument("--payload-mb", type=int, default=20, help="size of the generated payload layer")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="strata-bench-push-"))
    created: list[str] = []
    registries: list[ServerSettings] = []
    proxies: list[CountingProxy] = []
    try:
        base = args.image or build_base(work, args.payload_mb)
        if not args.image:
            created += [BASE_TAG, BASE_TAG + "-rootfs"]
        for side in ("strata", "docker"):
            settings = ServerSettings(data_dir=work / f"registry-{side}", port=free_port())
            start_registry(settings)
            registries.append(settings)
            proxies.append(CountingProxy(settings.port))
        strata_proxy, docker_proxy = proxies
        rounds = []
        cache = work / "cache"
        client = RegistryClient(f"127.0.0.1:{strata_proxy.port}")
        for name, marker, version in (
            ("first push", "1", "1.0.0"),
            ("no-op push", "1", "1.0.0"),
            ("one file changed", "2", "2.0.0"),
        ):
            local = f"strata-bench/push-app:{marker}"
            if local not in created:
                build_variant(work, base, marker, local)
                created.append(local)
            archive = work / f"app-{marker}.tar"
            if not archive.exists():
                docker("save", "-o", str(archive), local)  # the build hands Strata an archive anyway

            strata_proxy.take()
            started = time.perf_counter()
            result = push_archive(client, archive, "bench/app", [version], cache_dir=cache)
            strata_seconds = time.perf_counter() - started
            strata_bytes = strata_proxy.take()

            remote = f"127.0.0.1:{docker_proxy.port}/bench/app:{version}"
            docker("tag", local, remote)
            created.append(remote)
            docker_proxy.take()
            started = time.perf_counter()
            docker("push", remote)
            docker_seconds = time.perf_counter() - started
            rounds.append(
                Round(
                    name,
                    strata_seconds,
                    strata_bytes,
                    result.bytes_uploaded,
                    docker_seconds,
                    docker_proxy.take(),
                )
            )
        client.close()
        print(
            f"{'round':<18}{'strata s':>10}{'docker s':>10}{'speedup':>9}{'strata bytes':>14}"
            f"{'(blobs)':>12}{'docker bytes':>14}"
        )
        for r in rounds:
            print(
                f"{r.name:<18}{r.strata_seconds:>10.3f}{r.docker_seconds:>10.3f}"
                f"{r.docker_seconds / r.strata_seconds:>8.1f}x{r.strata_bytes:>14}{r.strata_blob_bytes:>12}"
                f"{r.docker_bytes:>14}"
            )
        noop = rounds[1]
        ok = noop.strata_blob_bytes == 0 and noop.docker_seconds / noop.strata_seconds >= 5
        print(f"target (no-op: 0 blob bytes, >= 5x faster than docker push): {'met' if ok else 'NOT met'}")
        return 0 if ok else 1
    finally:
        for proxy in proxies:
            proxy.close()
        for settings in registries:
            stop_registry(settings.data_dir)
        for ref in reversed(created):
            subprocess.run([DOCKER, "rmi", ref], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
