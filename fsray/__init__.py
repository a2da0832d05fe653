"""fsray: Ray-distributed tuning and stability analysis of Future-Seed post-training for RWKV-7.

Kept free of heavy imports: ``import fsray`` does not import torch or Ray.
"""

__version__ = "0.1.0"
