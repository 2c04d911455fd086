import math

import pytest
import torch

from helpers import InterruptAt
from tessera.data import digits
from tessera.models import create_model
from tessera.pruning.admm import ADMM, ADMMConfig
from tessera.pruning.sparsifier import Sparsifier
from tessera.pruning.trainer import TrainConfig, Trainer
from tessera.sparsity import PatternLibrary, kernel_patterns
from tessera.sparsity.patterns import pattern_usage, shrink_library, shrink_schedule


def test_shrink_schedule_is_monotone_and_ends_at_k():
    for start, final, steps in [(56, 8, 1), (56, 4, 7), (126, 12, 20), (8, 8, 3)]:
        sizes = shrink_schedule(start, final, steps)
        assert all(a >= b for a, b in zip(sizes, sizes[1:], strict=False))
        assert sizes[-1] == final and sizes[0] <= start


def test_shrink_keeps_the_most_used():
    lib = PatternLibrary.full()
    w = torch.randn(32, 32, 3, 3)
    usage = pattern_usage([w], lib)
    small = shrink_library(lib, usage, 6)
    top = torch.topk(usage, 6).indices
    assert {tuple(p.tolist()) for p in small.patterns} == {tuple(lib.patterns[i].tolist()) for i in top}


class Recorder:
    def __init__(self, admm):
        self.admm, self.sizes = admm, []

    def after_step(self):
        self.sizes.append(len(self.admm.targets[0].scheme.library))


def learn(ckpt, scope="model", interrupt_at=None, k=4):
    torch.manual_seed(0)
    m = create_model("vgg_tiny", width=8)
    train, _ = digits()
    s = Sparsifier([{"op": "Conv2d", "kernel": 3}], {"scheme": "pattern_connectivity", "num_patterns": k,
                                                     "keep": 0.5, "library": "learn"})
    targets = s.select(m)
    assert len(targets[0].scheme.library) == 56
    steps = math.ceil(len(train) / 64)
    admm = ADMM(targets, ADMMConfig(rho=0.01, updates_per_epoch=4, library_scope=scope), steps, 2)
    rec = Recorder(admm)
    hooks = [admm, rec]
    if interrupt_at is not None:
        hooks.append(InterruptAt(interrupt_at))
    tr = Trainer(m, train, None, TrainConfig(epochs=2, batch_size=64, lr=0.02), hooks=hooks,
                 checkpoint_dir=ckpt, name="admm", progress=False)
    tr.resume()
    tr.fit()
    s.targets = admm.targets
    s.prepare(m)
    s.step()
    return s, admm, rec


@pytest.mark.parametrize("scope", ["model", "layer"])
def test_library_shrinks_monotonically_to_k_and_masks_use_it(tmp_path, scope):
    s, admm, rec = learn(tmp_path, scope)
    assert rec.sizes[-1] == 4
    assert all(a >= b for a, b in zip(rec.sizes, rec.sizes[1:], strict=False))
    libs = {t.name: t.scheme.library for t in admm.targets}
    assert all(len(lib) == 4 for lib in libs.values())
    if scope == "model":
        assert len({lib.to_json() for lib in libs.values()}) == 1
    for name, mask in s.masks().items():
        allowed = {tuple(p.tolist()) for p in libs[name].patterns}
        kp = kernel_patterns(mask)
        assert all(tuple(r.tolist()) in allowed for r in kp[kp.any(-1)])


def test_learning_resumes_with_same_library_and_masks(tmp_path):
    s_a, admm_a, _ = learn(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        learn(tmp_path / "b", interrupt_at=30)
    s_b, admm_b, _ = learn(tmp_path / "b")
    assert admm_a.libraries() == admm_b.libraries()
    for k, v in s_a.masks().items():
        assert torch.equal(v, s_b.masks()[k])


def test_library_figure_and_counts(tmp_path):
    from tessera.report.figures import library_figure
    from tessera.sparsity import pattern_mask
    from tessera.sparsity.patterns import pattern_counts

    lib = PatternLibrary.default(6)
    w = torch.randn(8, 4, 3, 3)
    m = pattern_mask(w, lib)
    counts = pattern_counts(m, lib)
    assert int(counts.sum()) == 32
    png = library_figure(lib, {"a": m, "b": pattern_mask(torch.randn(4, 4, 3, 3), lib)}, tmp_path / "lib.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
