//! Where credentials come from, in the order the container tools use, and the
//! `WWW-Authenticate` challenge grammar.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;

use crate::reference::DOCKER_HUB;
use crate::Error;

/// The user name Docker files an identity (OAuth2 refresh) token under.
pub const IDENTITY_TOKEN_USER: &str = "<token>";

/// A user name and a password or token; user [`IDENTITY_TOKEN_USER`] marks an identity token.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl Credentials {
    /// Parses `user:password` (the `--creds` form; the password may contain `:`).
    pub fn parse(s: &str) -> Result<Credentials, Error> {
        match s.split_once(':') {
            Some((u, p)) if !u.is_empty() => {
                Ok(Credentials { username: u.to_owned(), password: p.to_owned() })
            }
            _ => Err(Error::Credentials {
                registry: "(--creds)".to_owned(),
                reason: "expected `user:password`".to_owned(),
            }),
        }
    }

    pub(crate) fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
    }
}

impl std::fmt::Debug for Credentials {
    // Never print the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}:***)", self.username)
    }
}

/// The environment credentials are looked up in, captured once so lookups are pure and
/// tests need not change the process environment.
#[derive(Clone, Debug, Default)]
pub struct AuthEnvironment {
    /// `$HOME`: `~/.docker/config.json` and `~/.config/containers/auth.json`.
    pub home: Option<PathBuf>,
    /// `$DOCKER_CONFIG`: a directory holding `config.json` instead of `~/.docker`.
    pub docker_config: Option<PathBuf>,
    /// `$REGISTRY_AUTH_FILE` (podman, skopeo, buildah).
    pub registry_auth_file: Option<PathBuf>,
    /// `$XDG_RUNTIME_DIR`: `containers/auth.json` below it is podman's login file.
    pub xdg_runtime_dir: Option<PathBuf>,
    /// `$GITHUB_TOKEN` and `$GITHUB_ACTOR`: used for ghcr.io when no file has credentials.
    pub github_token: Option<String>,
    pub github_actor: Option<String>,
    /// `$PATH`, searched for `docker-credential-<helper>`.
    pub path: Option<OsString>,
}

impl AuthEnvironment {
    /// The current process environment.
    pub fn from_process() -> AuthEnvironment {
        let path = |k| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let string = |k| std::env::var(k).ok().filter(|v| !v.is_empty());
        AuthEnvironment {
            home: path("HOME"),
            docker_config: path("DOCKER_CONFIG"),
            registry_auth_file: path("REGISTRY_AUTH_FILE"),
            xdg_runtime_dir: path("XDG_RUNTIME_DIR"),
            github_token: string("GITHUB_TOKEN"),
            github_actor: string("GITHUB_ACTOR"),
            path: std::env::var_os("PATH"),
        }
    }

    /// Auth files in lookup order: podman/skopeo's first (as they do), then Docker's.
    pub fn auth_files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        if let Some(f) = &self.registry_auth_file {
            files.push(f.clone());
        }
        if let Some(d) = &self.xdg_runtime_dir {
            files.push(d.join("containers/auth.json"));
        }
        if let Some(h) = &self.home {
            files.push(h.join(".config/containers/auth.json"));
        }
        match (&self.docker_config, &self.home) {
            (Some(d), _) => files.push(d.join("config.json")),
            (None, Some(h)) => files.push(h.join(".docker/config.json")),
            (None, None) => {}
        }
        files
    }
}

/// How the client finds credentials for a registry.
#[derive(Clone, Debug, Default)]
pub struct CredentialSource {
    /// Used for every registry when set (`--creds user:password`).
    pub explicit: Option<Credentials>,
    pub env: AuthEnvironment,
}

impl CredentialSource {
    /// Files, helpers and `GITHUB_TOKEN` from the process environment, overridden by `explicit`.
    pub fn from_process(explicit: Option<Credentials>) -> CredentialSource {
        CredentialSource { explicit, env: AuthEnvironment::from_process() }
    }

