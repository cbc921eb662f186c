"""Locally scaled object segmentation: the paper's Sec. 5.1 benchmark (Table 1, appendix A1)."""

__version__ = "0.1.0"
