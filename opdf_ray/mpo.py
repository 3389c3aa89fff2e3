"""MPO (matrix product operator, a.k.a. TT-matrix) math on plain tensors: shapes, decompose, contract, count.

A weight ``W: (I, J)`` (``nn.Linear.weight``: I = out_features = rows, J = in_features = cols) with
``I = i_1···i_n`` and ``J = j_1···j_n`` is written as n cores ``T_k: (d_{k-1}, i_k, j_k, d_k)``, ``d_0 = d_n = 1``:

    W[(i_1..i_n), (j_1..j_n)] = Σ_{bonds} T_1[1, i_1, j_1, :] T_2[:, i_2, j_2, :] ··· T_n[:, i_n, j_n, 1]

References: Gao et al., "Parameter-efficient mixture-of-experts ... MPO" and OPDF (Zhan et al., NeurIPS 2024),
whose published code was read before writing this (its bugs not copied). Nothing here is an ``nn.Module``: the
functions are pure tensor math so they can be tested in milliseconds and reused by layers, losses and export.

Gauge (documented choice, matching the published code's "symmetric" gauge): with Λ_k the singular values of
bond k (the SVD of the k-th unfolding of W), every core is ``T_k = Λ_{k-1}^{1/2} Γ_k Λ_k^{1/2}`` (Vidal form with
the bond spectrum split evenly between neighbours). For the paper family ``[a,1,…,1,b] × [c,1,…,1,d]`` this is:
first core ``U √Λ``, last core ``√Λ Vᵀ``, every middle ``r×r`` core exactly the identity (an orthogonal matrix,
as in the published code, but the canonical one). SVD signs are fixed (largest-magnitude entry of every left
singular vector positive), so the same matrix always gives the same cores.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch

from opdf_ray.choices import STYLES


# ----------------------------------------------------------------------------------------------------------------
# shapes


def _prime_factors(n: int) -> list[int]:
    """Prime factors of ``n`` with multiplicity, ascending."""
    out, p = [], 2
    while p * p <= n:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    if n > 1:
        out.append(n)
    return out


def _near_square_split(n: int) -> tuple[int, int]:
    """``n = a·b`` with ``a ≥ b`` and ``b`` the largest divisor ≤ √n (768 → 32·24, 3072 → 64·48, 384 → 24·16)."""
    b = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    return n // b, b


def _check_size(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_n_cores(n_cores: int) -> None:
    if isinstance(n_cores, bool) or not isinstance(n_cores, int) or n_cores < 2:
        raise ValueError(f"n_cores must be an int ≥ 2 (an MPO needs at least two cores), got {n_cores!r}")


def factor_shapes(rows: int, cols: int, n_cores: int, style: str = "paper") -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Factorise a ``rows × cols`` matrix into MPO leg sizes ``(row_shape, col_shape)``, each of length ``n_cores``.

    Styles:
      * ``"paper"`` (default, OPDF's family): ``[a,1,…,1,b] × [c,1,…,1,d]`` with near-square ``a·b = rows`` and
        ``c·d = cols`` (``a ≥ b``: 768 → 32·24, 3072 → 64·48, 384 → 24·16, 1536 → 48·32). The middle cores are plain
        ``r×r`` matrices; each adds ``r²`` trainable parameters. Needs both sizes composite.
      * ``"balanced"``: the prime factors of ``rows`` and ``cols`` spread over all cores so that every core's
        ``i_k·j_k`` is as even as possible (a compressive, textbook TT-matrix). Needs at least ``n_cores`` prime
        factors in ``rows·cols``.

    Raises:
        ValueError: bad sizes or style, or sizes that cannot be factored as asked (the message says which work).
    """
    _check_size("rows", rows)
    _check_size("cols", cols)
    _check_n_cores(n_cores)
    if style == "paper":
        for name, size in (("rows", rows), ("cols", cols)):
            if len(_prime_factors(size)) < 2:
                raise ValueError(
                    f"style='paper' needs {name} to factor as a·b with a, b ≥ 2, but {name}={size} is "
                    f"{'1' if size == 1 else 'prime'}; composite sizes work (e.g. 384, 768, 1536, 3072), "
                    f"or pass explicit shapes")
        a, b = _near_square_split(rows)
        c, d = _near_square_split(cols)
        ones = (1,) * (n_cores - 2)
        return (a, *ones, b), (c, *ones, d)
    if style == "balanced":
        factors = [(p, 0) for p in _prime_factors(rows)] + [(p, 1) for p in _prime_factors(cols)]
        if len(factors) < n_cores:
            raise ValueError(
                f"style='balanced' needs at least n_cores={n_cores} prime factors in rows·cols, but "
                f"{rows}×{cols} has {len(factors)}; use n_cores ≤ {len(factors)} or style='paper'")
        shape = [[1] * n_cores, [1] * n_cores]  # [row legs, col legs]
        for p, side in sorted(factors, reverse=True):  # largest first into the lightest core: near-even cores
            k = min(range(n_cores), key=lambda c: (shape[0][c] * shape[1][c], c))
            shape[side][k] *= p
        return tuple(shape[0]), tuple(shape[1])
    raise ValueError(f"unknown MPO style {style!r}; allowed: {', '.join(STYLES)}")


