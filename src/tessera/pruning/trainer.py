"""A small, reproducible CPU trainer for the CLI and benchmarks, with hooks for pruning algorithms.

Reproducible by construction: the batch order and augmentation of epoch ``e`` come from a generator seeded with
``(seed, e)`` and the learning rate is a pure function of the global step, so resuming from the checkpoint of
epoch ``e`` replays exactly what an uninterrupted run would have done.

Hooks (any object with some of these methods; ADMM and the masked sparsifier implement them):
``penalty(model) -> Tensor`` added to the loss, ``after_step()``, ``on_epoch_end(epoch)``,
``state_tensors() / load_state_tensors(tensors, meta)`` to live in checkpoints.

Under torchrun each rank takes its strided part of every global batch (``batch_size`` is the global batch), DDP
averages the gradients, batch norm spans the global batch, and every epoch checks that weights and hook state are
bit-identical on all ranks; only rank 0 writes checkpoints and shows progress (see :mod:`.distributed`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, Interval
from torch import nn

from tessera.data import DatasetSplit
from tessera.errors import CheckpointError, ConfigError
from tessera.io import load_tensors, save_tensors
from tessera.pruning import distributed as ddp


@dataclass
class TrainConfig:
    """Training of one phase. The type hints carry the allowed values (a recipe is validated against them)."""

    __pydantic_config__ = {"extra": "forbid"}  # a recipe key that is not a field is an error, not ignored
    epochs: Annotated[int, Ge(0)] = 10
    batch_size: Annotated[int, Ge(1)] = 128
    lr: Annotated[float, Gt(0)] = 0.05
    momentum: Annotated[float, Interval(ge=0, lt=1)] = 0.9
    weight_decay: Annotated[float, Ge(0)] = 5e-4
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    warmup_fraction: Annotated[float, Interval(ge=0, le=1)] = 0.25
    augment: bool = True  # random crop (pad 2) + horizontal flip
    label_smoothing: Annotated[float, Interval(ge=0, lt=1)] = 0.0
    distill: Annotated[float, Interval(ge=0, le=1)] = 0.0  # weight of the teacher's soft-target loss; 0 = off
    temperature: Annotated[float, Gt(0)] = 4.0  # softmax temperature of the distillation targets
    channels_last: bool = True  # train in NHWC: oneDNN's CPU convolutions run 1.2-1.5x faster (vgg6, batch 128)
    seed: int = 0
    checkpoint_every: Annotated[int, Ge(0)] = 0  # steps between mid-epoch checkpoints; 0: at epoch ends only

    def __post_init__(self) -> None:
        if self.schedule not in ("onecycle", "cosine", "constant"):
            raise ConfigError(f"schedule must be onecycle, cosine or constant, got {self.schedule!r}")
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("epochs must be >= 0, batch_size >= 1 and lr > 0")
        if not 0.0 <= self.distill <= 1.0 or self.temperature <= 0:
            raise ConfigError("distill must be in [0, 1] and temperature > 0")


def lr_at(cfg: TrainConfig, step: int, total: int) -> float:
    """Learning rate at a global step: a pure function, so resumed runs follow the same curve."""
    if cfg.schedule == "constant" or total <= 0:
        return cfg.lr
    t = min(step / total, 1.0)
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * t))
    w = cfg.warmup_fraction
    if t < w:  # one-cycle: linear warm-up from lr/25, then cosine down to lr/1e4
        return cfg.lr * (0.04 + 0.96 * t / w)
    return cfg.lr * (1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * (t - w) / (1 - w))))


def augment_batch(x: torch.Tensor, g: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Random translation by up to ``pad`` pixels (zero fill) and horizontal flip, per sample."""
    b, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    rows = (torch.arange(h)[None, :] + dy[:, None])[:, None, :, None].expand(b, c, h, w + 2 * pad)
    cols = (torch.arange(w)[None, :] + dx[:, None])[:, None, None, :].expand(b, c, h, w)
    out = xp.gather(2, rows).gather(3, cols)
    flip = torch.rand(b, generator=g) < 0.5
    out[flip] = out[flip].flip(3)
    return out


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al.'s soft-target loss: T² · KL(teacher ‖ student) at temperature T (T² keeps gradients in scale)."""
    t = temperature
    return F.kl_div(F.log_softmax(student / t, 1), F.log_softmax(teacher / t, 1), reduction="batchmean",
                    log_target=True) * (t * t)


