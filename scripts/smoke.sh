#!/usr/bin/env bash
# Smoke test of a running Finetune Studio through its public API: the seed's curl examples
# (logs SSE, models list/detail/download, evaluate, evaluation results) plus a dataset upload
# and a training job, so there is something to look at. The successor of the seed's
# scripts/test_logs_and_models.sh.
#
#   STUDIO_URL=http://127.0.0.1:8000 TOKEN=<api token> scripts/smoke.sh
#
# Optional: BASE_MODEL (the base model in Ollama, default llama3.2:3b), FINE_TUNED_NAME (the
# fine-tune's name in Ollama; default: the model's own), EVALUATE=0 to skip the Ollama checks,
# SAMPLES (folder with train.jsonl and test.jsonl), TIMEOUT (seconds to wait for a job or an
# evaluation, default 180). Prints PASS/FAIL per check and "N passed, N failed"; exits 1 on any failure.
set -uo pipefail

: "${STUDIO_URL:?set STUDIO_URL, e.g. http://127.0.0.1:8000}"
: "${TOKEN:?set TOKEN to an API token (the token page of your account creates one)}"
STUDIO_URL="${STUDIO_URL%/}"
BASE_MODEL="${BASE_MODEL:-llama3.2:3b}"
FINE_TUNED_NAME="${FINE_TUNED_NAME:-}"
EVALUATE="${EVALUATE:-1}"
TIMEOUT="${TIMEOUT:-180}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SAMPLES="${SAMPLES:-$HERE/../samples/contracts}"
PYTHON="${PYTHON:-python3}"
WORK="$(mktemp -d)"
# KEEP_WORK=1 keeps the responses (JSON, SSE, ZIP) for a look after a failure.
if [[ "${KEEP_WORK:-0}" == 1 ]]; then echo "responses kept in $WORK"; else trap 'rm -rf "$WORK"' EXIT; fi

passed=0
failed=0
AUTH=(-H "Authorization: Token $TOKEN")

pass() { passed=$((passed + 1)); printf 'PASS  %s\n' "$1"; }
fail() { failed=$((failed + 1)); printf 'FAIL  %s%s\n' "$1" "${2:+ — $2}"; }

# json FILE EXPRESSION: evaluates a Python expression on the parsed JSON (bound to `d`); prints "" on any error.
json() {
  "$PYTHON" - "$1" "$2" <<'PY' 2>/dev/null || true
import json, sys
try:
    d = json.load(open(sys.argv[1]))
    value = eval(sys.argv[2], {"d": d})
except Exception:
    value = ""
print("" if value is None else (json.dumps(value) if isinstance(value, (dict, list, bool)) else value))
PY
}

# call METHOD PATH OUTFILE [curl args...]: prints the HTTP status.
call() {
  local method="$1" path="$2" out="$3"
  shift 3
  curl -sS -o "$out" -w '%{http_code}' -X "$method" "${AUTH[@]}" "$@" "$STUDIO_URL$path" 2>"$WORK/curl.err" || echo 000
}

# wait_for PATH EXPRESSION: polls a JSON endpoint until the expression is truthy or TIMEOUT passes.
wait_for() {
  local path="$1" expression="$2" deadline=$((SECONDS + TIMEOUT))
  while ((SECONDS < deadline)); do
    if [[ "$(call GET "$path" "$WORK/poll.json")" == 200 && -n "$(json "$WORK/poll.json" "$expression or ''")" ]]; then
      return 0
    fi
    sleep 1
  done
  return 1
}

echo "Finetune Studio smoke test against $STUDIO_URL"

# --- the studio answers, and the API wants a token -----------------------------------------------
status=$(curl -sS -o "$WORK/health.json" -w '%{http_code}' "$STUDIO_URL/healthz" 2>/dev/null || echo 000)
[[ "$status" == 200 ]] && pass "GET /healthz" || fail "GET /healthz" "HTTP $status"
status=$(curl -sS -o /dev/null -w '%{http_code}' "$STUDIO_URL/api/v1/models" 2>/dev/null || echo 000)
[[ "$status" == 401 ]] && pass "GET /api/v1/models without a token is refused (401)" || fail "anonymous API call" "HTTP $status, expected 401"
status=$(call GET /api/v1/ "$WORK/root.json")
[[ "$status" == 200 ]] && pass "GET /api/v1/ with the token (user $(json "$WORK/root.json" "d['user']"))" \
  || { fail "GET /api/v1/ with the token" "HTTP $status: is TOKEN right?"; echo "$passed passed, $failed failed"; exit 1; }

