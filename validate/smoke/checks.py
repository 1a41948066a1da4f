"""Smoke checks that run inside an image, plus the pure comparisons the host shares with them.

Runs on the image's Python (3.9 or 3.11) with the stdlib only; TensorFlow and numpy are imported inside the
checks that need them. Copied into a container beside `gpu_checks.py` and `check_result.py` and started as

    python checks.py /tmp/strata-smoke/context.json

It prints one `STRATA-SMOKE-PLAN [names...]` line, then one `STRATA-SMOKE-RESULT {json}` line per check as
soon as the check ends, so a run killed by a timeout still reports what finished.
"""

from __future__ import annotations

import ctypes
import fnmatch
import functools
import glob
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

if __package__:  # imported from the host's validate.smoke package
    from validate.smoke import gpu_checks
    from validate.smoke.check_result import (
        FAIL,
        PLAN_MARKER,
        RESULT_MARKER,
        CheckResult,
        run_guarded,
    )
else:  # run as a script inside an image (`python -I`: its folder is not on sys.path): the others sit beside it
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import gpu_checks  # type: ignore[no-redef]
    from check_result import (  # type: ignore[no-redef]
        FAIL,
        PLAN_MARKER,
        RESULT_MARKER,
        CheckResult,
        run_guarded,
    )

LABEL_PREFIX = "io.strata."
REQUIRED_LABELS = ("tf", "python", "flavor", "layer", "cell", "content-hash")
USER_UID = 1000


@dataclass(frozen=True)
class SmokeContext:
    """What the host tells the in-image checks: the image's labels and tag, and what was asked of the run."""

    image: str
    labels: dict[str, str] = field(default_factory=dict)
    workdir: str = ""
    expect_gpu: bool = False
    gpus: str | None = None  # "all", "2" or None when no GPU was requested
    gpu_request_error: str | None = None  # the engine's answer when it could not give GPUs
    plan_min_driver: str | None = (
        None  # the minimum driver the plan computed for the image, when the caller knows
    )

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SmokeContext:
        data = json.loads(text)
        return cls(
            image=data["image"],
            labels=dict(data.get("labels") or {}),
            workdir=data.get("workdir") or "",
            expect_gpu=bool(data.get("expect_gpu")),
            gpus=data.get("gpus"),
            gpu_request_error=data.get("gpu_request_error"),
            plan_min_driver=data.get("plan_min_driver"),
        )

    def label(self, key: str) -> str | None:
        return self.labels.get(LABEL_PREFIX + key)

    @property
    def tag_facts(self) -> dict[str, str]:
        return parse_tag(self.image)


# ---------------------------------------------------------------- pure: tags, labels, versions


def parse_tag(reference: str) -> dict[str, str]:
    """Facts a Strata tag spells out.

    >>> parse_tag("127.0.0.1:5000/strata/tensorflow:2.13.1-gpu-cuda11.8-cudnn8.6-py3.11-bookworm")
    {'tf': '2.13.1', 'flavor': 'gpu', 'cuda': '11.8', 'cudnn': '8.6', 'python': '3.11', 'os': 'bookworm'}
    """
    last = reference.rsplit("/", 1)[-1]
    last = last.split("@", 1)[0]
    if ":" not in last:
        return {}
    tag = last.split(":", 1)[1]
    facts: dict[str, str] = {}
    for i, token in enumerate(tag.split("-")):
        if i == 0 and re.fullmatch(r"\d+\.\d+(\.\d+)?", token):
            facts["tf"] = token
        elif token in ("cpu", "gpu"):
            facts["flavor"] = token
        elif re.fullmatch(r"cudnn\d+(\.\d+)*", token):
            facts["cudnn"] = token[len("cudnn") :]
        elif re.fullmatch(r"cuda\d+(\.\d+)*", token):
            facts["cuda"] = token[len("cuda") :]
        elif re.fullmatch(r"py\d+\.\d+", token):
            facts["python"] = token[len("py") :]
        elif re.fullmatch(r"[a-z]+", token) and i > 0:
            facts["os"] = token
    return facts


def version_parts(version: str) -> list[str]:
    """Dotted components; TensorFlow's Windows-style `64_118` build numbers read as `11.8`."""
    version = version.strip()
    m = re.fullmatch(r"64_(\d+)(\d)", version)
    if m:
        return [str(int(m.group(1))), m.group(2)]
    return [p for p in re.split(r"[.]", version) if p]