def normalise(x: torch.Tensor, split: DatasetSplit) -> torch.Tensor:
    mean = torch.tensor(split.mean).view(1, -1, 1, 1)
    std = torch.tensor(split.std).view(1, -1, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def evaluate(model: nn.Module, split: DatasetSplit, batch_size: int = 500) -> float:
    """Top-1 accuracy in percent (under torchrun each rank scores its part of the split, the counts are summed)."""
    w = ddp.world()
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    rows = torch.arange(len(split))[ddp.local_rows(len(split), w)]
    correct = 0
    for i in range(0, len(rows), batch_size):
        idx = rows[i : i + batch_size]
        x = normalise(split.images[idx], split).to(device)
        correct += int((model(x).argmax(1).cpu() == split.labels[idx]).sum())
    model.train(was_training)
    correct = int(ddp.all_sum([correct], w)[0])
    return 100.0 * correct / max(1, len(split))


@dataclass
class History:
    epochs: list[dict] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(e["seconds"] for e in self.epochs)


class Trainer:
    """SGD + one-cycle on in-memory tensors, rich progress, per-epoch checkpoints, exact resume."""

    def __init__(
        self,
        model: nn.Module,
        train: DatasetSplit,
        test: DatasetSplit | None,
        config: TrainConfig,
        hooks: Sequence[object] = (),
        checkpoint_dir: str | Path | None = None,
        name: str = "train",
        progress: bool = True,
        teacher: nn.Module | None = None,
    ):
        """``teacher``: a trained model whose logits the student learns from when ``config.distill > 0``."""
        if config.distill > 0 and teacher is None:
            raise ConfigError("distill > 0 needs a teacher model (the job passes the dense baseline)")
        self.world = ddp.world()
        self.model, self.train, self.test, self.cfg = model.to(self.world.device), train, test, config
        self.teacher = teacher.to(self.world.device).eval() if teacher is not None and config.distill > 0 else None
        self.hooks = list(hooks)
        self.ckpt = Path(checkpoint_dir) / f"{name}.safetensors" if checkpoint_dir else None
        self.name, self.progress = name, progress and self.world.main
        self.opt = torch.optim.SGD(
            model.parameters(), lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0,
            weight_decay=config.weight_decay,
        )
        self.history = History()
        self.start_epoch, self.start_step = 0, 0  # where training resumes (set by resume())
        self._run: dict | None = None  # the interrupted epoch's generator, RNG and sums (mid-epoch resume)

    # -- checkpoints -------------------------------------------------------------------------------------------
    def _state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Everything training depends on: model, optimiser, hook tensors (Z, U, masks) and their metadata."""
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        for i, p in enumerate(self.model.parameters()):
            buf = self.opt.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                tensors[f"optim.{i}"] = buf
        meta = {"history": self.history.epochs, "config": asdict(self.cfg), "hooks": []}
        for j, h in enumerate(self.hooks):
            if hasattr(h, "state_tensors"):
                ht, hm = h.state_tensors()
                tensors.update({f"hook{j}.{k}": v for k, v in ht.items()})
                meta["hooks"].append(hm)
            else:
                meta["hooks"].append({})
        return tensors, meta

    def _save(self, epoch: int, step: int = 0, run: dict | None = None) -> None:
        """Checkpoint after ``epoch`` finished (``step`` 0) or ``step`` steps into the epoch after it; ``run`` then
        holds that epoch's generator and running sums. Rank 0 writes; every rank resumes from its file."""
        if self.ckpt is None:
            return
        rngs = ddp.gather_rng_states(self.world) if step else []  # every rank's dropout RNG (a collective)
        sums = ddp.all_sum([run["loss_sum"], run["seen"]], self.world) if step else []  # the global batch's
        if not self.world.main:
            return
        tensors, meta = self._state()
        meta.update(epoch=epoch, step=step)
        if step:
            tensors["run.generator"] = run["generator"].get_state()
            tensors.update({f"run.rng.{r}": t for r, t in enumerate(rngs)})
            meta.update(loss_sum=sums[0], seen=int(sums[1]), ranks=self.world.size)
        save_tensors(self.ckpt, tensors, meta)

    def resume(self) -> bool:
        """Load the last checkpoint if there is one; returns whether training resumes from it. A checkpoint of
        another model or another training config is refused (resuming it would not replay this run)."""
        if self.ckpt is None or not self.ckpt.exists():
            return False
        tensors, meta = load_tensors(self.ckpt)
        if not _checkpoint_meta_ok(meta):
            raise CheckpointError(f"checkpoint {self.ckpt} is not a {self.name} training checkpoint of this job "
                                  "(its metadata is not what tessera writes); delete it to restart the phase")
        ours = asdict(self.cfg)
        saved = meta["config"]
        changed = [k for k in ours if k != "checkpoint_every" and k in saved and saved[k] != ours[k]]
        if changed:
            k = changed[0]
            raise CheckpointError(f"checkpoint {self.ckpt} was written with {k}={saved[k]!r}, now {k}={ours[k]!r}; "
                                  f"restore the recipe or delete the file to restart the {self.name} phase")
        try:
            self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
            for i, p in enumerate(self.model.parameters()):
                if f"optim.{i}" in tensors:
                    if tensors[f"optim.{i}"].shape != p.shape:
                        raise ValueError(f"optimiser state {i} has shape {tuple(tensors[f'optim.{i}'].shape)}")
                    self.opt.state[p]["momentum_buffer"] = tensors[f"optim.{i}"].to(p.device).clone()
            for j, h in enumerate(self.hooks):
                if hasattr(h, "load_state_tensors"):
                    prefix = f"hook{j}."
                    h.load_state_tensors({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)},
                                         meta["hooks"][j])
            self.history.epochs = list(meta["history"])
            self.start_epoch = int(meta["epoch"]) + 1
            self.start_step = int(meta.get("step", 0))
            if self.start_step:
                rng = tensors.get(f"run.rng.{self.world.rank}") if meta.get("ranks") == self.world.size else None
                main = self.world.main  # the sums saved are the global batch's: rank 0 carries them on
                self._run = {"generator": tensors["run.generator"], "rng": rng,
                             "loss_sum": float(meta["loss_sum"]) if main else 0.0,
                             "seen": int(meta["seen"]) if main else 0}
        except (RuntimeError, KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"checkpoint {self.ckpt} does not fit this model and phase "
                                  f"({str(exc).splitlines()[0][:120]}); delete it or point the output elsewhere"
                                  ) from None
        return True

    # -- training ----------------------------------------------------------------------------------------------
    def fit(self) -> History:
        """Train to ``config.epochs``; the model (and teacher) come back in the default NCHW memory format."""
        fmt = torch.channels_last if self.cfg.channels_last else torch.contiguous_format
        nets = [m for m in (self.model, self.teacher) if m is not None]
        for m in nets:
            m.to(memory_format=fmt)
        ddp.global_batchnorm(self.model, self.world)
        try:
            return self._fit(fmt, ddp.data_parallel(self.model, self.world))
        finally:
            ddp.local_batchnorm(self.model)
            for m in nets:
                m.to(memory_format=torch.contiguous_format)

    def _fit(self, fmt: torch.memory_format, net: nn.Module) -> History:
        """``net`` runs forward and backward: the model, or DDP over it on several ranks."""
        cfg, w = self.cfg, self.world
        n = len(self.train)
        steps_per_epoch = math.ceil(n / cfg.batch_size)
        total = steps_per_epoch * cfg.epochs
        bar = _Progress(self.progress, f"{self.name}", total, self.start_epoch * steps_per_epoch + self.start_step)
        with bar:
            for epoch in range(self.start_epoch, cfg.epochs):
                t0 = time.perf_counter()
                g = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
                order = torch.randperm(n, generator=g)
                torch.manual_seed(cfg.seed * 100003 + epoch * 1009 + w.rank)  # dropout: the same after a resume
                self.model.train()
                loss_sum, seen, first = 0.0, 0, 0
                if self._run is not None and epoch == self.start_epoch:  # mid-epoch: where the checkpoint was
                    g.set_state(self._run["generator"])
                    if self._run["rng"] is not None:
                        torch.set_rng_state(self._run["rng"])
                    loss_sum, seen, first = self._run["loss_sum"], self._run["seen"], self.start_step
                    self._run = None
                for s in range(first, steps_per_epoch):
                    batch = order[s * cfg.batch_size : (s + 1) * cfg.batch_size]
                    x = self.train.images[batch]
                    if cfg.augment:  # the global batch, so every rank's part is augmented as one process would
                        x = augment_batch(x, g)
                    part = ddp.local_rows(len(batch), w)
                    idx, x = batch[part], x[part]
                    x = normalise(x, self.train).contiguous(memory_format=fmt).to(w.device)
                    labels = self.train.labels[idx].to(w.device)
                    step = epoch * steps_per_epoch + s
                    for group in self.opt.param_groups:
                        group["lr"] = lr_at(cfg, step, total)
                    logits = ddp.guarded(lambda x=x: net(x), w)
                    if len(idx):
                        loss = F.cross_entropy(logits, labels, label_smoothing=cfg.label_smoothing)
                    else:  # a last global batch smaller than the ranks: this rank still joins the all-reduce
                        loss = logits.sum() * 0.0
                    total_loss = loss
                    if self.teacher is not None and len(idx):
                        with torch.no_grad():
                            soft = self.teacher(x)
                        total_loss = (1 - cfg.distill) * loss + cfg.distill * distillation_loss(
                            logits, soft, cfg.temperature)
                    total_loss = total_loss * ddp.batch_share(len(idx), len(batch), w)
                    for h in self.hooks:
                        if hasattr(h, "penalty"):
                            total_loss = total_loss + h.penalty(self.model)
                    self.opt.zero_grad(set_to_none=True)
                    ddp.guarded(total_loss.backward, w)
                    self.opt.step()
                    for h in self.hooks:
                        if hasattr(h, "after_step"):
                            h.after_step()
                    loss_sum += loss.item() * len(idx)
                    seen += len(idx)
                    if cfg.checkpoint_every and (s + 1) % cfg.checkpoint_every == 0 and s + 1 < steps_per_epoch:
                        self._save(epoch - 1, s + 1, {"generator": g, "loss_sum": loss_sum, "seen": seen})
                    bar.advance(f"{self.name} epoch {epoch + 1}/{cfg.epochs} loss {loss_sum / seen:.3f}")
                for h in self.hooks:
                    if hasattr(h, "on_epoch_end"):
                        h.on_epoch_end(epoch)
                loss_sum, seen = ddp.all_sum([loss_sum, seen], w)
                record = {"epoch": epoch + 1, "loss": loss_sum / max(seen, 1), "seconds": time.perf_counter() - t0}
                if w.size > 1:
                    tensors, meta = self._state()
                    ddp.check_identical(tensors, meta["hooks"], f"{self.name} epoch {epoch + 1}: weights, masks, "
                                        "libraries or ADMM state", w)
                if self.test is not None:
                    record["test_acc"] = evaluate(self.model, self.test)
                self.history.epochs.append(record)
                bar.log(f"{self.name} epoch {epoch + 1}/{cfg.epochs}: loss {record['loss']:.4f}"
                        + (f", test {record['test_acc']:.2f}%" if "test_acc" in record else "")
                        + f", {record['seconds']:.0f}s")
                self._save(epoch)
        return self.history


