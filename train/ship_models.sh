#!/usr/bin/env bash
# Train the three shipped default models with their :cpu configs, concurrently, under one wall-time budget,
# then copy each exported model (with its config and training log) into deepstrain_jax/assets/models/.
#
#   bash train/ship_models.sh RUNS_DIR MINUTES [PREFETCH_WORKERS]
#
# The subject cache is filled first (in PREFETCH_WORKERS processes) and shared by the three runs. Re-running
# with the same RUNS_DIR resumes each run from its latest checkpoint. Validate afterwards with
#   python -m train.validate --models=deepstrain_jax/assets/models --out=deepstrain_jax/assets/models/validation.md
set -euo pipefail
runs=${1:?RUNS_DIR}; minutes=${2:?MINUTES}; workers=${3:-1}
py=${PYTHON:-python}
mkdir -p "$runs"
common=(--config.data.cache_dir="$runs/data_cache" --config.data.cache_mb=16000 --config.train.max_minutes="$minutes")

# Fill the shared subject cache once (the three configs share the data settings that key the cache).
$py -m train.prefetch --config=configs/carmen.py:cpu --cache_dir="$runs/data_cache" --workers="$workers"

pids=()
for name in vcn carson carmen; do
  threads=2; [ "$name" = carmen ] && threads=6
  XLA_PYTHON_CLIENT_MEM_FRACTION=0.3 $py -m train.main --config="configs/$name.py:cpu" --workdir="$runs/$name" \
    "${common[@]}" --config.data.loader_threads=$threads > "$runs/$name.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
for name in vcn carson carmen; do tail -n 3 "$runs/$name.log"; done
[ $status -eq 0 ] || { echo "a training run failed" >&2; exit 1; }

for name in vcn carson carmen; do
  dest=deepstrain_jax/assets/models/$name
  rm -rf "$dest"; mkdir -p "$(dirname "$dest")"
  cp -r "$runs/$name/model" "$dest"
  cp "$runs/$name/config.json" "$runs/$name/metrics.jsonl" "$dest/"
done
