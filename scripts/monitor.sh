#!/usr/bin/env bash
# Prometheus, and Alertmanager when installed, on loopback with monitoring/'s
# configuration, scraping a local Velostream server. Ctrl-C stops both.
#
#   make monitor                                  # a server on 127.0.0.1:8080
#   VELO_TARGET=127.0.0.1:9100 make monitor       # e.g. `velo-sql run --metrics-port 9100`
#
# Environment: VELO_TARGET (host:port, default 127.0.0.1:8080), PROMETHEUS_PORT (9090),
# ALERTMANAGER_PORT (9093). Data lives in a temporary directory removed on exit.
# Packages: Debian's prometheus and prometheus-alertmanager (`make system-deps`).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
mon="$root/monitoring"
target=${VELO_TARGET:-127.0.0.1:8080}
prom_port=${PROMETHEUS_PORT:-9090}
am_port=${ALERTMANAGER_PORT:-9093}

die() { echo "monitor: $*" >&2; exit 1; }

[[ $target =~ ^[A-Za-z0-9._-]+:[0-9]+$ ]] || die "VELO_TARGET must be host:port, got '$target'"
command -v prometheus >/dev/null || die "prometheus not found: run 'make system-deps'"
am_bin=$(command -v prometheus-alertmanager || command -v alertmanager || true)

state=$(mktemp -d "${TMPDIR:-/tmp}/velo-monitor.XXXXXX")
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$state"
}
trap cleanup EXIT
trap 'echo; echo "monitor: stopping"; exit 0' INT TERM

# prometheus.yml, pointed at $target and at this Alertmanager (or none). The rule and
# target folders are links, so edits in monitoring/ apply on reload (kill -HUP).
mkdir -p "$state/prometheus"
ln -s "$mon/prometheus/rules" "$state/prometheus/rules"
ln -s "$mon/prometheus/targets" "$state/prometheus/targets"
am_targets="[\"127.0.0.1:$am_port\"]"
[[ -n $am_bin ]] || am_targets="[]"
sed -e "s/\"127.0.0.1:8080\"/\"$target\"/" \
    -e "s/targets: \[\"127.0.0.1:9093\"\]/targets: $am_targets/" \
    "$mon/prometheus/prometheus.yml" >"$state/prometheus/prometheus.yml"
grep -q "\"$target\"" "$state/prometheus/prometheus.yml" || die "could not set the scrape target"
promtool check config "$state/prometheus/prometheus.yml" >/dev/null \
    || die "promtool check config failed on $state/prometheus/prometheus.yml"

prometheus \
    --config.file="$state/prometheus/prometheus.yml" \
    --storage.tsdb.path="$state/prometheus-data" \
    --web.listen-address="127.0.0.1:$prom_port" \
    --log.level=warn >"$state/prometheus.log" 2>&1 &
pids+=($!)
if [[ -n $am_bin ]]; then
    "$am_bin" \
        --config.file="$mon/alertmanager/alertmanager.yml" \
        --storage.path="$state/alertmanager-data" \
        --web.listen-address="127.0.0.1:$am_port" \
        --cluster.listen-address= \
        --log.level=warn >"$state/alertmanager.log" 2>&1 &
    pids+=($!)
fi

# Wait until each listens; a process that exits (say, its port is taken) shows its log.
wait_port() {
    local port=$1 pid=$2 log=$3
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; die "$(basename "$log" .log) exited"; }
        sleep 0.2
    done
    cat "$log" >&2
    die "nothing listens on 127.0.0.1:$port after 20 s"
}
wait_port "$prom_port" "${pids[0]}" "$state/prometheus.log"
[[ -z $am_bin ]] || wait_port "$am_port" "${pids[1]}" "$state/alertmanager.log"

echo "Velostream monitoring is running (Ctrl-C stops it):"
echo "  Prometheus:    http://127.0.0.1:$prom_port   (alerts: /alerts, targets: /targets)"
if [[ -n $am_bin ]]; then
    echo "  Alertmanager:  http://127.0.0.1:$am_port"
else
    echo "  Alertmanager:  not installed (apt-get install prometheus-alertmanager)"
fi
echo "  Scraping:      http://$target/metrics"
echo "  Logs, data:    $state"

set +e
wait -n "${pids[@]}"
echo "monitor: a process exited; its log:" >&2
tail -n 20 "$state"/*.log >&2
exit 1
