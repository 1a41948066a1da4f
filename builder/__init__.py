"""Strata's build side, one sub-package per step of the data path, each importing only the ones below it.

    settings, errors, events   the run's frozen Settings (the only reader of the environment is the CLI), the
                               one-line errors users read, typed statuses and events
    state_lock                 one run at a time per state root and checkout (fcntl.flock, held by the CLI)
    matrix/                    matrix.yaml -> a validated, typed Matrix (schema, YAML positions, TF/CUDA rules)
    plan/                      Matrix -> Plan: the DAG of layer nodes, content hashes, tags, rendered Dockerfiles
                               and the lock-file format each node reads (pure: no Docker, no network)
    oci/                       the image format, pure: archives and layouts, canonical images, diffs, packages
    engine/                    the one place that talks to the Docker engine: client, builds, images, storage,
                               the build host (dockerd, Debian tools)
    lock/                      pin inputs (pip in the base image, mmdebstrap root filesystems) and fetch them
    build/                     orchestration: build the plan on the engine, verify reproducibility

Direction: build -> lock/engine -> plan/oci -> matrix -> settings/errors; tests/unit/test_layering.py keeps it so.
"""
