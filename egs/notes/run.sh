#!/usr/bin/env bash
# Instrument notes (an NSynth analogue rendered offline from a General MIDI SoundFont), end to end:
#   0 render the notes   1 prepare features   2 train   3 fine-tune the vocoder (optional)
#   4 generate every family in turn, with classifier-free guidance
# Usage: bash egs/notes/run.sh [--smoke|--cpu] [--stage N] [--stop-stage N] [--nproc N]
#                              [--finetune-vocoder] [HYDRA_OVERRIDES...]
# Every setting lives in recipes/experiment/notes*.yaml; this script only sequences
# `python -m audiodiff.*` calls (stages 1-4: ../common/stages.sh). Hydra overrides (key=value)
# go to training.
# Outputs (data/ dump/ exp/) go under $work: $AUDIODIFF_WORK when it is set, else this folder.
invoke_dir=$PWD
cd "$(dirname "$0")"
experiment=notes
last_stage=4
finetune_vocoder=false
flag_opts="--finetune-vocoder"
usage="usage: bash egs/notes/run.sh [--smoke|--cpu] [--stage N] [--stop-stage N] [--nproc N] [--finetune-vocoder] [key=value ...]"
source ../common/recipe.sh
source ../common/stages.sh
recipe_paths
data=$work/data/notes_${recipe[per_class]}_seed${recipe[data_seed]}

if stage_on 0; then
  log "stage 0: render ${recipe[per_class]} notes per family -> $data"
  local/data.sh "$data" "${recipe[per_class]}" "${recipe[data_seed]}"
fi
if stage_on 1; then prepare_splits "$data" "$dump"; fi
if stage_on 2; then train_model "$dump" "$exp"; fi
if stage_on 3 && [ "$finetune_vocoder" = true ]; then train_vocoder "$dump" "$exp"; fi
if stage_on 4; then
  generate_clips "$exp"
  log "label i is family i of \"classes\" in $data/build.json"
fi
