"""`strata completion bash|zsh`: a completion script generated from the argparse tree by shtab.

Its own module so that only this command imports shtab (cli.main loads it by name).
"""

from __future__ import annotations

import argparse

import shtab


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The script for `shell` (bash or zsh) completing every command and option of `parser`."""
    return str(shtab.complete(parser, shell=shell))
