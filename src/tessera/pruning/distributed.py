"""Data-parallel training on PyTorch's own engine: torchrun starts the ranks, DistributedDataParallel averages the
gradients, and this file holds what tessera adds to make N ranks compute what one process with the same global
batch computes — the process group from torchrun's environment (gloo on CPU, nccl on GPU), batch norm whose
statistics span the global batch (torch's SyncBatchNorm is GPU-only), a check that masks, libraries and ADMM state
really are identical on every rank, and the one-line error when a rank dies.

Outside torchrun (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) every function here is the single-process identity.
"""

from __future__ import annotations

import atexit
import datetime
import os
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from tessera.errors import DistributedError
from tessera.io import digest


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        """Only the main rank writes checkpoints, logs and reports."""
        return self.rank == 0


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def world() -> World:
    """This process's place in the job (rank 0 of 1 outside torchrun)."""
    dist = _dist()
    if dist is None:
        return World()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if dist.get_backend() == "nccl" \
        else torch.device("cpu")
    return World(dist.get_rank(), dist.get_world_size(), device)


def init_from_env(timeout_s: float = 600.0) -> World:
    """Join the process group torchrun describes in the environment (idempotent; a no-op without torchrun).
    gloo on CPU, nccl when CUDA is there; ``timeout_s`` bounds how long a rank waits for a silent peer."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or _dist() is not None:
        return world()
    import torch.distributed as dist

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    try:
        dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=timeout_s))
        atexit.register(_leave)
    except (RuntimeError, ValueError) as e:
        raise DistributedError(f"could not join the torchrun job ({e}); start it with torchrun --nproc_per_node N"
                               ) from None
    return world()


def _leave() -> None:
    """At exit, wait (briefly) for the other ranks and tear the process group down before the interpreter does: a
    rank leaving while a peer still talks, or gloo's threads outliving the group, abort the process ("terminate
    called without an active exception") after a job that succeeded."""
    dist = _dist()
    if dist is None:
        return
    try:
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=datetime.timedelta(seconds=60))
        else:
            dist.barrier()
    except RuntimeError:
        pass  # a rank already gone: torchrun reports it
    dist.destroy_process_group()


def local_rows(n: int, w: World) -> slice:
    """The part of ``n`` items (a global batch, a test set) this rank handles: DistributedSampler's strided split,
    so the ranks' parts together are exactly the global batch a single process would take."""
    return slice(w.rank, n, w.size)


def all_sum(values: list[float], w: World) -> list[float]:
    """Element-wise sum over the ranks (float64), e.g. of loss sums and sample counts for the epoch's record."""
    dist = _dist()
    if dist is None or w.size == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=w.device)
    guarded(lambda: dist.all_reduce(t), w)
    return t.tolist()


_LOST_PEER = ("connection reset", "connection closed", "connection refused", "broken pipe", "timed out", "timeout",
              "nccl", "gloo", "socket")


def guarded(step, w: World):
    """Run a step that talks to the other ranks; a peer that died turns gloo's/nccl's transport error into one
    line that says so (torchrun usually stops the job first and names the rank that failed)."""
    try:
        return step()
    except RuntimeError as e:
        if w.size == 1 or not any(k in str(e).lower() for k in _LOST_PEER):
            raise
        raise DistributedError(f"rank {w.rank} of {w.size}: another rank stopped "
                               f"({str(e).splitlines()[0][:100]}); torchrun's log names the rank that failed first"
                               ) from None


def gather_rng_states(w: World) -> list[torch.Tensor]:
    """Every rank's torch RNG state (dropout), in rank order, on every rank: rank 0 checkpoints them all."""
    mine = torch.get_rng_state()
    dist = _dist()
    if dist is None or w.size == 1:
        return [mine]
    wide = mine.to(torch.int32).to(w.device)  # uint8 collectives are not on every backend
    every = [torch.empty_like(wide) for _ in range(w.size)]
    guarded(lambda: dist.all_gather(every, wide), w)
    return [t.cpu().to(torch.uint8) for t in every]


def check_identical(tensors: dict[str, torch.Tensor], meta: object, what: str, w: World) -> None:
    """Raise unless every rank holds bit-identical ``tensors`` and ``meta`` (masks, libraries, ADMM Z/U, weights):
    they are computed on each rank from synchronised weights, and this checks it rather than assuming it."""
    dist = _dist()
    if dist is None or w.size == 1:
        return
    mine = torch.tensor(list(bytes.fromhex(digest(tensors, meta))), dtype=torch.int64, device=w.device)
    every = [torch.empty_like(mine) for _ in range(w.size)]
    guarded(lambda: dist.all_gather(every, mine), w)
    differ = [r for r, t in enumerate(every) if not torch.equal(t, every[0])]
    if differ:
        raise DistributedError(f"{what} differ between rank 0 and rank(s) {differ}: the ranks diverged; run with the "
                               "same tessera, torch and data on every node")


class _SumOverRanks(torch.autograd.Function):
    """y = sum of x over the ranks; its gradient is the sum of the ranks' gradients of y (every rank's loss
    depends on every rank's x through y)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        _dist().all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        g = g.clone()
        _dist().all_reduce(g)
        return g


def all_reduce(x: torch.Tensor) -> torch.Tensor:
    return _SumOverRanks.apply(x)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch: sums all-reduced with a differentiable
    sum, so the backward pass is global too. Running statistics follow nn.BatchNorm2d's update with the global
    mean and unbiased variance. Eval mode is nn.BatchNorm2d's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or _dist() is None:
            return super().forward(x)
        dims = [0, 2, 3]
        count = all_reduce(x.new_tensor([x.numel() / x.shape[1]]))
        mean = all_reduce(x.sum(dims)) / count
        centred = x - mean.view(1, -1, 1, 1)
        var = all_reduce(centred.square().sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                n = float(count)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / max(n - 1, 1)), alpha=m)
        y = centred * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
        return y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1) if self.affine else y


def _swap_batchnorm(model: nn.Module, to: type) -> None:
    for m in model.modules():
        if type(m) in (nn.BatchNorm2d, GlobalBatchNorm2d) and type(m) is not to:
            m.__class__ = to  # same parameters, buffers and state-dict keys: only forward changes


def global_batchnorm(model: nn.Module, w: World) -> None:
    """Batch norm over the global batch while training on several ranks (CPU: :class:`GlobalBatchNorm2d`)."""
    if w.size > 1:
        _swap_batchnorm(model, GlobalBatchNorm2d)


def local_batchnorm(model: nn.Module) -> None:
    """Back to plain nn.BatchNorm2d (what the compiler and the saved model expect)."""
    _swap_batchnorm(model, nn.BatchNorm2d)


def data_parallel(model: nn.Module, w: World) -> nn.Module:
    """The module that runs forward/backward: DDP over ``model`` on several ranks, ``model`` itself on one.
    Buffers are not broadcast each step (they are computed identically everywhere, and check_identical checks)."""
    if w.size == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [w.device.index] if w.device.type == "cuda" else None
    # a 1-input-channel conv's weight is channels_last under two stride patterns; DDP warns at every step
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    return DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False)


def batch_share(local_count: int, global_count: int, w: World) -> float:
    """Factor turning this rank's mean loss into its share of the global batch's mean: DDP averages gradients over
    the ranks, so ``local/global * ranks`` makes that average the gradient of the global mean — also for a last
    batch the ranks split unevenly. Exactly 1 on one rank."""
    return 1.0 if w.size == 1 else local_count * w.size / max(global_count, 1)
