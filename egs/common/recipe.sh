# Shared plumbing for egs/*/run.sh (sourced, Kaldi's parse_options.sh in spirit).
# Before sourcing, a recipe sets: experiment (default experiment name), usage (one line),
# last_stage (its highest stage number), and optionally extra_opts (space-separated --flags
# taking a value) which land in variables named after them (--data-dir -> data_dir; a --*-dir
# must name an existing folder). It gets: stage, stop_stage, nproc,
# smoke/cpu experiment switches, overrides (Hydra key=value list), get KEY (a value of the
# resolved experiment config), log MSG, train_launcher (python or torchrun), stage_on N,
# and work: the root for data/ dump/ exp/ ($AUDIODIFF_WORK, default the recipe folder).
set -euo pipefail
export PYTHONPATH="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)${PYTHONPATH:+:$PYTHONPATH}"

stage=${stage:-0}
stop_stage=${stop_stage:-100}
nproc=${nproc:-1}
overrides=()
extra_opts=${extra_opts:-}
flag_opts=${flag_opts:-}
_recipe=$(basename "$(pwd)")

_die() { echo "$_recipe/run.sh: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) experiment=${experiment}_smoke ;;
    --cpu) experiment=${experiment}_cpu ;;
    --stage|--stop-stage|--nproc)
      [ $# -ge 2 ] && [[ "$2" =~ ^[0-9]+$ ]] || _die "$1 needs a whole number; $usage"
      case "$1" in --stage) stage=$2 ;; --stop-stage) stop_stage=$2 ;; --nproc) nproc=$2 ;; esac
      shift ;;
    -h|--help) echo "$usage"; exit 0 ;;
    --*)
      name=${1#--}; var=${name//-/_}
      if [[ " $extra_opts " == *" --$name "* ]]; then
        [ $# -ge 2 ] || _die "$1 needs a value; $usage"
        printf -v "$var" '%s' "$2"; shift
      elif [[ " $flag_opts " == *" --$name "* ]]; then
        printf -v "$var" '%s' true
      else
        _die "unknown option $1; valid: $(echo --smoke --cpu --stage --stop-stage --nproc $extra_opts $flag_opts)"
      fi ;;
    *=*) overrides+=("$1") ;;
    *) _die "unexpected argument '$1' (Hydra overrides look like key=value); $usage" ;;
  esac
  shift
done
[ "$nproc" -ge 1 ] || _die "--nproc must be >= 1"
last_stage=${last_stage:-100}
[ "$stage" -le "$last_stage" ] || _die "--stage $stage: the stages are 0 to $last_stage; $usage"
[ "$stop_stage" -ge "$stage" ] || _die "--stop-stage $stop_stage is before --stage $stage: nothing would run; $usage"
# An input folder that is not there: refused now, before anything is written (a relative one is
# taken from where run.sh was called).
for _opt in $extra_opts; do
  case "$_opt" in
    --*-dir)
      _var=${_opt#--}; _var=${_var//-/_}
      [ -z "${!_var:-}" ] || (cd "${invoke_dir:-.}" && [ -d "${!_var}" ]) || _die "$_opt ${!_var} is not a folder; $usage" ;;
  esac
done

# One value of the resolved experiment config (also validates the overrides: exit 2).
get() { python -m audiodiff.train "+experiment=$experiment" "${overrides[@]}" --get "$1"; }
log() { echo "[$_recipe $(date +%H:%M:%S)] $*"; }
train_launcher=(python -m audiodiff.train)
[ "$nproc" -gt 1 ] && train_launcher=(torchrun --standalone --nproc_per_node "$nproc" -m audiodiff.train)
# Where data/, dump/ and exp/ go: the recipe folder, or $AUDIODIFF_WORK (tests, scratch disks).
# A relative AUDIODIFF_WORK is taken from where the command was run (run.sh sets invoke_dir
# before its cd).
work=${AUDIODIFF_WORK:-.}
if [ -n "${AUDIODIFF_WORK:-}" ] && [[ "$work" != /* ]]; then work=${invoke_dir:-$PWD}/$work; fi
stage_on() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }
get name >/dev/null  # fail early, in one line, on a bad experiment or override (nothing written yet)
mkdir -p "$work"
