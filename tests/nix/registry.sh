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

# start_tls_registry DIR: as start_registry, over HTTPS with a certificate for 127.0.0.1
# signed by a CA made here (DIR/ca.pem: give it to clients as SSL_CERT_FILE), so that
# commands written for a real registry run unchanged (no --plain-http). Prints 127.0.0.1:PORT.
start_tls_registry() {
  local dir=$1 port
  mkdir -p "$dir"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=nix-layer test CA" \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" >/dev/null 2>&1 &&
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout "$dir/server.key" -out "$dir/server.csr" >/dev/null 2>&1 &&
    printf 'subjectAltName=IP:127.0.0.1\n' >"$dir/san.ext" &&
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial -days 2 \
      -extfile "$dir/san.ext" -out "$dir/server.pem" >/dev/null 2>&1 || return 1
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  printf '%s\n' "version: 0.1" "log:" "  level: info" "  accesslog:" "    disabled: false" \
    "storage:" "  filesystem:" "    rootdirectory: $dir/storage" "http:" "  addr: 127.0.0.1:$port" \
    "  tls:" "    certificate: $dir/server.pem" "    key: $dir/server.key" >"$dir/config.yml"
  "$REGISTRY_BIN" serve "$dir/config.yml" >"$dir/access.log" 2>"$dir/registry.log" &
  echo $! >"$dir/pid"
  for _ in $(seq 100); do curl -s --cacert "$dir/ca.pem" -o /dev/null "https://127.0.0.1:$port/v2/" && break; sleep 0.1; done
  curl -s --cacert "$dir/ca.pem" -o /dev/null "https://127.0.0.1:$port/v2/" && echo "127.0.0.1:$port"
}