def versions_agree(claimed: str, found: str) -> bool:
    """True when the components both spell out are equal: `8.6` agrees with `8` and `8.6.0`, not `8.9`."""
    a, b = version_parts(claimed), version_parts(found)
    n = min(len(a), len(b))
    return n > 0 and a[:n] == b[:n]


def claims_for(ctx: SmokeContext, key: str) -> dict[str, str]:
    """Where a fact is claimed, by source: `{"label io.strata.tf": "2.13.1", "tag": "2.13.1"}`."""
    claims: dict[str, str] = {}
    value = ctx.label(key)
    if value:
        claims["label " + LABEL_PREFIX + key] = value
    tag_value = ctx.tag_facts.get(key)
    if tag_value:
        claims["tag"] = tag_value
    return claims


def check_claims(name: str, found: str, claims: dict[str, str], exact: bool = False) -> CheckResult:
    """Compare a found value with every claim of it; fail naming each source that disagrees."""
    if not claims:
        return CheckResult.not_run(name, f"neither labels nor tag claim a value (found {found})")
    wrong = {
        source: value
        for source, value in claims.items()
        if (value != found if exact else not versions_agree(value, found))
    }
    if wrong:
        expected = ", ".join(f"{v} ({s})" for s, v in sorted(wrong.items()))
        return CheckResult.failed(name, expected, found)
    return CheckResult.passed(name, "{} agrees with {}".format(found, ", ".join(sorted(claims))), found)


def labels_match_tag(labels: dict[str, str], reference: str) -> list[CheckResult]:
    """Host-side: required labels exist, and every fact the tag spells agrees with its label."""
    missing = [LABEL_PREFIX + k for k in REQUIRED_LABELS if not labels.get(LABEL_PREFIX + k)]
    present = (
        CheckResult.failed("labels-present", "labels " + ", ".join(missing), "none of them")
        if missing
        else CheckResult.passed("labels-present", f"{len(REQUIRED_LABELS)} strata labels")
    )
    facts = parse_tag(reference)
    if not facts:
        return [present, CheckResult.not_run("labels-match-tag", f"tag of {reference} spells no facts")]
    wrong = []
    for key, tag_value in sorted(facts.items()):
        label = labels.get(LABEL_PREFIX + key)
        if key == "os" or label is None:
            continue
        same = label == tag_value if key == "flavor" else versions_agree(label, tag_value)
        if not same:
            wrong.append((key, label, tag_value))
    if wrong:
        expected = ", ".join(f"{k}={t} (tag)" for k, _, t in wrong)
        found = ", ".join(f"{LABEL_PREFIX}{k}={lab}" for k, lab, _ in wrong)
        return [present, CheckResult.failed("labels-match-tag", expected, found)]
    return [present, CheckResult.passed("labels-match-tag", "tag facts: " + ", ".join(sorted(facts)))]


def decode_cudart_version(value: int) -> str:
    """cudaRuntimeGetVersion: 11080 -> `11.8`."""
    return f"{value // 1000}.{(value % 1000) // 10}"


def decode_cudnn_version(value: int) -> str:
    """cudnnGetVersion: 8600 -> `8.6.0` (cuDNN 8: M*1000+m*100+p); 90100 -> `9.1.0` (cuDNN 9: M*10000+m*100+p)."""
    if value >= 90000:
        return f"{value // 10000}.{(value % 10000) // 100}.{value % 100}"
    return f"{value // 1000}.{(value % 1000) // 100}.{value % 100}"


@dataclass(frozen=True)
class Soname:
    """A library TensorFlow dlopens: `required` ones must load; the others serve one feature and may be absent."""

    short: str
    soname: str
    why: str
    required: bool = True


# The CUDA version each TensorFlow release was built with: its dso_loader asks for libcupti.so.<that version>.
TF_BUILD_CUDA = {"2.10": "11.2", "2.13": "11.8"}
# cuDNN 8 is a front library that dlopens these itself (sub-libraries by API family).
CUDNN8_SUBLIBRARIES = ("ops_infer", "ops_train", "cnn_infer", "cnn_train", "adv_infer", "adv_train")


def tf_minor_of(tf: str) -> str:
    parts = version_parts(tf)
    return ".".join(parts[:2])


