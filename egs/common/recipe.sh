# Shared plumbing for egs/*/run.sh (sourced, Kaldi's parse_options.sh in spirit).
# Before sourcing, a recipe sets: experiment (default experiment name), usage (one line),
# last_stage (its highest stage number), and optionally extra_opts (space-separated --flags
# taking a value) which land in variables named after them (--data-dir -> data_dir; a --*-dir
# must name an existing folder). It gets: stage, stop_stage, nproc, the multi-node options
# (--nnodes, --node-rank, --rdzv-endpoint HOST:PORT, --rdzv-id, --rdzv-timeout S, --max-restarts),
# smoke/cpu experiment switches, overrides (Hydra key=value list), get KEY (a value of the
# resolved experiment config), log MSG, train_launcher (python or torchrun), stage_on N,
# and work: the root for data/ dump/ exp/ ($AUDIODIFF_WORK, default the recipe folder).
set -euo pipefail
export PYTHONPATH="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)${PYTHONPATH:+:$PYTHONPATH}"

stage=${stage:-0}
stop_stage=${stop_stage:-100}
nproc=${nproc:-1}
nnodes=${nnodes:-1}
node_rank=${node_rank:-0}
max_restarts=${max_restarts:-0}
rdzv_endpoint=${rdzv_endpoint:-}
rdzv_id=${rdzv_id:-}
rdzv_timeout=${rdzv_timeout:-}
overrides=()
extra_opts=${extra_opts:-}
flag_opts=${flag_opts:-}
_recipe=$(basename "$(pwd)")

_die() { echo "$_recipe/run.sh: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) experiment=${experiment}_smoke ;;
    --cpu) experiment=${experiment}_cpu ;;
    --stage|--stop-stage|--nproc|--nnodes|--node-rank|--max-restarts|--rdzv-timeout)
      [ $# -ge 2 ] && [[ "$2" =~ ^[0-9]+$ ]] || _die "$1 needs a whole number; $usage"
      _var=${1#--}; printf -v "${_var//-/_}" '%s' "$2"
      shift ;;
    --rdzv-endpoint|--rdzv-id)
      [ $# -ge 2 ] && [ -n "$2" ] || _die "$1 needs a value; $usage"
      _var=${1#--}; printf -v "${_var//-/_}" '%s' "$2"
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
        _die "unknown option $1; valid: $(echo --smoke --cpu --stage --stop-stage --nproc --nnodes --node-rank \
          --rdzv-endpoint --rdzv-id --rdzv-timeout --max-restarts $extra_opts $flag_opts)"
      fi ;;
    *=*) overrides+=("$1") ;;
    *) _die "unexpected argument '$1' (Hydra overrides look like key=value); $usage" ;;
  esac
  shift
done
[ "$nproc" -ge 1 ] || _die "--nproc must be >= 1"
[ "$nnodes" -ge 1 ] || _die "--nnodes must be >= 1"
[ "$node_rank" -lt "$nnodes" ] || _die "--node-rank $node_rank must be below --nnodes $nnodes (0 .. $((nnodes - 1)))"
if [ "$nnodes" -gt 1 ]; then
  [[ "$rdzv_endpoint" =~ ^[^:[:space:]]+:[0-9]+$ ]] \
    || _die "--nnodes $nnodes needs --rdzv-endpoint HOST:PORT (a host every node reaches, e.g. node 0's name)"
fi
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
# One process: python. Several on this machine, or restarts: torchrun --standalone. Several
# machines: the same command on each, meeting at --rdzv-endpoint (c10d rendezvous). Both through
# audiodiff.launch: torchrun, with a rendezvous that times out said in one line.
train_launcher=(python -m audiodiff.train)
if [ "$nnodes" -gt 1 ]; then
  train_launcher=(python -m audiodiff.launch --nnodes "$nnodes" --node-rank "$node_rank" --nproc-per-node "$nproc"
                  --rdzv-backend c10d --rdzv-endpoint "$rdzv_endpoint" --rdzv-id "${rdzv_id:-audiodiff-$experiment}"
                  --max-restarts "$max_restarts" ${rdzv_timeout:+--rdzv-conf "join_timeout=$rdzv_timeout"}
                  -m audiodiff.train)
elif [ "$nproc" -gt 1 ] || [ "$max_restarts" -gt 0 ]; then
  train_launcher=(python -m audiodiff.launch --standalone --nproc-per-node "$nproc" --max-restarts "$max_restarts"
                  -m audiodiff.train)
fi
# Where data/, dump/ and exp/ go: the recipe folder, or $AUDIODIFF_WORK (tests, scratch disks).
# A relative AUDIODIFF_WORK is taken from where the command was run (run.sh sets invoke_dir
# before its cd).
work=${AUDIODIFF_WORK:-.}
if [ -n "${AUDIODIFF_WORK:-}" ] && [[ "$work" != /* ]]; then work=${invoke_dir:-$PWD}/$work; fi
stage_on() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }
get name >/dev/null  # fail early, in one line, on a bad experiment or override (nothing written yet)
mkdir -p "$work"
