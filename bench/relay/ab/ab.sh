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
med() { sort -n | sed -n "$(( ($1 + 1) / 2 ))p"; }
for name in $(awk '{print $1}' "$out" | sort -u); do
  rows=$(grep -c "^$name " "$out")
  g=$(grep "^$name " "$out" | awk '{print $3}' | med "$rows")
  p=$(grep "^$name " "$out" | awk '{print $6}' | med "$rows")
  c=$(grep "^$name " "$out" | awk '{print $13}' | med "$rows")
  printf "  %-28s %6s Gbit/s  p50 %6s us  client cpu %s s\n" "$name" "$g" "$p" "$c"
done
