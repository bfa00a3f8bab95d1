#!/usr/bin/env bash
# NSynth, class-conditional on the instrument family, end to end:
#   0 download + unpack (or --data-dir), manifests   1 prepare features   2 train
#   3 fine-tune the vocoder on the notes (optional)   4 generate every family with guidance
#   5 train a family classifier, score generated notes (FID, IS, mIS, AM, NDB/K)
# Usage: bash egs/nsynth/run.sh [--smoke] [--data-dir FOLDER_WITH_nsynth-train/] [--stage N]
#                               [--stop-stage N] [--nproc N] [--finetune-vocoder] [HYDRA_OVERRIDES...]
# Every setting lives in recipes/experiment/nsynth*.yaml; this script only sequences
# `python -m audiodiff.*` calls. Hydra overrides (key=value) go to training.
invoke_dir=$PWD
cd "$(dirname "$0")"
experiment=nsynth
data_dir=
extra_opts="--data-dir"
finetune_vocoder=false
flag_opts="--finetune-vocoder"
usage="usage: bash egs/nsynth/run.sh [--smoke] [--data-dir FOLDER_WITH_nsynth-train/] [--stage N] [--stop-stage N] [--nproc N] [--finetune-vocoder] [key=value ...]"
source ../common/recipe.sh
[ -z "$data_dir" ] || data_dir=$(cd "$invoke_dir" && realpath -m -- "$data_dir")

name=$(get name)
declare -A recipe  # the experiment's recipe.* values, read in one call (each `get` starts Python)
while IFS= read -r line; do recipe[${line%%: *}]=${line#*: }; done < <(get recipe)
data=$work/data/$name
dump=$work/dump/$name
exp=$work/exp/$name

if stage_on 0; then
  log "stage 0: NSynth ${data_dir:+from $data_dir }-> $data"
  local/data.sh --out "$data" --download-dir "$work/data/download" ${data_dir:+--data-dir "$data_dir"} \
    --pitch-min "${recipe[pitch_min]}" --pitch-max "${recipe[pitch_max]}" \
    --sources "${recipe[sources]}" --per-label "${recipe[per_label]}"
fi

if stage_on 1; then
  log "stage 1: check notes, resample to the audio config, compute mels -> $dump"
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

if stage_on 3 && [ "$finetune_vocoder" = true ]; then
  log "stage 3: fine-tune HiFi-GAN on the train notes -> $exp/vocoder"
  python -m audiodiff.train task=vocoder "+experiment=$experiment" "data.dir=$dump/train" "run_dir=$exp/vocoder" "${overrides[@]}"
fi

if stage_on 4; then
  vocoder=${recipe[vocoder]}
  [ -f "$exp/vocoder/generator.pt" ] && vocoder=$exp/vocoder  # stage 3's, when it ran
  log "stage 4: generate every family (vocoder $vocoder) -> $exp/clips"
  python -m audiodiff.generate --model "$exp" --out "$exp/clips" --overwrite --num "${recipe[generate_num]}" \
    --steps "${recipe[generate_steps]}" --sampler "${recipe[sampler]}" --vocoder "$vocoder" \
    --guidance "${recipe[guidance]}" --label "$(seq -s, 0 $(($(get data.num_classes) - 1)))"
  log "done: open $(cd "$exp/clips" && pwd)/index.html"
fi

if stage_on 5; then
  vocoder=${recipe[vocoder]}
  [ -f "$exp/vocoder/generator.pt" ] && vocoder=$exp/vocoder
  log "stage 5: train the evaluation classifier -> $exp/classifier, score ${recipe[eval_num]} generated clips"
  python -m audiodiff.train task=classifier "+experiment=$experiment" "data.dir=$dump/train" \
    "run_dir=$exp/classifier" "classifier_train.valid_dir=$dump/valid" "classifier_train.test_dir=$dump/test" \
    "${overrides[@]}"
  python -m audiodiff.evaluate --model "$exp" --num "${recipe[eval_num]}" \
    --classifier "$exp/classifier/classifier.pt" --reference "$dump/train" --test "$dump/test" \
    --steps "${recipe[generate_steps]}" --sampler "${recipe[sampler]}" --vocoder "$vocoder" \
    --guidance "${recipe[guidance]}" --json "$exp/eval.json"
  log "scores: $exp/eval.json"
fi
