#!/usr/bin/env bash
# Spoken digits (an SC09 analogue made offline with espeak-ng), end to end:
#   0 build the clips   1 prepare features   2 train   3 fine-tune the vocoder (optional)
#   4 generate   5 train the SC09-style digit classifier and score generated clips
# Usage: bash egs/digits/run.sh [--smoke|--cpu] [--stage N] [--stop-stage N] [--nproc N]
#                               [--finetune-vocoder] [HYDRA_OVERRIDES...]
# Every setting lives in recipes/experiment/digits*.yaml; this script only sequences
# `python -m audiodiff.*` calls (stages 1-5: ../common/stages.sh). Hydra overrides (key=value)
# go to training.
invoke_dir=$PWD
cd "$(dirname "$0")"
experiment=digits
last_stage=5
finetune_vocoder=false
flag_opts="--finetune-vocoder"
usage="usage: bash egs/digits/run.sh [--smoke|--cpu] [--stage N] [--stop-stage N] [--nproc N] [--finetune-vocoder] [key=value ...]"
source ../common/recipe.sh
source ../common/stages.sh
recipe_paths
data=$work/data/digits_${recipe[per_digit]}

if stage_on 0; then
  log "stage 0: speak the digits (${recipe[per_digit]} per digit) -> $data"
  python -m audiodiff.datasets.digits --out "$data" --per-digit "${recipe[per_digit]}" --seed 0
fi
if stage_on 1; then prepare_splits "$data" "$dump"; fi
if stage_on 2; then train_model "$dump" "$exp"; fi
if stage_on 3 && [ "$finetune_vocoder" = true ]; then train_vocoder "$dump" "$exp"; fi
if stage_on 4; then generate_clips "$exp"; fi
if stage_on 5; then
  train_classifier "$dump" "$exp"
  score_clips "$exp" --classifier "$exp/classifier/classifier.pt" --reference "$dump/train" --test "$dump/test"
fi
