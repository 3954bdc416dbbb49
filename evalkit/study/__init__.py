"""Human preference studies: blind A/B listening pages, their analysis, the pairwise ``arena``
judge, and preference data for training.

- ``evalkit.study.runs``: what several run directories share (conversations or single turns).
- ``evalkit.study.build``: a static, blind, randomised A/B page over them (``evalkit study build``).
- ``evalkit.study.votes``: votes from the page's JSONL export, a CSV, or ``serve``'s SQLite, as one
  ``Vote`` type; attention checks.
- ``evalkit.study.ratings``: Bradley-Terry with bootstrap CIs, win rates, Krippendorff's alpha,
  an automatic judge's agreement with people.
- ``evalkit.study.analyze``: votes -> ``results.json`` + ``results.html`` (``evalkit study analyze``).
- ``evalkit.study.arena``: the ``arena`` judge over runs (``evalkit study arena``).
- ``evalkit.study.preferences``: chosen/rejected pairs in TRL's layout (``export-preferences``).
- ``evalkit.study.serve``: a loopback server that stores several raters' votes in SQLite.

A study folder (``build --out DIR``)::

    index.html        the page (open from file:// or any static host)
    study.js          the page's code; study-data.js: the trials (no model names)
    audio/<opaque>    every clip, copied under a random name, metadata stripped
    key.json          THE KEY: trial -> item, which model is side a / b, checks. Never published,
                      never loaded by the page; analyze, arena and export-preferences read it.
"""
