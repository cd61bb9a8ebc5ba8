//! Real parts for registry tests, shared by the registry crate's tests and the workspace's
//! end-to-end tests (not published):
//!
//! - [`TestRegistry`]: Debian's `docker-registry` (the CNCF distribution server) on
//!   127.0.0.1, with filesystem storage in a temporary directory and its access log kept so
//!   tests can count requests; optionally with basic or token auth, or behind TLS with a
//!   private CA made for the test ([`PrivateCa`]).
//! - [`FaultProxy`]: a scriptable in-process HTTP proxy in front of it that stalls,
//!   trickles, sends endless bodies, redirects, answers errors or drops connections, and
//!   records what each request carried (for table-driven fault tests).

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use nix_layer_blob::Digest;

use nix_layer_registry::{
    AuthEnvironment, Client, ClientOptions, CredentialSource, Credentials, Reference, RetryPolicy,
};

mod proxy;
mod tls;

pub use proxy::{Fault, FaultProxy, Rule, Seen};
pub use tls::PrivateCa;

/// Where Debian installs the registry; `NIX_LAYER_TEST_REGISTRY` overrides it.
pub const REGISTRY_BINARY: &str = "/usr/bin/docker-registry";

/// One request from the registry's access log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedRequest {
    pub method: String,
    /// Path and query, as requested.
    pub path: String,
    pub status: u16,
}

/// How to configure a [`TestRegistry`].
#[derive(Clone, Debug, Default)]
pub struct TestRegistryConfig {
    /// Require this user and password (htpasswd with bcrypt).
    pub htpasswd: Option<(String, String)>,
    /// Send relative `Location` headers (distribution's `http.relativeurls`).
    pub relative_urls: bool,
    /// Require bearer tokens, issued by a token server started beside the registry to this
    /// user and password (JWTs signed with a throw-away RSA key through `openssl`).
    pub token_auth: Option<(String, String)>,
    /// Serve HTTPS with this certificate and key (see [`PrivateCa::server_cert`]).
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// A running registry, stopped and deleted on drop.
pub struct TestRegistry {
    child: Child,
    port: u16,
    token_server: Option<TokenServer>,
    // Last: deleted after the processes using it are gone.
    dir: tempfile::TempDir,
}

impl TestRegistry {
    pub fn binary() -> PathBuf {
        std::env::var_os("NIX_LAYER_TEST_REGISTRY")
            .map_or_else(|| PathBuf::from(REGISTRY_BINARY), PathBuf::from)
    }

    /// Starts a registry without auth, or returns `None` after a loud message when the
    /// binary is not installed (the only reason a registry test may skip). In CI (`CI` set)
    /// a missing binary fails the test instead.
    pub fn start_or_skip() -> Option<TestRegistry> {
        Self::start_configured_or_skip(&TestRegistryConfig::default())
    }

    /// Starts a registry that requires `user`/`password` (htpasswd, bcrypt).
    pub fn start_with_htpasswd_or_skip(user: &str, password: &str) -> Option<TestRegistry> {
        let htpasswd = Some((user.to_owned(), password.to_owned()));
        Self::start_configured_or_skip(&TestRegistryConfig { htpasswd, ..Default::default() })
    }

    pub fn start_configured_or_skip(config: &TestRegistryConfig) -> Option<TestRegistry> {
        let bin = Self::binary();
        if !bin.exists() {
            if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
                panic!("{} is not installed and CI is set: registry tests must run", bin.display());
            }
            eprintln!(
                "\n!!!!!!!! SKIPPED: {} is not installed (apt-get install docker-registry); \
                 registry tests did NOT run !!!!!!!!\n",
                bin.display()
            );
            return None;
        }
        Some(Self::launch(&bin, config).expect("starting the test registry"))
    }

