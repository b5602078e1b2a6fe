#!/usr/bin/env bash
# Reproduces benches/RESULTS.md: every table, one after the other, into bench-data/results/.
#   cargo build --release -p eostok-benches && scripts/build-llama-bench && benches/results.sh
set -uo pipefail
cd "$(dirname "$0")/.."
B=target/release/eostok-bench
out=bench-data/results
mkdir -p "$out"
export LLAMA_BENCH="${LLAMA_BENCH:-bench-data/llama.cpp/build/bin/llama-bench}"
run() { local name=$1; shift; echo "== $name: $B $*" >&2; { echo "\$ eostok-bench $*"; echo "# $(date -u +%FT%TZ), load average $(cut -d' ' -f1-3 /proc/loadavg)"; "$B" "$@"; } > "$out/$name.txt" 2> "$out/$name.err"; tail -n +1 "$out/$name.txt" >&2; }
run roofline roofline --reps 3
run vs-llama-t1 vs-llama --threads 1 --configs B,L --types f16,q8_0,q4_0 --tokens 32 --rounds 2 --chart "$out/vs-llama-t1.png"
run vs-llama-t2 vs-llama --threads 2 --configs B,L --types f16,q8_0,q4_0 --tokens 64 --rounds 3 --chart "$out/vs-llama-t2.png"
for t in q4_0 q8_0 f16; do run decode-B-$t decode --config B --type $t --threads 2 --tokens 64 --rounds 3; done
run vs-candle vs-candle --configs B --types f32,q8_0,q4_0 --tokens 32 --rounds 2
run kernels kernels --configs B,L --reps 3
run image-q4_0 image --configs S,B,L --types q4_0 --batches 1,4
run image-B image --configs B --types f16,q8_0 --batches 1
run memory memory --configs B,L --types f16,q8_0,q4_0
cp "$out/vs-llama-t1.png" "$out/vs-llama-t2.png" benches/ 2>/dev/null
python3 benches/make-results.py "$out"
