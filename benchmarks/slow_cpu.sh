#!/usr/bin/env bash
# Run a command on this machine's CPUs throttled to 1/SLOWDOWN of their time: a proxy for a slower machine with as
# many cores (issue 25 §5: the quick start on a 2-core VM without AVX-512, which ran this project 3.9x slower than
# the 2-core AMD EPYC it is developed on). Needs root and the cgroup cpu controller (v1 or v2); everything the
# command starts (Ray, its workers) inherits the quota.
#
#   sudo SLOWDOWN=3.9 benchmarks/slow_cpu.sh python tune_main.py --task sst2 \
#       --space search_spaces/quickstart.yaml --num-samples 4 --max-train-samples 800
#
# The quota is nproc CPUs / SLOWDOWN over 20 ms periods: with every core busy, work runs SLOWDOWN times slower, as
# on the slower machine. It overstates more than it understates (docs/benchmarks.md, "The quick start on a slower
# CPU"): a throttled process stalls whatever waits on it and OpenMP's spinning threads burn the quota, so the
# throttled quick start used 1.8x the CPU time of an unthrottled one; a lone busy thread, which the slower machine
# would run SLOWDOWN times slower, may take up to 2 cores' share here. A quota of one CPU / SLOWDOWN instead (the
# lone thread exact) starved Ray's nice-15 workers behind its own processes: 23x slower, not 3.9x.
# Restricting the instruction set (ATEN_CPU_CAPABILITY=avx2, MKL_CBWR=AVX2) is no proxy on this AMD CPU: a 2-thread
# fp32 matmul took the same time (its AVX-512 runs on 256-bit units).
set -eu
SLOWDOWN=${SLOWDOWN:-3.9}
PERIOD=20000                                   # µs: short, so a throttled process waits at most ~15 ms at a time
QUOTA=$(python3 -c "print(round($PERIOD * $(nproc) / $SLOWDOWN))")
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then           # cgroup v2
    group=/sys/fs/cgroup/opdf-slow-cpu
    mkdir -p "$group" && echo "$QUOTA $PERIOD" > "$group/cpu.max"
else                                                         # cgroup v1
    group=/sys/fs/cgroup/cpu/opdf-slow-cpu
    mkdir -p "$group" && echo "$PERIOD" > "$group/cpu.cfs_period_us" && echo "$QUOTA" > "$group/cpu.cfs_quota_us"
fi
echo "slow_cpu: ${SLOWDOWN}x slower: $QUOTA µs of CPU per $PERIOD µs, in $group" >&2
echo $$ > "$group/cgroup.procs"
exec "$@"
