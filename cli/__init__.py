"""The `strata` command line: every argparse definition, and handlers that turn flags into Settings, call the
libraries and print. No logic of its own beyond presenting results.

Owns: main.py (the parser, --version, error handling), common.py (matrix options: -f, $STRATA_MATRIX, upward
discovery; settings, plan, run lock), exit_codes.py (one exit code per outcome and error kind), environment.py (the
variables Strata reads, listed in --help), github.py (::error annotations under GitHub Actions), completion.py
(`strata completion`, shtab), one module per group of commands: plan, lock, build, images, registry, publish,
evidence (keygen, sbom, sign, verify-signature), audit, smoke, bench, gc; progress.py (what a person sees during
long work). May import every room; nothing imports it.
"""
