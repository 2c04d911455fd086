"""Random BatchNorm statistics for randomly initialised models: a fresh BN (mean 0, var 1, gamma 1, beta 0)
folds into a no-op, so a missed or wrong fold would go unseen in tests and benchmarks."""

from __future__ import annotations

import torch
from torch import nn


def randomize_bn_stats(model: nn.Module, seed: int = 1) -> nn.Module:
    """Give every BatchNorm2d non-trivial running statistics and affine parameters (in place); returns the model
    in eval mode."""
    g = torch.Generator().manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            with torch.no_grad():
                mod.running_mean.copy_(torch.rand(mod.num_features, generator=g) * 0.4 - 0.2)
                mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
                if mod.weight is not None:
                    mod.weight.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
                    mod.bias.copy_(torch.rand(mod.num_features, generator=g) * 0.4 - 0.2)
    return model.eval()
