#!/usr/bin/env bash
# Runs the collector's image the way an operator would, with podman: settings from
# environment variables, the SQLite data in a named volume, the probes over HTTP. It sends a
# batch with the write key, reads the user back through the admin API, replaces the
# container with a new one on the same volume and finds the user still there (a retried
# batch still stores nothing twice), and checks that the collector runs as the image's
# unprivileged user. Whatever happens, the containers and the volume go at the end.
#
# Needs the image (scripts/build-image.sh builds it and writes the podman settings this
# reads from $EBB_CONTAINERS_DIR, default .containers/). EBB_IMAGE names another image.
# Runs podman as root, as CI does: the uid checks read the process's uid on the host, which
# rootless podman would map to another.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

containers="${EBB_CONTAINERS_DIR:-$root/.containers}"
image="${EBB_IMAGE:-ebb-collector:latest}"
export CONTAINERS_CONF="$containers/containers.conf"
export CONTAINERS_STORAGE_CONF="$containers/storage.conf"

die() {
  echo "container: $*" >&2
  exit 1
}

[[ -f $CONTAINERS_CONF && -f $CONTAINERS_STORAGE_CONF ]] ||
  die "no podman settings in $containers; run scripts/build-image.sh first"
podman image exists "$image" || die "no image $image; run scripts/build-image.sh first"

# Names unique to this run, so that runs side by side (or a run that was killed before it
# could clean up) never share a container or a volume.
run="$(date +%s)-$$-$RANDOM"
volume="ebb-test-data-$run"
write_key="wk_container_test_$run"
admin_token="ebb_admin_container_test_$run"
port="$(python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
started=()
current=""

cleanup() {
  local status=$?
  if ((status != 0)) && [[ -n $current ]]; then
    echo "container: the collector's log:" >&2
    podman logs "$current" 2>&1 | tail -n 40 >&2 || true
  fi
  for name in "${started[@]}"; do
    podman rm --force --time 0 "$name" >/dev/null 2>&1 || true
  done
  podman volume rm --force "$volume" >/dev/null 2>&1 || true
  exit "$status"
}
trap cleanup EXIT

passed=0
ok() {
  passed=$((passed + 1))
  echo "ok $passed - $*"
}
fail() {
  echo "not ok - $*" >&2
  exit 1
}

# Reads one value out of a JSON document on stdin by a Python expression on `doc`.
json() {
  python3 -c 'import json, sys
doc = json.load(sys.stdin)
print(json.dumps(eval(sys.argv[1], {"doc": doc})))' "$1"
}

# start NAME: a collector container on the volume, listening on the free port; returns once
# /healthz answers (or fails after 30 s).
start() {
  local name="ebb-test-$1-$run"
  podman run --detach --name "$name" --network host \
    -e EBB_LISTEN="127.0.0.1:$port" -e EBB_WRITE_KEY="$write_key" \
    -e EBB_ADMIN_TOKEN="$admin_token" -e EBB_LOG_FORMAT=json \
    -v "$volume:/data" "$image" >/dev/null
  started+=("$name")
  current="$name"
  for _ in $(seq 300); do
    if curl --silent --fail --max-time 1 "$base/healthz" >/dev/null; then
      return 0
    fi
    [[ "$(podman inspect --format '{{.State.Running}}' "$name")" == true ]] ||
      fail "$name exited before it answered /healthz"
    sleep 0.1
  done
  fail "$name did not answer /healthz within 30 s"
}

