#!/usr/bin/env bash
# Any folder of audio, unconditional, end to end, with settings picked from the data:
#   0 list the files, pick segment length / batch size (/ fmax) -> data/NAME/overrides.yaml
#   1 prepare features   2 train   3 fine-tune the vocoder (optional)   4 generate
#   5 score generated clips against the folder (FD-mel, KID-mel)
# Usage: bash egs/folder/run.sh --audio-dir DIR [--smoke] [--stage N] [--stop-stage N] [--nproc N]
#                               [--finetune-vocoder] [HYDRA_OVERRIDES...]
# Settings live in recipes/experiment/folder*.yaml; stage 0's picks come next; your key=value
# overrides come last and win. Pass name=NAME to keep several folders' runs apart.
invoke_dir=$PWD
cd "$(dirname "$0")"
experiment=folder
audio_dir=
data_dir=
extra_opts="--audio-dir --data-dir"
finetune_vocoder=false
flag_opts="--finetune-vocoder"
usage="usage: bash egs/folder/run.sh --audio-dir DIR [--smoke] [--stage N] [--stop-stage N] [--nproc N] [--finetune-vocoder] [key=value ...]"
source ../common/recipe.sh
audio_dir=${audio_dir:-$data_dir}  # --data-dir: the same, for symmetry with the other recipes
[ -z "$audio_dir" ] || audio_dir=$(cd "$invoke_dir" && realpath -m -- "$audio_dir")

name=$(get name)
data=$work/data/$name
dump=$work/dump/$name
exp=$work/exp/$name

# Stage 0's picks (key=value), before the user's overrides so that the user's win.
picked=()
read_picked() {
  picked=()
  [ ! -f "$data/overrides.yaml" ] || mapfile -t picked < <(sed -n 's/^\([A-Za-z_][A-Za-z0-9_.]*\): \(.*\)$/\1=\2/p' "$data/overrides.yaml")
}
getp() { python -m audiodiff.train "+experiment=$experiment" "${picked[@]}" "${overrides[@]}" --get "$1"; }
declare -A recipe  # recipe.* with the picks, read in one call (each `get` starts Python)
read_recipe() {
  [ ${#recipe[@]} -eq 0 ] || return 0
  while IFS= read -r line; do recipe[${line%%: *}]=${line#*: }; done < <(getp recipe)
}

if stage_on 0; then
  [ -n "$audio_dir" ] || _die "stage 0 needs --audio-dir DIR (a folder of audio files); $usage"
  log "stage 0: list $audio_dir, pick settings -> $data/overrides.yaml"
  mkdir -p "$data"
  python -m audiodiff.train "+experiment=$experiment" "${overrides[@]}" --cfg > "$data/config.yaml"
  local/data.sh --audio-dir "$audio_dir" --out "$data" --config "$data/config.yaml"
fi
read_picked

if stage_on 1; then
  [ -f "$data/train.jsonl" ] || _die "no $data/train.jsonl yet; run stage 0 with --audio-dir DIR"
  log "stage 1: check clips, resample to the audio config, compute mels -> $dump"
  mkdir -p "$dump"
  getp audio > "$dump/audio.yaml"
  python -m audiodiff.prepare "$data/train.jsonl" --out "$dump/train" --audio-config "$dump/audio.yaml" --quiet
fi

if stage_on 2; then
  log "stage 2: train with ${picked[*]:-no picked settings} ${overrides[*]:-} -> $exp (re-run to resume)"
  "${train_launcher[@]}" "+experiment=$experiment" "data.dir=$dump/train" "run_dir=$exp" "${picked[@]}" "${overrides[@]}"
fi

if stage_on 3 && [ "$finetune_vocoder" = true ]; then
  log "stage 3: fine-tune HiFi-GAN on the clips -> $exp/vocoder"
  python -m audiodiff.train task=vocoder "+experiment=$experiment" "data.dir=$dump/train" "run_dir=$exp/vocoder" \
    "${picked[@]}" "${overrides[@]}"
fi

if stage_on 4; then
  read_recipe
  vocoder=${recipe[vocoder]}
  [ -f "$exp/vocoder/generator.pt" ] && vocoder=$exp/vocoder  # stage 3's, when it ran
  log "stage 4: generate (vocoder $vocoder) -> $exp/clips"
  python -m audiodiff.generate --model "$exp" --out "$exp/clips" --overwrite --num "${recipe[generate_num]}" \
    --steps "${recipe[generate_steps]}" --sampler "${recipe[sampler]}" --vocoder "$vocoder"
  log "done: open $(cd "$exp/clips" && pwd)/index.html"
fi

if stage_on 5; then
  read_recipe
  vocoder=${recipe[vocoder]}
  [ -f "$exp/vocoder/generator.pt" ] && vocoder=$exp/vocoder
  log "stage 5: score ${recipe[eval_num]} generated clips against the train split (FD-mel, KID-mel)"
  python -m audiodiff.evaluate --model "$exp" --num "${recipe[eval_num]}" --reference "$dump/train" \
    --steps "${recipe[generate_steps]}" --sampler "${recipe[sampler]}" --vocoder "$vocoder" --json "$exp/eval.json"
  log "scores: $exp/eval.json"
fi
