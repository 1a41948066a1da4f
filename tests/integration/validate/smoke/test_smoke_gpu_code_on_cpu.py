"""The GPU checks' TensorFlow code, run on two logical CPU devices inside a real image.

This proves the code is valid against the image's TensorFlow (mixed precision, XLA, MirroredStrategy
all-reduce) on a host with no GPU. It proves nothing about a GPU: `strata smoke --expect-gpu` on a GPU host
does that, and on this host the GPU checks report not-run (see test_smoke_good_image).
"""

from __future__ import annotations

import json
from dataclasses import replace

import docker
import pytest

from validate.container.runner import run_container
from validate.smoke import runner
from validate.smoke.check_result import PASS, CheckResult
from validate.smoke.checks import SmokeContext

pytestmark = pytest.mark.engine

SCRIPT = """
import json, sys
sys.path.insert(0, "/tmp/strata-smoke")
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import gpu_checks
for result in gpu_checks.device_workloads(tf, "CPU", 2):
    print("RESULT " + json.dumps(result.to_dict()), flush=True)
"""


def test_gpu_workload_code_runs_on_cpu_devices(
    docker_client: docker.DockerClient, smoke_good_image: str
) -> None:
    spec = replace(
        runner.check_spec(smoke_good_image, SmokeContext(image=smoke_good_image), timeout_s=600),
        command=["-c", SCRIPT],
        labels={"io.strata.smoke": "gpu-code-on-cpu"},
    )
    outcome = run_container(docker_client, spec)
    assert outcome.exit_code == 0, outcome.log[-3000:]
    out = outcome.stdout
    results = [
        CheckResult.from_dict(json.loads(x[len("RESULT ") :]))
        for x in out.splitlines()
        if x.startswith("RESULT ")
    ]
    assert [r.name for r in results] == [
        "gpu-matmul",
        "gpu-conv2d-mixed-float16",
        "gpu-conv2d-mixed-float16-xla",
        "gpu-mirrored-allreduce",
    ]
    assert all(r.status == PASS for r in results), [r.summary() for r in results]
    by_name = {r.name: r for r in results}
    assert "CPU:0" in by_name["gpu-conv2d-mixed-float16-xla"].detail
    assert by_name["gpu-mirrored-allreduce"].detail == "2 replica(s) agree on 3"
