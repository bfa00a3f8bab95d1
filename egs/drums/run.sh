#!/usr/bin/env bash
# Drum one-shots (real recorded samples from Hydrogen's drum kits: Debian's hydrogen-drumkits
# and hydrogen-drumkits-effects), end to end:
#   0 cut the one-shots   1 prepare features   2 train   3 fine-tune the vocoder (optional)
#   4 generate every class (kick, snare, hihat, tom, cymbal, other) in turn, with guidance
# Usage: bash egs/drums/run.sh [--smoke] [--stage N] [--stop-stage N] [--nproc N]
#                              [--finetune-vocoder] [HYDRA_OVERRIDES...]
# Every setting lives in recipes/experiment/drums*.yaml; this script only sequences
# `python -m audiodiff.*` calls. Hydra overrides (key=value) go to training.
# Outputs (data/ dump/ exp/) go under $work: $AUDIODIFF_WORK when it is set, else this folder.
invoke_dir=$PWD
cd "$(dirname "$0")"
experiment=drums
finetune_vocoder=false
flag_opts="--finetune-vocoder"
usage="usage: bash egs/drums/run.sh [--smoke] [--stage N] [--stop-stage N] [--nproc N] [--finetune-vocoder] [key=value ...]"
source ../common/recipe.sh

# Every recipe.* value of the experiment in one python call: ${recipe[KEY]}.
declare -A recipe
while IFS= read -r line; do
  [[ $line =~ ^([A-Za-z_][A-Za-z0-9_]*):\ (.*)$ ]] && recipe[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}
done < <(get recipe)

name=$(get name)
data=$work/data/drums
kits=${recipe[kits_dir]}
[[ $kits = /* ]] || kits=$invoke_dir/$kits  # a relative recipe.kits_dir=... is from where run.sh was called
dump=$work/dump/$name
exp=$work/exp/$name

if stage_on 0; then
  log "stage 0: cut onset-aligned 1 s clips from the kits in $kits -> $data"
  local/data.sh "$data" "$kits"
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
  log "stage 4: generate $num clips, classes 0..$((classes - 1)) in turn -> $exp/clips"
  python -m audiodiff.generate --model "$exp" --out "$exp/clips" --overwrite --num "$num" \
    --steps "${recipe[generate_steps]}" --sampler "${recipe[sampler]}" --vocoder "$vocoder" \
    --guidance "${recipe[guidance]}" --label "$labels"
  log "done: open $exp/clips/index.html (label i is class i of \"classes\" in $data/build.json)"
fi
