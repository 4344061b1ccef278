"""Evaluation shared by benchmarks, sweeps and reports: statistics over seeds and run provenance."""
