"""MPO math: shapes, exact decomposition, truncation, gauge, determinism, parameter counts, errors."""

import math
import random
import re

import pytest
import torch

from opdf_ray import mpo


def reference_contract(cores, row_shape, col_shape):
    """Independent reconstruction: left-to-right tensordot over every leg, then one permute (the naive path)."""
    n = len(cores)
    t = cores[0]                                                 # (1, i1, j1, d1)
    for c in cores[1:]:
        t = torch.tensordot(t, c, dims=([t.ndim - 1], [0]))      # (1, i1, j1, ..., i_k, j_k, d_k)
    t = t.reshape([a for ij in zip(row_shape, col_shape) for a in ij])
    t = t.permute(*range(0, 2 * n, 2), *range(1, 2 * n, 2))
    return t.reshape(math.prod(row_shape), math.prod(col_shape))


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


def random_cases(count, seed):
    rng = random.Random(seed)
    sizes = [6, 8, 12, 16, 18, 24, 30, 32, 36, 48, 64, 96]
    cases = []
    while len(cases) < count:
        rows, cols, n, style = rng.choice(sizes), rng.choice(sizes), rng.randint(2, 7), rng.choice(mpo.STYLES)
        try:
            mpo.factor_shapes(rows, cols, n, style)
        except ValueError:
            continue
        cases.append((rows, cols, n, style))
    return cases


@pytest.mark.parametrize("rows,cols,n,style", random_cases(40, seed=1))
def test_full_rank_decomposition_is_exact(rows, cols, n, style):
    torch.manual_seed(rows * 1000 + cols * 10 + n)
    row_shape, col_shape = mpo.factor_shapes(rows, cols, n, style)
    w64 = torch.randn(rows, cols, dtype=torch.float64)
    cores = mpo.decompose(w64, row_shape, col_shape)
    assert [tuple(c.shape) for c in cores] == mpo.core_shapes(row_shape, col_shape)
    assert all(c.dtype == torch.float64 for c in cores)
    assert rel_err(mpo.contract(cores, row_shape, col_shape), w64) <= 1e-10
    assert rel_err(reference_contract(cores, row_shape, col_shape), w64) <= 1e-10
    w32 = w64.float()
    cores32 = mpo.decompose(w32, row_shape, col_shape)
    assert all(c.dtype == torch.float32 for c in cores32)
    assert rel_err(mpo.contract(cores32, row_shape, col_shape), w32) <= 1e-5


def test_bert_base_sized_matrices_are_exact_in_float32():
    torch.manual_seed(0)
    for rows, cols, n in [(768, 768, 5), (3072, 768, 7), (768, 3072, 5)]:
        w = torch.randn(rows, cols) * 0.02
        shapes = mpo.factor_shapes(rows, cols, n)
        assert rel_err(mpo.contract(mpo.decompose(w, *shapes), *shapes), w) <= 1e-5


def test_rank_deficient_and_ill_conditioned_matrices_stay_exact():
    torch.manual_seed(0)
    shapes = mpo.factor_shapes(64, 48, 4)
    low_rank = torch.randn(64, 3, dtype=torch.float64) @ torch.randn(3, 48, dtype=torch.float64)
    ill = torch.randn(64, 48, dtype=torch.float64) * torch.logspace(0, -12, 48, dtype=torch.float64)
    for w in (low_rank, ill):
        assert rel_err(mpo.contract(mpo.decompose(w, *shapes), *shapes), w) <= 1e-10
    zero = torch.zeros(64, 48, dtype=torch.float64)
    assert mpo.contract(mpo.decompose(zero, *shapes), *shapes).abs().max() == 0


@pytest.mark.parametrize("style,n", [("paper", 4), ("balanced", 4), ("balanced", 6)])
def test_truncation_error_shrinks_as_bond_dim_grows(style, n):
    torch.manual_seed(3)
    w = torch.randn(96, 80, dtype=torch.float64)
    shapes = mpo.factor_shapes(96, 80, n, style)
    full = max(mpo.bond_dims(*shapes))
    errors = [rel_err(mpo.contract(mpo.decompose(w, *shapes, bond_dim=b), *shapes), w)
              for b in [1, 2, 4, 8, 16, 32, full]]
    assert all(later <= earlier + 1e-12 for earlier, later in zip(errors, errors[1:])), errors
    assert errors[0] > 0.5 and errors[-1] <= 1e-10
    assert errors[3] < errors[0]


