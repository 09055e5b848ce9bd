"""The method itself, on any ``nn.Module``, in pipeline order:

- :mod:`~partialft.core.layermap`: the ``Layer`` and ``LayerMap`` types;
- :mod:`~partialft.core.layers`: residual layers and homogeneous groups of timm families;
- :mod:`~partialft.core.layerspec`: the same for any model, from a user's layer spec;
- :mod:`~partialft.core.angles`: fine-tuned angles (paper Eq. 2) and Kendall tau;
- :mod:`~partialft.core.select`: the selection strategies (manual, explicit ids, FAPFT top-k);
- :mod:`~partialft.core.freeze`: freezing what is not selected, and the parameter counts.

Imports torch, timm, scipy and PyYAML (layer spec files) and nothing above it in partialft:
not the PEFT baselines, training, the selectors or the analysis (an import-linter contract
checks it).
"""