def cuda_sonames(cuda: str, cudnn: str, tf: str = "") -> list[Soname]:
    """Every CUDA library TensorFlow dlopens, for a TF, CUDA and cuDNN version.

    Read from TensorFlow's dso_loader and dlopen checker (TryDlopenCUDALibraries: cudart, cuBLAS, cuBLASLt, cuFFT,
    cuRAND, cuSOLVER, cuSPARSE, cuDNN; TF refuses the GPU when one fails) and confirmed on the 2.10.1 and 2.13.1
    wheels' binaries; CUPTI only for the profiler. NCCL is linked statically into both, so libnccl is not here.

    >>> [s.soname for s in cuda_sonames("11.8", "8.6", "2.13.1")][:2]
    ['libcudart.so.11.0', 'libcublasLt.so.11']
    """
    cuda_major = version_parts(cuda)[0] if version_parts(cuda) else "11"
    cudnn_major = version_parts(cudnn)[0] if version_parts(cudnn) else "8"
    checker = "TensorFlow's GPU start-up (TryDlopenCUDALibraries)"
    if cuda_major == "11":
        names = [
            ("libcudart", "libcudart.so.11.0"),
            ("libcublasLt", "libcublasLt.so.11"),
            ("libcublas", "libcublas.so.11"),
            ("libcufft", "libcufft.so.10"),
            ("libcurand", "libcurand.so.10"),
            ("libcusolver", "libcusolver.so.11"),
            ("libcusparse", "libcusparse.so.11"),
        ]
    else:
        names = [
            ("libcudart", "libcudart.so." + cuda_major),
            ("libcublasLt", "libcublasLt.so." + cuda_major),
            ("libcublas", "libcublas.so." + cuda_major),
            ("libcufft", "libcufft.so.11"),
            ("libcurand", "libcurand.so.10"),
            ("libcusolver", "libcusolver.so.11"),
            ("libcusparse", "libcusparse.so." + cuda_major),
        ]
    out = [Soname(short, soname, checker) for short, soname in names]
    out.append(Soname("libcudnn", "libcudnn.so." + cudnn_major, checker))
    if cudnn_major == "8":
        out += [
            Soname("libcudnn_" + sub, f"libcudnn_{sub}.so.8", "libcudnn.so.8 (its sub-libraries)")
            for sub in CUDNN8_SUBLIBRARIES
        ]
    built_with = TF_BUILD_CUDA.get(tf_minor_of(tf)) if tf else None
    if built_with:
        # TensorFlow asks for the CUPTI of the CUDA it was built with (then plain libcupti.so), for the profiler.
        out.append(
            Soname(
                "libcupti",
                "libcupti.so." + built_with,
                "the TensorFlow profiler (GPU tracing)",
                required=versions_agree(built_with, cuda),
            )
        )
    return out


def loss_went_down(losses: list[float]) -> bool:
    """True when every loss is finite and the last is below the first."""
    return len(losses) >= 2 and all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]


def env_mismatches(promised: dict[str, str], actual: dict[str, str]) -> list[tuple[str, str, str | None]]:
    """(name, promised, actual) for each promised variable that is unset or differs."""
    return [(k, v, actual.get(k)) for k, v in sorted(promised.items()) if actual.get(k) != v]


def parse_promised_env(raw: str | None) -> dict[str, str]:
    """The `io.strata.env` label: a JSON object of string values. Raises ValueError otherwise."""
    if raw is None:
        return {}
    data = json.loads(raw)
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"io.strata.env is not a JSON object of strings: {raw[:200]}")
    return {str(k): v for k, v in data.items()}


# ---------------------------------------------------------------- in-image checks

Check = Callable[["Session"], "list[CheckResult]"]


class Session:
    """State shared by checks in one run: the context and TensorFlow once it imported."""

    def __init__(self, ctx: SmokeContext) -> None:
        self.ctx = ctx
        self.tf: Any = None
        self.tf_error: str | None = None
        self.loaded_libs: dict[str, Any] = {}

    @property
    def flavor(self) -> str:
        return self.ctx.label("flavor") or self.ctx.tag_facts.get("flavor") or "cpu"

    def tf_missing(self, name: str) -> CheckResult | None:
        if self.tf is None:
            return CheckResult.not_run(name, "tensorflow did not import (see tf-import)")
        return None


