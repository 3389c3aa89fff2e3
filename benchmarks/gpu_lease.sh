#!/usr/bin/env bash
# Issue 24's GPU measurements in one call of a lent GPU (a lease is 15 minutes, start-up included), most important
# first; each step has its own time limit so a slow one cannot starve the rest, and each writes its log to $OUT.
#
#   benchmarks/gpu_lease.sh            # on the GPU machine, from the repo root, with .gpu/ carried (see below)
#   STEPS="epochs share" benchmarks/gpu_lease.sh      # only some steps (the next lease: the trials per hour)
#
# .gpu/ (git-ignored) holds what that machine lacks: site312.tar.xz (Ray 2.60 without its Java, RLlib, Serve, LLM
# and dashboard front end, Optuna, transformers 5.25, datasets and their missing dependencies, for its Python 3.12;
# made with `pip install --target` and packed with xz -9 to fit the 64 MiB transfer), and the model folders
# minilm/ (all-MiniLM-L6-v2's config and tokenizer, no weights) and bert-base/ (BertConfig() and the same uncased
# vocabulary): the teachers get random weights (timing only). `bash benchmarks/gpu_pack.sh` builds it (~3 min).
# Results: docs/benchmarks.md.
set -u
OUT=${OUT:-outputs/gpu_lease}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0 \
       RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS=0
SITE=/tmp/opdf-site
if [ ! -d "$SITE/ray" ]; then
    mkdir -p "$SITE" && xz -dc -T0 .gpu/site312.tar.xz | tar -x -C "$SITE" || exit 1
    mkdir -p "$SITE/ray/dashboard/client/build/static"     # the dashboard (State API) starts without its front end
fi
export PYTHONPATH="$SITE:$PWD"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nproc
  python3 -c "import sys, torch, ray, transformers, optuna, datasets; from transformers import AutoModel; \
import opdf_ray.hpo.tuner, opdf_ray.engine; print(sys.version.split()[0], torch.__version__, ray.__version__, \
transformers.__version__, optuna.__version__, torch.cuda.get_device_name())"; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

STEPS=${STEPS:-"epochs share capture bert-base"}      # e.g. STEPS="epochs share": the share step needs epochs' teacher
step() {   # step NAME SECONDS COMMAND...: run it under a time limit, its log in $OUT/NAME.log
    local name=$1 limit=$2; shift 2
    case " $STEPS " in *" $name "*) ;; *) echo "== $name: skipped (STEPS)"; return ;; esac
    local started=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    echo "== $name: exit $?, $((SECONDS - started)) s"
    grep -E '^\||x$|x;|^mrpc|^sst2' "$OUT/$name.log" | tail -30
}
EPOCHS="--task mrpc --samples 2048 --epochs 2 --max-length 128 --batch-size 32"
step epochs 170 python3 benchmarks/gpu_epochs.py --teacher .gpu/minilm --random-weights $EPOCHS --out /tmp/ge \
    --cases kd-0 kd-5 prokt-0 prokt-5 lgtm-0 lgtm-5
step share 200 python3 benchmarks/gpu_share.py --teacher /tmp/ge/random-teacher --task mrpc --out /tmp/gs \
    --no-warm --trials 3 4
step capture 90 python3 benchmarks/gpu_epochs.py --teacher .gpu/minilm --random-weights $EPOCHS --out /tmp/ge \
    --capture reduce-overhead --cases kd-0 kd-5
step bert-base 80 python3 benchmarks/gpu_epochs.py --preset bert-base --teacher .gpu/bert-base --random-weights \
    $EPOCHS --out /tmp/gb --cases kd-0 kd-5
