"""umbra-waku benchmarks.

``python -m benchmarks`` prints a table; ``python -m benchmarks --quick --json`` one JSON object.

Every figure is measured side by side in one run, and reported as a ratio where one makes sense,
because absolute times drift on shared 2-core machines.
"""
