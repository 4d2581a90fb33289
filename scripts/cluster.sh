# Sourced by scripts/demo and scripts/bench: a local Redis Cluster of six nodes (three masters,
# a replica each) on free ports. The caller has `dir` (a temp dir) and `pids` (killed by PID on
# exit); `start_cluster [WRAPPER...]` starts every node under WRAPPER (e.g. taskset -c 1), forms
# the cluster and sets `nodes` (host:port of each).

# Prints $1 ports that are free on 127.0.0.1 with their cluster bus ports (+10000).
cluster_ports() {
    python3 - "$1" <<'PY'
import socket, sys
ports, held = [], []
while len(ports) < int(sys.argv[1]):
    a, b = socket.socket(), socket.socket()
    a.bind(("127.0.0.1", 0))
    p = a.getsockname()[1]
    try:
        if p >= 55535:
            raise OSError
        b.bind(("127.0.0.1", p + 10000))
        ports.append(p)
        held += [a, b]
    except OSError:
        a.close(); b.close()
print(*ports)
PY
}

start_cluster() {
    local p
    nodes=()
    for p in $(cluster_ports 6); do
        "$@" redis-server --save "" --appendonly no --port "$p" --daemonize no --bind 127.0.0.1 \
            --cluster-enabled yes --cluster-node-timeout 2000 --repl-diskless-sync-delay 0 \
            --cluster-config-file "$dir/nodes-$p.conf" --dbfilename "dump-$p.rdb" --dir "$dir" \
            >"$dir/redis-$p.log" 2>&1 &
        pids+=($!)
        nodes+=("127.0.0.1:$p")
    done
    for p in "${nodes[@]}"; do
        for _ in $(seq 50); do
            [ "$(timeout 1 redis-cli -p "${p##*:}" ping 2>/dev/null)" = PONG ] && break
            sleep 0.1
        done
    done
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes \
        >"$dir/create.log" 2>&1 || { echo "redis-cli --cluster create failed (see $dir/create.log)" >&2; return 1; }
    for _ in $(seq 100); do
        redis-cli -p "${nodes[0]##*:}" cluster info | tr -d '\r' | grep -q cluster_state:ok && return 0
        sleep 0.1
    done
    echo "the cluster did not reach cluster_state:ok (logs in $dir)" >&2
    return 1
}
