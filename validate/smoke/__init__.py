"""Smoke checks that run inside a built image and say plainly what passed, failed or could not run.

In images: `checks.py`, `gpu_checks.py` and `check_result.py` are copied into a container at run time (never
baked into an image) and run there with the image's own Python (3.9 or 3.11): stdlib only, plus TensorFlow and
numpy where the image has them. On the host: runner.py (the engine side), results.py (per-digest store),
report.py (table, JSON, JUnit), secret_scan.py (secrets in any layer). May import: builder.engine, builder.oci,
builder.errors, builder.settings.
"""
