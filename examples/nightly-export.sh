#!/usr/bin/env bash
# examples/nightly-export.sh: the nightly export job, ready for cron. Copy and adapt.
#
#   15 3 * * *  PREFCAP_DB=/var/lib/app/prefcap.db EXPORT_DIR=/var/lib/app/exports /opt/prefcap/nightly-export.sh
#
# Exports what is new since the last published export named "nightly" to EXPORT_DIR/pairs-DATE.jsonl
# (+ .eval.jsonl, + .manifest.json), uploads it when PREFCAP_UPLOAD_URL is set (an s3://bucket/prefix/
# or an https:// prefix: the file name is appended; S3 credentials from the usual AWS_* variables),
# and exits non-zero on failure so cron mails you. Safe to run again at any time: after a crash the
# next run completes the interrupted export; with nothing new it writes nothing.
set -euo pipefail
PREFCAP=${PREFCAP:-prefcap}
: "${PREFCAP_DB:=prefcap.db}"
EXPORT_DIR=${EXPORT_DIR:-exports}
NAME=${EXPORT_NAME:-nightly}
FORMAT=${EXPORT_FORMAT:-trl-dpo}
mkdir -p "$EXPORT_DIR"
out="$EXPORT_DIR/pairs-$(date -u +%Y-%m-%dT%H%M%SZ).jsonl"
args=(export --db "$PREFCAP_DB" --since-last "$NAME" --format "$FORMAT" --out "$out"
      --eval-fraction "${EVAL_FRACTION:-0.05}" --max-ai-fraction "${MAX_AI_FRACTION:-0.5}" --dedup)
if [ -n "${PREFCAP_UPLOAD_URL:-}" ]; then
  args+=(--upload "${PREFCAP_UPLOAD_URL%/}/$(basename "$out")")
fi
for attempt in 1 2 3; do
  # a run that completes an interrupted export says so; run again for what came since
  log=$("$PREFCAP" "${args[@]}" 2>&1) || { echo "$log" >&2; exit 1; }
  echo "$log"
  case "$log" in *"run again"*) out="$EXPORT_DIR/pairs-$(date -u +%Y-%m-%dT%H%M%SZ)-$attempt.jsonl"
                                args[8]="$out"
                                [ -n "${PREFCAP_UPLOAD_URL:-}" ] && args[${#args[@]}-1]="${PREFCAP_UPLOAD_URL%/}/$(basename "$out")"
                                continue ;;
  esac
  break
done
