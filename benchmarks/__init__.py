"""Hand-run benchmarks of extauth against a plain-Starlette reference (see README.md)."""
