//! Software bills of materials of an image's exact closure: every store path
//! the image holds is a component, the graph's reference edges are its
//! dependencies. CycloneDX 1.5 JSON ([`Format::CycloneDx`]) and SPDX 2.3 JSON
//! ([`Format::Spdx`]).
//!
//! Nothing comes from outside the graph and the [`Image`] passed in (no wall
//! clock, no random serial number), and components, edges and properties are
//! sorted by store path, so the same closure and image give the same bytes
//! whichever Nix tool printed the graph.
//!
//! Names and versions come from store names ([`parse_store_name`], Nix's
//! `parseDrvName`); the NAR hash becomes the component's SHA-256 (it hashes
//! the NAR serialisation of the path, the only content hash Nix keeps).

mod cyclonedx;
mod ids;
mod name;
mod oci;
mod spdx;

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use nix_layer_graph::{Graph, PathInfo, StorePath};

pub use name::{parse_drv_name, parse_store_name, Kind, StoreName};
pub use oci::{referrer, Referrer, EMPTY_MEDIA_TYPE, OCI_MANIFEST_MEDIA_TYPE};

/// Media type of a CycloneDX JSON document; the `artifactType` of its OCI
/// referrer manifest and its layer's media type.
pub const CYCLONEDX_MEDIA_TYPE: &str = "application/vnd.cyclonedx+json";
/// Media type of an SPDX JSON document.
pub const SPDX_MEDIA_TYPE: &str = "application/spdx+json";

/// What the tool metadata says produced the document.
const TOOL: &str = "nix-layer";
const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");
const TOOL_URL: &str = "https://github.com/nix-layer/nix-layer";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "`{0}` is not a UTC time of the form YYYY-MM-DDThh:mm:ssZ (SPDX needs exactly that; convert first)"
    )]
    BadTime(String),
    #[error("`{0}` is not a manifest digest (expected sha256:<64 lower-case hex digits>)")]
    BadDigest(String),
    #[error("the image name must not be empty")]
    EmptyName,
    #[error("root {0} is not in the graph")]
    RootNotInGraph(String),
    #[error("unknown SBOM format `{0}`; use cyclonedx or spdx")]
    UnknownFormat(String),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// A document's creation time: the image's `created`, in UTC to the second,
/// `YYYY-MM-DDThh:mm:ssZ` (the one spelling both formats accept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SbomTime(String);

impl SbomTime {
    pub fn parse(s: &str) -> Result<SbomTime, Error> {
        let b = s.as_bytes();
        let digits = [0..4, 5..7, 8..10, 11..13, 14..16, 17..19];
        let ok = b.len() == 20
            && digits.iter().all(|r| b[r.clone()].iter().all(u8::is_ascii_digit))
            && [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':'), (19, b'Z')]
                .iter()
                .all(|&(i, c)| b[i] == c);
        if ok {
            Ok(SbomTime(s.to_owned()))
        } else {
            Err(Error::BadTime(s.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The image an SBOM describes (CycloneDX `metadata.component`, the SPDX
/// package the document describes).
#[derive(Debug, Clone)]
pub struct Image {
    /// Repository name, e.g. `ghcr.io/org/app`.
    pub name: String,
    pub tag: Option<String>,
    pub created: SbomTime,
    /// The image manifest's digest (`sha256:…`) when known: adds a
    /// `pkg:oci/…` purl to the image. Must be [`Image::validate`]d.
    pub digest: Option<String>,
    /// Go's spelling (`amd64`, `arm64`).
    pub architecture: Option<String>,
}

impl Image {
    pub fn validate(&self) -> Result<(), Error> {
        if self.name.is_empty() {
            return Err(Error::EmptyName);
        }
        if let Some(d) = &self.digest {
            check_digest(d)?;
        }
        Ok(())
    }

    /// `name:tag`, or the name alone: the image's reference inside the document.
    fn reference(&self) -> String {
        match &self.tag {
            Some(t) => format!("{}:{t}", self.name),
            None => self.name.clone(),
        }
    }

    /// `pkg:oci/<last name component>@sha256:…?arch=…&repository_url=…&tag=…`
    /// (purl spec, type `oci`), when the digest is known.
    fn purl(&self) -> Option<String> {
        let digest = self.digest.as_ref()?;
        let short = self.name.rsplit('/').next().unwrap_or(&self.name).to_ascii_lowercase();
        let mut q = Vec::new();
        if let Some(a) = &self.architecture {
            q.push(format!("arch={}", ids::percent(a)));
        }
        q.push(format!(
            "repository_url={}",
            self.name.split('/').map(ids::percent).collect::<Vec<_>>().join("/")
        ));
        if let Some(t) = &self.tag {
            q.push(format!("tag={}", ids::percent(t)));
        }
        Some(format!("pkg:oci/{}@{}?{}", ids::percent(&short), ids::percent(digest), q.join("&")))
    }
}

/// `sha256:<64 lower-case hex digits>`.
fn check_digest(d: &str) -> Result<(), Error> {
    let hex = d.strip_prefix("sha256:").unwrap_or("");
    if hex.len() != 64 || !hex.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
        return Err(Error::BadDigest(d.to_owned()));
    }
    Ok(())
}

/// The document formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// CycloneDX 1.5 JSON.
    CycloneDx,
    /// SPDX 2.3 JSON.
    Spdx,
}

impl Format {
    pub fn media_type(self) -> &'static str {
        match self {
            Format::CycloneDx => CYCLONEDX_MEDIA_TYPE,
            Format::Spdx => SPDX_MEDIA_TYPE,
        }
    }

    /// The customary file name ending (`image.cdx.json`).
    pub fn file_suffix(self) -> &'static str {
        match self {
            Format::CycloneDx => ".cdx.json",
            Format::Spdx => ".spdx.json",
        }
    }
}

impl FromStr for Format {
    type Err = Error;
    fn from_str(s: &str) -> Result<Format, Error> {
        match s {
            "cyclonedx" | "cdx" => Ok(Format::CycloneDx),
            "spdx" => Ok(Format::Spdx),
            other => Err(Error::UnknownFormat(other.to_owned())),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::CycloneDx => "cyclonedx",
            Format::Spdx => "spdx",
        })
    }
}

