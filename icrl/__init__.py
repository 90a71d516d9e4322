"""icrl: in-context reinforcement learning.

Source algorithms learn on many tasks; their learning histories are stored, filtered and used to
pretrain transformers (Algorithm Distillation, Decision-Pretrained Transformer), which are then
evaluated online, with frozen weights, on tasks they have never seen.
"""

__version__ = "0.1.0"
