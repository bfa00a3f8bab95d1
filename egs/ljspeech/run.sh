#!/usr/bin/env bash
# LJSpeech 1.1, unconditional, end to end:
#   0 download + unpack (or --data-dir), manifests with a fixed held-out split
#   1 prepare features   2 train on random 2 s crops   3 fine-tune HiFi-GAN on the train clips
#   4 generate (with stage 3's vocoder when it ran)   5 score generated clips (FD-mel, KID-mel)
# Usage: bash egs/ljspeech/run.sh [--smoke] [--data-dir LJSpeech-1.1] [--stage N] [--stop-stage N]
#                                 [--nproc N] [--no-finetune-vocoder] [HYDRA_OVERRIDES...]
# Every setting lives in recipes/experiment/ljspeech*.yaml; this script only sequences
# `python -m audiodiff.*` calls (stages 1-5: ../common/stages.sh). Hydra overrides (key=value)
# go to training.
invoke_dir=$PWD
cd "$(dirname "$0")"
experiment=ljspeech
last_stage=5
data_dir=
extra_opts="--data-dir"
no_finetune_vocoder=false
flag_opts="--no-finetune-vocoder"
usage="usage: bash egs/ljspeech/run.sh [--smoke] [--data-dir LJSpeech-1.1] [--stage N] [--stop-stage N] [--nproc N] [--no-finetune-vocoder] [key=value ...]"
source ../common/recipe.sh
source ../common/stages.sh
recipe_paths

if stage_on 0; then
  log "stage 0: LJSpeech ${data_dir:+from $data_dir }-> $data"
  local/data.sh --out "$data" --download-dir "$work/data/download" ${data_dir:+--data-dir "$data_dir"} \
    --num-valid "${recipe[num_valid]}" --num-test "${recipe[num_test]}" \
    --seed "${recipe[split_seed]}" --max-train "${recipe[max_train]}"
fi
if stage_on 1; then prepare_splits "$data" "$dump"; fi
if stage_on 2; then train_model "$dump" "$exp"; fi
if stage_on 3 && [ "$no_finetune_vocoder" = false ]; then train_vocoder "$dump" "$exp"; fi
if stage_on 4; then generate_clips "$exp"; fi
if stage_on 5; then score_clips "$exp" --reference "$dump/train" --test "$dump/test"; fi