def _check_shapes(rows: int, cols: int, row_shape: Sequence[int], col_shape: Sequence[int]) -> None:
    if len(row_shape) != len(col_shape):
        raise ValueError(f"row_shape {tuple(row_shape)} and col_shape {tuple(col_shape)} must have the same length "
                         f"(one row leg and one column leg per core)")
    _check_n_cores(len(row_shape))
    for leg in (*row_shape, *col_shape):
        _check_size("every MPO leg size", leg)
    if math.prod(row_shape) != rows or math.prod(col_shape) != cols:
        raise ValueError(
            f"MPO shapes {tuple(row_shape)} × {tuple(col_shape)} multiply to {math.prod(row_shape)} × "
            f"{math.prod(col_shape)}, but the matrix is {rows} × {cols}; the products must equal the matrix size")


def check_bond_dim(bond_dim: int | None) -> None:
    if bond_dim is not None and (isinstance(bond_dim, bool) or not isinstance(bond_dim, int) or bond_dim < 1):
        raise ValueError(f"bond_dim must be None (full rank, exact) or an int ≥ 1, got {bond_dim!r}")


def bond_dims(row_shape: Sequence[int], col_shape: Sequence[int], bond_dim: int | None = None) -> tuple[int, ...]:
    """Bond sizes ``(d_0=1, d_1, …, d_{n-1}, d_n=1)``: ``d_k = min(Π_{m≤k} i_m j_m, Π_{m>k} i_m j_m, bond_dim)``."""
    check_bond_dim(bond_dim)
    legs = [i * j for i, j in zip(row_shape, col_shape, strict=True)]
    dims = [1]
    for k in range(1, len(legs)):
        d = min(math.prod(legs[:k]), math.prod(legs[k:]))
        dims.append(d if bond_dim is None else min(d, bond_dim))
    return (*dims, 1)


def core_shapes(row_shape: Sequence[int], col_shape: Sequence[int],
                bond_dim: int | None = None) -> list[tuple[int, int, int, int]]:
    """Shape ``(d_{k-1}, i_k, j_k, d_k)`` of every core."""
    d = bond_dims(row_shape, col_shape, bond_dim)
    return [(d[k], i, j, d[k + 1]) for k, (i, j) in enumerate(zip(row_shape, col_shape))]


def count_params(row_shape: Sequence[int], col_shape: Sequence[int], bond_dim: int | None = None) -> int:
    """Number of entries over all cores (the trainable weight size of an over-parameterised matrix, no bias)."""
    return sum(math.prod(s) for s in core_shapes(row_shape, col_shape, bond_dim))


def central_index(n_cores: int) -> int:
    """Index of the central core, ``(n−1)//2`` as in the published code; all other cores are auxiliary."""
    _check_n_cores(n_cores)
    return (n_cores - 1) // 2


# ----------------------------------------------------------------------------------------------------------------
# decompose


