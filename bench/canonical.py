"""Canonicalization throughput against the physical floor measured in the same run, and its peak memory.

Run: python bench/canonical.py [--image REF]      (default: the largest image in the local engine)

floor     = `docker save` of the image to a file + one sha256 pass over that file
canonical = `docker save` + canonicalize (stream every layer, sort, clamp, hash; uncompressed, as builds do)
Targets: canonical / floor <= 1.5, and peak RSS of the canonicalizing process < 512 MiB whatever the image size.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import docker  # noqa: E402

CHUNK = 1 << 20

# Runs in a child process so its peak RSS (ru_maxrss) is the canonicalizer's alone.
CHILD = """
import json, resource, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from builder.oci.canonical import CanonicalPolicy, canonicalize_archive
t0 = time.perf_counter()
image = canonicalize_archive(Path(sys.argv[2]), Path(sys.argv[3]), CanonicalPolicy(epoch=1700000000, compression="none"))
print(json.dumps({"seconds": time.perf_counter() - t0, "digest": image.config_digest,
                  "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def largest_image(client: docker.DockerClient) -> str:
    images = [i for i in client.images.list() if i.tags]
    if not images:
        raise SystemExit("bench/canonical.py: no tagged image in the engine; build one first (strata build)")
    best = max(images, key=lambda i: int(i.attrs.get("Size", 0)))
    return str(best.tags[0])


def save(client: docker.DockerClient, ref: str, path: Path) -> float:
    t0 = time.perf_counter()
    with open(path, "wb") as out:
        for chunk in client.images.get(ref).save(chunk_size=CHUNK, named=False):
            out.write(chunk)
    return time.perf_counter() - t0


def sha256_pass(path: Path) -> float:
    t0 = time.perf_counter()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image", help="image reference (default: the largest local image)")
    args = parser.parse_args()
    client = docker.from_env(timeout=3600)
    ref = args.image or largest_image(client)
    with tempfile.TemporaryDirectory(
        prefix="strata-bench-canonical-", dir=REPO / "build" if (REPO / "build").is_dir() else None
    ) as tmp:
        archive = Path(tmp) / "image.tar"
        size = 0
        # floor: save + sha256
        t_save = save(client, ref, archive)
        size = archive.stat().st_size
        t_hash = sha256_pass(archive)
        floor = t_save + t_hash
        # canonical: save again (same cache state) + canonicalize in a child process
        archive.unlink()
        t_save2 = save(client, ref, archive)
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(REPO), str(archive), str(Path(tmp) / "layout")],
            capture_output=True,
            text=True,
            check=True,
        )
        child = json.loads(proc.stdout.strip().splitlines()[-1])
        canonical = t_save2 + child["seconds"]
    mib = size / 2**20
    print(f"image {ref}: {mib:.0f} MiB uncompressed")
    print(f"{'phase':34} {'seconds':>8} {'MiB/s':>8}")
    print(f"{'floor: docker save + sha256':34} {floor:8.1f} {mib / floor:8.1f}")
    print(f"{'canonical: docker save + rewrite':34} {canonical:8.1f} {mib / canonical:8.1f}")
    print(f"ratio canonical / floor: {canonical / floor:.2f}  (target <= 1.5)")
    print(f"peak RSS of canonicalization: {child['max_rss_kib'] / 1024:.0f} MiB  (target < 512 MiB)")
    print(f"canonical config digest: {child['digest']}")


if __name__ == "__main__":
    main()
