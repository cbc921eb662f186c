"""Locally scaled multi-digit MNIST: the paper's Sec. 5.2 benchmark, every method, Tables 2 and 3, the demo.

Modules:
    sources: where the MNIST digits come from (your folder, the full 70,000 fetched once, an embedded subset).
    generator: three digits per image, each at its own scale, never overlapping; re-renderable.
    data: cached splits and the torch data set.
    models: timm backbones with the canonicalizers of each method (through latentcanon and deqcanon).
    training: ``lse-mnist train`` on lse_common's DDP engine.
    evaluation, tables, plots: ``lse-mnist evaluate`` (lsmetrics).
    demo: ``lse-mnist demo``.
    cli: the command line.
"""

__version__ = "0.1.0"
