"""Pin and fetch every input: wheels resolved by pip inside each node's base image, hash-pinned Debian root
filesystems, and the content-addressed wheelhouse they are fetched into once.

Owns: resolve.py (lock states, lock_node, write_locks; resolution is an injected WheelResolver), pip_resolver.py,
rootfs.py (mmdebstrap; its cache of root filesystems and .debs), fetch.py (the wheelhouse), indexes.py (where
wheels may come from: PyPI and the mirrors of pip's configuration); rootfs and fetch list and prune their caches
for `strata gc`. May import: builder.engine, builder.plan, builder.oci, builder.matrix, builder.events,
builder.errors, builder.settings. Never builder.build: the base image a resolution runs in is handed in by the
caller.
"""
