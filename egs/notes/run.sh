#!/usr/bin/env bash
# Instrument notes (an NSynth analogue rendered offline from a General MIDI SoundFont), end to end:
#   0 render the notes   1 prepare features   2 train   3 fine-tune the vocoder (optional)
#   4 generate every family in turn, with classifier-free guidance
# Usage: bash egs/notes/run.sh [--smoke|--cpu] [--stage N] [--stop-stage N] [--nproc N]
#                              [--finetune-vocoder] [HYDRA_OVERRIDES...]
# Every setting lives in recipes/experiment/notes*.yaml; this script only sequences
# `python -m audiodiff.*` calls. Hydra overrides (key=value) go to training.
# Outputs (data/ dump/ exp/) go under $work: $AUDIODIFF_WORK when it is set, else this folder.
invoke_dir=$PWD
cd "$(dirname "$0")"
experiment=notes
finetune_vocoder=false
flag_opts="--finetune-vocoder"
usage="usage: bash egs/notes/run.sh [--smoke|--cpu] [--stage N] [--stop-stage N] [--nproc N] [--finetune-vocoder] [key=value ...]"
source ../common/recipe.sh

# Every recipe.* value of the experiment in one python call: ${recipe[KEY]}.
declare -A recipe
while IFS= read -r line; do
  [[ $line =~ ^([A-Za-z_][A-Za-z0-9_]*):\ (.*)$ ]] && recipe[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}
done < <(get recipe)

name=$(get name)
data=$work/data/notes_${recipe[per_class]}_seed${recipe[data_seed]}
dump=$work/dump/$name
exp=$work/exp/$name

if stage_on 0; then
  log "stage 0: render ${recipe[per_class]} notes per family -> $data"
  local/data.sh "$data" "${recipe[per_class]}" "${recipe[data_seed]}"
fi

if stage_on 1; then
  log "stage 1: check clips, compute mels -> $dump"
  mkdir -p "$dump"
  get audio > "$dump/audio.yaml"
  for split in train valid test; do
    python -m audiodiff.prepare "$data/$split.jsonl" --out "$dump/$split" --audio-config "$dump/audio.yaml" --quiet
  done
fi

if stage_on 2; then
  log "stage 2: train -> $exp (re-run to resume)"
  "${train_launcher[@]}" "+experiment=$experiment" "data.dir=$dump/train" "run_dir=$exp" "${overrides[@]}"
fi

vocoder=${recipe[vocoder]}
if stage_on 3 && [ "$finetune_vocoder" = true ]; then
  log "stage 3: fine-tune HiFi-GAN on the train clips -> $exp/vocoder"
  python -m audiodiff.train task=vocoder "+experiment=$experiment" "data.dir=$dump/train" "run_dir=$exp/vocoder" "${overrides[@]}"
  vocoder=$exp/vocoder
fi

if stage_on 4; then
  num=${recipe[generate_num]}
  classes=$(get data.num_classes)
  labels=
  for ((i = 0; i < num; i++)); do labels+="${labels:+,}$((i % classes))"; done
  log "stage 4: generate $num clips, families 0..$((classes - 1)) in turn -> $exp/clips"
  python -m audiodiff.generate --model "$exp" --out "$exp/clips" --overwrite --num "$num" \
    --steps "${recipe[generate_steps]}" --sampler "${recipe[sampler]}" --vocoder "$vocoder" \
    --guidance "${recipe[guidance]}" --label "$labels"
  log "done: open $exp/clips/index.html (label i is family i of \"classes\" in $data/build.json)"
fi
