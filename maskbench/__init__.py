"""maskbench: Masked-Faces dataset synthesis and a benchmark for face-mask removal."""

__version__ = "0.1.0"
