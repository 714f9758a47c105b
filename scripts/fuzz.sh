#!/usr/bin/env bash
# Parser fuzzing: runs every cargo-fuzz target in fuzz/ for SECONDS each
# (default 15, what CI gives them), starting from and adding to the corpus
# in fuzz/corpus/<target>. A crash stops the run; its input is kept in
# fuzz/artifacts/<target>/ (replay it with `cargo fuzz run <target> <file>`).
#
#   scripts/fuzz.sh            # 15 s a target
#   scripts/fuzz.sh 600        # ten minutes a target, before a release
#   scripts/fuzz.sh 60 multipart ws_frames   # some targets only
#
# cargo-fuzz needs nightly features (sanitizers, coverage instrumentation);
# RUSTC_BOOTSTRAP=1 lets the pinned stable toolchain provide them. The
# targets build in a workspace of their own with their own target/, so the
# gateway's build is never instrumented. cargo-fuzz is installed from
# crates.io when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-15}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^gateway-fuzz$')
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install cargo-fuzz --version 0.13.2 --locked --quiet
fi
export RUSTC_BOOTSTRAP=1

cd fuzz
cargo fuzz build --release
for t in "${targets[@]}"; do
  echo "==> fuzz $t for ${seconds}s"
  mkdir -p "corpus/$t"
  # -max_len bounds one input: every reader refuses far smaller inputs
  # than the fuzzer would otherwise grow to, and short inputs run faster.
  cargo fuzz run --release "$t" "corpus/$t" -- \
    -max_total_time="$seconds" -max_len=8192 -print_final_stats=1 2>&1 |
    grep -E '^(Done|stat::number_of_executed_units|==[0-9]+==|SUMMARY|.*panicked)' || true
  # cargo fuzz's status is lost in the pipe; a crash leaves an artifact.
  if compgen -G "artifacts/$t/crash-*" >/dev/null || compgen -G "artifacts/$t/leak-*" >/dev/null ||
    compgen -G "artifacts/$t/oom-*" >/dev/null || compgen -G "artifacts/$t/timeout-*" >/dev/null; then
    echo "fuzz: $t failed; the input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
echo "==> every target ran ${seconds}s without a failure"
