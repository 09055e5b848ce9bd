"""The cost benchmark (paper Fig. 5), in pipeline order:

- :mod:`~partialft.bench.options`: what to measure, and the rows (methods and ablations);
- :mod:`~partialft.bench.steps`: the hand-written PyTorch step the real one is compared with;
- :mod:`~partialft.bench.memory`: peak memory per phase (CUDA or the process's RSS);
- :mod:`~partialft.bench.measure`: every method's training/test latency and memory;
- :mod:`~partialft.bench.output`: ``bench.json``, ``bench.md`` and ``bench.png``.

May import training and everything below it; not the selectors, analysis, workflows or CLI.
"""