    fn launch(bin: &Path, cfg: &TestRegistryConfig) -> io::Result<TestRegistry> {
        let mut last_err = None;
        // A free port can be taken between probing and binding: try a few.
        for _ in 0..5 {
            let dir = tempfile::tempdir()?;
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let mut config = format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: 127.0.0.1:{port}\n  relativeurls: {}\n",
                dir.path().join("storage").display(),
                cfg.relative_urls
            );
            if let Some((cert, key)) = &cfg.tls {
                config.push_str(&format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    cert.display(),
                    key.display()
                ));
            }
            if let Some((user, password)) = &cfg.htpasswd {
                let hash = bcrypt::hash(password, 4).map_err(io::Error::other)?;
                let htpasswd = dir.path().join("htpasswd");
                std::fs::write(&htpasswd, format!("{user}:{hash}\n"))?;
                config.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: nix-layer-test\n    path: {}\n",
                    htpasswd.display()
                ));
            }
            let token_server = match &cfg.token_auth {
                Some((user, password)) => {
                    let server = TokenServer::start(dir.path(), user, password)?;
                    config.push_str(&format!(
                        "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: {TOKEN_SERVICE}\n    \
                         issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                        server.port,
                        dir.path().join("token.crt").display()
                    ));
                    Some(server)
                }
                None => None,
            };
            let config_path = dir.path().join("config.yml");
            std::fs::write(&config_path, config)?;
            let child = Command::new(bin)
                // A proxy of the test's environment must not stand between it and 127.0.0.1.
                .env_remove("http_proxy")
                .env_remove("https_proxy")
                .arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                // The access log (Apache combined format) goes to stdout, the rest to stderr.
                .stdout(std::fs::File::create(dir.path().join("access.log"))?)
                .stderr(std::fs::File::create(dir.path().join("registry.log"))?)
                .spawn()?;
            let mut reg = TestRegistry { child, port, token_server, dir };
            match reg.wait_ready() {
                Ok(()) => return Ok(reg),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("registry did not start")))
    }

    fn wait_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                let log = std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default();
                return Err(io::Error::other(format!("registry exited ({status}): {log}")));
            }
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n")?;
                let mut answer = String::new();
                let _ = s.read_to_string(&mut answer);
                // Go's TLS server answers plain HTTP with a 400: up either way.
                if answer.starts_with("HTTP/1.") {
                    return Ok(());
                }
            }
            thread::sleep(Duration::from_millis(50));
        }
        Err(io::Error::other("registry did not answer within 20 s"))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Bearer tokens issued so far (token-auth registries only).
    pub fn tokens_issued(&self) -> usize {
        self.token_server.as_ref().map_or(0, |t| t.issued.load(Ordering::SeqCst))
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A reference into this registry, `name` being `repo[:tag][@digest]`.
    pub fn reference(&self, name: &str) -> Reference {
        Reference::parse(&format!("{}/{name}", self.host())).expect("valid test reference")
    }

    /// A plain-HTTP client with fast retries that reads no auth files of the machine.
    pub fn client(&self, creds: Option<Credentials>) -> Client {
        test_client(creds)
    }

    /// The registry's storage root.
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Where the filesystem driver keeps a blob's bytes (to tamper with it).
    pub fn blob_data_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.storage().join(format!("docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]))
    }

    /// Every request logged so far. The registry logs a request just after answering it, so
    /// this sends a marker request of its own and waits until the marker is logged (then,
    /// briefly, until the log stops growing); marker requests are left out.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        static MARKS: AtomicUsize = AtomicUsize::new(0);
        let mark = format!("/v2/{SENTINEL}{}", MARKS.fetch_add(1, Ordering::SeqCst));
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
            let _ = s.write_all(format!("GET {mark} HTTP/1.0\r\n\r\n").as_bytes());
            let _ = s.read_to_end(&mut Vec::new());
        }
        let path = self.dir.path().join("access.log");
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = String::new();
        loop {
            let now = std::fs::read_to_string(&path).unwrap_or_default();
            let settled = now == last && now.contains(&format!("{mark} ")) && now.ends_with('\n');
            if settled || Instant::now() > deadline {
                break;
            }
            last = now;
            thread::sleep(Duration::from_millis(20));
        }
        last.lines().filter_map(parse_access_line).filter(|r| !r.path.contains(SENTINEL)).collect()
    }
}