def check_python_version(s: Session) -> list[CheckResult]:
    found = f"{sys.version_info[0]}.{sys.version_info[1]}"
    return [check_claims("python-version", found, claims_for(s.ctx, "python"))]


def check_tf_import(s: Session) -> list[CheckResult]:
    try:
        import tensorflow as tf
    except Exception as exc:  # noqa: BLE001 - any import failure is the finding
        s.tf_error = f"{type(exc).__name__}: {exc}"
        return [CheckResult.failed("tf-import", "import tensorflow succeeds", s.tf_error)]
    s.tf = tf
    return [CheckResult.passed("tf-import", f"tensorflow {tf.__version__} from {tf.__file__}")]


def check_tf_version(s: Session) -> list[CheckResult]:
    missing = s.tf_missing("tf-version")
    if missing:
        return [missing]
    return [check_claims("tf-version", str(s.tf.__version__), claims_for(s.ctx, "tf"), exact=True)]


def check_tf_build_info(s: Session) -> list[CheckResult]:
    names = ["tf-build-cuda", "tf-build-cuda-version", "tf-build-cudnn-version"]
    missing = s.tf_missing("tf-build-info")
    if missing:
        return [CheckResult.not_run(n, missing.detail) for n in names]
    info = dict(s.tf.sysconfig.get_build_info())
    is_cuda = bool(info.get("is_cuda_build"))
    want_cuda = s.flavor == "gpu"
    results = [
        CheckResult.passed(names[0], f"is_cuda_build={is_cuda} for flavor {s.flavor}")
        if is_cuda == want_cuda
        else CheckResult.failed(
            names[0],
            f"is_cuda_build={want_cuda} (flavor {s.flavor})",
            f"is_cuda_build={is_cuda}",
        )
    ]
    for name, key, claim in ((names[1], "cuda_version", "cuda"), (names[2], "cudnn_version", "cudnn")):
        if not want_cuda:
            results.append(CheckResult.not_run(name, f"flavor {s.flavor} has no CUDA"))
        elif not info.get(key):
            results.append(CheckResult.failed(name, f"build info {key}", f"none (is_cuda_build={is_cuda})"))
        else:
            results.append(check_claims(name, str(info[key]), claims_for(s.ctx, claim)))
    return results


def library_dirs() -> list[str]:
    return [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]


def session_sonames(ctx: SmokeContext) -> list[Soname]:
    return cuda_sonames(ctx.label("cuda") or "11", ctx.label("cudnn") or "8", ctx.label("tf") or "")


