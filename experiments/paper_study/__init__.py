"""The paper's study (``gapeval study``): a config (``config.yaml``) and a small driver over the library, one
module per report section. Entry point: :func:`experiments.paper_study.study.run_study`."""
