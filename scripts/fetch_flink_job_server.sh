#!/usr/bin/env bash
# Fetch Beam's Flink job-server jar into a cache outside the repo (idempotent):
#   org.apache.beam:beam-runners-flink-<FLINK>-job-server:<BEAM>
#   -> ${VECAP_CACHE_DIR:-~/.cache/vecap}/flink/beam-runners-flink-<FLINK>-job-server-<BEAM>.jar
# FLINK: $VECAP_FLINK_VERSION (default 1.20); BEAM: the apache-beam of $PYTHON (the SDK and the
# job server must be the same release). If Maven Central does not serve the jar, the reason is
# written beside it (<jar>.unavailable) and the script exits 0, so the Flink test skips with that
# reason; VECAP_REQUIRE_FLINK=1 makes it an error instead.
set -euo pipefail
PYTHON=${PYTHON:-python3}
FLINK=${VECAP_FLINK_VERSION:-1.20}
BEAM=${BEAM_VERSION:-$("$PYTHON" -c 'import apache_beam; print(apache_beam.__version__)' 2>/dev/null)}
CACHE=${VECAP_CACHE_DIR:-$HOME/.cache/vecap}/flink
ARTIFACT=beam-runners-flink-${FLINK}-job-server
JAR=$CACHE/$ARTIFACT-$BEAM.jar
mkdir -p "$CACHE"
if [ -s "$JAR" ]; then
  echo "flink job server: $JAR (cached)"
  exit 0
fi
if ! command -v mvn >/dev/null 2>&1; then
  echo "no mvn on PATH" >"$JAR.unavailable"
  echo "warning: no mvn on PATH; cannot fetch $ARTIFACT:$BEAM (the Flink test will skip)" >&2
  [ "${VECAP_REQUIRE_FLINK:-0}" = 1 ] && exit 1 || exit 0
fi
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
# dependency:copy writes the jar straight into the cache (no second copy under ~/.m2 for it)
if mvn -B -q -U org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy \
    -Dartifact="org.apache.beam:$ARTIFACT:$BEAM:jar" -DoutputDirectory="$CACHE" \
    -Dmdep.overWriteReleases=true >"$LOG" 2>&1 && [ -s "$JAR" ]; then
  rm -f "$JAR.unavailable"
  echo "flink job server: $JAR (fetched)"
  exit 0
fi
REASON=$(grep -m1 -oE "Could not find artifact [^ ]+|Could not resolve [^ ]+.*|Could not transfer [^ ]+" "$LOG" || true)
REASON=${REASON:-$(grep -m1 ERROR "$LOG" || echo "mvn failed")}
echo "$(date -u +%FT%TZ) mvn could not fetch org.apache.beam:$ARTIFACT:$BEAM from the configured repositories: $REASON" >"$JAR.unavailable"
echo "warning: could not fetch org.apache.beam:$ARTIFACT:$BEAM: $REASON (the Flink test will skip)" >&2
[ "${VECAP_REQUIRE_FLINK:-0}" = 1 ] && exit 1 || exit 0
