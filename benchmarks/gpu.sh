#!/usr/bin/env bash
# Every benchmark on a CUDA GPU, at the ci and cpu sizes: the sampler (with and without its CUDA
# graph) against generate, one training step eager and as a CUDA graph, the teacher-forced pass,
# and the DPO and GRPO trainers against TRL. `make bench-gpu` runs it with the project's
# environment; PYTHON names another interpreter (one that has torch with CUDA, transformers,
# trl and rlhf_lab importable). Prints each script's medians and ratios, prefixed [scale].
set -euo pipefail
PY=${PYTHON:-python3}
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
for s in ${SCALES:-ci cpu}; do
  for b in sampler train_step teacher_forcing trainers; do
    RLHF_LAB_SCALE=$s "$PY" benchmarks/$b.py --device cuda | sed "s/^/[$s] /"
  done
done
