# shellcheck shell=bash
# Ray on a Slurm allocation, sourced by the LLSC/*_template.sh batch scripts (not run on its own).
#
# marl_setup            finds the repository, loads modules and the virtual environment
# ray_cluster_start     starts a private Ray cluster on the job's nodes: the head on the batch node, one worker per
#                       other node, each `ray start --block` inside its own `srun` step so Slurm tracks (and on
#                       scancel kills) every Ray process; per-job ports and auth token; exports RAY_ADDRESS
# run_on_ray CMD...     runs CMD in the batch step, stops the cluster afterwards (also on scancel / time limit) and
#                       exits with CMD's exit code
#
# Options (environment variables, all optional; sbatch passes the submitting shell's environment to the job):
#   MARL_REPO             repository root (default: the folder sbatch was run from, $SLURM_SUBMIT_DIR)
#   MARL_VENV             virtual environment to activate (default: $MARL_REPO/.venv when it exists)
#   MARL_MODULES          environment modules to load first, e.g. "anaconda/2023a" on MIT SuperCloud
#   MARL_RAY_TMPDIR       node-local folder for Ray's session files (default: $TMPDIR, else /tmp). Keep it short:
#                         Ray's socket paths below it must stay under 107 bytes. SuperCloud: /state/partition1/user/$USER
#   MARL_RAY_START_TIMEOUT  seconds to wait for the Ray head (default 120); train.py waits for the workers itself
#   MARL_RAY_HEAD_RESOURCES, MARL_RAY_WORKER_RESOURCES  custom Ray resources (JSON) of the head node and of every
#                         other node, e.g. '{"trainer": 1}' on the workers with the experiment's
#                         custom_resources_for_main_process: {trainer: 1} keeps each trial off the head node
#   MARL_KEEP_DISPLAY=1   keep the submitting shell's $DISPLAY (default: unset it, so that Unity games start their
#                         own Xvfb on every node instead of trying an X forwarding that does not exist there)

marl_fail() {
    echo "error: $*" >&2
    exit 2
}

marl_setup() {
    export MARL_REPO=${MARL_REPO:-${SLURM_SUBMIT_DIR:-$PWD}}
    [[ -f $MARL_REPO/train.py ]] || marl_fail "$MARL_REPO holds no train.py; run sbatch from the repository root or set MARL_REPO"
    cd "$MARL_REPO" || marl_fail "cannot enter $MARL_REPO"
    if [[ -n ${MARL_MODULES:-} ]]; then
        # shellcheck disable=SC1091
        source /etc/profile
        # shellcheck disable=SC2086
        module load $MARL_MODULES || marl_fail "module load $MARL_MODULES failed; check MARL_MODULES against 'module avail'"
    fi
    if [[ -n ${MARL_VENV:-} ]]; then
        [[ -f $MARL_VENV/bin/activate ]] || marl_fail "MARL_VENV=$MARL_VENV is not a virtual environment (no bin/activate)"
    elif [[ -f $MARL_REPO/.venv/bin/activate ]]; then
        MARL_VENV=$MARL_REPO/.venv
    fi
    if [[ -n ${MARL_VENV:-} ]]; then
        # shellcheck disable=SC1091
        source "$MARL_VENV/bin/activate"
    fi
    command -v ray >/dev/null || marl_fail "no 'ray' command; run 'make setup' on the login node or set MARL_VENV / MARL_MODULES"
    [[ ${MARL_KEEP_DISPLAY:-0} == 1 ]] || unset DISPLAY
    export PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0
    # Ray drains a node for up to 30 s when it is stopped; at teardown there is nothing left worth waiting for.
    export RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=${RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S:-2}
}

# Free TCP ports on this host, one per argument count (bound together, so they are distinct).
marl_free_ports() {
    python - "$1" <<'EOF'
import socket, sys
sockets = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in sockets:
    s.bind(("", 0))
print(" ".join(str(s.getsockname()[1]) for s in sockets))
EOF
}