# --- datasets ------------------------------------------------------------------------------------
# upload FILE NAME: sets uploaded_id and uploaded_path (empty on failure).
upload() {
  local file="$1" name="$2" out="$WORK/$2.json"
  uploaded_id="" uploaded_path=""
  status=$(call POST /api/v1/datasets "$out" -F "file=@$SAMPLES/$file" -F "name=$name")
  if [[ "$status" == 201 ]]; then
    uploaded_id=$(json "$out" "d['id']")
    uploaded_path=$(json "$out" "d['path']")
    pass "POST /api/v1/datasets ($file: $(json "$out" "d['records']") records)"
  else
    fail "POST /api/v1/datasets ($file)" "HTTP $status $(head -c 300 "$out")"
  fi
}
stamp=$(date +%s)
upload train.jsonl "smoke-train-$stamp"
train_id="$uploaded_id"
upload test.jsonl "smoke-test-$stamp"
test_path="$uploaded_path"

# --- a training job with the example trainer -------------------------------------------------------
job_id=""
if [[ -n "$train_id" ]]; then
  body=$(printf '{"name": "smoke-%s", "base_model": "%s", "dataset": %s, "trainer": "example", "hyperparameters": {"epochs": 8}}' \
    "$stamp" "$BASE_MODEL" "$train_id")
  status=$(call POST /api/v1/jobs "$WORK/job.json" -H "Content-Type: application/json" -d "$body")
  if [[ "$status" == 201 ]]; then
    job_id=$(json "$WORK/job.json" "d['id']")
    pass "POST /api/v1/jobs (job $job_id, example trainer)"
  else
    fail "POST /api/v1/jobs" "HTTP $status $(head -c 300 "$WORK/job.json")"
  fi
fi

if [[ -n "$job_id" ]]; then
  # The seed's `curl -N .../logs`: a live SSE stream that ends (event: end) when the job does.
  curl -sS -N --max-time "$TIMEOUT" "${AUTH[@]}" -H "Accept: text/event-stream" \
    "$STUDIO_URL/api/v1/jobs/$job_id/logs" >"$WORK/logs.sse" 2>/dev/null
  lines=$(grep -c '^data: ' "$WORK/logs.sse" || true)
  if grep -q '^event: logs' "$WORK/logs.sse" && grep -q '^event: end' "$WORK/logs.sse"; then
    pass "GET /api/v1/jobs/$job_id/logs (SSE: $lines events, then end)"
  else
    fail "GET /api/v1/jobs/$job_id/logs (SSE)" "no logs/end events in $(wc -c <"$WORK/logs.sse") bytes"
  fi
  if wait_for "/api/v1/jobs/$job_id" "d['status'] in ('succeeded', 'failed', 'cancelled') and d['status']"; then
    job_status=$(json "$WORK/poll.json" "d['status']")
    [[ "$job_status" == succeeded ]] && pass "job $job_id succeeded" \
      || fail "job $job_id finished as $job_status" "$(json "$WORK/poll.json" "d['error_message']")"
  else
    fail "job $job_id did not finish within ${TIMEOUT}s"
  fi
fi

# --- the model created from the job ------------------------------------------------------------------
model_id=""
if [[ -n "$job_id" ]] && wait_for "/api/v1/jobs/$job_id" "d['model']"; then
  model_id=$(json "$WORK/poll.json" "d['model']")
  pass "model $model_id was created from job $job_id"
elif [[ -n "$job_id" ]]; then
  fail "no model was created from job $job_id within ${TIMEOUT}s"
fi

status=$(call GET "/api/v1/models?page_size=200" "$WORK/models.json")
if [[ "$status" == 200 ]]; then
  count=$(json "$WORK/models.json" "d['count']")
  if [[ -z "$model_id" || -n "$(json "$WORK/models.json" "[m for m in d['results'] if m['id'] == $model_id]")" ]]; then
    pass "GET /api/v1/models ($count models)"
  else
    fail "GET /api/v1/models" "model $model_id is not listed"
  fi
else
  fail "GET /api/v1/models" "HTTP $status"
fi