def check_cuda_libraries(s: Session) -> list[CheckResult]:
    """dlopen every library TensorFlow dlopens: needs no GPU and no driver (they are user-space libraries)."""
    sonames = session_sonames(s.ctx)
    if s.flavor != "gpu":
        return [
            CheckResult.not_run("cuda-lib:" + lib.short, f"flavor {s.flavor} has no CUDA") for lib in sonames
        ]
    results = []
    path = os.environ.get("LD_LIBRARY_PATH", "")
    for lib in sonames:
        name = "cuda-lib:" + lib.short
        where = [
            os.path.join(d, lib.soname) for d in library_dirs() if os.path.exists(os.path.join(d, lib.soname))
        ]
        try:
            s.loaded_libs[lib.short] = ctypes.CDLL(lib.soname, mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:
            if not lib.required:
                results.append(
                    CheckResult.not_run(name, f"{lib.soname} (for {lib.why} only) does not load: {exc}")
                )
                continue
            results.append(
                CheckResult.failed(
                    name,
                    "{} loadable with LD_LIBRARY_PATH={} (dlopened by {})".format(
                        lib.soname, path or "(unset)", lib.why
                    ),
                    str(exc),
                )
            )
            continue
        results.append(
            CheckResult.passed(
                name,
                "{} loaded from {}".format(lib.soname, where[0] if where else "loader default path"),
                found=where[0] if where else lib.soname,
            )
        )
    return results


PRUNED_LABEL = (
    "pruned."  # io.strata.pruned.<layer>: JSON list of what that layer dropped (matrix.yaml `prune`)
)


def pruned_patterns(ctx: SmokeContext) -> dict[str, list[str]]:
    """layer -> the patterns it pruned, from the io.strata.pruned.<layer> labels. Raises ValueError if malformed."""
    out: dict[str, list[str]] = {}
    prefix = LABEL_PREFIX + PRUNED_LABEL
    for key, raw in sorted(ctx.labels.items()):
        if key.startswith(prefix):
            data = json.loads(raw)
            if not isinstance(data, list) or not all(isinstance(p, str) for p in data):
                raise ValueError(f"{key} is not a JSON list of strings: {raw[:200]}")
            out[key[len(prefix) :]] = list(data)
    return out


def matching_paths(root: str, patterns: list[str]) -> list[str]:
    """Paths under `root` (relative) that a pattern matches the way `find -path` does (a '*' crosses '/')."""
    hits = []
    for here, dirs, files in os.walk(root):
        for entry in sorted(dirs) + sorted(files):
            rel = os.path.relpath(os.path.join(here, entry), root)
            if any(fnmatch.fnmatchcase(rel, p) for p in patterns):
                hits.append(rel)
    return hits


def layer_site_dirs(layer: str) -> list[str]:
    """The site-packages of a Strata layer prefix (<prefix>/<layer>/lib/pythonX.Y/site-packages) on sys.path."""
    shape = re.compile(r".*/" + re.escape(layer) + r"/lib/python[0-9.]+/site-packages/?")
    return [p for p in sys.path if shape.fullmatch(p) and os.path.isdir(p)]


def check_pruned_absent(s: Session) -> list[CheckResult]:
    """What the matrix said a layer drops is not in the image (while cuda-lib:* proves what TF loads still is)."""
    try:
        pruned = pruned_patterns(s.ctx)
    except ValueError as exc:
        return [CheckResult.failed("pruned-absent", "io.strata.pruned.* labels as JSON lists", str(exc))]
    if not pruned:
        return [
            CheckResult.not_run("pruned-absent", "the image prunes nothing (no io.strata.pruned.* label)")
        ]
    present, missing_dirs, counted = [], [], 0
    for layer, patterns in sorted(pruned.items()):
        roots = layer_site_dirs(layer)
        if not roots:
            missing_dirs.append(layer)
        for root in roots:
            present += [os.path.join(root, hit) for hit in matching_paths(root, patterns)]
        counted += len(patterns)
    if missing_dirs:
        return [
            CheckResult.failed(
                "pruned-absent",
                "the site-packages of layer(s) " + ", ".join(missing_dirs) + " on sys.path",
                "none on " + os.pathsep.join(sys.path),
            )
        ]
    if present:
        return [CheckResult.failed("pruned-absent", "no file the matrix prunes", " ".join(present[:20]))]
    layers = ", ".join(sorted(pruned))
    return [CheckResult.passed("pruned-absent", f"none of {counted} pruned patterns present ({layers})")]


# NVIDIA's CUDA minor-version compatibility: the oldest driver that runs any runtime of a CUDA major version.
CUDA_COMPAT_DRIVER = {"11": "450.80.02", "12": "525.60.13"}


def require_cuda_value(cuda: str, min_driver: str) -> str:
    """The NVIDIA_REQUIRE_CUDA the hermetic cuda layer sets (layers/cuda/Dockerfile.j2)."""
    return f"cuda>={cuda} driver>={min_driver}"


def driver_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"[0-9]+", version))


def check_driver_requirement(s: Session) -> list[CheckResult]:
    """NVIDIA_REQUIRE_CUDA and io.strata.min-driver say the same driver, the plan's, and no older than CUDA needs."""
    name = "cuda-driver-requirement"
    if s.flavor != "gpu":
        return [CheckResult.not_run(name, f"flavor {s.flavor} has no CUDA")]
    min_driver, cuda = s.ctx.label("min-driver"), s.ctx.label("cuda")
    if not min_driver:
        if s.ctx.label("profile") == "hermetic":
            return [CheckResult.failed(name, "label io.strata.min-driver (hermetic cuda layer)", "none")]
        return [
            CheckResult.not_run(name, "no hermetic cuda layer: the CUDA base image sets its own requirement")
        ]
    if not cuda:
        return [CheckResult.failed(name, "label io.strata.cuda", "none")]
    want = require_cuda_value(cuda, min_driver)
    found = os.environ.get("NVIDIA_REQUIRE_CUDA")
    wrong = []
    if found != want:
        wrong.append((f"NVIDIA_REQUIRE_CUDA={want}", f"NVIDIA_REQUIRE_CUDA={found}"))
    if s.ctx.plan_min_driver and s.ctx.plan_min_driver != min_driver:
        wrong.append(
            (
                f"io.strata.min-driver={s.ctx.plan_min_driver} (the plan)",
                "io.strata.min-driver=" + min_driver,
            )
        )
    floor = CUDA_COMPAT_DRIVER.get(version_parts(cuda)[0] if version_parts(cuda) else "")
    if floor and driver_tuple(min_driver) < driver_tuple(floor):
        wrong.append((f"a driver >= {floor} (CUDA {cuda} needs it)", "min-driver " + min_driver))
    if wrong:
        return [CheckResult.failed(name, "; ".join(w for w, _ in wrong), "; ".join(f for _, f in wrong))]
    checked = "the plan, " if s.ctx.plan_min_driver else ""
    return [CheckResult.passed(name, f"{want} agrees with the label, {checked}CUDA {cuda}'s floor", want)]


