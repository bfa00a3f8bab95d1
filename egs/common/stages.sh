# The stages that egs/*/run.sh share, one function each (sourced after ../common/recipe.sh,
# whose experiment, overrides, get, log and train_launcher they use). Each runs
# `python -m audiodiff.*` with paths and the experiment's recipe.* values; nothing else.
# Every recipe numbers its stages alike; stage 0 (the data) is its own, in run.sh or local/.
#
#   read_recipe                        ${recipe[KEY]}: every recipe.* value, read in one call
#                                      (each `get` starts Python); the stages call it themselves
#   recipe_paths                       name, recipe, data, dump, exp (and an absolute data_dir)
#   1 prepare_splits DATA DUMP [SPLIT...]
#                                      DUMP/audio.yaml from the config, then each
#                                      DATA/SPLIT.jsonl -> DUMP/SPLIT (default: train valid test)
#   2 train_model DUMP EXP             the diffusion model on DUMP/train -> EXP (re-run to resume)
#   3 train_vocoder DUMP EXP           fine-tune HiFi-GAN on DUMP/train -> EXP/vocoder
#   4 generate_clips EXP               recipe.generate_num clips -> EXP/clips; a class-conditional
#                                      model goes through its classes in turn, with guidance
#   5 train_classifier DUMP EXP        the evaluation classifier on DUMP/{train,valid,test}
#                                      -> EXP/classifier
#   5 score_clips EXP EVALUATE_ARGS... recipe.eval_num generated clips scored by
#                                      `python -m audiodiff.evaluate EVALUATE_ARGS...` -> EXP/eval.json
#
# Stages 4 and 5 vocode with stage 3's HiFi-GAN when EXP/vocoder/generator.pt exists (from
# this run or an earlier one), else with recipe.vocoder.

declare -A recipe=()
read_recipe() {
  [ ${#recipe[@]} -eq 0 ] || return 0
  local line
  while IFS= read -r line; do
    if [[ $line =~ ^([A-Za-z_][A-Za-z0-9_]*):\ (.*)$ ]]; then recipe[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}; fi
  done < <(get recipe)
}

# recipe_paths: name (the experiment's), every recipe.* value, and the folders data=$work/data/$name
# (a recipe whose data depend on recipe values sets its own after), dump=$work/dump/$name,
# exp=$work/exp/$name; a --data-dir given relative to where run.sh was called is made absolute.
recipe_paths() {
  name=$(get name)
  read_recipe
  data=$work/data/$name
  dump=$work/dump/$name
  exp=$work/exp/$name
  [ -z "${data_dir:-}" ] || data_dir=$(cd "$invoke_dir" && realpath -m -- "$data_dir")
}

prepare_splits() {
  local data=$1 dump=$2 split
  shift 2
  [ $# -gt 0 ] || set -- train valid test
  log "stage 1: check clips, resample to the audio config, compute mels -> $dump"
  mkdir -p "$dump"
  get audio > "$dump/audio.yaml"
  for split in "$@"; do
    python -m audiodiff.prepare "$data/$split.jsonl" --out "$dump/$split" --audio-config "$dump/audio.yaml" --quiet
  done
}

train_model() {
  log "stage 2: train${overrides[*]:+ with ${overrides[*]}} -> $2 (re-run to resume)"
  "${train_launcher[@]}" "+experiment=$experiment" "data.dir=$1/train" "run_dir=$2" "${overrides[@]}"
}

train_vocoder() {
  local valid=()
  [ ! -f "$1/valid/manifest.jsonl" ] || valid=("vocoder_train.valid_data=$1/valid")
  log "stage 3: fine-tune HiFi-GAN on $1/train -> $2/vocoder"
  python -m audiodiff.train task=vocoder "+experiment=$experiment" "data.dir=$1/train" "run_dir=$2/vocoder" \
    "${valid[@]}" "${overrides[@]}"
}

generate_clips() {
  local exp=$1 vocoder classes conditional=()
  read_recipe
  vocoder=$(_vocoder "$exp")
  classes=$(_class_labels)
  [ -z "$classes" ] || conditional=(--label "$classes" $(_guidance_args))
  log "stage 4: generate ${recipe[generate_num]} clips${classes:+ cycling through labels $classes, guidance ${recipe[guidance]}} (vocoder $vocoder) -> $exp/clips"
  python -m audiodiff.generate --model "$exp" --out "$exp/clips" --overwrite --num "${recipe[generate_num]}" \
    --steps "${recipe[generate_steps]}" --sampler "${recipe[sampler]}" --vocoder "$vocoder" "${conditional[@]}"
  log "done: open $(cd "$exp/clips" && pwd)/index.html"
}

train_classifier() {
  log "stage 5: train the evaluation classifier -> $2/classifier"
  python -m audiodiff.train task=classifier "+experiment=$experiment" "data.dir=$1/train" "run_dir=$2/classifier" \
    "classifier_train.valid_dir=$1/valid" "classifier_train.test_dir=$1/test" "${overrides[@]}"
}

score_clips() {
  local exp=$1 vocoder conditional=()
  shift
  read_recipe
  vocoder=$(_vocoder "$exp")
  [ -z "$(_class_labels)" ] || conditional=($(_guidance_args))
  log "stage 5: score ${recipe[eval_num]} generated clips (vocoder $vocoder) -> $exp/eval.json"
  python -m audiodiff.evaluate --model "$exp" --num "${recipe[eval_num]}" "$@" \
    --steps "${recipe[generate_steps]}" --sampler "${recipe[sampler]}" --vocoder "$vocoder" "${conditional[@]}" \
    --json "$exp/eval.json"
  log "scores: $exp/eval.json"
}

# --guidance recipe.guidance, and --guidance-interval recipe.guidance_interval when the recipe
# sets one (LO,HI; "none" or null: guide at every step). Words without spaces: safe unquoted.
_guidance_args() {
  local interval=${recipe[guidance_interval]:-none}
  echo "--guidance ${recipe[guidance]}"
  case "${interval,,}" in none | null | "''" | '""') ;; *) echo "--guidance-interval $interval" ;; esac
}

# Stage 3's fine-tuned HiFi-GAN when it has run, else recipe.vocoder.
_vocoder() {
  if [ -f "$1/vocoder/generator.pt" ]; then echo "$1/vocoder"; else echo "${recipe[vocoder]}"; fi
}

# "0,1,...,C-1" for a model with C classes (generate cycles through the list); nothing for C = 0.
_class_labels() {
  local n
  n=$(get data.num_classes)
  if [ "$n" -gt 0 ]; then seq -s, 0 $((n - 1)); fi
}
