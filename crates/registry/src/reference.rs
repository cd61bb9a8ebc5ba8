use std::fmt;
use std::str::FromStr;

use nix_layer_blob::Digest;

use crate::Error;

/// The registry docker.io references are normalised to.
pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's distribution API actually lives.
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// `host[:port]/repository[:tag][@sha256:…]`, normalised as Docker does: no host means
/// `docker.io`, and a one-component Docker Hub name means `library/<name>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    /// `host` or `host:port`, as credentials are keyed (`docker.io` for Docker Hub).
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl Reference {
    /// Parses a reference; see the type's documentation for the defaults.
    pub fn parse(input: &str) -> Result<Reference, Error> {
        let bad = |reason: &str| Error::BadReference { input: redact(input), reason: reason.to_owned() };
        // `user:password@host/…`: refused without echoing the password.
        if credentials_end(input).is_some() {
            return Err(bad(
                "credentials do not belong in a reference; use --creds, docker login or an auth file",
            ));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, d)) => (rest, Some(d.parse::<Digest>().map_err(|e| bad(&e.to_string()))?)),
            None => (input, None),
        };
        // A tag is after the last `:` that follows the last `/` (a `:` before it is a port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            check_tag(tag).map_err(bad)?;
        }
        if !name.contains('/') && looks_like_registry(name, tag) {
            return Err(bad("it names a registry but no repository; write `HOST[:PORT]/REPOSITORY[:TAG]`"));
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, path)) if first.contains(['.', ':']) || first == "localhost" => {
                (first.to_owned(), path.to_owned())
            }
            _ => (DOCKER_HUB.to_owned(), name.to_owned()),
        };
        let registry = if registry == "index.docker.io" { DOCKER_HUB.to_owned() } else { registry };
        if registry.is_empty() || registry.contains(|c: char| c.is_whitespace() || c == '@') {
            return Err(bad("the registry host is empty or malformed"));
        }
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        check_repository(&repository).map_err(bad)?;
        Ok(Reference { registry, repository, tag: tag.map(str::to_owned), digest })
    }

    /// The same repository with `tag` and no digest.
    pub fn with_tag(&self, tag: &str) -> Result<Reference, Error> {
        check_tag(tag)
            .map_err(|reason| Error::BadReference { input: tag.to_owned(), reason: reason.to_owned() })?;
        Ok(Reference { tag: Some(tag.to_owned()), digest: None, ..self.clone() })
    }

    /// The same repository pinned to `digest` (no tag).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference { tag: None, digest: Some(digest), ..self.clone() }
    }

    /// Another repository of the same registry.
    pub fn with_repository(&self, repository: &str) -> Result<Reference, Error> {
        check_repository(repository).map_err(|reason| Error::BadReference {
            input: repository.to_owned(),
            reason: reason.to_owned(),
        })?;
        Ok(Reference { repository: repository.to_owned(), tag: None, digest: None, ..self.clone() })
    }

    /// The host the distribution API is served from.
    pub fn api_host(&self) -> &str {
        api_host(&self.registry)
    }

    /// What `/v2/<repo>/manifests/<…>` takes: the digest when pinned, else the tag, else `latest`.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_owned(),
        }
    }
}

/// The host a registry name's distribution API is served from.
pub(crate) fn api_host(registry: &str) -> &str {
    if registry == DOCKER_HUB {
        DOCKER_HUB_API
    } else {
        registry
    }
}

/// Where a `user:password@` prefix ends: the last `@` that does not start a digest.
fn credentials_end(input: &str) -> Option<usize> {
    input.match_indices('@').map(|(i, _)| i).rfind(|i| !input[i + 1..].starts_with("sha256:"))
}

/// `input` with any `user:password@` masked, for error messages.
fn redact(input: &str) -> String {
    match credentials_end(input) {
        Some(at) => format!("***@{}", &input[at + 1..]),
        None => input.to_owned(),
    }
}

/// `host:port`, `localhost` or an IPv4 address: what names a registry, not a repository.
fn looks_like_registry(name: &str, tag: Option<&str>) -> bool {
    let port = tag.is_some_and(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()));
    let ipv4 = name.split('.').count() == 4
        && name.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    name == "localhost" || ipv4 || (port && name.contains('.'))
}

