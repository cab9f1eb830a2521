#!/usr/bin/env bash
# Runs each fuzz target (op parser, topic/pattern parser, cursor decoder,
# WebSocket frame decoder, binary publish/delivery frames) for a bounded
# time, starting from the committed seed corpus.
#   scripts/fuzz.sh            # 60 s per target
#   SECONDS_PER_TARGET=300 scripts/fuzz.sh
# Needs cargo-fuzz (`cargo install cargo-fuzz`); libFuzzer needs nightly
# features, enabled on the stable toolchain with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")/../broker/fuzz"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
SECS=${SECONDS_PER_TARGET:-60}
for target in op_parser topic_pattern cursor ws_frames binary_frames; do
  echo "==> fuzzing $target for ${SECS}s"
  # Work on a copy so the committed seed corpus only holds curated inputs.
  work=$(mktemp -d)
  cp -r "corpus/$target/." "$work/"
  RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "$work" -- -max_total_time="$SECS" -rss_limit_mb=2048
  rm -rf "$work"
done
echo "no crashes"