/// One store path with what the documents say about it.
struct Entry<'g> {
    info: &'g PathInfo,
    parsed: StoreName<'g>,
    purl: Option<String>,
    cpe: Option<String>,
    /// Direct references, in store-path order.
    deps: Vec<&'g StorePath>,
}

/// An SBOM of one image: the graph holds exactly the store paths in the
/// image (take the subgraph first if the graph is larger).
pub struct Sbom<'g> {
    image: Image,
    /// By store path.
    entries: Vec<Entry<'g>>,
    /// The paths the image was asked for, sorted.
    roots: Vec<&'g StorePath>,
}

impl<'g> Sbom<'g> {
    /// `roots`: the image's roots (the paths it was built from); `None`
    /// means every path that no other path references.
    pub fn new(graph: &'g Graph, roots: Option<&[StorePath]>, image: Image) -> Result<Sbom<'g>, Error> {
        image.validate()?;
        let mut roots: Vec<&StorePath> = match roots {
            Some(rs) => rs
                .iter()
                .map(|r| {
                    graph
                        .index_of(r)
                        .map(|i| &graph.info(i).path)
                        .ok_or_else(|| Error::RootNotInGraph(r.to_string()))
                })
                .collect::<Result<_, _>>()?,
            None => graph.roots().into_iter().map(|i| &graph.info(i).path).collect(),
        };
        roots.sort();
        roots.dedup();
        let mut entries: Vec<Entry> = graph
            .infos()
            .iter()
            .map(|info| {
                let parsed = parse_store_name(info.path.name());
                Entry {
                    info,
                    parsed,
                    purl: ids::purl(&parsed),
                    cpe: ids::cpe(&parsed),
                    // PathInfo keeps references sorted and without itself.
                    deps: info.references.iter().collect(),
                }
            })
            .collect();
        entries.sort_by(|a, b| a.info.path.cmp(&b.info.path));
        Ok(Sbom { image, entries, roots })
    }

    /// The document's bytes: pretty-printed JSON and a final newline.
    pub fn to_bytes(&self, format: Format) -> Vec<u8> {
        match format {
            Format::CycloneDx => cyclonedx::document(self),
            Format::Spdx => spdx::document(self),
        }
    }

    /// Writes the document to `path` through a temporary file in the same
    /// directory: `path` holds the whole document or is left as it was.
    pub fn write(&self, format: Format, path: &Path) -> Result<(), Error> {
        let err = |source| Error::Write { path: path.to_owned(), source };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut tmp = tempfile::Builder::new().prefix(".sbom-").tempfile_in(dir).map_err(err)?;
        std::io::Write::write_all(&mut tmp, &self.to_bytes(format)).map_err(err)?;
        // Readable by all like the image beside it (temporary files are 0600).
        tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644)).map_err(err)?;
        tmp.persist(path).map_err(|e| err(e.error))?;
        Ok(())
    }
}

/// Serialises a document whose unique id is derived from its own content:
/// `set_id` receives the content UUID of the document serialised without it.
fn finish<T: serde::Serialize>(mut doc: T, set_id: impl FnOnce(&mut T, String)) -> Vec<u8> {
    let id = ids::content_uuid(&to_json(&doc));
    set_id(&mut doc, id);
    to_json(&doc)
}