if [[ -n "$model_id" ]]; then
  status=$(call GET "/api/v1/models/$model_id" "$WORK/model.json")
  files=$(json "$WORK/model.json" "len(d['model']['files'])")
  links=$(json "$WORK/model.json" "len(d['download_links']['files'])")
  if [[ "$status" == 200 && "${files:-0}" -gt 0 && "$links" == "$files" ]]; then
    pass "GET /api/v1/models/$model_id ($files files, $(json "$WORK/model.json" "d['model']['total_size']") bytes, presigned links)"
  else
    fail "GET /api/v1/models/$model_id" "HTTP $status, files: ${files:-none}"
  fi
  headers=$(curl -sS -D - -o "$WORK/model.zip" "${AUTH[@]}" "$STUDIO_URL/api/v1/models/$model_id/download" 2>/dev/null)
  if grep -qi '^content-type: application/zip' <<<"$headers" && "$PYTHON" -m zipfile -t "$WORK/model.zip" >/dev/null 2>&1; then
    pass "GET /api/v1/models/$model_id/download (ZIP of $(wc -c <"$WORK/model.zip") bytes, $("$PYTHON" -m zipfile -l "$WORK/model.zip" | tail -n +2 | wc -l) members, intact)"
  else
    fail "GET /api/v1/models/$model_id/download" "$(head -n 1 <<<"$headers")"
  fi
fi

# --- evaluation through Ollama --------------------------------------------------------------------------
if [[ "$EVALUATE" != 0 && -n "$model_id" && -n "$test_path" ]]; then
  # The sample is instruction/input/output data (a generation set by its format) whose answers are five labels.
  body=$(printf '{"test_set_path": "%s", "base_model_name": "%s", "task": "classification"%s}' "$test_path" "$BASE_MODEL" \
    "${FINE_TUNED_NAME:+, \"fine_tuned_name\": \"$FINE_TUNED_NAME\"}")
  status=$(call POST "/api/v1/models/$model_id/evaluate" "$WORK/evaluate.json" -H "Content-Type: application/json" -d "$body")
  evaluation_id=$(json "$WORK/evaluate.json" "d['evaluation_id']")
  if [[ "$status" == 202 && -n "$evaluation_id" ]]; then
    pass "POST /api/v1/models/$model_id/evaluate (evaluation $evaluation_id)"
    if wait_for "/api/v1/evaluations/$evaluation_id" "d['status'] in ('completed', 'failed', 'cancelled') and d['status']"; then
      cp "$WORK/poll.json" "$WORK/evaluation.json"
      if [[ "$(json "$WORK/evaluation.json" "d['status']")" == completed ]]; then
        pass "GET /api/v1/evaluations/$evaluation_id: $(json "$WORK/evaluation.json" "d['summary']['verdict']"), accuracy delta $(json "$WORK/evaluation.json" "d['summary']['accuracy_delta']")"
        examples=$(json "$WORK/evaluation.json" "len(d['examples'])")
        accuracy=$(json "$WORK/evaluation.json" "d['results']['fine_tuned']['accuracy']")
        [[ -n "$accuracy" && "${examples:-0}" -gt 0 ]] \
          && pass "evaluation results: fine-tuned accuracy $accuracy, $examples examples side by side" \
          || fail "evaluation results" "accuracy '${accuracy}', examples '${examples}'"
      else
        fail "evaluation $evaluation_id $(json "$WORK/evaluation.json" "d['status']")" \
          "$(json "$WORK/evaluation.json" "d['error_message']") (is OLLAMA_URL right and $BASE_MODEL pulled?)"
      fi
    else
      fail "evaluation $evaluation_id did not finish within ${TIMEOUT}s"
    fi
    status=$(call GET /api/v1/evaluations "$WORK/evaluations.json")
    [[ "$status" == 200 && -n "$(json "$WORK/evaluations.json" "[e for e in d['results'] if e['id'] == $evaluation_id]")" ]] \
      && pass "GET /api/v1/evaluations lists evaluation $evaluation_id" || fail "GET /api/v1/evaluations" "HTTP $status"
  else
    fail "POST /api/v1/models/$model_id/evaluate" "HTTP $status $(head -c 300 "$WORK/evaluate.json")"
  fi
elif [[ "$EVALUATE" == 0 ]]; then
  echo "SKIP  evaluation (EVALUATE=0)"
fi

echo "$passed passed, $failed failed"
((failed == 0))