def _gram_svd(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``m: (p, q)``, p ≥ q → ``u: (p, q)``, ``s: (q,)`` descending, ``v: (q, q)`` with ``m = u diag(s) vᵀ``."""
    _, v = torch.linalg.eigh(m.T @ m)                              # (q, q), ascending eigenvalues
    us = m @ v                                                     # (p, q) = U diag(s)
    s = us.norm(dim=0)                                             # (q,)
    order = s.argsort(descending=True, stable=True)
    s, v, us = s[order], v[:, order], us[:, order]
    return us * _safe_inv(s), s, v                                 # zero column of u where s is 0


def _svd_fixed_signs(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD ``m = U diag(s) Vh`` (s descending) from the eigenvectors of the smaller Gram matrix, fixed signs.

    Why not ``torch.linalg.svd``: for the 2048×1152 unfolding of a 3072×768 matrix, ``eigh`` of the 1152² Gram
    matrix plus two matmuls takes ~0.16 s against ~0.45 s for gesdd on this CPU. Exactness does not depend on the
    eigenvectors being accurate: the eigenvector matrix is orthonormal to machine precision and the other factor
    is ``m`` times it, so ``U diag(s) Vh`` equals ``m`` to rounding even for ill-conditioned ``m``; ``s`` are
    column norms of that product (accurate, not square roots of eigenvalues). Signs: the largest-magnitude entry
    of every left singular vector is made positive.
    """
    if m.shape[0] >= m.shape[1]:
        u, s, v = _gram_svd(m)
    else:
        v, s, u = _gram_svd(m.T)                                   # mᵀ = V diag(s) Uᵀ
    pivot = u.abs().argmax(dim=0)                                  # (r,)
    sign = torch.sign(u.gather(0, pivot[None, :]))[0]              # (r,)
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return u * sign, s, (v * sign).T


def _safe_inv(s: torch.Tensor) -> torch.Tensor:
    """``1/s`` with 0 where ``s`` is numerically zero."""
    return _safe_rsqrt(s) ** 2


def _safe_rsqrt(s: torch.Tensor) -> torch.Tensor:
    """``s^{-1/2}`` with 0 where ``s`` is numerically zero: that bond index carries nothing (a rank-deficient W)."""
    tiny = s.max().clamp_min(torch.finfo(s.dtype).tiny) * torch.finfo(s.dtype).eps * s.numel()
    return torch.where(s > tiny, s.clamp_min(tiny).rsqrt(), torch.zeros_like(s))


def decompose(weight: torch.Tensor, row_shape: Sequence[int], col_shape: Sequence[int],
              bond_dim: int | None = None) -> list[torch.Tensor]:
    """Decompose ``weight: (I, J)`` into MPO cores ``T_k: (d_{k-1}, i_k, j_k, d_k)`` by sequential SVD (TT-SVD).

    Runs in float64 on the weight's device and returns cores in the weight's dtype. Full rank (``bond_dim=None``)
    is exact; ``bond_dim`` keeps the largest singular values at every bond (quasi-optimal truncation, the optimal
    rank-``bond_dim`` Kronecker approximation for the paper family). Cores are in the symmetric gauge described in
    the module docstring, with fixed SVD signs. A core with ``i_k = j_k = 1`` is a pure bond matrix: its SVD is the
    previous one, so it is the identity and costs nothing (the paper family needs a single SVD).

    Raises:
        ValueError: weight not 2-D, shapes that do not multiply to the weight's size, or bond_dim < 1.
    """
    if weight.ndim != 2:
        raise ValueError(f"weight must be a 2-D matrix (out_features, in_features), got shape {tuple(weight.shape)}")
    rows, cols = weight.shape
    _check_shapes(rows, cols, row_shape, col_shape)
    check_bond_dim(bond_dim)
    n = len(row_shape)
    dims = bond_dims(row_shape, col_shape, bond_dim)
    w = weight.detach().to(torch.float64)
    # (I, J) -> (i_1..i_n, j_1..j_n) -> interleaved (i_1, j_1, ..., i_n, j_n)
    t = w.reshape(*row_shape, *col_shape).permute(*[a for k in range(n) for a in (k, n + k)])
    rest = t.reshape(-1)                            # remainder, viewed at step k as (d_{k-1}·i_k·j_k, ·)
    lam_prev = torch.ones(1, dtype=torch.float64, device=w.device)   # Λ_0
    cores: list[torch.Tensor] = []
    for k in range(n - 1):
        legs = row_shape[k] * col_shape[k]
        if legs == 1 and dims[k + 1] == dims[k]:
            # Pure bond core: remainder is Λ_{k} Vᵀ already in SVD form; Γ = Λ^{-1}, T = Λ^{1/2} Λ^{-1} Λ^{1/2} = I.
            cores.append(torch.eye(dims[k], dtype=torch.float64, device=w.device).reshape(dims[k], 1, 1, dims[k]))
            continue
        u, s, vh = _svd_fixed_signs(rest.reshape(dims[k] * legs, -1))   # (d_{k-1}·i·j, r), (r,), (r, ·)
        r = dims[k + 1]
        u, s, vh = u[:, :r], s[:r], vh[:r]
        # Left-canonical core A_k = U; symmetric core T_k = Λ_{k-1}^{-1/2} A_k Λ_k^{1/2}.
        a = u.reshape(dims[k], legs, r)                                  # (d_{k-1}, i·j, d_k)
        core = _safe_rsqrt(lam_prev)[:, None, None] * a * s.sqrt()[None, None, :]
        cores.append(core.reshape(dims[k], row_shape[k], col_shape[k], r))
        rest = s[:, None] * vh                                           # Λ_k Vᵀ: (d_k, ·)
        lam_prev = s
    last = _safe_rsqrt(lam_prev)[:, None] * rest                       # Λ^{1/2} Vᵀ = Λ^{-1/2}·(Λ Vᵀ)
    cores.append(last.reshape(dims[n - 1], row_shape[n - 1], col_shape[n - 1], 1))
    return [c.to(weight.dtype) for c in cores]


# ----------------------------------------------------------------------------------------------------------------
# contract


@functools.lru_cache(maxsize=256)
def _contraction_plan(bonds: tuple[int, ...], legs: tuple[int, ...]) -> tuple:
    """Cheapest pairwise order to contract a chain of cores (matrix-chain DP over bonds and physical legs).

    Segment ``[lo, hi]`` contracted is a tensor ``(d_{lo}, Π legs[lo..hi], d_{hi+1})``; merging ``[lo, s]`` with
    ``[s+1, hi]`` costs ``d_{lo} · P(lo..s) · d_{s+1} · P(s+1..hi) · d_{hi+1}`` multiply-adds. Returns a nested tuple
    (leaf = core index).
    """
    n = len(legs)
    phys = [[math.prod(legs[lo:hi + 1]) for hi in range(n)] for lo in range(n)]
    cost = [[0] * n for _ in range(n)]
    split = [[0] * n for _ in range(n)]
    for length in range(2, n + 1):
        for lo in range(n - length + 1):
            hi = lo + length - 1
            best = None
            for s in range(lo, hi):
                c = (cost[lo][s] + cost[s + 1][hi]
                     + bonds[lo] * phys[lo][s] * bonds[s + 1] * phys[s + 1][hi] * bonds[hi + 1])
                if best is None or c < best:
                    best, split[lo][hi] = c, s
            cost[lo][hi] = best

    def tree(lo: int, hi: int):
        return lo if lo == hi else (tree(lo, split[lo][hi]), tree(split[lo][hi] + 1, hi))

    return tree(0, n - 1)


def _contract_tree(node, cores: Sequence[torch.Tensor], batch: tuple[int, ...]) -> tuple[torch.Tensor, tuple]:
    """Contract a plan node into ``(*batch, d_left, P, d_right)`` with P the merged legs in core order; cores are
    ``(*batch, d, i, j, d')`` (``batch`` empty for one matrix, ``(G,)`` for G stacked matrices of one chain shape).

    Returns the tensor in whatever contiguous shape it came (a core, or a product ``(*batch, d_l·P_l, P_r·d_r)``)
    with its ``(d_left, P, d_right)``: its consumer views it once, as the product needs it. Every view is an
    operator dispatched forward and backward, host work that a launch-bound GPU step waits on."""
    if isinstance(node, int):
        c = cores[node]
        return c, (c.shape[-4], c.shape[-3] * c.shape[-2], c.shape[-1])
    left, (dl, pl, db) = _contract_tree(node[0], cores, batch)
    right, (_, pr, dr) = _contract_tree(node[1], cores, batch)
    # bmm, not @: matmul of 3-D tensors adds two expands and a view around the same bmm kernel (the same products,
    # bit for bit)
    product = torch.bmm if len(batch) == 1 else torch.matmul
    out = product(_view(left, (*batch, dl * pl, db)), _view(right, (*batch, db, pr * dr)))
    return out, (dl, pl * pr, dr)                                   # out: (*batch, d_l·P_l, P_r·d_r)


def _view(t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    return t if t.shape == shape else t.reshape(shape)


def check_cores(cores: Sequence[torch.Tensor], row_shape: Sequence[int], col_shape: Sequence[int]) -> None:
    """Raise ``ValueError`` unless ``cores`` form a chain ``(d_{k-1}, i_k, j_k, d_k)`` matching the shapes."""
    _check_core_shapes([tuple(c.shape) for c in cores], row_shape, col_shape)


def _check_core_shapes(shapes: Sequence[tuple[int, ...]], row_shape: Sequence[int], col_shape: Sequence[int]) -> None:
    n = len(shapes)
    if n != len(row_shape) or n != len(col_shape):
        raise ValueError(f"got {n} cores for shapes {tuple(row_shape)} × {tuple(col_shape)}; need one core per leg")
    _check_n_cores(n)
    for k, shape in enumerate(shapes):
        if len(shape) != 4 or shape[1] != row_shape[k] or shape[2] != col_shape[k] or \
                (k > 0 and shape[0] != shapes[k - 1][3]):
            raise ValueError(f"core {k} has shape {shape}; expected (d_{k}, {row_shape[k]}, {col_shape[k]}, "
                             f"d_{k + 1}) chained to its neighbours")
    if shapes[0][0] != 1 or shapes[-1][3] != 1:
        raise ValueError("the first core's left bond and the last core's right bond must be 1")


def contract(cores: Sequence[torch.Tensor], row_shape: Sequence[int], col_shape: Sequence[int]) -> torch.Tensor:
    """Rebuild ``W: (I, J)`` from MPO cores, contracting the chain in the cheapest order (differentiable).

    Raises:
        ValueError: core count or shapes inconsistent with ``row_shape`` / ``col_shape``.
    """
    check_cores(cores, row_shape, col_shape)
    return _contract_chain(cores, row_shape, col_shape)


def contract_stacked(stacks: Sequence[torch.Tensor], row_shape: Sequence[int],
                     col_shape: Sequence[int]) -> torch.Tensor:
    """Rebuild G matrices of one chain shape at once: ``stacks[k]: (G, d_{k-1}, i_k, j_k, d_k)`` (core k of every
    matrix) → ``W: (G, I, J)``, with the same plan and the same per-matrix products as ``contract`` (batched
    matmuls: a handful of kernel launches for G matrices instead of G times as many; differentiable).

    Raises:
        ValueError: stacks that are not ``(G, core)`` of one chain matching the shapes.
    """
    if not stacks or any(s.ndim != 5 or s.shape[0] != stacks[0].shape[0] for s in stacks):
        raise ValueError(f"stacks must be (G, d, i, j, d') tensors with one G, got "
                         f"{[tuple(s.shape) for s in stacks]}")
    _check_core_shapes([tuple(s.shape[1:]) for s in stacks], row_shape, col_shape)   # shapes only: no select ops
    return _stacked_chain(list(stacks), tuple(row_shape), tuple(col_shape))


def capture_contraction(mode: str | None) -> None:
    """Run every batched contraction (``contract_stacked``, hence each step's weights and their VJP) through
    ``torch.compile(mode=mode, fullgraph=True)``: fused kernels, and with ``"reduce-overhead"`` CUDA graphs, for
    a GPU step bound by kernel launches; ``None`` returns to eager. Process-wide and experimental: measured by
    ``benchmarks/gpu_epochs.py --capture``, not a run setting (docs/benchmarks.md says whether it pays)."""
    global _stacked_chain
    _stacked_chain = _contract_chain if mode is None else torch.compile(_contract_chain, mode=mode, fullgraph=True,
                                                                        dynamic=False)


def _contract_chain(cores: Sequence[torch.Tensor], row_shape: Sequence[int], col_shape: Sequence[int]) -> torch.Tensor:
    n = len(cores)
    batch = tuple(cores[0].shape[:-4])
    bonds = tuple(int(c.shape[-4]) for c in cores) + (1,)
    legs = tuple(i * j for i, j in zip(row_shape, col_shape))
    t, _ = _contract_tree(_contraction_plan(bonds, legs), cores, batch)   # (*batch, 1, Π i_k j_k, 1): interleaved legs
    inter = [a for ij in zip(row_shape, col_shape) for a in ij]
    b = len(batch)
    t = t.reshape(*batch, *inter).permute(*range(b), *range(b, b + 2 * n, 2), *range(b + 1, b + 2 * n, 2))
    return t.reshape(*batch, math.prod(row_shape), math.prod(col_shape))     # (*batch, I, J)


_stacked_chain = _contract_chain      # what contract_stacked runs: eager, or compiled by capture_contraction
