"""Known vulnerabilities of the images' contents, from their locks, reported so that an empty list always says
why it is empty (audited against which source, or not audited because the source was unavailable).

Owns: osv.py (OSV advisory files and their version ranges, pure), python.py (pip-audit over each node's wheel lock,
offline against an advisory file or online against PyPI/OSV), debian.py (the Debian security suite's versions
against a base lock, pure), debian_archive.py (fetching and verifying the security suite's index from
deb.debian.org), report.py (one report per image, what a catalog shows). May import: builder.errors,
builder.settings, builder.plan. Network only in python.py's online services and debian_archive.py.
"""
