#!/bin/sh
# Idle CPU of the built agent: start it on each backend at the default
# sampling interval, let it warm up, and read its utime+stime from
# /proc/<pid>/stat over a span (60 s by default) with nothing scraping it.
# Prints the share of one core. Goal: at most 0.05 %.
#
#   bench/idle-cpu.sh [BINARY] [BACKEND...]     (default: bin/gpuwarden replay nvml)
#   IDLE_WARMUP=15 IDLE_SECONDS=60
#
# replay plays the embedded 8-GPU demo trace, looping. nvml is the live
# driver: on a host without one the GPU collector is down and retries on its
# backoff, with the host sources (kernel log, DKMS, eBPF) running. `run` has
# no go-nvml mock backend; `record --backend mock` is a recorder, not an agent.
set -eu
bin=${1:-bin/gpuwarden}
[ $# -gt 0 ] && shift
backends=${*:-replay nvml}
warmup=${IDLE_WARMUP:-15}
span=${IDLE_SECONDS:-60}
hz=$(getconf CLK_TCK)

# ticks is utime+stime of every thread of the process, in clock ticks:
# fields 14 and 15, counted after the command name's closing parenthesis.
ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }

for backend in $backends; do
	dir=$(mktemp -d)
	port=$((20000 + ($$ + $(date +%N | sed 's/^0*//;s/^$/0/')) % 20000))
	extra=""
	[ "$backend" = replay ] && extra="--replay.loop"
	"$bin" run --backend "$backend" $extra --state.dir "$dir/state" \
		--web.listen-address "127.0.0.1:$port" --log.level warn >"$dir/log" 2>&1 &
	pid=$!
	sleep "$warmup"
	if ! kill -0 "$pid" 2>/dev/null; then
		echo "idle-cpu: the agent on $backend exited during the warm-up:" >&2
		cat "$dir/log" >&2
		rm -rf "$dir"
		exit 1
	fi
	t0=$(ticks "$pid")
	s0=$(date +%s.%N)
	sleep "$span"
	t1=$(ticks "$pid")
	s1=$(date +%s.%N)
	kill "$pid"
	wait "$pid" 2>/dev/null || true
	rm -rf "$dir"
	awk -v b="$backend" -v t0="$t0" -v t1="$t1" -v s0="$s0" -v s1="$s1" -v hz="$hz" 'BEGIN {
		cpu = (t1 - t0) / hz; wall = s1 - s0
		printf "idle-cpu backend=%s interval=10s: %.3f %% of a core (%d ticks of 1/%d s in %.1f s)\n", b, 100 * cpu / wall, t1 - t0, hz, wall
	}'
done
