"""Registries: Strata's own OCI distribution client and embedded registry (registry/), and publishing the
plan's images with everything users pin them by (publish/).

Direction: publish -> registry -> builder's lower rooms; tests/unit/test_layering.py keeps it so.
"""