def test_truncated_paper_family_is_the_best_kronecker_approximation():
    # The paper family's single unfolding pairs (i1,j1) against (in,jn): truncation keeps its top singular values.
    torch.manual_seed(4)
    w = torch.randn(48, 40, dtype=torch.float64)
    rs, cs = mpo.factor_shapes(48, 40, 3)                      # (8,1,6) x (8,1,5)
    unfold = w.reshape(8, 6, 8, 5).permute(0, 2, 1, 3).reshape(64, 30)
    s = torch.linalg.svdvals(unfold)
    for b in (1, 5, 12):
        approx = mpo.contract(mpo.decompose(w, rs, cs, bond_dim=b), rs, cs)
        assert (approx - w).norm().item() == pytest.approx(s[b:].norm().item(), rel=1e-9)


def test_same_matrix_gives_identical_cores():
    torch.manual_seed(5)
    w = torch.randn(96, 64)
    for style in mpo.STYLES:
        shapes = mpo.factor_shapes(96, 64, 5, style)
        first, second = mpo.decompose(w, *shapes), mpo.decompose(w.clone(), *shapes)
        assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_signs_are_fixed_so_a_negated_matrix_negates_one_side():
    torch.manual_seed(6)
    w = torch.randn(64, 48, dtype=torch.float64)
    shapes = mpo.factor_shapes(64, 48, 3)
    a, b = mpo.decompose(w, *shapes), mpo.decompose(-w, *shapes)
    assert torch.allclose(a[0], b[0], atol=1e-10)          # left singular vectors keep their sign convention
    assert torch.allclose(a[2], -b[2], atol=1e-10)


def test_paper_gauge_is_symmetric_with_identity_middle_cores():
    torch.manual_seed(7)
    w = torch.randn(96, 72, dtype=torch.float64)
    rs, cs = mpo.factor_shapes(96, 72, 5)
    cores = mpo.decompose(w, rs, cs)
    r = cores[1].shape[0]
    for mid in cores[1:-1]:
        assert torch.equal(mid.reshape(r, r), torch.eye(r, dtype=torch.float64))
    first = cores[0].reshape(-1, r)                             # U √Λ
    last = cores[-1].reshape(r, -1)                             # √Λ Vᵀ
    lam = torch.linalg.svdvals(mpo.contract(cores, rs, cs).reshape(rs[0], rs[-1], cs[0], cs[-1])
                               .permute(0, 2, 1, 3).reshape(rs[0] * cs[0], -1))
    assert torch.allclose(first.T @ first, torch.diag(lam), atol=1e-9)
    assert torch.allclose(last @ last.T, torch.diag(lam), atol=1e-9)


def test_balanced_gauge_splits_every_bond_spectrum_evenly():
    torch.manual_seed(8)
    w = torch.randn(36, 48, dtype=torch.float64)
    rs, cs = mpo.factor_shapes(36, 48, 4, "balanced")
    cores = mpo.decompose(w, rs, cs)
    for k in range(1, len(cores)):
        left = cores[0].reshape(-1, cores[0].shape[-1])
        for c in cores[1:k]:
            left = (left @ c.reshape(c.shape[0], -1)).reshape(-1, c.shape[-1])
        right = cores[-1].reshape(cores[-1].shape[0], -1)
        for c in reversed(cores[k:-1]):
            right = (c.reshape(-1, c.shape[-1]) @ right).reshape(c.shape[0], -1)
        # Symmetric gauge: left block = L Λ^{1/2}, right block = Λ^{1/2} R with L, R orthonormal.
        assert torch.allclose(left.T @ left, right @ right.T, atol=1e-9)
        gram = left.T @ left
        assert torch.allclose(gram, torch.diag(torch.diagonal(gram)), atol=1e-9)


@pytest.mark.parametrize("rows,cols,expected", [
    (768, 768, ((32, 1, 1, 1, 24), (32, 1, 1, 1, 24))),
    (3072, 768, ((64, 1, 1, 1, 48), (32, 1, 1, 1, 24))),
    (768, 3072, ((32, 1, 1, 1, 24), (64, 1, 1, 1, 48))),
    (384, 384, ((24, 1, 1, 1, 16), (24, 1, 1, 1, 16))),
    (1536, 384, ((48, 1, 1, 1, 32), (24, 1, 1, 1, 16))),
])
def test_paper_shapes_are_derived_from_the_real_sizes(rows, cols, expected):
    assert mpo.factor_shapes(rows, cols, 5) == expected


def test_balanced_shapes_spread_factors_over_every_core():
    rs, cs = mpo.factor_shapes(768, 768, 6, "balanced")
    legs = [i * j for i, j in zip(rs, cs)]
    assert math.prod(rs) == 768 and math.prod(cs) == 768
    assert min(legs) > 1 and max(legs) / min(legs) <= 4


