"""What to do with finished runs, in pipeline order:

- :mod:`~partialft.analysis.soups`: uniform and greedy Model Soups;
- :mod:`~partialft.analysis.evaluate`: clean, corrupted and OOD accuracy, ``eval.json``;
- :mod:`~partialft.analysis.multitask`: shared multi-task inference over run dirs;
- :mod:`~partialft.analysis.rows`: run dirs read back as report rows (one per configuration);
- :mod:`~partialft.analysis.plots`: the paper's figures from those rows;
- :mod:`~partialft.analysis.report`: ``report.md``, ``report.json`` and the figures;
- :mod:`~partialft.analysis.export`: a run as a timm folder or a peft LoRA adapter;
  :mod:`~partialft.analysis.export_onnx` as an ONNX file; :mod:`~partialft.analysis.export_cards`
  their model cards;
- :mod:`~partialft.analysis.hub`: an exported folder uploaded to the Hugging Face Hub.

May import training and everything below it; not the selectors, bench, workflows or CLI.
"""
