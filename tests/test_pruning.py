import math

import pytest
import torch

from helpers import InterruptAt
from tessera.data import digits
from tessera.errors import ConfigError, ShapeError
from tessera.models import create_model
from tessera.pruning.admm import ADMM, ADMMConfig
from tessera.pruning.sparsifier import Sparsifier
from tessera.pruning.targets import select_targets
from tessera.pruning.trainer import TrainConfig, Trainer
from tessera.sparsity import kernel_patterns


def tiny(seed=0):
    torch.manual_seed(seed)
    return create_model("vgg_tiny", width=8)


def test_targets_last_entry_wins_and_skip():
    m = create_model("resnet20", width=4)
    ts = select_targets(m, [
        {"op": "Conv2d", "kernel": 3},
        {"name": r"layers\.0\..*", "scheme": "magnitude", "keep": 0.5},
        {"name": "stem.0", "skip": True},
    ], {"scheme": "pattern_connectivity", "keep": 0.3})
    names = {t.name: t.scheme.name for t in ts}
    assert "stem.0" not in names
    assert names["layers.0.conv1"] == "magnitude" and names["layers.1.conv1"] == "pattern_connectivity"
    assert not any("shortcut" in n for n in names), "1x1 shortcuts are not 3x3"


@pytest.mark.parametrize("entry, error, match", [
    ({"name": "nothing.*"}, ConfigError, "matches no layer"),
    ({"name": "(unclosed"}, ConfigError, "not a valid regex"),
    ({"op": "Conv3d"}, ConfigError, "unknown op type"),
    ({"op": "Conv2d", "keep": 1.5}, ConfigError, r"\(0, 1\]"),
    ({"op": "Conv2d", "ratio": 0.5}, ConfigError, "no parameter 'ratio'"),
    ({"op": "Linear", "scheme": "pattern"}, ShapeError, "4-D|3x3"),
])
def test_target_errors(entry, error, match):
    with pytest.raises(error, match=match):
        select_targets(tiny(), [entry], {"scheme": "pattern_connectivity"})


def test_scheme_parameters_resolve_per_target():
    """A block entry under pattern-connectivity defaults takes the block scheme's own keep, not the kernels' keep;
    parameters both schemes mean alike still come from the defaults, and an entry's own value always wins."""
    import dataclasses

    from tessera.sparsity.schemes import _SCHEMES

    m = create_model("mobilenetv2", width=0.5)
    defaults = {"scheme": "pattern_connectivity", "num_patterns": 6, "keep": 0.3, "budget": "layer"}
    ts = {t.name: t.scheme for t in select_targets(m, [{"op": "Conv2d", "kernel": 3},
                                                       {"op": "Conv2d", "kernel": 1, "scheme": "block", "n": 2}],
                                                   defaults)}
    block_default = next(f.default for f in dataclasses.fields(_SCHEMES["block"]) if f.name == "keep")
    blocks = [s for s in ts.values() if s.name == "block"]
    patterns = [s for s in ts.values() if s.name == "pattern_connectivity"]
    assert blocks and patterns
    assert all(s.keep == block_default and s.n == 2 for s in blocks)
    assert all(s.keep == 0.3 and s.num_patterns == 6 for s in patterns)
    ts = select_targets(m, [{"op": "Conv2d", "kernel": 1, "scheme": "block", "keep": 0.5}], defaults)
    assert all(t.scheme.keep == 0.5 for t in ts)


def test_pattern_on_1x1_names_the_layer():
    m = create_model("resnet20", width=4)
    with pytest.raises(ShapeError, match="layers.3.shortcut.0.*3x3"):
        select_targets(m, [{"op": "Conv2d"}], {"scheme": "pattern"})


def test_sparsifier_lifecycle_keeps_zeros_through_training():
    m = tiny()
    s = Sparsifier([{"op": "Conv2d", "kernel": 3}], {"scheme": "pattern_connectivity", "num_patterns": 4,
                                                        "keep": 0.5})
    s.prepare(m)
    s.step()
    masks = s.masks()
    assert any("parametrizations" in k and k.endswith("mask") for k in m.state_dict())
    train, _ = digits()
    Trainer(m, train, None, TrainConfig(epochs=1, batch_size=64), progress=False).fit()
    model = s.squash_mask()
    for name, mod in model.named_modules():
        if name in masks:
            assert bool((mod.weight[~masks[name]] == 0).all())
            kp = kernel_patterns(masks[name])
            kept = kp.any(-1)
            assert bool((kp[kept].sum(-1) == 4).all()) and bool(kp[kept][:, 4].all())
            assert int(kept.sum()) == round(0.5 * kept.numel())
            lib = {tuple(p.tolist()) for p in s.targets[0].scheme.library.patterns}
            assert all(tuple(r.tolist()) in lib for r in kp[kept])