# ALGORITHMS.md §1.5: per-matrix counts for BERT-base sizes.
@pytest.mark.parametrize("n,attention,ffn", [
    (2, 921_600, 3_686_400), (3, 1_253_376, 5_013_504), (4, 1_585_152, 6_340_608), (5, 1_916_928, 7_667_712),
    (6, 2_248_704, 8_994_816), (7, 2_580_480, 10_321_920), (10, 3_575_808, 14_303_232),
])
def test_parameter_counts_match_the_published_table(n, attention, ffn):
    assert mpo.count_params(*mpo.factor_shapes(768, 768, n)) == attention
    assert mpo.count_params(*mpo.factor_shapes(3072, 768, n)) == ffn
    assert mpo.count_params(*mpo.factor_shapes(768, 3072, n)) == ffn


def test_truncated_counts_match_the_published_example():
    # attention [32,1,1,1,24]^2 truncated at 100: ranks [1,100,100,100,100,1], 190,000 parameters
    shapes = mpo.factor_shapes(768, 768, 5)
    assert mpo.bond_dims(*shapes, bond_dim=100) == (1, 100, 100, 100, 100, 1)
    assert mpo.count_params(*shapes, bond_dim=100) == 190_000


def test_central_index_is_the_middle_core():
    assert [mpo.central_index(n) for n in (2, 3, 4, 5, 6, 7)] == [0, 1, 1, 2, 2, 3]


def test_contraction_order_is_cheapest_for_a_paper_chain():
    # (2048×1152)(1152×1152)^5(1152×1152): right-to-left (or middle-first) beats left-to-right by ~1.6×
    bonds, legs = (1, 1152, 1152, 1152, 1152, 1152, 1152, 1), (2048, 1, 1, 1, 1, 1, 1152)
    plan = mpo._contraction_plan(bonds, legs)
    assert plan != (((((((0, 1), 2), 3), 4), 5), 6))          # not the naive left-to-right chain


@pytest.mark.parametrize("call,message", [
    (lambda: mpo.factor_shapes(768, 768, 1), "n_cores must be an int ≥ 2"),
    (lambda: mpo.factor_shapes(768, 768, 5, "weird"), "unknown MPO style 'weird'; allowed: paper, balanced"),
    (lambda: mpo.factor_shapes(7, 768, 5), "rows=7 is prime"),
    (lambda: mpo.factor_shapes(768, 0, 5), "cols must be a positive int"),
    (lambda: mpo.factor_shapes(6, 4, 5, "balanced"), "use n_cores ≤ 4"),
    (lambda: mpo.decompose(torch.randn(12, 8), (3, 2), (2, 2)), "multiply to 6 × 4, but the matrix is 12 × 8"),
    (lambda: mpo.decompose(torch.randn(12, 8), (3, 4), (8,)), "must have the same length"),
    (lambda: mpo.decompose(torch.randn(12, 8), (12,), (8,)), "n_cores must be an int ≥ 2"),
    (lambda: mpo.decompose(torch.randn(12, 8), (3, 4), (2, 4), bond_dim=0), "bond_dim must be None"),
    (lambda: mpo.decompose(torch.randn(2, 12, 8), (3, 4), (2, 4)), "must be a 2-D matrix"),
    (lambda: mpo.contract([torch.randn(1, 3, 2, 4), torch.randn(5, 4, 4, 1)], (3, 4), (2, 4)), "core 1 has shape"),
])
def test_bad_inputs_raise_clear_value_errors(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


def test_a_batched_contraction_dispatches_one_view_per_operand_and_bare_bmms():
    """Each operator is host work a launch-bound GPU step waits on: one batched contraction of six MiniLM matrices
    with 5 cores dispatched 50 operators forward and 50 in its VJP (every tensor reshaped twice, ``@`` wrapping
    ``bmm`` in expands and a view, a ``select`` per stack to check shapes); now 13 and 25."""
    import collections

    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = collections.Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops[func.overloadpacket.__name__] += 1
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    rows, cols = mpo.factor_shapes(384, 384, 5, "paper")
    per_matrix = [mpo.decompose(torch.randn(384, 384), rows, cols) for _ in range(6)]
    stacks = [torch.stack(same).requires_grad_() for same in zip(*per_matrix)]
    with Count() as forward:
        built = mpo.contract_stacked(stacks, rows, cols)
    grad_out = torch.randn_like(built)
    with Count() as backward:
        grads = torch.autograd.grad(built, stacks, grad_out)
    assert forward.ops["bmm"] == 4 and not {"expand", "select"} & set(forward.ops)
    assert sum(forward.ops.values()) <= 13 and sum(backward.ops.values()) <= 25
    _, vjp = torch.func.vjp(lambda *cs: mpo.contract(list(cs), rows, cols), *per_matrix[0])
    for stacked, alone in zip(grads, vjp(grad_out[0]), strict=True):     # and still the per-matrix products
        assert torch.equal(stacked[0], alone)
