"""Benchmarks that print numbers (not pass/fail): run `python -m bench.<name>`."""