# http METHOD PATH [BODY]: prints the status line's code, then the body.
http() {
  local args=(--silent --show-error --max-time 10 --request "$1" --write-out '\n%{http_code}')
  if [[ $2 == /admin/* ]]; then
    args+=(--header "Authorization: Bearer $admin_token")
  else
    args+=(--user "$write_key:")
  fi
  if (($# > 2)); then
    args+=(--header 'Content-Type: application/json' --data "$3")
  fi
  curl "${args[@]}" "$base$2"
}
status_of() { tail -n 1 <<<"$1"; }
body_of() { sed '$d' <<<"$1"; }

expect_user() {
  local answer body events
  answer="$(http GET /admin/v1/users/ada)"
  [[ "$(status_of "$answer")" == 200 ]] || fail "GET /admin/v1/users/ada: $answer"
  body="$(body_of "$answer")"
  [[ "$(json 'doc["traits"].get("plan")' <<<"$body")" == '"pro"' ]] ||
    fail "the user's traits are not the ones sent: $body"
  events="$(json '[e["messageId"] for e in doc["events"]]' <<<"$body")"
  [[ $events == '["container-track-1"]' ]] ||
    fail "the user's events are not the one sent: $body"
}

batch='{"batch": [
  {"type": "identify", "userId": "ada", "messageId": "container-identify-1",
   "traits": {"plan": "pro"}},
  {"type": "track", "userId": "ada", "messageId": "container-track-1", "event": "Signed Up"}
]}'

echo "container: $image on $base, data in volume $volume"
podman volume create "$volume" >/dev/null

# --- the image as built -----------------------------------------------------------------

format='{{.Config.User}} {{range $port, $_ := .Config.ExposedPorts}}{{$port}}{{end}}'
config="$(podman image inspect --format "$format" "$image")"
[[ $config == "10001:10001 8080/tcp" ]] || fail "the image's user and port are '$config'"
ok "the image runs as 10001:10001 and exposes 8080/tcp"

# --- first container: probes, ingest, read back -----------------------------------------

start first
ok "/healthz answers"

answer="$(http GET /readyz)"
[[ "$(status_of "$answer")" == 200 ]] || fail "/readyz: $answer"
ok "/readyz answers: the SQLite database in the volume is open"

pid="$(podman inspect --format '{{.State.Pid}}' "$current")"
uids="$(awk '/^Uid:/ {print $2, $3, $4, $5}' "/proc/$pid/status")"
[[ $uids == "10001 10001 10001 10001" ]] || fail "the collector runs with uids $uids"
[[ "$(podman top "$current" user | tail -n +2 | sort -u)" == ebb ]] ||
  fail "podman top names another user: $(podman top "$current" user)"
ok "the collector runs as uid 10001 (ebb), not as root"

answer="$(http POST /v1/batch "$batch")"
[[ "$(status_of "$answer")" == 200 ]] || fail "POST /v1/batch: $answer"
[[ "$(body_of "$answer" | json 'doc["success"]')" == true ]] || fail "POST /v1/batch: $answer"
ok "a batch sent with the write key is stored"

expect_user
ok "the admin API reads the user back with the admin token"

answer="$(curl --silent --max-time 10 --write-out '%{http_code}' --output /dev/null \
  --header 'Authorization: Bearer not-the-token' "$base/admin/v1/users/ada")"
[[ $answer == 401 ]] || fail "a wrong admin token got $answer"
ok "a wrong admin token is refused"

# --- a new container on the same volume -------------------------------------------------

podman stop --time 10 "$current" >/dev/null
code="$(podman inspect --format '{{.State.ExitCode}}' "$current")"
[[ $code == 0 ]] || fail "the collector exited with $code on SIGTERM"
ok "the collector stops cleanly on SIGTERM (exit code 0)"

mountpoint="$(podman volume inspect --format '{{.Mountpoint}}' "$volume")"
[[ -f $mountpoint/ebb.db ]] || fail "the volume holds no ebb.db: $(ls -A "$mountpoint")"
owner="$(stat --format '%u:%g' "$mountpoint/ebb.db")"
[[ $owner == 10001:10001 ]] || fail "the volume's ebb.db belongs to $owner"
ok "the SQLite file is in the volume, owned by 10001"

start second
expect_user
ok "a new container on the same volume still has the user"

answer="$(http POST /v1/batch "$batch")"
[[ "$(status_of "$answer")" == 200 ]] || fail "POST /v1/batch again: $answer"
expect_user
ok "the same batch sent again after the restart stores nothing twice"

podman restart --time 10 "$current" >/dev/null
for _ in $(seq 300); do
  curl --silent --fail --max-time 1 "$base/healthz" >/dev/null && break
  sleep 0.1
done
expect_user
ok "podman restart keeps the user too"

echo "container: $passed checks passed"
