"""The image format, pure file work: one image value read from files, image stores, canonical images (same
inputs, same bytes), differences file by file and package by package.

Owns: image.py (the `Image` value every step reads), store.py (the store protocol: find, get, put), archive.py
(images read from docker-save archives, OCI archives and layouts), layout_store.py (writing OCI layouts; a layout
as a store), canonical.py (the canonical form and its writers), diff.py, packages.py, changes.py, dpkg.py (Debian
package lists), digest.py (sha256), media_types.py. May import: builder.errors, builder.settings. Never the engine.
"""
