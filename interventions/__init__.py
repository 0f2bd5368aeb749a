"""Interventions through the adapter contract: knowledge editing (:mod:`interventions.editing`) and
activation patching (:mod:`interventions.patching`), sharing named hook points (:mod:`interventions.hooks`) and
the judged outcome measure (:mod:`interventions.judged`). See docs/architecture.md."""
