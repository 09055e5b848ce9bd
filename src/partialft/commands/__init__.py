"""One module per CLI verb; shared argument groups live in :mod:`partialft.commands.common`."""
