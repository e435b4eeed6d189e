"""umbra-waku benchmarks (docs/performance.md has the figures and how they were made).

``python -m benchmarks`` prints a table; ``python -m benchmarks --quick --json`` one JSON object in
under a minute. Suites: :mod:`~benchmarks.classification`, :mod:`~benchmarks.crypto`,
:mod:`~benchmarks.e2e` (the bridge over the embedded network), :mod:`~benchmarks.gowaku` (the
bridge over real go-waku REST nodes), :mod:`~benchmarks.memory`. ``python -m benchmarks.profile``
runs py-spy on a bridge under load.

Every figure is measured side by side in one run with its baseline, interleaved, and reported as a
ratio where one makes sense, because absolute times drift on shared 2-core machines.
"""
