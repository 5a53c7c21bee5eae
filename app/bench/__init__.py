"""Benchmarks: `atelier bench NAME` runs app.bench.NAME."""
