#!/usr/bin/env bash
# Any folder of audio, unconditional, end to end, with settings picked from the data:
#   0 list the files, pick segment length / batch size (/ fmax) -> data/NAME/overrides.yaml
#   1 prepare features   2 train   3 fine-tune the vocoder (optional)   4 generate
#   5 score generated clips against the folder (FD-mel, KID-mel)
# Usage: bash egs/folder/run.sh --audio-dir DIR [--smoke] [--stage N] [--stop-stage N] [--nproc N]
#                               [--finetune-vocoder] [HYDRA_OVERRIDES...]
# Settings live in recipes/experiment/folder*.yaml; stage 0's picks come next; your key=value
# overrides come last and win. Pass name=NAME to keep several folders' runs apart.
# Stages 1-5: ../common/stages.sh.
invoke_dir=$PWD
cd "$(dirname "$0")"
experiment=folder
last_stage=5
audio_dir=
data_dir=
extra_opts="--audio-dir --data-dir"
finetune_vocoder=false
flag_opts="--finetune-vocoder"
usage="usage: bash egs/folder/run.sh --audio-dir DIR [--smoke] [--stage N] [--stop-stage N] [--nproc N] [--finetune-vocoder] [key=value ...]"
source ../common/recipe.sh
source ../common/stages.sh
audio_dir=${audio_dir:-$data_dir}  # --data-dir: the same, for symmetry with the other recipes
[ -z "$audio_dir" ] || audio_dir=$(cd "$invoke_dir" && realpath -m -- "$audio_dir")

name=$(get name)
data=$work/data/$name
dump=$work/dump/$name
exp=$work/exp/$name

if stage_on 0; then
  [ -n "$audio_dir" ] || _die "stage 0 needs --audio-dir DIR (a folder of audio files); $usage"
  log "stage 0: list $audio_dir, pick settings -> $data/overrides.yaml"
  mkdir -p "$data"
  python -m audiodiff.train "+experiment=$experiment" "${overrides[@]}" --cfg > "$data/config.yaml"
  local/data.sh --audio-dir "$audio_dir" --out "$data" --config "$data/config.yaml"
fi
# Stage 0's picks (key=value) from here on, before the user's overrides so that the user's win.
picked=()
[ ! -f "$data/overrides.yaml" ] || mapfile -t picked < <(sed -n 's/^\([A-Za-z_][A-Za-z0-9_.]*\): \(.*\)$/\1=\2/p' "$data/overrides.yaml")
overrides=("${picked[@]}" "${overrides[@]}")

if stage_on 1; then
  [ -f "$data/train.jsonl" ] || _die "no $data/train.jsonl yet; run stage 0 with --audio-dir DIR"
  prepare_splits "$data" "$dump" train  # every clip trains: no held-out split
fi
if stage_on 2; then train_model "$dump" "$exp"; fi
if stage_on 3 && [ "$finetune_vocoder" = true ]; then train_vocoder "$dump" "$exp"; fi
if stage_on 4; then generate_clips "$exp"; fi
if stage_on 5; then score_clips "$exp" --reference "$dump/train"; fi
