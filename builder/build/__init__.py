"""Build orchestration: the plan's nodes built on the engine parents first (skipping what the engine or the
registry cache already has), canonicalized in worker processes, and `strata verify`'s two isolated rebuilds.

Owns: orchestrate.py (build_images, the DAG runner, the build session), verify.py, wheelserver.py (the loopback
wheelhouse builds install from). May import: builder.lock, builder.engine, builder.plan, builder.oci,
builder.matrix, builder.errors, builder.settings. The registry cache comes in as a RemoteCache callable.
"""
