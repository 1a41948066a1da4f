"""Smoke checks that run inside a built image and say plainly what passed, failed or could not run.

`checks.py` and `gpu_checks.py` are copied into a container at run time (never baked into an image) and run
there with the image's own Python (3.9 or 3.11), so they import only the stdlib, plus TensorFlow and numpy
where the image has them. The host side lives in `validate.smoke.runner` (Docker), `validate.smoke.results` (per-digest
store) and `validate.smoke.report` (table, JSON, JUnit).
"""