impl FromStr for Reference {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Reference::parse(s)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Tags: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}` (the distribution grammar).
pub(crate) fn check_tag(tag: &str) -> Result<(), &'static str> {
    let ok_first = tag.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok_first || tag.len() > 128 || !tag.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
        return Err("a tag is 1 to 128 of [A-Za-z0-9_.-] and does not start with `.` or `-`");
    }
    Ok(())
}

/// Repository paths: `/`-separated components of lower-case alphanumerics joined by
/// `.`, `_`, `__` or runs of `-`.
fn check_repository(repo: &str) -> Result<(), &'static str> {
    const WHY: &str =
        "a repository is `/`-separated lower-case components of [a-z0-9] joined by `.`, `_`, `__` or `-`";
    if repo.is_empty() || repo.len() > 255 {
        return Err(WHY);
    }
    for component in repo.split('/') {
        let bytes = component.as_bytes();
        let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        if bytes.is_empty() || !alnum(&bytes[0]) || !alnum(&bytes[bytes.len() - 1]) {
            return Err(WHY);
        }
        if !bytes.iter().all(|b| alnum(b) || b"._-".contains(b))
            || component.contains("..")
            || component.contains("___")
        {
            return Err(WHY);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    fn parts(s: &str) -> (String, String, Option<String>, Option<String>) {
        let r = Reference::parse(s).unwrap();
        (r.registry, r.repository, r.tag, r.digest.map(|d| d.to_string()))
    }

    #[test]
    fn docker_hub_defaults() {
        assert_eq!(parts("alpine"), ("docker.io".into(), "library/alpine".into(), None, None));
        assert_eq!(parts("alpine:3.19").2.as_deref(), Some("3.19"));
        assert_eq!(parts("nixos/nix:2.8").1, "nixos/nix");
        assert_eq!(parts("index.docker.io/library/busybox").0, "docker.io");
        assert_eq!(Reference::parse("alpine").unwrap().api_host(), "registry-1.docker.io");
        assert_eq!(Reference::parse("alpine").unwrap().manifest_reference(), "latest");
    }

    #[test]
    fn hosts_ports_tags_and_digests() {
        assert_eq!(
            parts(&format!("127.0.0.1:5000/a/b:v1@{D}")),
            ("127.0.0.1:5000".into(), "a/b".into(), Some("v1".into()), Some(D.into()))
        );
        assert_eq!(parts("localhost/x").0, "localhost");
        assert_eq!(parts("ghcr.io/o/r").1, "o/r");
        let r = Reference::parse(&format!("localhost:5000/x@{D}")).unwrap();
        assert_eq!((r.tag.clone(), r.manifest_reference()), (None, D.to_owned()));
        assert_eq!(r.to_string(), format!("localhost:5000/x@{D}"));
        assert_eq!(r.with_tag("t").unwrap().to_string(), "localhost:5000/x:t");
    }

    #[test]
    fn rejects_malformed() {
        for bad in
            ["", "UPPER/case", "h.io/a//b", "h.io/a:", "h.io/a:-x", "a@sha256:00", "h.io/-a", "h.io/a/"]
        {
            let err = Reference::parse(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("`{bad}`")), "{bad}: {err}");
        }
    }

    #[test]
    fn a_registry_without_a_repository_is_refused_not_sent_to_docker_hub() {
        for input in ["127.0.0.1:5000", "localhost:5000", "localhost", "127.0.0.1", "registry.example:5000"] {
            let err = Reference::parse(input).unwrap_err().to_string();
            assert!(err.contains("no repository"), "{input}: {err}");
        }
        // Docker Hub names are still names.
        assert_eq!(parts("busybox:1.36").1, "library/busybox");
        assert_eq!(parts("example.com/app").0, "example.com");
        assert_eq!(parts(&format!("alpine@{D}")).3.as_deref(), Some(D));
    }

    #[test]
    fn a_password_in_a_reference_is_never_echoed() {
        for input in [
            "user:hunter2@reg.example/app:v1",
            "user:hun@ter2@reg.example:5000/app",
            "user:hunter2@reg.example/app@sha256:00",
            "user:hunter2@reg.example/UPPER",
        ] {
            let err = Reference::parse(input).unwrap_err().to_string();
            assert!(!err.contains("hunter2") && !err.contains("ter2"), "{input}: {err}");
            assert!(err.contains("credentials do not belong"), "{input}: {err}");
        }
    }
}
