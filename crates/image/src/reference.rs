use std::fmt;

use crate::Error;

/// An output image name and tag, validated against Docker's reference grammar
/// (`distribution/reference`), so `docker load` and registries accept it.
///
/// `name` may start with a registry, `host[:port]/`; it is kept as given, never
/// normalised (no `docker.io/library/` is added).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageRef {
    pub name: String,
    pub tag: String,
}

/// Docker's limit on the whole name (registry included).
const NAME_MAX: usize = 255;
const TAG_MAX: usize = 128;

impl ImageRef {
    /// Parses `name[:tag]`, using `default_tag` when there is no tag.
    pub fn parse(input: &str, default_tag: &str) -> Result<ImageRef, Error> {
        let (name, tag) = Self::split(input)?;
        let tag = match tag {
            Some(t) => t,
            None => {
                check_tag(default_tag).map_err(|problem| bad(input, format!("default tag: {problem}")))?;
                default_tag.to_owned()
            }
        };
        Ok(ImageRef { name, tag })
    }

    /// Parses `name[:tag]` into the validated name and tag, if one is given. For callers
    /// whose default tag is only known later (dockerTools uses a hash of the config).
    pub fn split(input: &str) -> Result<(String, Option<String>), Error> {
        if let Some(at) = input.find('@') {
            return Err(bad(
                input,
                format!(
                    "`{}` is a digest; an output image is named by a tag, not a digest (use `name:tag`)",
                    &input[at..]
                ),
            ));
        }
        // The tag is after the last `:` that has no `/` after it (`host:5000/app` has none).
        let (name, tag) = match input.rfind(':') {
            Some(i) if !input[i..].contains('/') => (&input[..i], Some(&input[i + 1..])),
            _ => (input, None),
        };
        check_name(name).map_err(|problem| bad(input, problem))?;
        if let Some(tag) = tag {
            check_tag(tag).map_err(|problem| bad(input, problem))?;
        }
        Ok((name.to_owned(), tag.map(str::to_owned)))
    }

    /// Validates a separately given name (no tag) and tag, as dockerTools' `name` and `tag`.
    pub fn new(name: &str, tag: &str) -> Result<ImageRef, Error> {
        check_name(name).map_err(|problem| bad(name, problem))?;
        check_tag(tag).map_err(|problem| bad(&format!("{name}:{tag}"), problem))?;
        Ok(ImageRef { name: name.to_owned(), tag: tag.to_owned() })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.tag)
    }
}

fn bad(input: &str, problem: String) -> Error {
    Error::BadReference { input: input.to_owned(), problem }
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the image name is empty".into());
    }
    if name.len() > NAME_MAX {
        return Err(format!(
            "the image name is {} characters long; at most {NAME_MAX} are allowed",
            name.len()
        ));
    }
    let mut components: Vec<&str> = name.split('/').collect();
    // Like Docker: the first of several components is a registry if it looks like a host.
    if components.len() > 1 && looks_like_registry(components[0]) {
        check_registry(components[0])?;
        components.remove(0);
    }
    let path = components.join("/");
    if path.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!("image names must be lower-case (use `{}`)", name_with_lower_path(name, &path)));
    }
    for c in components {
        check_path_component(c)?;
    }
    Ok(())
}

fn name_with_lower_path(name: &str, path: &str) -> String {
    let registry = &name[..name.len() - path.len()];
    format!("{registry}{}", path.to_ascii_lowercase())
}

fn looks_like_registry(c: &str) -> bool {
    c.contains(['.', ':'])
        || c.starts_with('[')
        || c == "localhost"
        || c.bytes().any(|b| b.is_ascii_uppercase())
}

fn check_registry(host_port: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("registry `{host_port}`: {why}"));
    let (host, port) = if let Some(rest) = host_port.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else { return bad("`[` without `]`") };
        if v6.is_empty() || !v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return bad("not an IPv6 address in brackets");
        }
        match after {
            "" => (None, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return bad("unexpected text after `]`"),
            },
        }
    } else {
        match host_port.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(host_port), None),
        }
    };
    if let Some(host) = host {
        if host.is_empty() {
            return bad("the host is empty");
        }
        for label in host.split('.') {
            let ok = !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !ok {
                return bad("host names are dot-separated letters, digits and inner `-`");
            }
        }
    }
    if let Some(port) = port {
        if port.is_empty()
            || !port.bytes().all(|b| b.is_ascii_digit())
            || port.parse::<u32>().map_or(true, |p| p > 65535)
        {
            return bad("the port must be a number from 0 to 65535");
        }
    }
    Ok(())
}

