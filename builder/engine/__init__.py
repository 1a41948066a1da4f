"""The Docker engine and the host it runs on: the only package that talks to dockerd.

Owns: client.py (the one client factory), caps.py (which way of building works here), image_build.py (run one
build), images.py (save, load, canonicalize engine images, build avoidance by content hash), layer_store.py
(read layers from local overlay2 storage), host.py (start dockerd, apt-install tools, free disk).
May import: builder.oci, builder.plan, builder.errors, builder.settings.
"""
