"""nn building blocks: one ``<family>.py`` per family, each holding function + ``nn.Module`` pairs.

Families are imported on use (``from tricklab.layers.graph import GCNConv``); importing this package loads
nothing but torch.
"""

from __future__ import annotations
