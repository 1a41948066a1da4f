"""Benchmarks: can two TensorFlow images be called equivalent per GPU-hour?

    workloads.py  runs INSIDE an image (stdlib + numpy + TF only), copied in per container; writes one JSON
    runner.py     one fresh container per repetition, interleaved across images in a seeded order
    metrics.py    samples/s per device, per device-hour, effective first hour (start-up charged), index
    stats.py      ratio of medians with a bootstrap CI (TOST at alpha 0.05); equivalent / regression /
                  improvement / inconclusive (with repetitions needed) / invalid (too noisy, never averaged)
    ledger.py     SQLite: every repetition with its environment, keyed by image id, device model, driver
    report.py     Markdown + HTML with PNG plots; compare_images() used by `strata bench compare`

On a CPU host shared with other work, run with `--threads 1 --cpuset N` and compare with `--statistic
best-window` or `best-step`: one TF thread pinned to one CPU avoids the one-core/two-core bimodality and
migrations, and the quietest 5-step stretch (or the fastest step, when the VM itself is time-sliced by its
hypervisor: `steal_fraction` in each result says so) of each container is far steadier than its overall median,
while a slowdown that stretches every step still shows in full.

`strata bench run | compare | history | report` are defined in cli/bench.py. May import: builder.engine,
builder.errors, builder.settings.
"""
