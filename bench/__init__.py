"""Benchmarks: ``python -m bench.compare`` (kvfast vs redis-server vs the asyncio
reference), ``python -m pytest bench/test_load.py`` (pytest-benchmark), and
``bench/memory_per_key.py``. ``bench.harness`` holds the shared helpers."""
