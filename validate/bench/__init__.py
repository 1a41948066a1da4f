"""Benchmarks: in-image workloads, equivalence statistics, the SQLite ledger, reports and the runner."""
