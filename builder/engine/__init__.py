"""The Docker engine and the host it runs on: the only package that talks to dockerd.

Owns: client.py (the one client factory), caps.py (which way of building works here), image_build.py (run one
build), store.py (the engine as an image store: find by content tag, read images, pull or load them in, tag),
layer_store.py (read images straight from local overlay2 storage), transfer.py (docker save into a file,
docker load from a stream), images.py (canonicalize engine images), host.py (start dockerd, apt-install tools,
free disk), build_records.py (BuildKit's cache records of Strata builds: recognize, remove), gc.py (list and
remove images and cache entries for `strata gc`). May import: builder.oci, builder.plan, builder.errors,
builder.settings.
"""
