import itertools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tessera.errors import ConfigError, ShapeError
from tessera.sparsity import (
    PatternLibrary,
    all_patterns,
    library_from_masks,
    pattern_assignment,
    pattern_connectivity_mask,
    pattern_mask,
)

conv_shapes = st.tuples(st.integers(1, 6), st.integers(1, 6))


def weights(cout, cin, seed):
    return torch.randn(cout, cin, 3, 3, generator=torch.Generator().manual_seed(seed))


def test_candidate_counts():
    assert all_patterns(True).shape == (56, 9)
    assert all_patterns(False).shape == (126, 9)
    assert bool(all_patterns(True)[:, 4].all())
    assert torch.unique(all_patterns(False), dim=0).shape[0] == 126


@pytest.mark.parametrize("k", [1, 4, 6, 8, 12, 56])
def test_default_library(k):
    lib = PatternLibrary.default(k)
    assert len(lib) == k
    assert bool((lib.patterns.sum(1) == 4).all()) and bool(lib.patterns[:, 4].all())


@given(conv_shapes, st.integers(0, 10_000), st.sampled_from([4, 8, 12]))
def test_pattern_mask_is_bruteforce_projection(shape, seed, k):
    w = weights(*shape, seed)
    lib = PatternLibrary.default(k)
    mask = pattern_mask(w, lib)
    for o, i in itertools.product(range(shape[0]), range(shape[1])):
        kernel = w[o, i].flatten()
        dists = [float((kernel - kernel * p).square().sum()) for p in lib.patterns]
        got = mask[o, i].flatten()
        # exactly 4 non-zeros, centre kept, pattern from the library
        assert int(got.sum()) == 4 and bool(got[4])
        assert any(bool((got == p).all()) for p in lib.patterns)
        # and it is the closest library pattern (ties allowed)
        assert float((kernel - kernel * got).square().sum()) == pytest.approx(min(dists), rel=1e-5, abs=1e-6)


def test_extract_is_most_frequent():
    w = weights(16, 16, 3)
    lib = PatternLibrary.extract([w], 6)
    full = PatternLibrary.full()
    best = pattern_assignment(w, full).flatten()
    counts = torch.bincount(best, minlength=56)
    chosen = {tuple(p.tolist()) for p in lib.patterns}
    top = sorted(counts.tolist(), reverse=True)
    kth = top[5]
    for j in range(56):
        if counts[j] > kth:
            assert tuple(full.patterns[j].tolist()) in chosen
    assert len(lib) == 6


def test_library_errors_and_json_roundtrip():
    lib = PatternLibrary.default(8)
    assert torch.equal(PatternLibrary.from_json(lib.to_json()).patterns, lib.patterns)
    with pytest.raises(ConfigError):
        PatternLibrary.default(0)
    with pytest.raises(ConfigError):
        PatternLibrary.from_json("not json")
    with pytest.raises(ConfigError):
        PatternLibrary(torch.ones(2, 9, dtype=torch.bool))


@pytest.mark.parametrize("shape", [(4, 4, 1, 1), (4, 4, 5, 5), (4, 9)])
def test_patterns_refuse_other_shapes(shape):
    with pytest.raises(ShapeError, match="3x3|4-D"):
        pattern_mask(torch.randn(shape), PatternLibrary.default(8))


def test_pattern_connectivity_is_exact_projection_bruteforce():
    """Tiny layer: brute force over every (kept kernel set, pattern per kernel) minimises the distance."""
    w = weights(2, 2, 7)
    lib = PatternLibrary.default(3)
    keep = 0.5  # 2 of 4 kernels
    mask = pattern_connectivity_mask(w, lib, keep)
    best = float("inf")
    kernels = list(itertools.product(range(2), range(2)))
    for kept in itertools.combinations(kernels, 2):
        for pats in itertools.product(range(3), repeat=2):
            m = torch.zeros_like(w, dtype=torch.bool)
            for (o, i), p in zip(kept, pats, strict=True):
                m[o, i] = lib.patterns[p].reshape(3, 3)
            best = min(best, float((w - w * m).square().sum()))
    assert float((w - w * mask).square().sum()) == pytest.approx(best, rel=1e-6)
    assert int(mask.reshape(4, 9).any(1).sum()) == 2


def test_library_from_masks():
    lib = PatternLibrary.default(5)
    m = pattern_mask(weights(8, 8, 1), lib)
    got = library_from_masks([m])
    assert {tuple(p.tolist()) for p in got.patterns} <= {tuple(p.tolist()) for p in lib.patterns}


def test_grouped_projection_bruteforce():
    """Groups of 2 filters sharing kept channels and patterns: brute force over every feasible choice."""
    from tessera.sparsity.patterns import grouped_pattern_connectivity_mask

    w = weights(4, 2, 11)  # 2 groups x 2 channels = 4 group-columns, keep 2 of them
    lib = PatternLibrary.default(3)
    mask = grouped_pattern_connectivity_mask(w, lib, 0.5, group=2)
    cols = list(itertools.product(range(2), range(2)))  # (group, channel)
    best = float("inf")
    for kept in itertools.combinations(cols, 2):
        for pats in itertools.product(range(3), repeat=2):
            m = torch.zeros_like(w, dtype=torch.bool)
            for (g, c), p in zip(kept, pats, strict=True):
                m[2 * g : 2 * g + 2, c] = lib.patterns[p].reshape(3, 3)
            best = min(best, float((w - w * m).square().sum()))
    assert float((w - w * mask).square().sum()) == pytest.approx(best, rel=1e-6)
    assert torch.equal(mask[0], mask[1]) and torch.equal(mask[2], mask[3])


@given(st.integers(0, 40), st.integers(1, 12), st.integers(0, 999))
def test_unique_rows_is_torch_unique(n, width, seed):
    """The packed-integer unique agrees with torch.unique(dim=0): same rows, same order, same inverse."""
    from tessera.sparsity.layout import unique_rows

    rows = torch.rand(n, width, generator=torch.Generator().manual_seed(seed)) < 0.4
    u, inv = unique_rows(rows)
    ru, rinv = torch.unique(rows, dim=0, return_inverse=True)
    assert torch.equal(u, ru) and torch.equal(inv, rinv)
