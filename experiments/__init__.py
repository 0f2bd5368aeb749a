"""Experiments built on the library: the paper's study (``gapeval study``, :mod:`experiments.paper_study`) and
standalone measurements such as :mod:`experiments.reserve_knowledge`. See docs/study.md."""
