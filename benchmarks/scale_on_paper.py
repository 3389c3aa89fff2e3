"""Scale on paper: a KD student (BERT-base → 6 layers by default) on N GPU nodes, dense vs OPDF, old vs new
gradient path.

    python benchmarks/scale_on_paper.py [--cores 5] [--tokens 4096] [--tflops 400] [--gbps 100 400]

Per optimiser step and GPU (one GPU per node, data-parallel, ``--tokens`` per GPU): the student's
forward+backward FLOPs (6 per parameter-token of the encoder matrices, plus attention scores; KD caches the
teacher's logits, so the teacher costs nothing per step), the MPO contraction FLOPs (forward + VJP once per step,
counted from our contraction plans: every worker contracts every matrix), and the bytes one ring all-reduce moves
(``2(N−1)/N × gradient bytes``, fp32 gradients). Time = FLOPs / the sustained rate assumed (``--tflops``) +
all-reduce bytes / the link (``--gbps``, not overlapped with compute: our one bucket is reduced after the
backward pass). Scaling efficiency = time on 1 node / time on N nodes at the same per-GPU batch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_mpo import chain_cost  # noqa: E402

from opdf_ray import mpo  # noqa: E402

SEQ = 128
# (hidden, FFN, student layers, vocabulary, positions): the papers' student and the offline preset's
MODELS = {"bert-base": (768, 3072, 6, 30522, 512), "minilm": (384, 1536, 3, 30522, 512)}
HIDDEN, FFN, LAYERS, VOCAB, POSITIONS = MODELS["bert-base"]


def contraction_macs(rows: int, cols: int, cores: int) -> int:
    """Multiply-adds of one forward contraction of a full-rank paper-style MPO in our plan's order."""
    row_shape, col_shape = mpo.factor_shapes(rows, cols, cores)
    bonds = mpo.bond_dims(row_shape, col_shape)
    legs = tuple(i * j for i, j in zip(row_shape, col_shape))
    return chain_cost(mpo._contraction_plan(bonds, legs), bonds, legs)[0]


def student(cores: int, tokens: int) -> dict:
    MATRICES = [(HIDDEN, HIDDEN)] * 4 + [(FFN, HIDDEN), (HIDDEN, FFN)]      # per layer: Q, K, V, O, FFN in, out
    matrix_params = LAYERS * sum(r * c for r, c in MATRICES)
    other = VOCAB * HIDDEN + POSITIONS * HIDDEN + 2 * HIDDEN + LAYERS * (9 * HIDDEN + FFN + 4 * HIDDEN) \
        + HIDDEN * HIDDEN + HIDDEN + 2 * HIDDEN + 2             # embeddings, biases, LayerNorms, pooler, head
    dense_flops = 6 * matrix_params * tokens + LAYERS * 3 * 4 * tokens * SEQ * HIDDEN   # + QKᵀ and AV, fwd+bwd
    core_params = LAYERS * sum(mpo.count_params(*mpo.factor_shapes(r, c, cores)) for r, c in MATRICES)
    contraction = 3 * 2 * LAYERS * sum(contraction_macs(r, c, cores) for r, c in MATRICES)   # fwd + VJP (2×)
    return {"dense_params": matrix_params + other, "opdf_params": core_params + other,
            "dense_flops": dense_flops, "contraction_flops": contraction}


def ring_seconds(n: int, nbytes: float, gbps: float) -> float:
    return 0.0 if n == 1 else 2 * (n - 1) / n * nbytes / (gbps * 1e9 / 8)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="bert-base", choices=list(MODELS), help="student dimensions")
    p.add_argument("--cores", type=int, default=5)
    p.add_argument("--tokens", type=int, default=32 * SEQ, help="tokens per GPU per step (32 × 128)")
    p.add_argument("--tflops", type=float, default=400.0, help="sustained bf16 TFLOP/s per GPU assumed")
    p.add_argument("--gbps", type=float, nargs="+", default=[100.0, 400.0], help="inter-node link, Gbit/s")
    a = p.parse_args()
    global HIDDEN, FFN, LAYERS, VOCAB, POSITIONS
    HIDDEN, FFN, LAYERS, VOCAB, POSITIONS = MODELS[a.model]
    s = student(a.cores, a.tokens)
    rate = a.tflops * 1e12
    t_dense, t_opdf = s["dense_flops"] / rate, (s["dense_flops"] + s["contraction_flops"]) / rate
    print(f"{a.model}: {LAYERS}-layer student (hidden {HIDDEN}), {a.tokens} tokens per GPU per step, OPDF "
          f"{a.cores} cores full rank; "
          f"{a.tflops:.0f} TFLOP/s sustained per GPU assumed\n")
    print(f"- trainable parameters: dense {s['dense_params'] / 1e6:.1f} M, OPDF {s['opdf_params'] / 1e6:.1f} M "
          f"({s['opdf_params'] / s['dense_params']:.2f}×); fp32 gradient bytes per step: dense "
          f"{4 * s['dense_params'] / 1e6:.0f} MB, OPDF old path {4 * s['opdf_params'] / 1e6:.0f} MB, new path "
          f"{4 * s['dense_params'] / 1e6:.0f} MB")
    print(f"- compute per step per GPU: student {s['dense_flops'] / 1e12:.2f} TFLOP, contraction + VJP "
          f"{s['contraction_flops'] / 1e12:.2f} TFLOP (OPDF / dense {t_opdf / t_dense:.2f}×, independent of N): "
          f"{1e3 * t_dense:.1f} ms dense, {1e3 * t_opdf:.1f} ms OPDF\n")
    print("| link | N nodes | dense: all-reduce ms / efficiency | OPDF old path (cores): all-reduce ms / "
          "efficiency | OPDF new path (dense grads): all-reduce ms / efficiency | OPDF new / old step time |")
    print("|---|---|---|---|---|---|")
    for gbps in a.gbps:
        for n in (1, 2, 8, 32):
            cells = []
            times = {}
            for name, t_comp, params in (("dense", t_dense, s["dense_params"]), ("old", t_opdf, s["opdf_params"]),
                                         ("new", t_opdf, s["dense_params"])):
                comm = ring_seconds(n, 4 * params, gbps)
                times[name] = t_comp + comm
                cells.append(f"{1e3 * comm:.0f} / {t_comp / (t_comp + comm):.0%}")
            print(f"| {gbps:.0f} Gb/s | {n} | " + " | ".join(cells) + f" | {times['new'] / times['old']:.2f} |")


if __name__ == "__main__":
    main()
