//! Trust roots: the system store plus `SSL_CERT_FILE` and `SSL_CERT_DIR`, as OpenSSL-based
//! tools (curl, skopeo, docker) trust them, so a registry behind a private CA works once
//! its CA is installed or named. The bundled Mozilla roots are used only on a machine
//! that has no store at all.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ureq::tls::{parse_pem, Certificate, PemItem, RootCerts, TlsConfig};

/// Where distributions keep the system bundle (Debian/Ubuntu/Alpine/NixOS first).
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The certificates trusted for `file` (`SSL_CERT_FILE`) and `dirs` (`SSL_CERT_DIR`,
/// `:`-separated) on top of the system bundle. Unreadable or non-PEM files are skipped:
/// a directory of hashed links holds other things too.
pub(crate) fn trust_roots(file: Option<&Path>, dirs: Option<&OsStr>) -> Vec<Certificate<'static>> {
    let mut files: Vec<PathBuf> =
        SYSTEM_BUNDLES.iter().map(PathBuf::from).filter(|p| p.is_file()).take(1).collect();
    files.extend(file.map(Path::to_owned));
    for dir in dirs.into_iter().flat_map(std::env::split_paths) {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        files.extend(paths);
    }
    let mut certs = Vec::new();
    for f in files {
        let Ok(bytes) = std::fs::read(&f) else { continue };
        for item in parse_pem(&bytes).flatten() {
            if let PemItem::Certificate(c) = item {
                certs.push(c);
            }
        }
    }
    certs
}

/// The TLS configuration of a client, from the process environment.
pub(crate) fn config() -> TlsConfig {
    let file = std::env::var_os("SSL_CERT_FILE").filter(|v| !v.is_empty()).map(PathBuf::from);
    let dirs = std::env::var_os("SSL_CERT_DIR").filter(|v| !v.is_empty());
    let certs = trust_roots(file.as_deref(), dirs.as_deref());
    let roots = if certs.is_empty() { RootCerts::WebPki } else { RootCerts::Specific(Arc::new(certs)) };
    TlsConfig::builder().root_certs(roots).build()
}
