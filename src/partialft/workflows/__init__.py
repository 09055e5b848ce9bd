"""Multi-step jobs built from the verbs below them, in pipeline order:

- :mod:`~partialft.workflows.fapft`: full fine-tuning -> angles (or another selector) ->
  top-k selection -> partial fine-tuning -> comparison;
- :mod:`~partialft.workflows.demo`: the offline demo (six runs and a report).

May import the selectors, analysis, training and everything below; only the CLI is above.
"""