CUDA_ERROR_INSUFFICIENT_DRIVER = 35  # cudaRuntimeGetVersion answers only once libcuda.so.1 (the driver) loads


class LibraryStatusError(OSError):
    def __init__(self, symbol: str, status: int) -> None:
        super().__init__(f"{symbol} returned status {status}")
        self.status = status


def _ask_version(lib: Any, symbol: str, by_pointer: bool) -> int:
    fn = getattr(lib, symbol)
    if by_pointer:
        out = ctypes.c_int(0)
        status = fn(ctypes.byref(out))
        if status != 0:
            raise LibraryStatusError(symbol, status)
        return int(out.value)
    fn.restype = ctypes.c_size_t
    return int(fn())


def driver_loads() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def check_cuda_versions(s: Session) -> list[CheckResult]:
    """Ask each library its own version; none of these calls needs a device (cudart needs the driver)."""
    asks = [
        ("cuda-version:cudart", "libcudart", "cudaRuntimeGetVersion", True, decode_cudart_version, "cuda"),
        ("cuda-version:cudnn", "libcudnn", "cudnnGetVersion", False, decode_cudnn_version, "cudnn"),
    ]
    results = []
    for name, short, symbol, by_pointer, decode, claim in asks:
        if s.flavor != "gpu":
            results.append(CheckResult.not_run(name, f"flavor {s.flavor} has no CUDA"))
            continue
        lib = s.loaded_libs.get(short)
        if lib is None:
            results.append(CheckResult.not_run(name, f"{short} did not load (see cuda-lib:{short})"))
            continue
        try:
            found = decode(_ask_version(lib, symbol, by_pointer))
        except LibraryStatusError as exc:
            if exc.status == CUDA_ERROR_INSUFFICIENT_DRIVER and not driver_loads():
                reason = f"{symbol} needs the CUDA driver (libcuda.so.1), which this container lacks ({exc})"
                results.append(
                    CheckResult.failed(name, "the CUDA driver (--expect-gpu)", reason)
                    if s.ctx.expect_gpu
                    else CheckResult.not_run(name, reason)
                )
            else:
                results.append(CheckResult.failed(name, f"{symbol}() answers", str(exc)))
            continue
        except (OSError, AttributeError) as exc:
            results.append(CheckResult.failed(name, f"{symbol}() answers", str(exc)))
            continue
        if claim is None:
            results.append(CheckResult.passed(name, f"{short} reports {found} (no label claims it)", found))
        else:
            results.append(check_claims(name, found, claims_for(s.ctx, claim)))
    return results


# Which label each NVIDIA wheel's version must agree with.
CUDA_WHEEL_CLAIMS = {
    "nvidia-cuda-runtime-cu11": "cuda",
    "nvidia-cuda-runtime-cu12": "cuda",
    "nvidia-cudnn-cu11": "cudnn",
    "nvidia-cudnn-cu12": "cudnn",
}


def cuda_wheel_versions() -> dict[str, str]:
    """Installed NVIDIA wheels that carry the CUDA and cuDNN versions: normalized name -> version."""
    from importlib import metadata

    found = {}
    for dist in metadata.distributions():
        name = re.sub(r"[-_.]+", "-", str(dist.metadata["Name"] or "")).lower()
        if name in CUDA_WHEEL_CLAIMS:
            found[name] = str(dist.version)
    return found


