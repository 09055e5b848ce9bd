"""Calls with wrong types: mypy must report each line marked `# error`."""

from __future__ import annotations

import partialft

partialft.select_layers(3, "attn")  # error
count: str = partialft.kendall_tau({"a": 1.0}, {"a": 2.0})  # error
partialft.all_methods().no_such_method()  # error
