"""Debian package lists from a dpkg status file (pure): what is installed in a root filesystem or an image layer."""

from __future__ import annotations

import re
from typing import NamedTuple


class DebPackage(NamedTuple):
    """One installed Debian package as recorded in /var/lib/dpkg/status."""

    name: str
    version: str
    arch: str


def packages_from_dpkg_status(text: str) -> list[DebPackage]:
    """Installed packages from a dpkg status file, sorted by (name, version, arch).

    Only stanzas whose Status ends in "installed" count (not config-files or half-installed ones).

    >>> packages_from_dpkg_status("Package: a\\nStatus: install ok installed\\nVersion: 1\\nArchitecture: all\\n")
    [DebPackage(name='a', version='1', arch='all')]
    """
    found: list[DebPackage] = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
        status = fields.get("Status", "").split()
        if "Package" in fields and status[-1:] == ["installed"]:
            found.append(
                DebPackage(fields["Package"], fields.get("Version", ""), fields.get("Architecture", ""))
            )
    return sorted(found)
