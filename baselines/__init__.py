"""Mask-removal methods behind maskbench's Predictor interface (one module per method)."""
