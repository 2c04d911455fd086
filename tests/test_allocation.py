"""ERK split of a network-wide kept fraction across layers."""

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from tessera.errors import ConfigError
from tessera.sparsity.allocation import erk_keep

shape = st.tuples(st.integers(1, 256), st.integers(1, 256), st.sampled_from([1, 3]), st.sampled_from([1, 3]))


@settings(max_examples=200, deadline=None)
@given(st.lists(shape, min_size=1, max_size=6), st.floats(0.01, 1.0))
def test_erk_keeps_the_total_and_its_proportions(shapes, keep):
    """Same number of kept weights as a uniform split; every layer in (0, 1]; layers below 1 are proportional
    to (sum of dimensions) / (product of dimensions), and a layer at 1 would have been above it."""
    ks = erk_keep(shapes, keep)
    sizes = [a * b * c * d for a, b, c, d in shapes]
    assert sum(k * n for k, n in zip(ks, sizes, strict=True)) == pytest.approx(keep * sum(sizes), rel=1e-9)
    assert all(0.0 < k <= 1.0 + 1e-12 for k in ks)
    raw = [sum(s) / n for s, n in zip(shapes, sizes, strict=True)]
    free = [i for i, k in enumerate(ks) if k < 1.0 - 1e-12]
    if free:
        scale = ks[free[0]] / raw[free[0]]
        for i in free:
            assert ks[i] == pytest.approx(raw[i] * scale, rel=1e-9)
        assert all(raw[i] * scale >= 1.0 - 1e-9 for i in range(len(ks)) if i not in free)


def test_erk_rejects_bad_keep():
    with pytest.raises(ConfigError):
        erk_keep([(8, 8, 3, 3)], 1.5)


def test_erk_budget_prunes_wide_layers_harder_with_the_same_total():
    from tessera.models import create_model
    from tessera.pruning.sparsifier import prune_oneshot

    torch.manual_seed(0)
    base = create_model("vgg6", width=8)
    targets = [{"op": "Conv2d", "exclude": ["features.0"]}]
    kept = {}
    for budget in ("layer", "erk"):
        m = prune_oneshot(copy.deepcopy(base), targets, {"scheme": "magnitude", "keep": 0.25, "budget": budget})
        kept[budget] = {n: (int((mod.weight != 0).sum()), mod.weight.numel()) for n, mod in m.named_modules()
                        if isinstance(mod, nn.Conv2d) and n != "features.0"}
    total = {b: sum(k for k, _ in v.values()) for b, v in kept.items()}
    assert abs(total["erk"] - total["layer"]) <= len(kept["erk"])  # rounding per layer only
    density = [k / n for k, n in kept["erk"].values()]
    sizes = [n for _, n in kept["erk"].values()]
    order = sorted(range(len(sizes)), key=sizes.__getitem__)
    assert density[order[0]] > 0.25 > density[order[-1]]


def test_unknown_budget_is_a_config_error():
    from tessera.sparsity import make_scheme

    with pytest.raises(ConfigError, match="budget"):
        make_scheme("pattern_connectivity", budget="global")