fn to_json<T: serde::Serialize>(doc: &T) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(doc).expect("SBOM documents serialise");
    out.push(b'\n');
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use nix_layer_graph::{NarHash, StoreDir};

    use super::*;

    /// A valid store path for `name`, its hash derived from the name.
    pub(crate) fn sp(name: &str) -> StorePath {
        const A: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
        let seed = name.bytes().fold(17u64, |h, b| h.wrapping_mul(131).wrapping_add(b as u64));
        let hash: String = (0..32).map(|k| A[((seed >> (k % 40)) as usize + 7 * k) % 32] as char).collect();
        StoreDir::default().parse(&format!("/nix/store/{hash}-{name}")).unwrap()
    }

    /// hello → openssl-bin → openssl, glibc; plus a source nothing refers to.
    pub(crate) fn graph() -> Graph {
        let node = |name: &str, refs: &[&str], size: u64| {
            let mut i = PathInfo::from_raw_references(sp(name), refs.iter().map(|r| sp(r)).collect(), size);
            i.nar_hash = Some(NarHash::from_bytes([size as u8; 32]));
            i
        };
        Graph::new(vec![
            node("hello-2.12.1", &["hello-2.12.1", "openssl-3.0.13-bin", "glibc-2.39-52"], 10),
            node("openssl-3.0.13-bin", &["openssl-3.0.13", "glibc-2.39-52"], 20),
            node("openssl-3.0.13", &["glibc-2.39-52"], 30),
            node("glibc-2.39-52", &[], 40),
            node("source", &[], 50),
        ])
        .unwrap()
    }

    pub(crate) fn image() -> Image {
        Image {
            name: "ghcr.io/org/hello".into(),
            tag: Some("1.0".into()),
            created: SbomTime::parse("2024-05-01T12:00:00Z").unwrap(),
            digest: None,
            architecture: Some("amd64".into()),
        }
    }

    #[test]
    fn times_must_be_utc_seconds() {
        assert!(SbomTime::parse("1970-01-01T00:00:01Z").is_ok());
        for bad in ["", "1970-01-01T00:00:01", "1970-01-01T00:00:01+00:00", "1970-01-01T00:00:01.5Z", "now"] {
            let e = SbomTime::parse(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("`{bad}`")), "{e}");
        }
    }

    #[test]
    fn image_is_validated() {
        let mut i = image();
        i.digest = Some("sha256:abc".into());
        let g = graph();
        assert!(matches!(Sbom::new(&g, None, i.clone()), Err(Error::BadDigest(_))));
        i.digest = None;
        i.name.clear();
        assert!(matches!(Sbom::new(&g, None, i), Err(Error::EmptyName)));
        let e = Sbom::new(&g, Some(&[sp("absent-1.0")]), image()).err().unwrap();
        assert!(e.to_string().contains(sp("absent-1.0").as_str()), "{e}");
    }

    #[test]
    fn image_purl() {
        let mut i = image();
        i.digest = Some(format!("sha256:{}", "ab".repeat(32)));
        assert_eq!(
            i.purl().unwrap(),
            format!(
                "pkg:oci/hello@sha256:{}?arch=amd64&repository_url=ghcr.io/org/hello&tag=1.0",
                "ab".repeat(32)
            )
        );
        i.digest = None;
        assert_eq!(i.purl(), None);
    }

    #[test]
    fn formats_parse() {
        assert_eq!("cyclonedx".parse::<Format>().unwrap(), Format::CycloneDx);
        assert_eq!("spdx".parse::<Format>().unwrap(), Format::Spdx);
        assert!("xml".parse::<Format>().unwrap_err().to_string().contains("`xml`"));
        assert_eq!(Format::Spdx.to_string(), "spdx");
    }

    #[test]
    fn bytes_do_not_depend_on_graph_order() {
        let g = graph();
        let mut reversed = g.infos().to_vec();
        reversed.reverse();
        let r = Graph::new(reversed).unwrap();
        for f in [Format::CycloneDx, Format::Spdx] {
            let a = Sbom::new(&g, None, image()).unwrap().to_bytes(f);
            let b = Sbom::new(&r, None, image()).unwrap().to_bytes(f);
            assert_eq!(a, b, "{f}");
            // Another image time is another document.
            let mut later = image();
            later.created = SbomTime::parse("2025-01-01T00:00:00Z").unwrap();
            assert_ne!(a, Sbom::new(&g, None, later).unwrap().to_bytes(f));
        }
    }

    #[test]
    fn write_is_atomic_and_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let g = graph();
        let s = Sbom::new(&g, None, image()).unwrap();
        let out = dir.path().join("image.cdx.json");
        s.write(Format::CycloneDx, &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), s.to_bytes(Format::CycloneDx));
        assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o644);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
        let missing = dir.path().join("no/such/dir/x.json");
        let e = s.write(Format::Spdx, &missing).unwrap_err();
        assert!(e.to_string().contains("no/such/dir/x.json"), "{e}");
    }
}