def _checkpoint_meta_ok(meta: object) -> bool:
    """The shape of the metadata :meth:`Trainer._save` writes (values are checked where they are used)."""
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        return False
    epoch, step = meta.get("epoch"), meta.get("step", 0)
    if not (isinstance(epoch, int) and epoch >= -1 and isinstance(step, int) and step >= 0):
        return False
    if step and not (isinstance(meta.get("loss_sum"), int | float) and isinstance(meta.get("seen"), int)):
        return False
    return isinstance(meta.get("history"), list) and all(isinstance(e, dict) for e in meta["history"]) and \
        isinstance(meta.get("hooks"), list) and all(isinstance(h, dict) for h in meta["hooks"])


class _Progress:
    """A rich progress bar when asked for and available; silent otherwise (tests, CI logs)."""

    def __init__(self, enabled: bool, name: str, total: int, done: int):
        self.enabled = enabled
        self.p = None
        if enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.p = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                              TimeElapsedColumn(), TimeRemainingColumn())
            self.task = self.p.add_task(name, total=max(total, 1), completed=done)

    def __enter__(self):
        if self.p:
            self.p.__enter__()
        return self

    def __exit__(self, *exc):
        if self.p:
            self.p.__exit__(*exc)

    def advance(self, description: str) -> None:
        if self.p:
            self.p.update(self.task, advance=1, description=description)

    def log(self, text: str) -> None:
        if self.p:
            self.p.console.log(text)
