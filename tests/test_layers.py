"""MPOLinear: same function as the Linear it came from, trainable cores, eval cache, merge back."""

import pytest
import torch
from torch import nn

from opdf_ray import mpo
from opdf_ray.layers import MPOLinear


def make_linear(out_features=96, in_features=64, bias=True, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(in_features, out_features, bias=bias)


@pytest.mark.parametrize("n_cores,style", [(2, "paper"), (3, "paper"), (5, "paper"), (7, "paper"), (4, "balanced")])
def test_from_linear_computes_the_same_function(n_cores, style):
    linear = make_linear()
    layer = MPOLinear.from_linear(linear, n_cores, style=style)
    x = torch.randn(5, 7, 64)
    assert layer.in_features == 64 and layer.out_features == 96 and layer.n_cores == n_cores
    torch.testing.assert_close(layer(x), linear(x), rtol=1e-5, atol=1e-5)


def test_bias_is_kept_and_absent_bias_stays_absent():
    linear = make_linear()
    layer = MPOLinear.from_linear(linear, 3)
    assert torch.equal(layer.bias, linear.bias) and layer.bias is not linear.bias
    assert MPOLinear.from_linear(make_linear(bias=False), 3).bias is None


def test_every_core_and_the_bias_receive_gradient():
    layer = MPOLinear.from_linear(make_linear(), 5).train()
    layer(torch.randn(8, 64)).square().sum().backward()
    for k, core in enumerate(layer.cores):
        assert core.grad is not None and core.grad.abs().sum() > 0, f"core {k} got no gradient"
    assert layer.bias.grad.abs().sum() > 0


def test_central_and_auxiliary_cores():
    layer = MPOLinear.from_linear(make_linear(), 5)
    assert layer.central_index == 2 and layer.central_core() is layer.cores[2]
    assert [id(c) for c in layer.auxiliary_cores()] == [id(layer.cores[k]) for k in (0, 1, 3, 4)]
    assert MPOLinear.from_linear(make_linear(), 7).central_index == 3


def test_bond_dim_truncates_the_cores():
    layer = MPOLinear.from_linear(make_linear(), 4, bond_dim=8)
    assert max(max(c.shape[0], c.shape[3]) for c in layer.cores) == 8
    assert sum(c.numel() for c in layer.cores) == mpo.count_params(layer.row_shape, layer.col_shape, 8)


def test_to_linear_returns_a_plain_linear_with_the_same_function_after_training():
    layer = MPOLinear.from_linear(make_linear(), 5).train()
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        layer(torch.randn(8, 64)).square().mean().backward()
        optimizer.step()
    merged = layer.to_linear()
    assert type(merged) is nn.Linear and merged.weight.shape == (96, 64)
    x = torch.randn(6, 64)
    torch.testing.assert_close(merged(x), layer.eval()(x), rtol=0, atol=1e-6)


def test_eval_cache_is_reused_and_invalidated_by_any_core_change():
    layer = MPOLinear.from_linear(make_linear(), 4).eval()
    x = torch.randn(3, 64)
    with torch.no_grad():
        first = layer(x)
        cached = layer._cache[1]
        layer(x)
        assert layer._cache[1] is cached                      # reused while nothing changed
        layer.cores[0].mul_(2.0)                              # an in-place update (what optimisers do)
        changed = layer(x)
    assert not torch.allclose(first, changed)
    torch.testing.assert_close(changed, nn.functional.linear(x, layer.weight(), layer.bias))
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    state["cores.0"] /= 2.0
    layer.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), first)


def test_eval_mode_with_gradients_needed_does_not_use_a_detached_cache():
    layer = MPOLinear.from_linear(make_linear(), 3).eval()
    layer(torch.randn(2, 64)).sum().backward()
    assert all(c.grad is not None for c in layer.cores)


def test_from_linear_keeps_dtype_and_frozen_flag():
    linear = make_linear().double().requires_grad_(False)
    layer = MPOLinear.from_linear(linear, 3)
    assert all(c.dtype == torch.float64 and not c.requires_grad for c in layer.cores)


def test_from_linear_rejects_a_non_linear_module():
    with pytest.raises(ValueError, match="needs an nn.Linear, got Conv1d"):
        MPOLinear.from_linear(nn.Conv1d(3, 3, 1), 3)
