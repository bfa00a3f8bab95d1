#!/usr/bin/env bash
# SC09 (the digits of Speech Commands v0.02), class-conditional, end to end:
#   0 download + unpack (or --data-dir), manifests   1 prepare features   2 train
#   3 fine-tune the vocoder (optional)   4 generate every digit with guidance
#   5 train the SC09 digit classifier, score generated clips (FID, IS, mIS, AM, NDB/K)
# Usage: bash egs/sc09/run.sh [--smoke] [--data-dir UNPACKED] [--stage N] [--stop-stage N] [--nproc N]
#                             [--finetune-vocoder] [HYDRA_OVERRIDES...]
# Every setting lives in recipes/experiment/sc09*.yaml; this script only sequences
# `python -m audiodiff.*` calls (stages 1-5: ../common/stages.sh). Hydra overrides (key=value)
# go to training.
invoke_dir=$PWD
cd "$(dirname "$0")"
experiment=sc09
last_stage=5
data_dir=
extra_opts="--data-dir"
finetune_vocoder=false
flag_opts="--finetune-vocoder"
usage="usage: bash egs/sc09/run.sh [--smoke] [--data-dir UNPACKED_SPEECH_COMMANDS] [--stage N] [--stop-stage N] [--nproc N] [--finetune-vocoder] [key=value ...]"
source ../common/recipe.sh
source ../common/stages.sh
recipe_paths

if stage_on 0; then
  log "stage 0: Speech Commands digits ${data_dir:+from $data_dir }-> $data"
  local/data.sh --out "$data" --download-dir "$work/data/download" ${data_dir:+--data-dir "$data_dir"} \
    --per-label "${recipe[per_label]}"
fi
if stage_on 1; then prepare_splits "$data" "$dump"; fi
if stage_on 2; then train_model "$dump" "$exp"; fi
if stage_on 3 && [ "$finetune_vocoder" = true ]; then train_vocoder "$dump" "$exp"; fi
if stage_on 4; then generate_clips "$exp"; fi
if stage_on 5; then
  train_classifier "$dump" "$exp"
  score_clips "$exp" --classifier "$exp/classifier/classifier.pt" --reference "$dump/train" --test "$dump/test"
fi