/// Marks the test's own requests in the access log.
const SENTINEL: &str = "nix-layer-log-mark-";

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(t) = &self.token_server {
            t.stop.store(true, Ordering::SeqCst);
            // Wake the accept loop so it sees the flag.
            let _ = TcpStream::connect(("127.0.0.1", t.port));
        }
    }
}

const TOKEN_SERVICE: &str = "nix-layer-test";
const TOKEN_ISSUER: &str = "nix-layer-test-issuer";

/// A minimal Docker token server (the bearer flow's realm): `GET /token?service=&scope=`
/// with basic auth. The right user gets every action it asks for; others get a 401.
struct TokenServer {
    port: u16,
    issued: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl TokenServer {
    fn start(dir: &Path, user: &str, password: &str) -> io::Result<TokenServer> {
        let (key, crt) = (dir.join("token.key"), dir.join("token.crt"));
        self_signed("/CN=nix-layer-test-token", &key, &crt)?;
        let der = openssl(&["x509", "-outform", "DER", "-in"]).arg(&crt).output().and_then(check_output)?;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let issued = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let refresh = password.to_owned();
        let (issued2, stop2) = (issued.clone(), stop.clone());
        let x5c = base64::engine::general_purpose::STANDARD.encode(der);
        thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                // The right password as basic auth on GET, or as a refresh token in a POSTed form.
                let granted = match read_request(&mut conn) {
                    Some(r) if r.method == "GET" && r.authorization.as_deref() == Some(expected.as_str()) => {
                        Some((r.target.split_once('?').map_or(String::new(), |(_, q)| q.to_owned()), "token"))
                    }
                    Some(r)
                        if r.method == "POST"
                            && form_value(&r.body, "refresh_token").as_deref() == Some(refresh.as_str()) =>
                    {
                        Some((r.body, "access_token"))
                    }
                    _ => None,
                };
                let answer = match granted.map(|(query, field)| (jwt(&key, &x5c, &query), field)) {
                    Some((Ok(token), field)) => {
                        issued2.fetch_add(1, Ordering::SeqCst);
                        let body = format!(r#"{{"{field}":"{token}","expires_in":300}}"#);
                        format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                    }
                    Some((Err(e), _)) => format!("HTTP/1.1 500 Internal Server Error\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{e}", e.to_string().len()),
                    None => "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned(),
                };
                let _ = conn.write_all(answer.as_bytes());
            }
        });
        Ok(TokenServer { port, issued, stop })
    }
}

pub(crate) fn openssl(args: &[&str]) -> Command {
    let mut c = Command::new("openssl");
    c.args(args).stdin(Stdio::null());
    c
}

/// A self-signed RSA certificate (`subject`, valid two days) and its key, unencrypted.
pub(crate) fn self_signed(subject: &str, key: &Path, crt: &Path) -> io::Result<()> {
    openssl(&["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", subject])
        .args([OsStr::new("-keyout"), key.as_os_str(), OsStr::new("-out"), crt.as_os_str()])
        .output()
        .and_then(check_output)
        .map(drop)
}

pub(crate) fn check_output(out: std::process::Output) -> io::Result<Vec<u8>> {
    if !out.status.success() {
        return Err(io::Error::other(format!("openssl failed: {}", String::from_utf8_lossy(&out.stderr))));
    }
    Ok(out.stdout)
}

struct HttpRequest {
    method: String,
    target: String,
    authorization: Option<String>,
    body: String,
}

/// One HTTP/1.1 request: line, `Authorization`, and a `Content-Length` body.
fn read_request(conn: &mut TcpStream) -> Option<HttpRequest> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 65536 {
        if conn.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).ok()?;
    let mut line = head.lines().next()?.split(' ');
    let (method, target) = (line.next()?.to_owned(), line.next()?.to_owned());
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    let mut body = vec![0u8; header("content-length").and_then(|l| l.parse().ok()).unwrap_or(0)];
    conn.read_exact(&mut body).ok()?;
    Some(HttpRequest {
        method,
        target,
        authorization: header("authorization"),
        body: String::from_utf8(body).ok()?,
    })
}

