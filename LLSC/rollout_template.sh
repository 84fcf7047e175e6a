#!/bin/bash
# Evaluate a checkpoint on a Slurm allocation: a private Ray cluster, then rollout.py against it.
#
#   sbatch LLSC/rollout_template.sh results/x/PPO_.../checkpoint_000010 --run PPO --episodes 100 --num-workers 7
#
# Everything after the script name goes to rollout.py; --num-workers env runners spread over the allocated nodes.
# Run sbatch from the repository root (or set MARL_REPO); options: see LLSC/ray_cluster.sh. Exit code: rollout.py's.
#
#SBATCH --job-name=marl-rollout
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=8        # rollout.py itself needs one, each --num-workers env runner one more
#SBATCH --mem-per-cpu=2G
#SBATCH --time=01:00:00
#SBATCH --output=slurm-%x-%j.out

# shellcheck source=LLSC/ray_cluster.sh
source "${MARL_REPO:-$SLURM_SUBMIT_DIR}/LLSC/ray_cluster.sh" || exit 2
marl_setup
ray_cluster_start
run_on_ray python -u rollout.py --ray-address "$RAY_ADDRESS" --ray-num-nodes "$SLURM_JOB_NUM_NODES" "$@"
