"""``partialft search``: an Optuna search over FAPFT's choices (mode, top-k per group,
learning rate), each trial a real training run with its own run dir under the search's output.

- :mod:`~partialft.search.space`: the space (YAML or flags) and its checks;
- :mod:`~partialft.search.storage`: Optuna storages (SQLite in the output by default, any URL);
- :mod:`~partialft.search.run`: ``run_search`` and the trial objective (pruning per epoch);
- :mod:`~partialft.search.report`: ``search.md``, ``search.json``, ``search.png``.

Optuna is the optional extra ``partialft[search]``. Sits above the workflows (it reuses the
fapft pipeline's angle stage); only the CLI imports it.
"""

from partialft.search.run import run_search
from partialft.search.space import SearchSpace, load_space, space_from_dict, space_from_flags

__all__ = ["SearchSpace", "load_space", "run_search", "space_from_dict", "space_from_flags"]
