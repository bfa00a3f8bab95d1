#!/usr/bin/env bash
# Drum one-shots (real recorded samples from Hydrogen's drum kits: Debian's hydrogen-drumkits
# and hydrogen-drumkits-effects), end to end:
#   0 cut the one-shots   1 prepare features   2 train   3 fine-tune the vocoder (optional)
#   4 generate every class (kick, snare, hihat, tom, cymbal, other) in turn, with guidance
# Usage: bash egs/drums/run.sh [--smoke | --cpu] [--stage N] [--stop-stage N] [--nproc N]
#                              [--finetune-vocoder] [--beats] [HYDRA_OVERRIDES...]
# --beats: the one-shots played as 4 s beats (local/beats.py) and a model of those: stationary audio
# for long generation, extension and loops (experiment drums_beats, drums_beats_cpu with --cpu).
# Every setting lives in recipes/experiment/drums*.yaml; this script only sequences
# `python -m audiodiff.*` calls (stages 1-4: ../common/stages.sh). Hydra overrides (key=value)
# go to training.
# Outputs (data/ dump/ exp/) go under $work: $AUDIODIFF_WORK when it is set, else this folder.
invoke_dir=$PWD
cd "$(dirname "$0")"
experiment=drums
for arg in "$@"; do [ "$arg" != --beats ] || experiment=drums_beats; done  # before --cpu / --smoke name it
last_stage=4
finetune_vocoder=false
beats=false
flag_opts="--finetune-vocoder --beats"
usage="usage: bash egs/drums/run.sh [--smoke | --cpu] [--stage N] [--stop-stage N] [--nproc N] [--finetune-vocoder] [--beats] [key=value ...]"
source ../common/recipe.sh
source ../common/stages.sh
recipe_paths
data=$work/data/drums
kits=${recipe[kits_dir]}
[[ $kits = /* ]] || kits=$invoke_dir/$kits  # a relative recipe.kits_dir=... is from where run.sh was called

if stage_on 0; then
  log "stage 0: cut onset-aligned 1 s clips from the kits in $kits -> $data"
  local/data.sh "$data" "$kits"
  if [ "$beats" = true ]; then
    log "stage 0: play the one-shots as beats -> $work/data/beats"
    python local/beats.py --drums "$data" --out "$work/data/beats" --per-split "${recipe[beats_per_split]}" \
      --seconds "${recipe[beats_seconds]}"
  fi
fi
[ "$beats" = false ] || data=$work/data/beats
if stage_on 1; then prepare_splits "$data" "$dump"; fi
if stage_on 2; then train_model "$dump" "$exp"; fi
if stage_on 3 && [ "$finetune_vocoder" = true ]; then train_vocoder "$dump" "$exp"; fi
if stage_on 4; then
  generate_clips "$exp"
  [ "$beats" = true ] || log "label i is class i of \"classes\" in $data/build.json"
fi
