#!/bin/bash
# Train on a Slurm allocation: a private Ray cluster over all allocated nodes, then train.py against it.
#
#   sbatch -N 4 LLSC/train_template.sh -f config/x.yaml --checkpoint-freq 10 --checkpoint-at-end
#
# Run sbatch from the repository root (or set MARL_REPO). Everything after the script name goes to train.py.
# sbatch flags on the command line override the #SBATCH defaults below. Checkpoints go to --local-dir (default
# results/ in the repository): it must be on storage every node sees (home, project space), because trials run on
# any node. Options read from the environment (modules, venv, node-local temp dir): see LLSC/ray_cluster.sh.
# The exit code is train.py's: 0 when every trial finished, 1 when a trial failed, 2 for a bad command or config.
#
#SBATCH --job-name=marl-train
#SBATCH --nodes=1                # Ray nodes; sbatch -N 4 for four
#SBATCH --ntasks-per-node=1      # one Ray node (raylet) per Slurm node
#SBATCH --cpus-per-task=8        # CPUs Ray schedules on each node: env runners + one per trial's learner
#SBATCH --mem-per-cpu=2G         # Ray gets 70% for tasks and 30% for its object store
#SBATCH --time=04:00:00
#SBATCH --output=slurm-%x-%j.out
# GPUs per node: add e.g. --gres=gpu:volta:1 (MIT SuperCloud) or --gpus-per-node=1; Ray gets them as --num-gpus.
# Whole nodes: --exclusive (SuperCloud: -p xeon-p8 --exclusive -c 48).

# shellcheck source=LLSC/ray_cluster.sh
source "${MARL_REPO:-$SLURM_SUBMIT_DIR}/LLSC/ray_cluster.sh" || exit 2
marl_setup
ray_cluster_start
run_on_ray python -u train.py --ray-address "$RAY_ADDRESS" --ray-num-nodes "$SLURM_JOB_NUM_NODES" "$@"
