//! The engines and how to reach them: their client binaries with the socket and
//! namespace flags, and what they already hold.

use std::collections::HashSet;
use std::io;
use std::process::{Command, Stdio};

use nix_layer_blob::Digest;

use crate::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Docker,
    Podman,
    Containerd,
}

impl Engine {
    pub fn binary(self) -> &'static str {
        match self {
            Engine::Docker => "docker",
            Engine::Podman => "podman",
            Engine::Containerd => "ctr",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Engine::Docker => "docker",
            Engine::Podman => "podman",
            Engine::Containerd => "containerd",
        }
    }
}

/// Where an image is loaded: an engine, reached through its client binary.
#[derive(Clone, Debug)]
pub struct Target {
    pub engine: Engine,
    /// The engine's socket: docker's --host, podman's --url, ctr's --address.
    pub address: Option<String>,
    /// containerd's namespace (`k8s.io` for Kubernetes); only for containerd.
    pub namespace: Option<String>,
}

impl Target {
    pub fn new(engine: Engine) -> Self {
        Target { engine, address: None, namespace: None }
    }

    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(self.engine.binary());
        match (self.engine, &self.address) {
            (Engine::Docker, Some(a)) => {
                c.arg("--host").arg(url(a));
            }
            (Engine::Podman, Some(a)) => {
                c.arg("--url").arg(url(a));
            }
            (Engine::Containerd, Some(a)) => {
                c.arg("--address").arg(a);
            }
            (_, None) => {}
        }
        if let Some(ns) = &self.namespace {
            c.arg("--namespace").arg(ns);
        }
        c.args(args);
        c
    }

    /// Runs a query and returns its stdout; a missing binary or a failing command is an
    /// error naming the command and quoting its stderr.
    fn query(&self, args: &[&str]) -> Result<String, Error> {
        let mut cmd = self.command(args);
        let out = cmd.stdin(Stdio::null()).output().map_err(|e| self.spawn_error(e))?;
        if !out.status.success() {
            return Err(Error::Command {
                command: shown(&cmd),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        String::from_utf8(out.stdout)
            .map_err(|_| Error::Output { command: shown(&cmd), problem: "invalid UTF-8".into() })
    }

    pub(crate) fn spawn_error(&self, e: io::Error) -> Error {
        let binary = self.engine.binary();
        match e.kind() {
            io::ErrorKind::NotFound => Error::NotInstalled { binary, engine: self.engine.name() },
            _ => Error::Spawn { binary, source: e },
        }
    }

    /// Checks that the engine answers, before anything is built, and returns the layer
    /// chains (ChainIDs) whose bytes need not be sent.
    pub(crate) fn layers_present(&self) -> Result<HashSet<Digest>, Error> {
        let installed = Command::new(self.engine.binary()).arg("--version").output();
        installed.map_err(|e| self.spawn_error(e))?;
        let unanswered = |what: &'static str| move |e| Error::NoAnswer { what, cause: Box::new(e) };
        match self.engine {
            Engine::Docker => {
                let status = self
                    .query(&["info", "--format", "{{json .DriverStatus}}"])
                    .map_err(unanswered("the Docker daemon"))?;
                // With the containerd image store, `docker load` does not take a layer it
                // lacks the file of from a ChainID: every layer must be sent.
                if status.contains("io.containerd.snapshotter") {
                    return Ok(HashSet::new());
                }
                docker_chains(self)
            }
            // Podman's load reads every layer's bytes; nothing can be left out.
            Engine::Podman => Ok(HashSet::new()),
            Engine::Containerd => {
                // ctr waits 10 s for a socket that is not there; say so at once.
                let socket = self.address.clone().or_else(|| std::env::var("CONTAINERD_ADDRESS").ok());
                let socket = socket.unwrap_or_else(|| "/run/containerd/containerd.sock".to_owned());
                if !std::path::Path::new(&socket).exists() {
                    return Err(Error::NoSocket(socket));
                }
                self.query(&["version"]).map_err(unanswered("containerd"))?;
                Ok(HashSet::new())
            }
        }
    }

    /// The engine's loader, reading a docker-archive on its stdin.
    pub(crate) fn loader(&self) -> Command {
        match self.engine {
            Engine::Docker | Engine::Podman => self.command(&["load"]),
            // The stream holds one image, of the platform asked for: without
            // --all-platforms, ctr drops one not of this machine's.
            Engine::Containerd => self.command(&["images", "import", "--all-platforms", "-"]),
        }
    }
}

fn url(address: &str) -> String {
    if address.contains("://") {
        address.to_owned()
    } else {
        format!("unix://{address}")
    }
}

pub(crate) fn shown(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Every layer chain of every image Docker holds, as ChainIDs.
fn docker_chains(target: &Target) -> Result<HashSet<Digest>, Error> {
    let ids = target.query(&["image", "ls", "--all", "--quiet", "--no-trunc"])?;
    let ids: Vec<&str> = {
        let mut seen = HashSet::new();
        ids.lines().map(str::trim).filter(|l| !l.is_empty() && seen.insert(*l)).collect()
    };
    let mut chains = HashSet::new();
    // Batches keep the command line short on hosts with thousands of images.
    for batch in ids.chunks(256) {
        let mut args = vec!["image", "inspect", "--format", "{{json .RootFS.Layers}}"];
        args.extend(batch);
        for line in target.query(&args)?.lines().filter(|l| !l.trim().is_empty()) {
            let bad = |problem: String| Error::Output { command: "docker image inspect".into(), problem };
            let layers: Option<Vec<String>> =
                serde_json::from_str(line).map_err(|e| bad(format!("unexpected layers {line}: {e}")))?;
            let diff_ids = layers
                .unwrap_or_default()
                .iter()
                .map(|d| d.parse::<Digest>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(format!("an invalid layer digest: {e}")))?;
            let mut chain: Option<Digest> = None;
            for d in &diff_ids {
                let next = extend_chain(chain, d);
                chains.insert(next);
                chain = Some(next);
            }
        }
    }
    Ok(chains)
}

/// The OCI image spec's ChainID: the bottom layer's is its diff_id; each next one is
/// sha256 of "<ChainID below> <diff_id>", both written `sha256:…`.
fn extend_chain(below: Option<Digest>, diff_id: &Digest) -> Digest {
    match below {
        None => *diff_id,
        Some(c) => Digest::of(format!("{c} {diff_id}").as_bytes()),
    }
}

pub fn chain_id(diff_ids: &[Digest]) -> Option<Digest> {
    diff_ids.iter().fold(None, |c, d| Some(extend_chain(c, d)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(hex: &str) -> Digest {
        format!("sha256:{}", hex.repeat(64 / hex.len())).parse().unwrap()
    }

    #[test]
    fn chain_ids_follow_the_oci_definition() {
        let (a, b, c) = (d("a"), d("b"), d("c"));
        assert_eq!(chain_id(&[]), None);
        assert_eq!(chain_id(&[a]), Some(a));
        // Computed independently: printf 'sha256:aaa… sha256:bbb…' | sha256sum
        let ab: Digest =
            "sha256:ccd722928bd92476ba1745586fed6e45a102504185ad88cd89e01ff116fd146c".parse().unwrap();
        assert_eq!(chain_id(&[a, b]), Some(ab));
        assert_eq!(chain_id(&[a, b, c]), Some(Digest::of(format!("{ab} {c}").as_bytes())));
        assert_ne!(chain_id(&[b, a]), Some(ab), "order matters");
    }

    #[test]
    fn addresses_become_urls() {
        assert_eq!(url("/run/docker.sock"), "unix:///run/docker.sock");
        assert_eq!(url("tcp://127.0.0.1:2375"), "tcp://127.0.0.1:2375");
    }

    #[test]
    fn flags_reach_the_right_client() {
        let t = Target {
            engine: Engine::Containerd,
            address: Some("/s".into()),
            namespace: Some("k8s.io".into()),
        };
        assert_eq!(shown(&t.loader()), "ctr --address /s --namespace k8s.io images import --all-platforms -");
        let t = Target { engine: Engine::Podman, address: Some("/p".into()), namespace: None };
        assert_eq!(shown(&t.loader()), "podman --url unix:///p load");
    }
}
