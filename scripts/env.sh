# Source this file (`source scripts/env.sh`) to use the tools that
# scripts/install-tools puts in the cache: it puts them first on PATH (ahead of
# e.g. a system /usr/bin/kubectl) and sets ENVOY_BIN. It only sets variables;
# run scripts/install-tools first.
REMORA_TOOLS="${REMORA_CACHE:-$HOME/.cache/remora}/bin"
# Drop any earlier occurrence, then prepend, so sourcing twice is harmless and
# our directory always comes first.
PATH=":$PATH:"
PATH="${PATH//:$REMORA_TOOLS:/:}"
PATH="${PATH#:}"
PATH="$REMORA_TOOLS:${PATH%:}"
ENVOY_BIN="$REMORA_TOOLS/envoy"
export REMORA_TOOLS PATH ENVOY_BIN
