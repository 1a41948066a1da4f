"""One way to run a command in a fresh container of an image: the in-container runner smoke/ and bench/ share.

    payload.py  pure: the tar of files put into a created container (readable by any uid), and reading one
                file back out of the engine's get_archive tar
    runner.py   ContainerSpec -> ContainerOutcome: create, put the payload in, start (GPUs on request; the
                engine's refusal comes back as a value), wait with a bounded timeout (kill and report
                timed_out), collect the logs, read result files back, and always remove the container

Payloads are copied in at run time and never baked into an image. What the command means, and what a
failure means, belongs to the caller. May import: builder.errors, builder.settings, builder.engine.
"""
