# Sourced by the falconet-* scripts: the dispatcher's HTTP base from FALCONET_URL, and its token.
# FALCONET_URL is ws://HOST:PORT, wss://HOST:PORT or HOST:PORT (default ws://127.0.0.1:7878).
falconet_url=${FALCONET_URL:-ws://127.0.0.1:7878}
case $falconet_url in
  ws://*) FALCONET_HTTP=http://${falconet_url#ws://} ;;
  wss://*) FALCONET_HTTP=https://${falconet_url#wss://} ;;
  *://*)
    echo "falconet: USAGE: FALCONET_URL=$falconet_url: give ws://HOST:PORT, wss://HOST:PORT or HOST:PORT" >&2
    exit 2
    ;;
  *) FALCONET_HTTP=http://$falconet_url ;;
esac
FALCONET_HTTP=${FALCONET_HTTP%/}

# curl against the dispatcher: prints the body, a space and the HTTP status. The headers come
# on stdin (a here-document: no extra process), so the token stays out of `ps`.
falconet_curl() {
  curl -sS -H @- -w ' %{http_code}' "$@" <<FALCONET_HEADERS
Content-Type: application/json
${FALCONET_TOKEN:+Authorization: Bearer $FALCONET_TOKEN}
FALCONET_HEADERS
}

# Prints $1 as the inside of a JSON string (backslashes and quotes escaped); fails on control
# characters, which no path or id of ours holds.
falconet_json() {
  case $1 in *[[:cntrl:]]*) return 1 ;; esac
  case $1 in
    *[\\\"]*) printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g' ;;
    *) printf '%s' "$1" ;;
  esac
}

# The key of session $1 (docs/security.md: a session belongs to whoever opened it):
# FALCONET_SESSION_KEY, else the file where the falconet CLI keeps its keys, made on first use
# (owner-only; `ln` makes the first writer win when several jobs start at once).
falconet_session_key() {
  if [ -n "${FALCONET_SESSION_KEY:-}" ]; then
    printf '%s' "$FALCONET_SESSION_KEY"
    return 0
  fi
  case $1 in .* | *[!A-Za-z0-9._-]*)
    echo "falconet: session $1 is not a plain name ([A-Za-z0-9._-]): give its key in FALCONET_SESSION_KEY" >&2
    return 1
    ;;
  esac
  keys=${FALCONET_STATE_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/falconet}/session-keys
  if [ ! -s "$keys/$1" ]; then
    (umask 077 && mkdir -p "$keys" && od -An -N18 -tx1 /dev/urandom | tr -d ' \n' > "$keys/.$1.$$" && { ln "$keys/.$1.$$" "$keys/$1" 2>/dev/null; rm -f "$keys/.$1.$$"; }) || return 1
  fi
  head -n 1 "$keys/$1"
}
