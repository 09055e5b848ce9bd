"""Calls with wrong types: mypy must report each line marked `# error`."""

from __future__ import annotations

import partialft

partialft.select_layers(3, "attn")  # error
count: str = partialft.kendall_tau({"a": 1.0}, {"a": 2.0})  # error
partialft.all_methods().no_such_method()  # error
partialft.save_trained(object(), 3)  # error
partialft.load_trained(None, "out", allow_base_mismatch="yes")  # error
