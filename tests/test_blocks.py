import copy
import itertools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from tessera.errors import ConfigError, ShapeError
from tessera.sparsity.blocks import column_values, select_blocks


def brute_force(s, n, k):
    """Best total of k disjoint N-row blocks, by enumerating every set of window starts."""
    m, cols = s.shape
    windows = [(c, r) for c in range(cols) for r in range(m - n + 1)]
    best = float("-inf")
    for combo in itertools.combinations(windows, k):
        rows = {(c, r + i) for c, r in combo for i in range(n)}
        if len(rows) == k * n:
            best = max(best, sum(float(s[r, c]) for c, r in rows))
    return best


def valid(sel, s, n, k):
    assert sel.blocks.shape == (k, 2)
    assert int(sel.mask.sum()) == k * n, "blocks overlap"
    for c, r in sel.blocks.tolist():
        assert 0 <= r <= s.shape[0] - n
        assert bool(sel.mask[r : r + n, c].all())
    assert sel.value == pytest.approx(float((s.double() * sel.mask).sum()))


@given(st.integers(2, 6), st.integers(1, 3), st.sampled_from([1, 2, 3]), st.integers(0, 10_000), st.data())
def test_optimal_is_exact_against_brute_force(m, cols, n, seed, data):
    if n > m:
        n = m
    s = torch.rand(m, cols, generator=torch.Generator().manual_seed(seed))
    k = data.draw(st.integers(0, min(4, (m // n) * cols)))
    opt = select_blocks(s, n, k, "optimal")
    valid(opt, s, n, k)
    assert opt.value == pytest.approx(max(brute_force(s, n, k), 0.0), rel=1e-9, abs=1e-12)
    flat = select_blocks(s, n, k, "optimal_flat")
    assert flat.value == pytest.approx(opt.value, rel=1e-9, abs=1e-12)
    for method in ("aligned", "bed"):
        other = select_blocks(s, n, k, method)
        valid(other, s, n, k) if method == "bed" or k <= (m // n) * cols else None
        assert other.value <= opt.value + 1e-9


@given(st.integers(4, 40), st.integers(1, 4), st.integers(0, 10_000))
def test_column_values_are_concave(m, n, seed):
    """The property the exact merge relies on (proved by total unimodularity in blocks.py)."""
    s = torch.rand(m, 5, generator=torch.Generator().manual_seed(seed)).double()
    f, _ = column_values(s, n, m // n)
    gains = f[:, 1:] - f[:, :-1]
    assert bool((gains[:, 1:] <= gains[:, :-1] + 1e-9).all())


def test_aligned_blocks_start_at_multiples_and_unaligned_is_better():
    torch.manual_seed(1)
    s = torch.rand(64, 32) ** 3
    k = 64 * 32 // 4 // 5
    al = select_blocks(s, 4, k, "aligned")
    assert bool((al.blocks[:, 1] % 4 == 0).all())
    opt, bed = select_blocks(s, 4, k, "optimal"), select_blocks(s, 4, k, "bed")
    valid(bed, s, 4, k)
    assert al.value <= opt.value and bed.value >= 0.99 * opt.value


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("n, keep", [(2, 0.5), (4, 0.5), (4, 0.3), (3, 0.1)])
def test_bed_keeps_at_least_995_per_mille_of_the_optimum(seed, n, keep):
    """The issue's quality bar, on skewed random scores (the greedy run-cutting of the paper misses it at 50%)."""
    g = torch.Generator().manual_seed(seed)
    s = torch.rand(48, 40, generator=g) ** 2
    k = round(keep * s.numel() / n)
    opt, bed = select_blocks(s, n, k, "optimal"), select_blocks(s, n, k, "bed")
    valid(bed, s, n, k)
    assert bed.value >= 0.995 * opt.value


@pytest.mark.parametrize("kwargs, error, match", [
    ({"n": 9}, ShapeError, "larger than Cout"),
    ({"num_blocks": 10_000}, ConfigError, "cannot be met"),
    ({"method": "magic"}, ConfigError, "unknown block selection"),
    ({"scores": torch.tensor([[float("nan")] * 3] * 8)}, ConfigError, "NaN"),
    ({"scores": -torch.ones(8, 3)}, ConfigError, "non-negative"),
])
def test_bad_input(kwargs, error, match):
    args = {"scores": torch.rand(8, 3), "n": 2, "num_blocks": 3, "method": "optimal"} | kwargs
    with pytest.raises(error, match=match):
        select_blocks(**args)


def test_block_scheme_gradual_recipe(tmp_path):
    """UBP end to end on digits: gradual cubic schedule with BED re-run inside training, then fine-tuning."""
    from tessera.pruning.job import run_recipe
    from tessera.pruning.recipe import recipe_from_dict

    recipe = recipe_from_dict({
        "data": {"name": "digits"}, "model": {"name": "vgg_tiny", "args": {"width": 8}},
        "baseline": {"train": {"epochs": 1, "batch_size": 64}},
        "pruning": {"algorithm": "gradual", "defaults": {"scheme": "block", "n": 4, "keep": 0.25},
                    "targets": [{"op": "Conv2d", "exclude": ["features.0"]}],
                    "gradual": {"updates_per_epoch": 3, "train": {"epochs": 1, "batch_size": 64}},
                    "retrain": {"epochs": 1, "batch_size": 64}},
        "output": str(tmp_path)})
    result = run_recipe(recipe, progress=False, log=lambda *_: None)
    for layer in result.layers[1:]:
        assert layer.kept == round(0.25 * layer.total / 4) * 4


def test_cubic_schedule_monotone():
    from tessera.pruning.gradual import cubic_keep

    ks = [cubic_keep(0.1, p / 10) for p in range(11)]
    assert ks[0] == 1.0 and ks[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(ks, ks[1:], strict=False))


@given(st.integers(2, 7), st.integers(1, 3), st.integers(2, 7), st.sampled_from([1, 2, 3]), st.integers(0, 9999),
       st.data())
def test_global_allocation_is_exact(m1, c1, m2, n, seed, data):
    """Splitting a global budget across two layers: equals the best split found by trying every split."""
    from tessera.sparsity.blocks import allocate_blocks

    n = min(n, m1, m2)
    g = torch.Generator().manual_seed(seed)
    a, b = torch.rand(m1, c1, generator=g), torch.rand(m2, 2, generator=g) * 3
    cap_a, cap_b = (m1 // n) * c1, (m2 // n) * 2
    total = data.draw(st.integers(2, cap_a + cap_b))
    ka, kb = allocate_blocks([a, b], n, total)
    assert ka + kb == total and ka >= 1 and kb >= 1

    def best(s, k):
        return select_blocks(s, n, k, "optimal").value

    brute = max(best(a, k) + best(b, total - k) for k in range(max(1, total - cap_b), min(cap_a, total - 1) + 1))
    assert best(a, ka) + best(b, kb) == pytest.approx(brute, rel=1e-9)


def test_global_budget_ranks_blocks_across_layers():
    from tessera.models import create_model
    from tessera.pruning.sparsifier import prune_oneshot

    torch.manual_seed(0)
    base = create_model("vgg_tiny", width=8)
    with torch.no_grad():
        base.features[3].weight.mul_(10.0)  # one layer far more important than the others
    targets = [{"op": "Conv2d", "exclude": ["features.0"]}]
    counts = {}
    for budget in ("layer", "global"):
        m = prune_oneshot(copy.deepcopy(base), targets, {"scheme": "block", "n": 4, "keep": 0.25, "budget": budget,
                                                          "method": "optimal"})
        counts[budget] = {n: int((mod.weight != 0).sum()) for n, mod in m.named_modules()
                          if isinstance(mod, nn.Conv2d) and n != "features.0"}
    assert sum(counts["global"].values()) == sum(counts["layer"].values())
    name = next(n for n in counts["layer"] if n.endswith("3"))
    assert counts["global"][name] > counts["layer"][name]
    assert all(v >= 4 for v in counts["global"].values())


def test_admm_block_projection_satisfies_constraints():
    """ADMM with unaligned blocks: after every dual update Z is block sparse with the layer's block count."""
    from tessera.models import create_model
    from tessera.pruning.admm import ADMM, ADMMConfig
    from tessera.pruning.sparsifier import Sparsifier
    from tessera.sparsity import analyse_conv

    torch.manual_seed(0)
    model = create_model("vgg_tiny", width=8)
    s = Sparsifier([{"op": "Conv2d", "exclude": ["features.0"]}], {"scheme": "block", "n": 4, "keep": 0.25})
    targets = s.select(model)
    admm = ADMM(targets, ADMMConfig(rho=0.01), steps_per_epoch=4, epochs=1)
    for _ in range(3):
        with torch.no_grad():
            for t in targets:
                t.module.weight.add_(torch.randn_like(t.module.weight) * 0.1)
        admm.update()
        for t, z in zip(targets, admm.Z, strict=True):
            k = t.scheme.num_blocks(z)
            assert int((z != 0).sum()) == k * 4
            lay = analyse_conv(z.reshape(z.shape[0], -1, 1, 1))
            assert lay.kind == "block" and lay.blocks.shape[0] == k


def test_readme_names_the_public_path():
    """The README documents tessera.sparsity.select_blocks; that path must import."""
    import tessera.sparsity

    assert tessera.sparsity.select_blocks is select_blocks


@given(st.integers(2, 24), st.integers(1, 12), st.sampled_from([2, 4]), st.integers(0, 10_000),
       st.sampled_from(["bed", "optimal", "aligned", "random", "one-off"]))
def test_block_cover_is_the_greedy_one_for_any_mask(m, cols, n, seed, kind):
    """The cover read off the weights (one-pass when every column is runs of exactly N rows) equals the
    greedy, block by block, computed by brute force over each column."""
    from tessera.sparsity.blocks import block_cover

    g = torch.Generator().manual_seed(seed)
    if n > m:
        return
    w = torch.randn(m, cols, generator=g)
    if kind in ("random", "one-off"):
        nz = torch.rand(m, cols, generator=g) < 0.4
    else:
        nz = select_blocks(w.square(), n, max(1, (m // n) * cols // 2), kind).mask
    if kind == "one-off":
        nz[seed % m, seed % cols] ^= True
    want = []
    for c in range(cols):
        covered = -1
        for r in range(m):
            if nz[r, c] and r > covered:
                start = min(r, m - n)
                want.append([c, start])
                covered = start + n - 1
    got = block_cover(nz, n).tolist()
    assert got == want
