"""Validation that never passes silently: smoke checks (smoke/) and benchmarks (bench/) that run inside images,
and the known vulnerabilities of what images contain, from their locks (vulns/).

Code that runs inside images (smoke/checks.py, smoke/gpu_checks.py, smoke/check_result.py, bench/workloads.py)
uses the stdlib only and imports nothing of the project but each other.
"""
