#!/usr/bin/env bash
# Build Prism, Beam's portable Go runner, for the installed apache-beam release (idempotent):
#   go install github.com/apache/beam/sdks/v2/go/cmd/prism@v<BEAM>
#   -> ${VECAP_CACHE_DIR:-~/.cache/vecap}/prism/<BEAM>/prism
# It comes from the Go module proxy (Beam's DirectRunner would download a prebuilt binary, which
# an offline machine cannot). The first build downloads Beam's Go module graph (~5 min here).
set -euo pipefail
PYTHON=${PYTHON:-python3}
BEAM=${BEAM_VERSION:-$("$PYTHON" -c 'import apache_beam; print(apache_beam.__version__)' 2>/dev/null)}
DEST=${VECAP_CACHE_DIR:-$HOME/.cache/vecap}/prism/$BEAM
if [ -x "$DEST/prism" ]; then
  echo "prism: $DEST/prism (cached)"
  exit 0
fi
command -v go >/dev/null 2>&1 || { echo "error: no go on PATH: cannot build Prism" >&2; exit 1; }
mkdir -p "$DEST"
GOBIN="$DEST" GOFLAGS=-mod=mod go install "github.com/apache/beam/sdks/v2/go/cmd/prism@v$BEAM"
echo "prism: $DEST/prism (built)"
