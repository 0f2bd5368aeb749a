"""``python -m gapeval`` (and ``accelerate launch -m gapeval run ...``) runs the command line."""

from gapeval.cli import main

raise SystemExit(main())
