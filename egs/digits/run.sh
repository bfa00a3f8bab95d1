#!/usr/bin/env bash
# Spoken digits (an SC09 analogue made offline with espeak-ng), end to end:
#   0 build the clips   1 prepare features   2 train   3 fine-tune the vocoder (optional)
#   4 generate
# Usage: bash egs/digits/run.sh [--smoke|--cpu] [--stage N] [--stop-stage N] [--nproc N]
#                               [--finetune-vocoder] [HYDRA_OVERRIDES...]
# Every setting lives in recipes/experiment/digits*.yaml; this script only sequences
# `python -m audiodiff.*` calls. Hydra overrides (key=value) go to training.
set -euo pipefail
cd "$(dirname "$0")"
export PYTHONPATH="$(cd ../.. && pwd)${PYTHONPATH:+:$PYTHONPATH}"

experiment=digits
stage=0
stop_stage=4
nproc=1
finetune_vocoder=false
overrides=()
usage="usage: bash egs/digits/run.sh [--smoke|--cpu] [--stage N] [--stop-stage N] [--nproc N] [--finetune-vocoder] [key=value ...]"
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) experiment=digits_smoke ;;
    --cpu) experiment=digits_cpu ;;
    --stage|--stop-stage|--nproc)
      [ $# -ge 2 ] && [[ "$2" =~ ^[0-9]+$ ]] || { echo "run.sh: $1 needs a whole number; $usage" >&2; exit 2; }
      case "$1" in --stage) stage=$2 ;; --stop-stage) stop_stage=$2 ;; --nproc) nproc=$2 ;; esac
      shift ;;
    --finetune-vocoder) finetune_vocoder=true ;;
    -h|--help) echo "$usage"; exit 0 ;;
    --*) echo "run.sh: unknown option $1; valid: --smoke --cpu --stage --stop-stage --nproc --finetune-vocoder" >&2; exit 2 ;;
    *=*) overrides+=("$1") ;;
    *) echo "run.sh: unexpected argument '$1' (Hydra overrides look like key=value); $usage" >&2; exit 2 ;;
  esac
  shift
done
[ "$nproc" -ge 1 ] || { echo "run.sh: --nproc must be >= 1" >&2; exit 2; }

# Read one setting from the experiment config (validates the overrides too).
get() { python -m audiodiff.train "+experiment=$experiment" "${overrides[@]}" --get "$1"; }
name=$(get name)
data=data/digits_$(get recipe.per_digit)
dump=dump/$name
exp=exp/$name
log() { echo "[digits $(date +%H:%M:%S)] $*"; }

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  log "stage 0: speak the digits ($(get recipe.per_digit) per digit) -> $data"
  python -m audiodiff.datasets.digits --out "$data" --per-digit "$(get recipe.per_digit)" --seed 0
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log "stage 1: check clips, compute mels -> $dump"
  mkdir -p "$dump"
  get audio > "$dump/audio.yaml"
  for split in train valid test; do
    python -m audiodiff.prepare "$data/$split.jsonl" --out "$dump/$split" --audio-config "$dump/audio.yaml"
  done
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  log "stage 2: train -> $exp (re-run to resume)"
  launcher=(python -m audiodiff.train)
  [ "$nproc" -gt 1 ] && launcher=(torchrun --standalone --nproc_per_node "$nproc" -m audiodiff.train)
  "${launcher[@]}" "+experiment=$experiment" "data.dir=$dump/train" "run_dir=$exp" "${overrides[@]}"
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ] && [ "$finetune_vocoder" = true ]; then
  log "stage 3: fine-tune HiFi-GAN on the train clips -> $exp/vocoder"
  python -m audiodiff.train task=vocoder "+experiment=$experiment" "data.dir=$dump/train" "run_dir=$exp/vocoder" "${overrides[@]}"
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  log "stage 4: generate -> $exp/clips"
  labels=$(python -c "print(','.join(str(i % 10) for i in range(int('$(get recipe.generate_num)'))))")
  python -m audiodiff.generate --model "$exp" --out "$exp/clips" --overwrite \
    --num "$(get recipe.generate_num)" --steps "$(get recipe.generate_steps)" --sampler "$(get recipe.sampler)" \
    --vocoder "$(get recipe.vocoder)" --guidance "$(get recipe.guidance)" --label "$labels"
  log "done: open $PWD/$exp/clips/index.html"
fi
