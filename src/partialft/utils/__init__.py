"""Small helpers every package may use: crash-safe file writes (:mod:`~partialft.utils.io`), a
finished export's marker kept in its model card (:mod:`~partialft.utils.embedded`) and
network checks that fail in seconds (:mod:`~partialft.utils.net`).

Imports nothing from partialft but :mod:`partialft.errors`.
"""
