#!/usr/bin/env bash
# Real-data check on this CPU: every method with and without OPDF (5 cores) on RTE and MRPC, minilm preset.
# Usage: benchmarks/glue_check.sh [OUT_DIR] [TASKS...]     (results: benchmarks/summarize_runs.py OUT_DIR)
set -euo pipefail
out=${1:-outputs/glue_check}; shift || true
tasks=${*:-rte mrpc}
common=(--preset minilm --max-length 64 --epochs 2 --lr 5e-5 --teacher-lr 5e-5 --teacher-epochs 3
        --teacher-finetune-lr 5e-5 --seed 42 --no-progress)
mkdir -p "$out"
for task in $tasks; do
  for method in kd theseus prokt lgtm; do
    for cores in 0 5; do
      name="$task-$method-$([ "$cores" = 0 ] && echo dense || echo "opdf$cores")"
      [ -f "$out/$name/results.json" ] && continue
      python -m opdf_ray.run --task "$task" --method "$method" --opdf-cores "$cores" "${common[@]}" \
        --output-dir "$out/$name" > "$out/$name.log" 2>&1 || echo "FAILED: $name (see $out/$name.log)"
      grep '^RESULT' "$out/$name.log" || true
    done
  done
done
