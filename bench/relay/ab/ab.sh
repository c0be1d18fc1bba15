#!/bin/bash
# A/B rig (docs/benchmarks.md, "One tunnel against socat"): ROUNDS interleaved rounds of MiB through each
# addon build given (each behind its own relay.mjs) and through socat -b 262144, sender and receiver in one
# client process, then the median per path. Usage: bench/relay/ab/ab.sh ROUNDS MiB A.node [B.node ...]
# An argument PATH=0 runs that build with copy mode off (zero-copy splicing), PATH=1 with it on (default).
set -u
rounds=$1; mib=$2; shift 2
dir=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp)
pids=()
port=21910
for arg in "$@"; do COPY=${arg#*=} ADDON=$(realpath "${arg%%=*}") PORT=$port node "$dir/relay.mjs" & pids+=($!); port=$((port + 1)); done
socat -b 262144 TCP-LISTEN:21901,bind=127.0.0.1,reuseaddr,fork TCP:127.0.0.1:21902 & pids+=($!)
trap 'kill "${pids[@]}" 2>/dev/null; rm -f "$out"' EXIT
sleep 0.6
for _ in $(seq "$rounds"); do
  port=21910
  for arg in "$@"; do echo "$(basename "${arg%%=*}")${arg#"${arg%%=*}"} $(RPORT=$port node "$dir/client.mjs" relay "$mib")" | tee -a "$out"; port=$((port + 1)); done
  echo "socat $(node "$dir/client.mjs" socat "$mib")" | tee -a "$out"
done
echo "median of $rounds rounds ($mib MiB each):"
for name in $(awk '{print $1}' "$out" | sort -u); do
  grep "^$name " "$out" | awk -v n="$name" '{g[NR]=$3; p[NR]=$7; c[NR]=$14} END {asort(g); asort(p); asort(c); m=int((NR+1)/2); printf "  %-28s %6.2f Gbit/s  p50 %6.1f us  client cpu %.2f s\n", n, g[m], p[m], c[m]}'
done
