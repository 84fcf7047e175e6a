#!/usr/bin/env bash
# One Ray node of a Slurm job: `ray_node.sh head|worker`, started by LLSC/ray_cluster.sh under srun on each node.
#
# Resources come from the allocation, not from what the node has (other jobs share it): CPUs from
# --cpus-per-task (else the CPUs allocated on the node), GPUs from the allocation's GPUs on the node, memory
# from --mem / --mem-per-cpu (70% for tasks, 30% object store). Every port is picked free on this node, so
# several jobs (and, in CI, several fake nodes on one host) never collide. `ray start --block` keeps the Ray
# processes inside this step: Slurm stops them with the step, also on scancel.
set -euo pipefail
role=$1
[[ $role == head || $role == worker ]] || { echo "error: ray_node.sh takes 'head' or 'worker', got '$role'" >&2; exit 2; }
node=${SLURMD_NODENAME:-$(hostname -s)}

temp=${MARL_RAY_TMPDIR:-${TMPDIR:-/tmp}}/ray-$SLURM_JOB_ID-$node
if ((${#temp} > 60)); then
    echo "warning: $temp is too long for Ray's socket paths (107-byte limit); using /tmp/ray-$SLURM_JOB_ID-$node" >&2
    temp=/tmp/ray-$SLURM_JOB_ID-$node
fi
mkdir -p "$(dirname "$temp")"

cpus=${SLURM_CPUS_PER_TASK:-${SLURM_CPUS_ON_NODE:-1}}
gpus=${SLURM_GPUS_ON_NODE:-0}
memory_mb=${SLURM_MEM_PER_NODE:-$((${SLURM_MEM_PER_CPU:-0} * cpus))}
memory_args=()
if ((memory_mb > 0)); then
    memory_args=(--memory=$((memory_mb * 1024 * 1024 * 7 / 10)) --object-store-memory=$((memory_mb * 1024 * 1024 * 3 / 10)))
fi

# shellcheck source=LLSC/ray_cluster.sh
source "$MARL_REPO/LLSC/ray_cluster.sh"
read -r node_manager object_manager metrics agent_http agent_grpc runtime_env client dashboard < <(marl_free_ports 8)
args=(
    --num-cpus="$cpus" --num-gpus="$gpus" "${memory_args[@]}" --temp-dir="$temp"
    --node-manager-port="$node_manager" --object-manager-port="$object_manager" --metrics-export-port="$metrics"
    --dashboard-agent-listen-port="$agent_http" --dashboard-agent-grpc-port="$agent_grpc"
    --runtime-env-agent-port="$runtime_env" --disable-usage-stats --block
)
# Custom Ray resources of this node (JSON), e.g. to keep trials (`custom_resources_for_main_process`) off the head.
resources=MARL_RAY_${role^^}_RESOURCES
[[ -z ${!resources:-} ]] || args+=(--resources="${!resources}")
if [[ $role == head ]]; then
    args+=(--head --node-ip-address="$MARL_RAY_HEAD_IP" --port="$MARL_RAY_PORT" --ray-client-server-port="$client"
           --dashboard-port="$dashboard" --include-dashboard=false)
else
    args+=(--address="$RAY_ADDRESS")
fi
echo "Ray $role on $node: $cpus CPUs, $gpus GPUs, ${memory_mb} MB, session folder $temp"

ray start "${args[@]}" >"$temp.log" 2>&1 &
ray_pid=$!
trap 'kill -TERM $ray_pid 2>/dev/null; wait $ray_pid; rm -rf "$temp" "$temp.log"; exit 0' TERM INT
set +e
wait $ray_pid
rc=$?
echo "Ray $role on $node exited ($rc); its log:" >&2
tail -n 20 "$temp.log" >&2
rm -rf "$temp" "$temp.log"
exit $rc
