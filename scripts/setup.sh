#!/usr/bin/env bash
# Installs what a fresh machine lacks to build and test unikv (Debian packages), idempotently.
#   libclang-dev: RocksDB's Rust bindings are generated with bindgen, which needs libclang.
#   curl:         the scripts talk to the nodes' HTTP APIs.
#   iptables:     the fault tests (nemesis) cut UDP links between nodes on loopback.
#   faketime:     clock-rate faults run a node's clocks (monotonic included) fast or slow.
#   iproute2:     `ip netns` / veth: a test stands in another host with a network namespace.
#   /dev/fuse:    the power-cut test mounts a FUSE file system (the kernel's fuse module; no
#                 user-space package is needed, the tests mount it themselves as root).
set -euo pipefail
missing=()
dpkg -s libclang-dev >/dev/null 2>&1 || missing+=(libclang-dev)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
command -v faketime >/dev/null 2>&1 || missing+=(faketime)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ ! -e /dev/fuse ]; then
  modprobe fuse 2>/dev/null || echo "setup: /dev/fuse is missing and modprobe fuse failed; the power-cut test will fail" >&2
fi