fn form_value(form: &str, key: &str) -> Option<String> {
    form.split('&').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')).map(percent_decode)
}

/// An RS256 JWT granting the scopes a query or form asks for, in distribution's claims.
fn jwt(key: &Path, x5c: &str, query: &str) -> io::Result<String> {
    let access: Vec<serde_json::Value> = query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("scope="))
        .map(percent_decode)
        .filter_map(|scope| {
            let mut it = scope.splitn(3, ':');
            let (kind, name, actions) = (it.next()?.to_owned(), it.next()?.to_owned(), it.next()?.to_owned());
            Some(serde_json::json!({ "type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>() }))
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(io::Error::other)?
        .as_secs();
    let header = serde_json::json!({ "typ": "JWT", "alg": "RS256", "x5c": [x5c] });
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER, "sub": "test", "aud": TOKEN_SERVICE, "exp": now + 300, "nbf": now - 10,
        "iat": now, "jti": format!("{now}-{}", access.len()), "access": access,
    });
    let signing_input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
    let mut child = openssl(&["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child.stdin.take().expect("piped").write_all(signing_input.as_bytes())?;
    let signature = check_output(child.wait_with_output()?)?;
    Ok(format!("{signing_input}.{}", B64.encode(signature)))
}

fn percent_decode(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match (
            b[i],
            b.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()),
        ) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A plain-HTTP client with fast, deterministic retries and no machine credentials.
pub fn test_client(creds: Option<Credentials>) -> Client {
    let options = ClientOptions {
        plain_http: true,
        retry: RetryPolicy {
            attempts: 4,
            initial_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(100),
        },
        ..ClientOptions::default()
    };
    Client::new(options, CredentialSource { explicit: creds, env: AuthEnvironment::default() })
}

/// `127.0.0.1 - - [date] "HEAD /v2/x/blobs/sha256:… HTTP/1.1" 404 157 "" "ua"`.
fn parse_access_line(line: &str) -> Option<LoggedRequest> {
    let start = line.find('"')? + 1;
    let end = start + line[start..].find('"')?;
    let mut request = line[start..end].split(' ');
    let (method, path) = (request.next()?.to_owned(), request.next()?.to_owned());
    let status = line[end + 1..].split_whitespace().next()?.parse().ok()?;
    Some(LoggedRequest { method, path, status })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_log_lines() {
        let l = r#"127.0.0.1 - - [01/Dec/2026:22:00:00 +0000] "PUT /v2/a/blobs/uploads/x?digest=sha256%3Aab HTTP/1.1" 201 0 "" "nix-layer/0.1.0""#;
        assert_eq!(
            parse_access_line(l),
            Some(LoggedRequest {
                method: "PUT".into(),
                path: "/v2/a/blobs/uploads/x?digest=sha256%3Aab".into(),
                status: 201
            })
        );
        assert_eq!(parse_access_line("time=x level=info msg=y"), None);
    }

    /// The only test of this binary that touches the environment.
    #[test]
    fn a_missing_registry_fails_in_ci_and_skips_loudly_elsewhere() {
        let ci = std::env::var_os("CI");
        std::env::set_var("NIX_LAYER_TEST_REGISTRY", "/nonexistent/docker-registry");
        std::env::set_var("CI", "true");
        let in_ci = std::panic::catch_unwind(TestRegistry::start_or_skip);
        std::env::remove_var("CI");
        let elsewhere = TestRegistry::start_or_skip();
        std::env::remove_var("NIX_LAYER_TEST_REGISTRY");
        if let Some(v) = ci {
            std::env::set_var("CI", v);
        }
        assert!(in_ci.is_err(), "CI set: a missing registry must fail the test");
        assert!(elsewhere.is_none());
    }
}
