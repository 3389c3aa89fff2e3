"""Demo: over-parameterise a real pretrained BERT (all-MiniLM-L6-v2) with MPO, train a few steps, merge, reload.

Shows the three promises of OPDF's deploy path on real weights and a real tokenizer, offline:
the over-parameterised model computes the same function at initialisation, every core trains, and the merged
model is a stock Hugging Face checkpoint with the original size that reproduces the trained logits.

    python -m opdf_ray.demo [--cores 5] [--bond-dim N] [--steps 3] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import tempfile
import time

SENTENCE_PAIRS = [
    ("A man is eating food.", "A man eats a meal."),
    ("The cat sat on the mat.", "A dog is running in the park."),
    ("The company reported record profits this quarter.", "Profits hit an all-time high for the firm."),
    ("He plays the guitar every evening.", "The weather today is cold and rainy."),
]
LABELS = [1, 0, 1, 0]  # paraphrase or not: enough signal for a few optimiser steps


def main(argv: list[str] | None = None, prog: str = "python -m opdf_ray.demo") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=5, help="MPO cores per matrix (≥ 2; the paper uses 3–7)")
    parser.add_argument("--bond-dim", type=int, default=None, help="truncate bonds (default: full rank, exact)")
    parser.add_argument("--steps", type=int, default=3, help="AdamW steps on the over-parameterised model")
    parser.add_argument("--out", default=None, help="where to save the merged checkpoint (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.steps < 0:
        parser.error(f"--steps must be ≥ 0, got {args.steps}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log = logging.getLogger("opdf_ray.demo")

    import torch          # here, not at the top: --help answers without it
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from opdf_ray.models import from_pretrained, packaged_minilm_path
    from opdf_ray.overparam import merge, overparameterize, parameter_counts

    hf_logging.set_verbosity_error()          # the fresh classifier head is expected; no load report
    hf_logging.disable_progress_bar()
    torch.manual_seed(0)
    path = packaged_minilm_path()
    tokenizer = from_pretrained(AutoTokenizer, path)
    model = from_pretrained(AutoModelForSequenceClassification, path, num_labels=2).eval()
    batch = tokenizer([a for a, _ in SENTENCE_PAIRS], [b for _, b in SENTENCE_PAIRS], padding=True,
                      return_tensors="pt")
    labels = torch.tensor(LABELS)
    with torch.no_grad():
        dense_logits = model(**batch).logits
    dense = parameter_counts(model)["train"]
    log.info("loaded all-MiniLM-L6-v2 from %s: %s parameters", path, f"{dense:,}")

    t0 = time.perf_counter()
    try:
        overparameterize(model, n_cores=args.cores, bond_dim=args.bond_dim)
    except ValueError as e:
        parser.error(str(e))
    counts = parameter_counts(model)
    with torch.no_grad():
        init_diff = (model(**batch).logits - dense_logits).abs().max().item()
    log.info("over-parameterised in %.2f s: %s trainable parameters (%.2f× the dense %s); max |Δlogit| vs dense "
             "at init: %.2e%s", time.perf_counter() - t0, f"{counts['train']:,}", counts["train"] / dense,
             f"{dense:,}", init_diff, "" if args.bond_dim is None else f" (bonds truncated to {args.bond_dim})")

    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for step in range(1, args.steps + 1):
        loss = model(**batch, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log.info("step %d: loss %.4f", step, loss.item())
    model.eval()
    with torch.no_grad():
        trained_logits = model(**batch).logits

    merge(model)
    with torch.no_grad():
        merged_diff = (model(**batch).logits - trained_logits).abs().max().item()
    with contextlib.ExitStack() as cleanup:        # without --out the 88 MB checkpoint goes when the demo ends
        out = args.out or cleanup.enter_context(tempfile.TemporaryDirectory(prefix="opdf-demo-"))
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        reloaded = from_pretrained(AutoModelForSequenceClassification, out).eval()
        with torch.no_grad():
            reload_diff = (reloaded(**batch).logits - trained_logits).abs().max().item()
        log.info("merged: %s parameters (as deployed, same as the original); max |Δlogit| merged vs trained MPO: "
                 "%.2e; stock transformers reload from %s%s: %.2e", f"{parameter_counts(reloaded)['train']:,}",
                 merged_diff, out, "" if args.out else " (removed at the end; --out keeps it)", reload_diff)
    ok = merged_diff <= 1e-4 and reload_diff <= 1e-4 and parameter_counts(reloaded)["train"] == dense
    log.info("merge is exact: %s", "yes" if ok else "NO")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
