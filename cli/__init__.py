"""The `strata` command line: every argparse definition, and handlers that turn flags into Settings, call the
libraries and print. No logic of its own beyond presenting results.

Owns: main.py (the parser and error handling), common.py (matrix options, settings, plan, run lock), one module per
group of commands: plan, lock, build, images, registry, publish, evidence (keygen, sbom, sign, verify-signature),
audit, smoke, bench, gc; progress.py (what a person
sees during long work). May import every room; nothing imports it.
"""
