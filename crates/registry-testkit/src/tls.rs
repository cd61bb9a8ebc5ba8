//! A private certificate authority made for one test with the `openssl` CLI: a CA no trust
//! store knows, and a server certificate for 127.0.0.1 it signed.

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};

use crate::{check_output, openssl, self_signed};

/// A CA and a server certificate for `127.0.0.1`, in a temporary directory.
pub struct PrivateCa {
    dir: tempfile::TempDir,
}

impl PrivateCa {
    pub fn create() -> io::Result<PrivateCa> {
        let dir = tempfile::tempdir()?;
        let p = |name: &str| dir.path().join(name);
        let run = |args: &[&str], paths: &[(&str, PathBuf)]| {
            let mut c = openssl(args);
            for (flag, path) in paths {
                c.args([OsStr::new(flag), path.as_os_str()]);
            }
            c.output().and_then(check_output)
        };
        self_signed("/CN=nix-layer test CA", &p("ca.key"), &p("ca.pem"))?;
        run(
            &["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1"],
            &[("-keyout", p("server.key")), ("-out", p("server.csr"))],
        )?;
        std::fs::write(
            p("ext.cnf"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )?;
        run(
            &["x509", "-req", "-days", "2", "-CAcreateserial"],
            &[
                ("-in", p("server.csr")),
                ("-CA", p("ca.pem")),
                ("-CAkey", p("ca.key")),
                ("-extfile", p("ext.cnf")),
                ("-out", p("server.pem")),
            ],
        )?;
        Ok(PrivateCa { dir })
    }

    /// The CA certificate (PEM): what `SSL_CERT_FILE` names.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A directory holding only the CA certificate: what `SSL_CERT_DIR` names.
    pub fn ca_dir(&self) -> io::Result<PathBuf> {
        let d = self.dir.path().join("certs");
        std::fs::create_dir_all(&d)?;
        std::fs::copy(self.ca_file(), d.join("nix-layer-test-ca.pem"))?;
        Ok(d)
    }

    /// The server's certificate and key, for [`crate::TestRegistryConfig::tls`].
    pub fn server_cert(&self) -> (PathBuf, PathBuf) {
        (self.dir.path().join("server.pem"), self.dir.path().join("server.key"))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
