#!/usr/bin/env bash
# The whole test suite: formatting, lints, banned crates, unit + integration tests, and the
# end-to-end run with the real Codex CLI and OpenAI Python SDK (SKIP_E2E=1 skips that part).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "== banned crates (see deny.toml)"
for banned in openssl openssl-sys native-tls serde_yml serde_yaml; do
  if cargo tree --workspace -e normal,build -i "$banned" >/dev/null 2>&1; then
    echo "banned crate in the dependency tree: $banned" >&2
    cargo tree --workspace -e normal,build -i "$banned" >&2
    exit 1
  fi
done
if command -v cargo-deny >/dev/null 2>&1; then
  cargo deny check bans licenses sources
fi

echo "== local services (Redis, PostgreSQL with pgvector)"
bash scripts/services.sh

echo "== cargo test"
cargo test --workspace

if [ "${SKIP_E2E:-0}" != "1" ]; then
  echo "== end-to-end with real clients"
  bash tests/e2e/run.sh
fi