ray_cluster_start() {
    [[ -n ${SLURM_JOB_ID:-} ]] || marl_fail "not inside a Slurm job; submit this script with sbatch"
    mapfile -t MARL_NODES < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
    local head=${MARL_NODES[0]} ip port
    # A token of this job only: other users' and jobs' Ray clusters on the same nodes cannot join or be joined.
    export RAY_AUTH_MODE=token
    RAY_AUTH_TOKEN=$(python -c 'import secrets; print(secrets.token_hex(32))')
    export RAY_AUTH_TOKEN
    unset RAY_AUTH_TOKEN_PATH
    # The batch script runs on the first node of the allocation, so the head's address and port are found here.
    ip=${MARL_RAY_HEAD_IP:-$(hostname --ip-address | tr ' ' '\n' | grep -m1 -E '^[0-9]+(\.[0-9]+){3}$')}
    [[ -n $ip ]] || marl_fail "no IPv4 address for $(hostname); set MARL_RAY_HEAD_IP"
    port=$(marl_free_ports 1)
    export RAY_ADDRESS=$ip:$port MARL_RAY_HEAD_IP=$ip MARL_RAY_PORT=$port
    echo "Ray head on $head at $RAY_ADDRESS; $((${#MARL_NODES[@]} - 1)) worker node(s): ${MARL_NODES[*]:1}"

    MARL_RAY_STEPS=()
    srun --nodes=1 --ntasks=1 --overlap -w "$head" "$MARL_REPO/LLSC/ray_node.sh" head &
    MARL_RAY_STEPS+=($!)
    trap ray_cluster_stop EXIT
    trap 'exit 143' TERM
    trap 'exit 130' INT
    # First the GCS port (a plain TCP probe: `ray status` against a port nobody listens on retries for a minute),
    # then `ray status` until the head's raylet registered (the driver connects through it).
    local deadline=$((SECONDS + ${MARL_RAY_START_TIMEOUT:-120}))
    until (exec 3<>"/dev/tcp/$ip/$port") 2>/dev/null && ray status --address "$RAY_ADDRESS" 2>/dev/null | grep -q "node_"; do
        kill -0 "${MARL_RAY_STEPS[0]}" 2>/dev/null || marl_fail "the Ray head on $head exited; see its output above"
        ((SECONDS < deadline)) || marl_fail "the Ray head on $head did not answer within ${MARL_RAY_START_TIMEOUT:-120} s"
        sleep 1
    done
    local node
    for node in "${MARL_NODES[@]:1}"; do
        srun --nodes=1 --ntasks=1 --overlap -w "$node" "$MARL_REPO/LLSC/ray_node.sh" worker &
        MARL_RAY_STEPS+=($!)
    done
}

# Stops the Ray steps: `scancel --signal=TERM <job>` signals every step of the job but not the batch shell, so each
# ray_node.sh stops its `ray start --block` and removes its session folder; srun steps still running after
# MARL_RAY_STOP_TIMEOUT seconds (default 30) are killed. An array task is named <array job id>_<task id>: the last
# task of an array runs under the array's own job id, and `scancel <array job id>` would signal every task.
ray_cluster_stop() {
    local rc=$? pid deadline=$((SECONDS + ${MARL_RAY_STOP_TIMEOUT:-30})) job=$SLURM_JOB_ID
    trap - EXIT TERM INT
    [[ -z ${SLURM_ARRAY_JOB_ID:-} ]] || job=${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}
    scancel --signal=TERM "$job" 2>/dev/null
    for pid in "${MARL_RAY_STEPS[@]}"; do
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.5; done
        kill -KILL "$pid" 2>/dev/null
    done
    wait 2>/dev/null
    echo "Ray cluster of job $SLURM_JOB_ID stopped"
    exit "$rc"
}

run_on_ray() {
    # In the background and waited for, so that a SIGTERM (scancel, time limit) reaches the trap at once.
    "$@" &
    local command=$!
    trap 'kill -TERM $command 2>/dev/null; wait $command; exit 143' TERM
    wait "$command"
    exit $?
}