    /// Credentials for `registry` (`host[:port]`, `docker.io` for Docker Hub), or `None` for
    /// anonymous access. A broken auth file or a failing helper is an error, not silence.
    pub fn lookup(&self, registry: &str) -> Result<Option<Credentials>, Error> {
        if let Some(c) = &self.explicit {
            return Ok(Some(c.clone()));
        }
        for file in self.env.auth_files() {
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(cause) => return Err(Error::Io { action: "reading auth file", path: file, cause }),
            };
            let config: AuthFile = serde_json::from_str(&text).map_err(|e| Error::Credentials {
                registry: registry.to_owned(),
                reason: format!("`{}` is not a valid auth file: {e}", file.display()),
            })?;
            if let Some(c) = self.lookup_in_file(&config, &file, registry)? {
                return Ok(Some(c));
            }
        }
        if registry == "ghcr.io" {
            if let Some(token) = &self.env.github_token {
                // ghcr.io accepts any user name with a token; the actor is what GitHub documents.
                let username = self.env.github_actor.clone().unwrap_or_else(|| "github-actions".to_owned());
                return Ok(Some(Credentials { username, password: token.clone() }));
            }
        }
        Ok(None)
    }

    fn lookup_in_file(
        &self,
        config: &AuthFile,
        file: &Path,
        registry: &str,
    ) -> Result<Option<Credentials>, Error> {
        let keys = registry_keys(registry);
        if let Some(helper) = keys.iter().find_map(|k| config.cred_helpers.get(k.as_str())) {
            return self.run_helper(helper, registry);
        }
        for (key, entry) in &config.auths {
            if keys.iter().any(|k| normalise_key(key) == *k) {
                if let Some(c) = entry.credentials(file, registry)? {
                    return Ok(Some(c));
                }
            }
        }
        match &config.creds_store {
            Some(store) if !store.is_empty() => self.run_helper(store, registry),
            _ => Ok(None),
        }
    }

    /// Runs `docker-credential-<name> get` with the server on stdin, as Docker does.
    fn run_helper(&self, name: &str, registry: &str) -> Result<Option<Credentials>, Error> {
        let program = format!("docker-credential-{name}");
        let fail = |reason: String| Error::Credentials { registry: registry.to_owned(), reason };
        let mut cmd = Command::new(&program);
        if let Some(p) = &self.env.path {
            cmd.env("PATH", p);
        }
        cmd.arg("get").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        // ETXTBSY: a helper just installed may still be open for writing in a child that
        // another thread forked and has not exec'd yet; it passes in moments.
        let mut attempts = 0;
        let mut child = loop {
            match cmd.spawn() {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && attempts < 50 => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                spawned => {
                    break spawned
                        .map_err(|e| fail(format!("cannot run credential helper `{program}`: {e}")))?
                }
            }
        };
        let server = if registry == DOCKER_HUB { "https://index.docker.io/v1/" } else { registry };
        // A helper that exits before reading stdin is reported by its status below.
        let _ = child.stdin.take().expect("piped").write_all(format!("{server}\n").as_bytes());
        let out =
            child.wait_with_output().map_err(|e| fail(format!("credential helper `{program}`: {e}")))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            // Helpers say "credentials not found in native keychain" for an unknown server.
            if stdout.contains("credentials not found") {
                return Ok(None);
            }
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(fail(format!(
                "`{program} get` failed ({}): {}{}",
                out.status,
                stdout.trim(),
                stderr.trim()
            )));
        }
        #[derive(serde::Deserialize)]
        struct HelperAnswer {
            #[serde(rename = "Username")]
            username: String,
            #[serde(rename = "Secret")]
            secret: String,
        }
        let a: HelperAnswer = serde_json::from_str(&stdout)
            .map_err(|e| fail(format!("`{program} get` printed invalid JSON: {e}")))?;
        Ok(Some(Credentials { username: a.username, password: a.secret }))
    }
}

/// The keys a registry may be filed under (Docker Hub has its historical URL).
fn registry_keys(registry: &str) -> Vec<String> {
    if registry == DOCKER_HUB {
        vec![DOCKER_HUB.to_owned(), "index.docker.io".to_owned(), "registry-1.docker.io".to_owned()]
    } else {
        vec![registry.to_owned()]
    }
}

/// `https://index.docker.io/v1/` → `index.docker.io`: auth keys may be URLs.
fn normalise_key(key: &str) -> String {
    let key = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    key.split('/').next().unwrap_or(key).to_owned()
}

#[derive(serde::Deserialize, Default)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
}

#[derive(serde::Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

impl AuthEntry {
    fn credentials(&self, file: &Path, registry: &str) -> Result<Option<Credentials>, Error> {
        if let Some(token) = self.identitytoken.as_ref().filter(|t| !t.is_empty()) {
            return Ok(Some(Credentials {
                username: IDENTITY_TOKEN_USER.to_owned(),
                password: token.clone(),
            }));
        }
        if let (Some(u), Some(p)) = (&self.username, &self.password) {
            return Ok(Some(Credentials { username: u.clone(), password: p.clone() }));
        }
        let Some(auth) = self.auth.as_deref().filter(|a| !a.is_empty()) else { return Ok(None) };
        let bad = |why: &str| Error::Credentials {
            registry: registry.to_owned(),
            reason: format!("the `auth` entry in `{}` {why}", file.display()),
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| bad("is not base64"))?;
        let text = String::from_utf8(raw).map_err(|_| bad("is not UTF-8"))?;
        Credentials::parse(&text).map(Some).map_err(|_| bad("does not decode to `user:password`"))
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Challenge {
    Basic,
    Bearer { realm: String, service: Option<String>, scope: Option<String> },
}

impl Challenge {
    /// Parses `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`.
    pub(crate) fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let params = parse_params(rest);
        let get = |k: &str| params.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)).map(|(_, v)| v.clone());
        Some(Challenge::Bearer { realm: get("realm")?, service: get("service"), scope: get("scope") })
    }
}

