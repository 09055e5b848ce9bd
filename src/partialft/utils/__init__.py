"""Small helpers every package may use: crash-safe file writes (:mod:`~partialft.utils.io`) and
network checks that fail in seconds (:mod:`~partialft.utils.net`).

Imports nothing from partialft but :mod:`partialft.errors`.
"""
