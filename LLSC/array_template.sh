#!/bin/bash
# A sweep of experiment files x seeds as a Slurm job array: array task i trains config i / N with seed i % N.
#
#   sbatch --array=0-5 LLSC/array_template.sh --configs config/a.yaml,config/b.yaml --seeds 3 [train.py args]
#
# --configs   comma-separated experiment YAML files
# --seeds N   seeds 0 .. N-1 for every file (the array has len(configs) x N tasks; `bash LLSC/array_template.sh
#             --configs ... --seeds N` prints the sbatch line with the right --array range)
# --local-dir results root (default results); task i writes to <local-dir>/<config name>-seed<seed>/
# Other arguments go to every train.py. Each task is its own job with its own Ray cluster over its nodes (-N).
# Limit how many run at once with --array=0-5%2. Options: see LLSC/ray_cluster.sh. Exit code: train.py's.
#
#SBATCH --job-name=marl-array
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --mem-per-cpu=2G
#SBATCH --time=04:00:00
#SBATCH --output=slurm-%x-%A_%a.out

# shellcheck source=LLSC/ray_cluster.sh
source "${MARL_REPO:-${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}}/LLSC/ray_cluster.sh" || exit 2

configs="" seeds="" local_dir=results train_args=()
while (($#)); do
    case $1 in
        --configs) configs=${2:-}; shift 2 || marl_fail "--configs needs a value" ;;
        --seeds) seeds=${2:-}; shift 2 || marl_fail "--seeds needs a value" ;;
        --local-dir) local_dir=${2:-}; shift 2 || marl_fail "--local-dir needs a value" ;;
        *) train_args+=("$1"); shift ;;
    esac
done
IFS=, read -r -a config_files <<<"$configs"
((${#config_files[@]})) || marl_fail "--configs is missing: give comma-separated experiment files, e.g. --configs config/a.yaml,config/b.yaml"
[[ $seeds =~ ^[1-9][0-9]*$ ]] || marl_fail "--seeds must be a positive number of seeds, got '$seeds'"
tasks=$((${#config_files[@]} * seeds))
if [[ -z ${SLURM_JOB_ID:-} ]]; then
    quoted=()
    for arg in --configs "$configs" --seeds "$seeds" --local-dir "$local_dir" "${train_args[@]}"; do
        [[ $arg =~ ^[A-Za-z0-9_./,:=@%+-]+$ ]] && quoted+=("$arg") || quoted+=("'${arg//\'/\'\\\'\'}'")
    done
    echo "sbatch --array=0-$((tasks - 1)) $0 ${quoted[*]}"
    exit 0
fi
task=${SLURM_ARRAY_TASK_ID:-}
[[ -n $task ]] || marl_fail "not an array job: submit with sbatch --array=0-$((tasks - 1)) (${#config_files[@]} configs x $seeds seeds)"
((task < tasks)) || marl_fail "array task $task is beyond the sweep (${#config_files[@]} configs x $seeds seeds = tasks 0-$((tasks - 1)))"
config=${config_files[task / seeds]}
seed=$((task % seeds))
name=$(basename "$config")
echo "array task $task of $tasks: $config, seed $seed"

marl_setup
ray_cluster_start
run_on_ray python -u train.py -f "$config" --seed "$seed" --local-dir "$local_dir/${name%.*}-seed$seed" \
    --ray-address "$RAY_ADDRESS" --ray-num-nodes "$SLURM_JOB_NUM_NODES" "${train_args[@]}"
