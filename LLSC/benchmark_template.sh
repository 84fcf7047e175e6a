#!/bin/bash
# Run the architecture benchmark suite on a Slurm allocation: a private Ray cluster over all allocated nodes, then
# benchmark.py against it (its --max-parallel runs spread over the nodes).
#
#   sbatch -N 4 -c 16 LLSC/benchmark_template.sh --architectures fcnet,lstm --levels all --seeds 3 --max-parallel 8 \
#       --output-dir results/bench_cluster
#
# Everything after the script name goes to benchmark.py. Re-submitting with the same --output-dir resumes the suite.
# Run sbatch from the repository root (or set MARL_REPO); options: see LLSC/ray_cluster.sh. Exit code: benchmark.py's.
#
#SBATCH --job-name=marl-benchmark
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --mem-per-cpu=2G
#SBATCH --time=12:00:00
#SBATCH --output=slurm-%x-%j.out

# shellcheck source=LLSC/ray_cluster.sh
source "${MARL_REPO:-$SLURM_SUBMIT_DIR}/LLSC/ray_cluster.sh" || exit 2
marl_setup
ray_cluster_start
run_on_ray python -u benchmark.py --ray-address "$RAY_ADDRESS" --ray-num-nodes "$SLURM_JOB_NUM_NODES" "$@"