/// `[a-z0-9]+` runs joined by one separator each: `.`, `_`, `__`, or one or more `-`.
fn check_path_component(c: &str) -> Result<(), String> {
    let rule = "path components are lower-case letters and digits, joined by `.`, `_`, `__` or dashes, \
                and start and end with a letter or digit";
    if c.is_empty() {
        return Err(format!("empty path component (`//`, or a `/` at either end); {rule}"));
    }
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return Err(format!("`{c}`: {rule}"));
        }
        if i == b.len() {
            return Ok(());
        }
        let sep_start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[sep_start..i];
        let valid_sep = matches!(sep, "." | "_" | "__") || sep.bytes().all(|x| x == b'-');
        if !valid_sep {
            return Err(format!("`{c}`: separator `{sep}` is not allowed; {rule}"));
        }
    }
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`
fn check_tag(tag: &str) -> Result<(), String> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    match tag.as_bytes() {
        [] => Err("the tag is empty (drop the `:` or give a tag)".into()),
        _ if tag.len() > TAG_MAX => {
            Err(format!("the tag is {} characters long; at most {TAG_MAX} are allowed", tag.len()))
        }
        [first, ..] if !word(*first) => Err(format!("tag `{tag}` must start with a letter, digit or `_`")),
        [_, rest @ ..] if !rest.iter().all(|&b| word(b) || b == b'.' || b == b'-') => {
            Err(format!("tag `{tag}` may only hold letters, digits, `_`, `.` and `-`"))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(input: &str) -> ImageRef {
        ImageRef::parse(input, "latest").unwrap_or_else(|e| panic!("{input:?} should parse: {e}"))
    }

    fn err(input: &str) -> String {
        match ImageRef::parse(input, "latest") {
            Ok(r) => panic!("{input:?} should fail, got {r:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn accepts_valid_references() {
        let cases = [
            ("hello", "hello", "latest"),
            ("hello:1.0", "hello", "1.0"),
            ("my-app_2.x:v1_beta-3", "my-app_2.x", "v1_beta-3"),
            ("a__b/c---d/e.f", "a__b/c---d/e.f", "latest"),
            ("library/ubuntu:22.04", "library/ubuntu", "22.04"),
            ("ghcr.io/owner/app:abc", "ghcr.io/owner/app", "abc"),
            ("localhost/app", "localhost/app", "latest"),
            ("localhost:5000/app", "localhost:5000/app", "latest"),
            ("localhost:5000/app:tag", "localhost:5000/app", "tag"),
            ("registry.example.com:443/team/app:_x", "registry.example.com:443/team/app", "_x"),
            ("[::1]:5000/app:t", "[::1]:5000/app", "t"),
            ("[fe80::1]/app", "[fe80::1]/app", "latest"),
            ("Registry.Example.com/app", "Registry.Example.com/app", "latest"),
            ("10.0.0.1:5000/a/b/c", "10.0.0.1:5000/a/b/c", "latest"),
        ];
        for (input, name, tag) in cases {
            let r = ok(input);
            assert_eq!((r.name.as_str(), r.tag.as_str()), (name, tag), "{input}");
        }
        assert_eq!(ok("app").to_string(), "app:latest");
        let long_tag = "t".repeat(128);
        assert_eq!(ok(&format!("app:{long_tag}")).tag, long_tag);
    }

    #[test]
    fn uppercase_names_get_the_lower_case_hint() {
        let e = err("MyApp:1");
        assert!(e.contains("image names must be lower-case"), "{e}");
        assert!(e.contains("`myapp`"), "{e}");
        let e = err("ghcr.io/Owner/App");
        assert!(e.contains("lower-case") && e.contains("`ghcr.io/owner/app`"), "{e}");
        // Upper case in a tag is fine.
        assert_eq!(ok("app:V1").tag, "V1");
    }

    #[test]
    fn rejects_invalid_references() {
        let too_long_name = "a".repeat(256);
        let too_long_tag = format!("app:{}", "t".repeat(129));
        let cases: [(&str, &str); 22] = [
            ("", "empty"),
            (":tag", "empty"),
            ("app:", "tag is empty"),
            ("app:-x", "must start with"),
            ("app:.x", "must start with"),
            ("app:a/b", "port"), // a `/` after the `:` makes `app:a` a registry
            ("app:a+b", "may only hold"),
            (&too_long_tag, "at most 128"),
            (&too_long_name, "at most 255"),
            ("app@sha256:0123", "digest"),
            ("app:1@sha256:0123", "digest"),
            ("-app", "path components"),
            ("app-", "path components"),
            ("a..b", "separator `..`"),
            ("a._b", "separator `._`"),
            ("a___b", "separator `___`"),
            ("a//b", "empty path component"),
            ("/app", "empty path component"),
            ("app/", "empty path component"),
            ("localhost:99999/app", "port"),
            ("-bad.com/app", "host names"),
            ("[::1/app", "`[` without `]`"),
        ];
        for (input, needle) in cases {
            let e = err(input);
            assert!(e.contains(needle), "{input:?}: {e}");
            assert!(e.contains("invalid image reference"), "{e}");
        }
        let e = err("a b");
        assert!(e.contains("path components"), "{e}");
    }

    #[test]
    fn default_tag_and_split() {
        assert_eq!(ImageRef::split("a/b").unwrap(), ("a/b".into(), None));
        assert_eq!(ImageRef::split("h:1/b:t").unwrap(), ("h:1/b".into(), Some("t".into())));
        assert_eq!(ImageRef::parse("app", "0abc").unwrap().tag, "0abc");
        assert!(ImageRef::parse("app", "bad tag").unwrap_err().to_string().contains("default tag"));
        // The default is not used when a tag is given, so it is not checked either.
        assert_eq!(ImageRef::parse("app:x", "").unwrap().tag, "x");
    }

    #[test]
    fn new_validates_parts_separately() {
        assert_eq!(ImageRef::new("ghcr.io/o/app", "1").unwrap().to_string(), "ghcr.io/o/app:1");
        assert!(ImageRef::new("App", "1").is_err());
        assert!(ImageRef::new("app", "").is_err());
        assert!(ImageRef::new("app:1", "1").is_err(), "a tag inside the name is not a name");
    }
}