def check_cuda_wheels(s: Session) -> list[CheckResult]:
    """The NVIDIA wheels' own versions against the labels: works with no driver and no device."""
    if s.flavor != "gpu":
        return [CheckResult.not_run("cuda-wheels", f"flavor {s.flavor} has no CUDA")]
    wheels = cuda_wheel_versions()
    if not wheels:
        return [CheckResult.not_run("cuda-wheels", "no nvidia-cuda-runtime/cudnn wheels installed")]
    outcomes = [
        check_claims("cuda-wheels", version, claims_for(s.ctx, CUDA_WHEEL_CLAIMS[name]))
        for name, version in sorted(wheels.items())
    ]
    failures = [o for o in outcomes if o.status == FAIL]
    shown = ", ".join(f"{n} {v}" for n, v in sorted(wheels.items()))
    if failures:
        return [
            CheckResult.failed(
                "cuda-wheels",
                "; ".join(o.expected or "" for o in failures),
                "; ".join(o.found or "" for o in failures),
            )
        ]
    return [CheckResult.passed("cuda-wheels", shown + " agree with the labels", shown)]


def site_packages_dirs() -> list[str]:
    return [p for p in sys.path if p.endswith("site-packages") and os.path.isdir(p)]


def find_xla_tools() -> tuple[str | None, str | None]:
    """(ptxas path, libdevice path) where XLA looks: PATH, XLA_FLAGS' data dir, CUDA dirs, nvidia wheels."""
    ptxas = shutil.which("ptxas")
    roots = []
    m = re.search(r"--xla_gpu_cuda_data_dir=(\S+)", os.environ.get("XLA_FLAGS", ""))
    if m:
        roots.append(m.group(1))
    roots += [os.environ.get("CUDA_DIR", ""), "/usr/local/cuda"]
    roots += [os.path.join(sp, "nvidia", "cuda_nvcc") for sp in site_packages_dirs()]
    libdevice = None
    for root in [r for r in roots if r]:
        if ptxas is None and os.access(os.path.join(root, "bin", "ptxas"), os.X_OK):
            ptxas = os.path.join(root, "bin", "ptxas")
        hits = sorted(glob.glob(os.path.join(root, "nvvm", "libdevice", "libdevice*.bc")))
        if libdevice is None and hits:
            libdevice = hits[0]
    return ptxas, libdevice


def check_xla_gpu_tools(s: Session) -> list[CheckResult]:
    if s.ctx.label("xla-gpu") != "true":
        return [CheckResult.not_run("xla-gpu-tools", 'io.strata.xla-gpu is not "true"; nothing promised')]
    ptxas, libdevice = find_xla_tools()
    if ptxas and libdevice:
        return [CheckResult.passed("xla-gpu-tools", f"ptxas {ptxas}, libdevice {libdevice}")]
    return [
        CheckResult.failed(
            "xla-gpu-tools",
            "ptxas and libdevice (io.strata.xla-gpu=true)",
            "ptxas={}, libdevice={}".format(ptxas or "missing", libdevice or "missing"),
        )
    ]


def check_pip(s: Session) -> list[CheckResult]:
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "check"],
            check=False,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=300,
            env=dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1"),
        )
    except subprocess.TimeoutExpired:
        return [CheckResult.failed("pip-check", "pip check within 300 s", "timed out")]
    out = proc.stdout.strip()
    if proc.returncode != 0 and "No module named pip" in out:
        return [CheckResult.not_run("pip-check", f"pip is not installed for {sys.executable}")]
    if proc.returncode == 0:
        return [CheckResult.passed("pip-check", out.splitlines()[-1] if out else "clean")]
    return [CheckResult.failed("pip-check", "no broken requirements", " | ".join(out.splitlines()[:20]))]


def check_env(s: Session) -> list[CheckResult]:
    raw = s.ctx.label("env")
    if raw is None:
        return [CheckResult.not_run("env-promised", "image has no io.strata.env label")]
    try:
        promised = parse_promised_env(raw)
    except ValueError as exc:
        return [CheckResult.failed("env-promised", "io.strata.env a JSON object of strings", str(exc))]
    wrong = env_mismatches(promised, dict(os.environ))
    if wrong:
        return [
            CheckResult.failed(
                "env-promised",
                ", ".join(f"{k}={v}" for k, v, _ in wrong),
                ", ".join("{}={}".format(k, "(unset)" if a is None else a) for k, _, a in wrong),
            )
        ]
    return [CheckResult.passed("env-promised", f"{len(promised)} variables as promised")]


