import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tessera.errors import ConfigError, ShapeError
from tessera.sparsity import (
    PatternLibrary,
    analyse_conv,
    connectivity_mask,
    filter_mask,
    magnitude_mask,
    make_scheme,
    nm_mask,
    pattern_connectivity_mask,
)

keeps = st.floats(0.01, 1.0)


@given(st.integers(1, 12), st.integers(1, 12), st.sampled_from([1, 3, 5]), keeps, st.integers(0, 999))
def test_connectivity_keeps_exact_count_of_largest_kernels(cout, cin, k, keep, seed):
    w = torch.randn(cout, cin, k, k, generator=torch.Generator().manual_seed(seed))
    m = connectivity_mask(w, keep)
    kept = m.reshape(cout, cin, -1)
    assert bool((kept.all(-1) | ~kept.any(-1)).all()), "whole kernels only"
    n = round(keep * cout * cin)
    assert int(kept.all(-1).sum()) == n
    norms = w.square().sum((2, 3))
    if 0 < n < cout * cin:
        assert float(norms[kept.all(-1)].min()) >= float(norms[~kept.all(-1)].max())


def test_connectivity_per_filter():
    w = torch.randn(5, 10, 3, 3)
    m = connectivity_mask(w, 0.3, per_filter=True)
    assert m.reshape(5, 10, 9).all(-1).sum(1).tolist() == [3] * 5


@pytest.mark.parametrize("keep", [0, -0.1, 1.5, "half"])
def test_keep_outside_range_is_an_error(keep):
    with pytest.raises(ConfigError, match=r"\(0, 1\]"):
        connectivity_mask(torch.randn(2, 2, 3, 3), keep)


@given(st.integers(1, 300), keeps)
def test_magnitude_count(n, keep):
    w = torch.randn(n)
    m = magnitude_mask(w, keep)
    assert int(m.sum()) == round(keep * n)
    if 0 < m.sum() < n:
        assert float(w.abs()[m].min()) >= float(w.abs()[~m].max())


def test_nm_and_filter():
    w = torch.randn(8, 4, 3, 3)
    m = nm_mask(w, 2, 4)
    assert bool((m.reshape(-1, 4).sum(1) == 2).all())
    with pytest.raises(ShapeError):
        nm_mask(torch.randn(8, 3, 1, 1), 2, 4)
    f = filter_mask(w, 0.5)
    assert f.reshape(8, -1).all(1).sum() == 4 and bool((f.reshape(8, -1).all(1) | ~f.reshape(8, -1).any(1)).all())


def test_scheme_registry():
    s = make_scheme("magnitude", keep=0.5)
    assert int(s.mask(torch.randn(10)).sum()) == 5
    with pytest.raises(ConfigError, match="unknown scheme"):
        make_scheme("nope")
    with pytest.raises(ConfigError, match="no parameter"):
        make_scheme("magnitude", ratio=0.5)


def test_analyse_conv_reads_back_kinds():
    lib = PatternLibrary.default(8)
    w = torch.randn(16, 8, 3, 3)
    assert analyse_conv(w).kind == "dense"
    pc = w * pattern_connectivity_mask(w, lib, 0.3)
    lay = analyse_conv(pc)
    assert lay.kind == "pattern_connectivity" and lay.kernels_kept == round(0.3 * 128)
    assert {tuple(p.tolist()) for p in lay.library.patterns} <= {tuple(p.tolist()) for p in lib.patterns}
    assert analyse_conv(w * connectivity_mask(w, 0.5)).kind == "connectivity"
    assert analyse_conv(w * magnitude_mask(w, 0.5)).kind == "unstructured"
