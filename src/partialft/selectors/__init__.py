"""Ways to pick layers besides a full run's angles, in pipeline order:

- :mod:`~partialft.selectors.task`: a config resolved into data, base model and augmenters;
  what every selector returns;
- :mod:`~partialft.selectors.auto`: ``--mode auto`` (validation pilots of both modes,
  ``choose_mode``); :mod:`~partialft.selectors.probe`: ``--mode probe`` (the linear-probe rule);
- :mod:`~partialft.selectors.scores`: angle, probe-angle and relative-gradient scores;
- :mod:`~partialft.selectors.greedy`: SubTuning's greedy search;
- :mod:`~partialft.selectors.run`: the selectors by name (``run_selector``);
- :mod:`~partialft.selectors.compare`: every selector end to end against full fine-tuning.

May import training and everything below it; not the analysis, bench, workflows or CLI.
"""
