"""brewnet benchmarks: brewnet against plain PyTorch eager programs of the same computation.

    python -m benchmarks.run_all          every benchmark, rewrites benchmarks/RESULTS.md  (make bench)
    python -m benchmarks.layers           heavy layers, forward + backward
    python -m benchmarks.models           whole nets: train iteration, forward, peak memory
    python benchmarks/data.py             the Data layer's LMDB -> batch throughput

Timings are not tests: nothing here asserts a number.
"""
