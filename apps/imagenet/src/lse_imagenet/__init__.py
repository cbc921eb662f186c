"""Locally scaled ImageNet: the paper's Sec. 5.3 benchmark (Tables 4-6, A5, Fig. 8)."""

__version__ = "0.1.0"
