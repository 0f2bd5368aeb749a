"""Probing: hidden states captured at named hook points, per-layer linear probes with controls, transfer
between directions, and causal erasure (``gapeval probe``). See docs/probes.md."""
