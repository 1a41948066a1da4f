"""The image format, pure file work: read docker-save archives and OCI layouts, make images canonical (same
inputs, same bytes), explain differences file by file and package by package.

Owns: archive.py (image sources), canonical.py (the canonical form and its writers), diff.py, packages.py,
changes.py, dpkg.py (Debian package lists). May import: builder.errors, builder.settings. Never the engine.
"""