def check_user_layer(s: Session) -> list[CheckResult]:
    layer = s.ctx.label("layer")
    if layer != "user":
        reason = f"layer is {layer!r}, not 'user'"
        return [CheckResult.not_run("user-uid", reason), CheckResult.not_run("workdir-writable", reason)]
    uid = os.getuid()
    results = [
        CheckResult.passed("user-uid", f"runs as uid {uid}")
        if uid == USER_UID
        else CheckResult.failed("user-uid", f"uid {USER_UID}", f"uid {uid}")
    ]
    workdir = s.ctx.workdir or os.getcwd()
    try:
        with tempfile.NamedTemporaryFile(dir=workdir, prefix=".strata-smoke-"):
            pass
    except OSError as exc:
        results.append(CheckResult.failed("workdir-writable", f"{workdir} writable by uid {uid}", str(exc)))
    else:
        results.append(CheckResult.passed("workdir-writable", f"{workdir} writable by uid {uid}"))
    return results


def check_keras_train(s: Session) -> list[CheckResult]:
    missing = s.tf_missing("keras-train-cpu")
    if missing:
        return [missing]
    import numpy as np

    tf = s.tf
    tf.keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype("float32")
    y = (x @ rng.normal(size=(8, 1)) + 0.5).astype("float32")
    with tf.device("/CPU:0"):
        model = tf.keras.Sequential(
            [
                tf.keras.layers.Dense(16, activation="relu", input_shape=(8,)),
                tf.keras.layers.Dense(1),
            ]
        )
        model.compile(optimizer=tf.keras.optimizers.SGD(learning_rate=0.05), loss="mse")
        history = model.fit(x, y, batch_size=32, epochs=4, verbose=0, shuffle=False)
    losses = [float(v) for v in history.history["loss"]]
    shown = ", ".join(f"{v:.4g}" for v in losses)
    if loss_went_down(losses):
        return [CheckResult.passed("keras-train-cpu", "loss per epoch: " + shown)]
    return [CheckResult.failed("keras-train-cpu", "finite loss that goes down over 4 epochs", shown)]


CHECKS: list[tuple[tuple[str, ...], Check]] = [
    (("python-version",), check_python_version),
    (("tf-import",), check_tf_import),
    (("tf-version",), check_tf_version),
    (("tf-build-cuda", "tf-build-cuda-version", "tf-build-cudnn-version"), check_tf_build_info),
    ((), check_cuda_libraries),  # names depend on the CUDA version; see planned_names
    (("cuda-version:cudart", "cuda-version:cudnn"), check_cuda_versions),
    (("pruned-absent",), check_pruned_absent),
    (("cuda-driver-requirement",), check_driver_requirement),
    (("cuda-wheels",), check_cuda_wheels),
    (("xla-gpu-tools",), check_xla_gpu_tools),
    (("pip-check",), check_pip),
    (("env-promised",), check_env),
    (("user-uid", "workdir-writable"), check_user_layer),
    (("keras-train-cpu",), check_keras_train),
]


def planned_names(ctx: SmokeContext) -> list[str]:
    """Every check name this run will report, so the host can fail the missing ones after a timeout."""
    from_gpu = gpu_checks.GPU_CHECK_NAMES
    names: list[str] = []
    for declared, fn in CHECKS:
        if fn is check_cuda_libraries:
            names += ["cuda-lib:" + lib.short for lib in session_sonames(ctx)]
        names += list(declared)
    return names + list(from_gpu)


def emit(result: CheckResult) -> None:
    # The leading newline keeps the marker at a line start even if a check printed a partial line.
    sys.stdout.write("\n" + RESULT_MARKER + json.dumps(result.to_dict(), sort_keys=True) + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: checks.py CONTEXT.json\n")
        return 2
    with open(argv[1]) as fh:
        ctx = SmokeContext.from_json(fh.read())
    sys.stdout.write(PLAN_MARKER + json.dumps(planned_names(ctx)) + "\n")
    sys.stdout.flush()
    session = Session(ctx)
    failed = False
    for declared, fn in CHECKS:
        names = declared or tuple("cuda-lib:" + lib.short for lib in session_sonames(ctx))
        for result in run_guarded(names, functools.partial(fn, session)):
            failed = failed or result.status == FAIL
            emit(result)
    for result in gpu_checks.run_gpu_checks(session):
        failed = failed or result.status == FAIL
        emit(result)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
