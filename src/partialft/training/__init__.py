"""One training run, from a config to a run dir, in pipeline order:

- :mod:`~partialft.training.config`: ``TrainConfig`` (YAML + flags), validated with the
  one rule per setting of :mod:`~partialft.training.rules` (which pretraining shares);
- :mod:`~partialft.training.resume`: a resume continues the recorded run (settings, input
  files) or refuses;
- :mod:`~partialft.training.outputs`: what an output path may be, and what ``--overwrite``
  may delete (the ``.partialft`` marker);
- :mod:`~partialft.training.rundir`: the run dir being written (lock, resume points);
- :mod:`~partialft.training.checkpoints`: delta and full checkpoints (safetensors);
- :mod:`~partialft.training.loaders`: batch order, loaders, evaluation passes;
- :mod:`~partialft.training.setup`: everything a run needs, built once (``Setup``, ``build``);
- :mod:`~partialft.training.loop`: the training loop and its resume points;
- :mod:`~partialft.training.train`: ``train(cfg)``: build, loop, write the run dir;
- :mod:`~partialft.training.runs`: reading run dirs back (base + delta, config, data);
- :mod:`~partialft.training.pretrain`: pretraining a backbone on fractals.

May import core, methods, baselines, models, data and the helpers; never the selectors, the
analysis, the bench, the workflows or the CLI (``--mode auto`` is resolved before a run is
built).
"""
