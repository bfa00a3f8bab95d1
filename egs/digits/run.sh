#!/usr/bin/env bash
# Spoken digits (an SC09 analogue made offline with espeak-ng), end to end:
#   0 build the clips   1 prepare features   2 train   3 fine-tune the vocoder (optional)
#   4 generate   5 train the SC09-style digit classifier and score generated clips
# Usage: bash egs/digits/run.sh [--smoke|--cpu] [--stage N] [--stop-stage N] [--nproc N]
#                               [--finetune-vocoder] [HYDRA_OVERRIDES...]
# Every setting lives in recipes/experiment/digits*.yaml; this script only sequences
# `python -m audiodiff.*` calls. Hydra overrides (key=value) go to training.
invoke_dir=$PWD
cd "$(dirname "$0")"
experiment=digits
finetune_vocoder=false
flag_opts="--finetune-vocoder"
usage="usage: bash egs/digits/run.sh [--smoke|--cpu] [--stage N] [--stop-stage N] [--nproc N] [--finetune-vocoder] [key=value ...]"
source ../common/recipe.sh

name=$(get name)
per_digit=$(get recipe.per_digit)
data=$work/data/digits_$per_digit
dump=$work/dump/$name
exp=$work/exp/$name

if stage_on 0; then
  log "stage 0: speak the digits ($per_digit per digit) -> $data"
  python -m audiodiff.datasets.digits --out "$data" --per-digit "$per_digit" --seed 0
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

vocoder=$(get recipe.vocoder)
if stage_on 3 && [ "$finetune_vocoder" = true ]; then
  log "stage 3: fine-tune HiFi-GAN on the train clips -> $exp/vocoder"
  python -m audiodiff.train task=vocoder "+experiment=$experiment" "data.dir=$dump/train" "run_dir=$exp/vocoder" "${overrides[@]}"
  vocoder=$exp/vocoder
fi

if stage_on 4; then
  log "stage 4: generate -> $exp/clips"
  num=$(get recipe.generate_num)
  labels=$(python -c "print(','.join(str(i % 10) for i in range($num)))")
  python -m audiodiff.generate --model "$exp" --out "$exp/clips" --overwrite --num "$num" \
    --steps "$(get recipe.generate_steps)" --sampler "$(get recipe.sampler)" --vocoder "$vocoder" \
    --guidance "$(get recipe.guidance)" --label "$labels"
  log "done: open $(cd "$exp/clips" && pwd)/index.html"
fi

if stage_on 5; then
  log "stage 5: train the evaluation classifier -> $exp/classifier, score $(get recipe.eval_num) clips"
  python -m audiodiff.train task=classifier "+experiment=$experiment" "data.dir=$dump/train" \
    "run_dir=$exp/classifier" "classifier_train.valid_dir=$dump/valid" "classifier_train.test_dir=$dump/test"
  python -m audiodiff.evaluate --model "$exp" --num "$(get recipe.eval_num)" \
    --classifier "$exp/classifier/classifier.pt" --reference "$dump/train" --test "$dump/test" \
    --steps "$(get recipe.generate_steps)" --sampler "$(get recipe.sampler)" --vocoder "$(get recipe.vocoder)" \
    --guidance "$(get recipe.guidance)" --json "$exp/eval.json"
  log "scores: $exp/eval.json"
fi
