# start_registry for the tests in tests/nix/ that need a registry (sourced
# after lib.sh, not run): Debian's docker-registry on a free port of 127.0.0.1.
REGISTRY_BIN=${REGISTRY_BIN:-/usr/bin/docker-registry}

# start_registry DIR [USER:PASSWORD]: serves DIR/storage on a free port (with
# htpasswd auth when given), prints 127.0.0.1:PORT; the access log is DIR/access.log.
# (Run in $(…), so its pid goes to DIR/pid for the cleanup.)
start_registry() {
  local dir=$1 port
  mkdir -p "$dir"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  printf '%s\n' "version: 0.1" "log:" "  level: info" "  accesslog:" "    disabled: false" \
    "storage:" "  filesystem:" "    rootdirectory: $dir/storage" "http:" "  addr: 127.0.0.1:$port" >"$dir/config.yml"
  if [ -n "${2:-}" ]; then
    python3 -W ignore -c 'import crypt, sys; u, p = sys.argv[1].split(":", 1); print(u + ":" + crypt.crypt(p, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))' "$2" >"$dir/htpasswd"
    printf '%s\n' "auth:" "  htpasswd:" "    realm: test" "    path: $dir/htpasswd" >>"$dir/config.yml"
  fi
  "$REGISTRY_BIN" serve "$dir/config.yml" >"$dir/access.log" 2>"$dir/registry.log" &
  echo $! >"$dir/pid"
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/v2/" && break; sleep 0.1; done
  curl -s -o /dev/null "http://127.0.0.1:$port/v2/" && echo "127.0.0.1:$port"
}
