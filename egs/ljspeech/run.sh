#!/usr/bin/env bash
# LJSpeech 1.1, unconditional, end to end:
#   0 download + unpack (or --data-dir), manifests with a fixed held-out split
#   1 prepare features   2 train on random 2 s crops   3 fine-tune HiFi-GAN on the train clips
#   4 generate (with stage 3's vocoder when it ran)   5 score generated clips (FD-mel, KID-mel)
# Usage: bash egs/ljspeech/run.sh [--smoke] [--data-dir LJSpeech-1.1] [--stage N] [--stop-stage N]
#                                 [--nproc N] [--no-finetune-vocoder] [HYDRA_OVERRIDES...]
# Every setting lives in recipes/experiment/ljspeech*.yaml; this script only sequences
# `python -m audiodiff.*` calls. Hydra overrides (key=value) go to training.
invoke_dir=$PWD
cd "$(dirname "$0")"
experiment=ljspeech
data_dir=
extra_opts="--data-dir"
no_finetune_vocoder=false
flag_opts="--no-finetune-vocoder"
usage="usage: bash egs/ljspeech/run.sh [--smoke] [--data-dir LJSpeech-1.1] [--stage N] [--stop-stage N] [--nproc N] [--no-finetune-vocoder] [key=value ...]"
source ../common/recipe.sh
[ -z "$data_dir" ] || data_dir=$(cd "$invoke_dir" && realpath -m -- "$data_dir")

name=$(get name)
declare -A recipe  # the experiment's recipe.* values, read in one call (each `get` starts Python)
while IFS= read -r line; do recipe[${line%%: *}]=${line#*: }; done < <(get recipe)
data=$work/data/$name
dump=$work/dump/$name
exp=$work/exp/$name

if stage_on 0; then
  log "stage 0: LJSpeech ${data_dir:+from $data_dir }-> $data"
  local/data.sh --out "$data" --download-dir "$work/data/download" ${data_dir:+--data-dir "$data_dir"} \
    --num-valid "${recipe[num_valid]}" --num-test "${recipe[num_test]}" \
    --seed "${recipe[split_seed]}" --max-train "${recipe[max_train]}"
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

if stage_on 3 && [ "$no_finetune_vocoder" = false ]; then
  log "stage 3: fine-tune HiFi-GAN on the train clips -> $exp/vocoder"
  python -m audiodiff.train task=vocoder "+experiment=$experiment" "data.dir=$dump/train" "run_dir=$exp/vocoder" "${overrides[@]}"
fi

if stage_on 4; then
  vocoder=${recipe[vocoder]}
  [ -f "$exp/vocoder/generator.pt" ] && vocoder=$exp/vocoder  # stage 3's, when it ran
  log "stage 4: generate (vocoder $vocoder) -> $exp/clips"
  python -m audiodiff.generate --model "$exp" --out "$exp/clips" --overwrite --num "${recipe[generate_num]}" \
    --steps "${recipe[generate_steps]}" --sampler "${recipe[sampler]}" --vocoder "$vocoder"
  log "done: open $(cd "$exp/clips" && pwd)/index.html"
fi

if stage_on 5; then
  vocoder=${recipe[vocoder]}
  [ -f "$exp/vocoder/generator.pt" ] && vocoder=$exp/vocoder
  log "stage 5: score ${recipe[eval_num]} generated clips against the train split (FD-mel, KID-mel)"
  python -m audiodiff.evaluate --model "$exp" --num "${recipe[eval_num]}" --reference "$dump/train" --test "$dump/test" \
    --steps "${recipe[generate_steps]}" --sampler "${recipe[sampler]}" --vocoder "$vocoder" --json "$exp/eval.json"
  log "scores: $exp/eval.json"
fi
