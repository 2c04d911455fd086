"""Where the time goes inside the whole-network function: the same C with a clock tick after every statement
(thread 0 adds each node's wall time, barrier waits included, to a table), run on the caller's input."""

from __future__ import annotations

import torch
from torch import fx

from tessera.compiler.geometry import KernelParams
from tessera.compiler.network import NetworkKernel
from tessera.compiler.network_plan import plan_network
from tessera.compiler.target import Target


def profile_network(gm: fx.GraphModule, params_for: dict[str, KernelParams], target: Target, threads: int,
                    x: torch.Tensor, rounds: int = 20) -> list[tuple[str, float]]:
    """(node name, ms per call) for every node that emits code, in execution order, and the output copy."""
    plan = plan_network(gm, params_for, target, threads, profile=True)
    kernel = NetworkKernel(plan, threads)
    table = kernel._scratch[plan.profile_scratch].view(torch.float64)
    for _ in range(3):  # warm-up: caches, the team of threads, the clock
        kernel(x)
    table.zero_()
    for _ in range(rounds):
        kernel(x)
    return [(name, ms) for name, ms in zip(plan.profiled, (table * 1e3 / rounds).tolist(), strict=True)]
