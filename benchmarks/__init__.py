"""umbra-waku benchmarks: ``python -m benchmarks`` (table) or ``python -m benchmarks --quick --json``.

Every figure is measured side by side in one run, and reported as a ratio where one makes sense,
because absolute times drift on shared 2-core machines.
"""
