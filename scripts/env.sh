# Sourced by the scripts: one cargo profile (release) and one target dir shared by every
# checkout on this machine, so RocksDB (~15 min of C++) is built once.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/unikv/target}"
UNIKV_BIN="$CARGO_TARGET_DIR/release"
export UNIKV_BIN