class ConstraintChecker:
    """A hook that checks ADMM's Z after every update, i.e. at every step where Z changes."""

    def __init__(self, admm):
        self.admm, self.checks = admm, 0

    def after_step(self):
        for t, z in zip(self.admm.targets, self.admm.Z, strict=True):
            kp = (z != 0).reshape(z.shape[0], z.shape[1], 9)
            kept = kp.any(-1)
            assert bool((kp[kept].sum(-1) <= 4).all())
            assert int(kept.sum()) <= round(t.scheme.keep * kept.numel())
            assert torch.equal(z != 0, (z != 0) & t.scheme.mask(z))
            self.checks += 1


def admm_run(ckpt_dir, epochs=2, interrupt_at=None, seed=0):
    m = tiny(seed)
    train, _ = digits()
    s = Sparsifier([{"op": "Conv2d", "kernel": 3}], {"scheme": "pattern_connectivity", "num_patterns": 4,
                                                        "keep": 0.4})
    targets = s.select(m)
    cfg = TrainConfig(epochs=epochs, batch_size=64, lr=0.02, schedule="cosine")
    admm = ADMM(targets, ADMMConfig(rho=0.01, updates_per_epoch=3), math.ceil(len(train) / 64))
    hooks = [admm, ConstraintChecker(admm)]
    if interrupt_at is not None:
        hooks.append(InterruptAt(interrupt_at))
    tr = Trainer(m, train, None, cfg, hooks=hooks, checkpoint_dir=ckpt_dir, name="admm", progress=False)
    tr.resume()
    tr.fit()
    s.prepare(m)
    s.step()
    return s.masks(), admm, hooks[1]


def test_admm_constraints_hold_and_resume_gives_same_masks(tmp_path):
    masks_a, admm_a, checker = admm_run(tmp_path / "a")
    assert checker.checks > 0 and len(admm_a.history) >= 4
    with pytest.raises(KeyboardInterrupt):
        admm_run(tmp_path / "b", interrupt_at=30)  # epoch 1 of 2 was checkpointed (22 steps an epoch)
    masks_b, admm_b, _ = admm_run(tmp_path / "b")
    assert admm_b.rho == pytest.approx(admm_a.rho)
    for k in masks_a:
        assert torch.equal(masks_a[k], masks_b[k])


def test_distillation_loss_matches_its_definition():
    torch.manual_seed(0)
    s, t = torch.randn(5, 10), torch.randn(5, 10)
    from tessera.pruning.trainer import distillation_loss
    p, q = torch.softmax(t / 3, 1), torch.softmax(s / 3, 1)
    ref = (p * (p.log() - q.log())).sum(1).mean() * 9
    assert torch.allclose(distillation_loss(s, t, 3.0), ref, atol=1e-6)
    assert float(distillation_loss(t, t, 3.0)) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("distill", [0.0, 1.0])
def test_distilling_from_an_identical_teacher_leaves_the_student_alone(distill):
    """With distill=1 the only loss is the teacher's; a student equal to its teacher has zero gradient."""
    import copy
    train, _ = digits()
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    teacher = copy.deepcopy(m)
    before = [p.clone() for p in m.parameters()]
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.1, momentum=0.0, weight_decay=0.0, augment=False,
                      distill=distill)
    Trainer(m, train, None, cfg, progress=False, teacher=teacher).fit()
    moved = any(not torch.allclose(a, b) for a, b in zip(before, m.parameters(), strict=True))
    assert moved == (distill == 0.0)


def test_distill_without_teacher_is_a_config_error():
    train, _ = digits()
    with pytest.raises(ConfigError, match="teacher"):
        Trainer(tiny(), train, None, TrainConfig(distill=0.5), progress=False)


def test_channels_last_training_follows_the_nchw_run_and_returns_nchw():
    """The memory format is a speed choice only: same steps, same weights (to float noise), NCHW afterwards.
    A small learning rate keeps SGD from amplifying the kernels' different summation orders (at lr 0.05 one epoch
    drifted 2e-3 apart when the suite ran torch on another thread count)."""
    train, _ = digits()
    runs = []
    for channels_last in (False, True):
        m = tiny()
        before = {k: v.clone() for k, v in m.state_dict().items()}
        Trainer(m, train, None, TrainConfig(epochs=1, batch_size=64, lr=1e-3, channels_last=channels_last),
                progress=False).fit()
        assert all(p.is_contiguous() for p in m.parameters())
        runs.append({k: v - before[k] if v.is_floating_point() else v for k, v in m.state_dict().items()})
    for k, v in runs[0].items():  # the updates agree, not just the (mostly unchanged) weights
        assert torch.allclose(v.float(), runs[1][k].float(), rtol=1e-3, atol=1e-6), k
    assert any(float(v.abs().max()) > 1e-4 for v in runs[0].values() if v.is_floating_point())
