"""Latency, throughput and quality benchmarks (``passnet bench``)."""