/// `a="x, y",b=z` → [(a, "x, y"), (b, z)]; quoted values may hold commas and `\"`.
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let name: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        if chars.next().is_none() {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect();
        }
        out.push((name.trim().to_owned(), value.trim().to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn challenges() {
        assert_eq!(Challenge::parse("Basic realm=\"basic-realm\""), Some(Challenge::Basic));
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:o/r:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://ghcr.io/token".into(),
                service: Some("ghcr.io".into()),
                scope: Some("repository:o/r:pull,push".into()),
            })
        );
        assert_eq!(
            Challenge::parse("bearer realm=https://a/t"),
            Some(Challenge::Bearer { realm: "https://a/t".into(), service: None, scope: None })
        );
        assert_eq!(Challenge::parse("Bearer service=x"), None);
        assert_eq!(Challenge::parse("Negotiate"), None);
    }

    #[test]
    fn lookup_order_and_formats() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir_all(home.join(".docker")).unwrap();
        std::fs::write(
            home.join(".docker/config.json"),
            format!(
                r#"{{"auths": {{"https://index.docker.io/v1/": {{"auth": "{}"}},
                               "reg.example:5000": {{"auth": "{}"}}}}}}"#,
                b64("hub:pw"),
                b64("d:docker:pw")
            ),
        )
        .unwrap();
        let podman = dir.path().join("auth.json");
        std::fs::write(
            &podman,
            format!(r#"{{"auths": {{"reg.example:5000": {{"auth": "{}"}}}}}}"#, b64("p:pw")),
        )
        .unwrap();
        let mut env = AuthEnvironment { home: Some(home), ..Default::default() };
        let src = |env: &AuthEnvironment| CredentialSource { explicit: None, env: env.clone() };
        let hub = src(&env).lookup("docker.io").unwrap().unwrap();
        assert_eq!((hub.username.as_str(), hub.password.as_str()), ("hub", "pw"));
        // The password keeps its `:`.
        assert_eq!(src(&env).lookup("reg.example:5000").unwrap().unwrap().password, "docker:pw");
        assert_eq!(src(&env).lookup("other.example").unwrap(), None);
        // $REGISTRY_AUTH_FILE comes before Docker's file.
        env.registry_auth_file = Some(podman);
        assert_eq!(src(&env).lookup("reg.example:5000").unwrap().unwrap().username, "p");
        // Explicit credentials win.
        let explicit =
            CredentialSource { explicit: Some(Credentials::parse("e:x:y").unwrap()), env: env.clone() };
        assert_eq!(explicit.lookup("reg.example:5000").unwrap().unwrap().password, "x:y");
        // GITHUB_TOKEN for ghcr.io only.
        env.github_token = Some("ghp_x".into());
        env.github_actor = Some("octocat".into());
        let gh = src(&env).lookup("ghcr.io").unwrap().unwrap();
        assert_eq!((gh.username.as_str(), gh.password.as_str()), ("octocat", "ghp_x"));
        assert_eq!(src(&env).lookup("quay.io").unwrap(), None);
    }

    #[test]
    fn broken_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("auth.json");
        std::fs::write(&f, r#"{"auths": {"r.example": {"auth": "%%%"}}}"#).unwrap();
        let src = CredentialSource {
            explicit: None,
            env: AuthEnvironment { registry_auth_file: Some(f.clone()), ..Default::default() },
        };
        let err = src.lookup("r.example").unwrap_err().to_string();
        assert!(err.contains("not base64") && err.contains(&f.display().to_string()), "{err}");
        std::fs::write(&f, "{").unwrap();
        let err = src.lookup("r.example").unwrap_err().to_string();
        assert!(err.contains("not a valid auth file"), "{err}");
        assert!(Credentials::parse("nocolon").is_err());
        assert_eq!(format!("{:?}", Credentials::parse("u:secret").unwrap()), "Credentials(u:***)");
    }

    /// A real helper program on PATH, run as Docker runs it.
    #[test]
    fn credential_helpers_and_store() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let helper = |name: &str, body: &str| {
            let p = bin.join(format!("docker-credential-{name}"));
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        // Echoes the server it was asked for as the user name.
        helper(
            "echo",
            r#"[ "$1" = get ] || exit 3; read s; printf '{"ServerURL":"%s","Username":"%s","Secret":"tok"}' "$s" "$s""#,
        );
        helper("none", "echo 'credentials not found in native keychain'; exit 1");
        helper("broken", "echo boom >&2; exit 2");
        let cfg = dir.path().join("config.json");
        std::fs::write(&cfg, r#"{"credsStore": "none", "credHelpers": {"a.example": "echo", "c.example": "broken", "docker.io": "echo"}}"#)
            .unwrap();
        let src = CredentialSource {
            explicit: None,
            env: AuthEnvironment {
                docker_config: Some(dir.path().to_owned()),
                path: Some(bin.into_os_string()),
                ..Default::default()
            },
        };
        let a = src.lookup("a.example").unwrap().unwrap();
        assert_eq!((a.username.as_str(), a.password.as_str()), ("a.example", "tok"));
        assert_eq!(src.lookup("docker.io").unwrap().unwrap().username, "https://index.docker.io/v1/");
        assert_eq!(src.lookup("b.example").unwrap(), None, "credsStore without an entry");
        let err = src.lookup("c.example").unwrap_err().to_string();
        assert!(err.contains("docker-credential-broken") && err.contains("boom"), "{err}");
    }
}
