#!/usr/bin/env bash
# Runs the collector's image the way an operator would, with podman: settings from
# environment variables, the SQLite data in a named volume, the probes over HTTP. It checks
# that the image carries its OCI labels and nothing but the collector, www/ and its user
# (FROM scratch: no shell to run), sends a batch with the write key, reads the user back
# through the admin API, fetches the demo, the console and the SDK (its wasm as
# application/wasm) from the image's www/, replaces the container with a new one on the same
# volume and finds the user still there (a retried batch still stores nothing twice), and
# checks that the collector runs as the image's unprivileged user. Whatever happens, the
# containers, the volume and the downloads go at the end.
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
downloads="$(mktemp -d)"

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
  rm -rf "$downloads"
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

# get PATH: fetches PATH without credentials into $downloads/body (headers into
# $downloads/headers); prints the status code and the Content-Type.
get() {
  curl --silent --show-error --max-time 10 --output "$downloads/body" \
    --dump-header "$downloads/headers" --write-out '%{http_code} %{content_type}' "$base$1"
}

# Lists every entry of every layer of the image, one a line: `d PATH` for a directory,
# `f PATH` for anything else (files, links). Reads the image as podman saves it.
image_entries() {
  podman save --quiet --format oci-archive "$image" | python3 -c 'import io, json, sys, tarfile
archive = tarfile.open(fileobj=io.BytesIO(sys.stdin.buffer.read()))
members = {m.name.removeprefix("./"): m for m in archive.getmembers()}
def blob(digest):
    return archive.extractfile(members["blobs/" + digest.replace(":", "/")]).read()
index = json.load(archive.extractfile(members["index.json"]))
manifest = json.loads(blob(index["manifests"][0]["digest"]))
for layer in manifest["layers"]:
    with tarfile.open(fileobj=io.BytesIO(blob(layer["digest"]))) as entries:
        for entry in entries.getmembers():
            path = entry.name.removeprefix("./").strip("/")
            if path and path != ".":
                print("d" if entry.isdir() else "f", path)'
}

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

labels="$(podman image inspect --format '{{json .Labels}}' "$image")"
for label in title description source licenses version revision; do
  [[ "$(json "(doc or {}).get('org.opencontainers.image.$label') or ''" <<<"$labels")" != '""' ]] ||
    fail "the image has no label org.opencontainers.image.$label: $labels"
done
[[ "$(json 'doc["org.opencontainers.image.title"]' <<<"$labels")" == '"ebb-collector"' ]] ||
  fail "the image's title label is not ebb-collector: $labels"
[[ "$(json 'doc["org.opencontainers.image.licenses"]' <<<"$labels")" == '"Apache-2.0"' ]] ||
  fail "the image's licenses label is not Apache-2.0: $labels"
ok "the image carries the OCI labels title, description, source, licenses, version, revision"

entries="$(image_entries)"
files="$(sed -n 's/^f //p' <<<"$entries")"
extra="$(grep -Ev '^(etc/passwd|etc/group|usr/local/bin/ebb-collector|www/.+)$' <<<"$files" || true)"
[[ -z $extra ]] || fail "the image holds files besides the collector, www/ and its user: $extra"
for needed in usr/local/bin/ebb-collector etc/passwd www/index.html www/admin/index.html \
  www/sdk/index.js www/sdk/ebb_sdk_bg.wasm; do
  grep -qx "$needed" <<<"$files" || fail "the image lacks /$needed"
done
ok "the image holds only the collector, www/ and /etc/passwd and /etc/group: FROM scratch"

shell="ebb-test-shell-$run"
started+=("$shell")
code=0
said="$(podman run --rm --name "$shell" --network none -v "$volume:/data" \
  --entrypoint /bin/sh "$image" -c 'echo a shell ran' 2>&1)" || code=$?
[[ $code == 127 && $said != *"a shell ran"* ]] ||
  fail "podman run --entrypoint /bin/sh ended with $code, not 127 (command not found): $said"
ok "the image has no shell: podman run --entrypoint /bin/sh finds no /bin/sh"

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

# --- the demo, the console and the SDK from the image's www/ ---------------------------

answer="$(get /)"
[[ $answer == "200 text/html; charset=utf-8" ]] || fail "GET /: $answer"
grep -q '<title>Tidewater Coffee' "$downloads/body" && grep -q 'src="/demo.js"' "$downloads/body" ||
  fail "GET / is not the demo shop: $(head -c 300 "$downloads/body")"
ok "/ serves the demo shop's HTML"

answer="$(get /admin/)"
[[ $answer == "200 text/html; charset=utf-8" ]] || fail "GET /admin/: $answer"
grep -q '<title>Ebb console</title>' "$downloads/body" &&
  grep -q 'src="/admin/app.js"' "$downloads/body" ||
  fail "GET /admin/ is not the console: $(head -c 300 "$downloads/body")"
grep -qi "^content-security-policy:.*frame-ancestors 'none'" "$downloads/headers" ||
  fail "GET /admin/ came without the console's Content-Security-Policy: $(cat "$downloads/headers")"
answer="$(get /admin/app.js)"
javascript='^200 (text|application)/javascript'
[[ $answer =~ $javascript ]] || fail "GET /admin/app.js: $answer"
ok "/admin/ serves the console, with its Content-Security-Policy and its scripts"

answer="$(get /sdk/index.js)"
[[ $answer =~ $javascript ]] || fail "GET /sdk/index.js: $answer"
grep -q 'ebb_sdk_bg.wasm' "$downloads/body" ||
  fail "GET /sdk/index.js is not the SDK's entry: $(head -c 300 "$downloads/body")"
ok "/sdk/index.js serves the SDK's JavaScript"

answer="$(get /sdk/ebb_sdk_bg.wasm)"
[[ $answer == "200 application/wasm" ]] || fail "GET /sdk/ebb_sdk_bg.wasm: $answer"
magic="$(head -c 4 "$downloads/body" | od -An -tx1 | tr -d ' \n')"
[[ $magic == 0061736d ]] || fail "GET /sdk/ebb_sdk_bg.wasm is not a wasm module (starts $magic)"
ok "/sdk/ebb_sdk_bg.wasm serves the SDK's module as application/wasm"

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
