//! `nix-layer load`: builds the image as a docker-archive stream piped straight into an
//! engine's loader (`docker load`, `podman load`, `ctr images import -`); no archive is
//! written to disk. Docker is first asked which layer chains it holds, and those layers'
//! bytes are left out of the stream (its loader takes them from its store by ChainID).

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use nix_layer_blob::Digest;

use crate::args::BuildArgs;

#[derive(Args)]
pub struct LoadArgs {
    /// The engine to load into.
    #[arg(long, value_enum, value_name = "ENGINE")]
    pub engine: Engine,
    /// containerd namespace (default `default`; Kubernetes, kind and k3s use `k8s.io`).
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// The engine's socket: docker's --host, podman's --url, ctr's --address
    /// (k3s: /run/k3s/containerd/containerd.sock).
    #[arg(long, value_name = "SOCK")]
    pub address: Option<String>,
    #[command(flatten)]
    pub build: BuildArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Engine {
    Docker,
    Podman,
    Containerd,
}

impl Engine {
    fn binary(self) -> &'static str {
        match self {
            Engine::Docker => "docker",
            Engine::Podman => "podman",
            Engine::Containerd => "ctr",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Engine::Docker => "docker",
            Engine::Podman => "podman",
            Engine::Containerd => "containerd",
        }
    }
}

/// How to reach the engine: its client binary with the socket and namespace flags.
struct Client {
    engine: Engine,
    address: Option<String>,
    namespace: Option<String>,
}

impl Client {
    fn command(&self, args: &[&str]) -> Command {
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
    fn query(&self, args: &[&str]) -> Result<String> {
        let mut cmd = self.command(args);
        let out = cmd.stdin(Stdio::null()).output().map_err(|e| self.spawn_error(e))?;
        if !out.status.success() {
            bail!(
                "`{}` failed ({}): {}",
                shown(&cmd),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        String::from_utf8(out.stdout).with_context(|| format!("`{}` printed invalid UTF-8", shown(&cmd)))
    }

    fn spawn_error(&self, e: io::Error) -> anyhow::Error {
        let bin = self.engine.binary();
        if e.kind() == io::ErrorKind::NotFound {
            anyhow::anyhow!(
                "`{bin}` is not installed (not found on PATH); --engine {} needs it",
                self.engine.name()
            )
        } else {
            anyhow::Error::new(e).context(format!("cannot run `{bin}`"))
        }
    }

    /// Checks the engine answers before anything is built, and returns the layer chains
    /// whose bytes need not be sent.
    fn layers_present(&self) -> Result<HashSet<Digest>> {
        let installed = Command::new(self.engine.binary()).arg("--version").output();
        installed.map_err(|e| self.spawn_error(e))?;
        match self.engine {
            Engine::Docker => {
                let status = self
                    .query(&["info", "--format", "{{json .DriverStatus}}"])
                    .context("the Docker daemon does not answer")?;
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
                    bail!(
                        "no containerd socket at {socket}: is containerd running? (--address names another)"
                    );
                }
                self.query(&["version"]).context("containerd does not answer")?;
                Ok(HashSet::new())
            }
        }
    }

    fn loader(&self) -> Command {
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

fn shown(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Every layer chain of every image Docker holds, as ChainIDs.
fn docker_chains(client: &Client) -> Result<HashSet<Digest>> {
    let ids = client.query(&["image", "ls", "--all", "--quiet", "--no-trunc"])?;
    let ids: Vec<&str> = {
        let mut seen = HashSet::new();
        ids.lines().map(str::trim).filter(|l| !l.is_empty() && seen.insert(*l)).collect()
    };
    let mut chains = HashSet::new();
    // Batches keep the command line short on hosts with thousands of images.
    for batch in ids.chunks(256) {
        let mut args = vec!["image", "inspect", "--format", "{{json .RootFS.Layers}}"];
        args.extend(batch);
        for line in client.query(&args)?.lines().filter(|l| !l.trim().is_empty()) {
            let layers: Option<Vec<String>> = serde_json::from_str(line)
                .with_context(|| format!("`docker image inspect` printed unexpected layers: {line}"))?;
            let diff_ids = layers
                .unwrap_or_default()
                .iter()
                .map(|d| d.parse::<Digest>())
                .collect::<Result<Vec<_>, _>>()
                .context("`docker image inspect` printed an invalid layer digest")?;
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

/// Counts what goes into the loader's stdin.
struct Counting<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Whether the stream failed because its reader closed the pipe.
fn broken_pipe(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<io::Error>().is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe) {
            return true;
        }
        cause = c.source();
    }
    false
}

pub fn run(a: LoadArgs, show_bar: bool, show_summary: bool) -> Result<()> {
    if a.build.output.is_some() {
        bail!("load writes no file: -o/--output is not used (use `nix-layer build -o` for an archive)");
    }
    if a.namespace.is_some() && a.engine != Engine::Containerd {
        bail!("--namespace is for --engine containerd only");
    }
    if a.build.format.as_deref().is_some_and(|f| f != "docker-archive") {
        bail!("load streams a docker-archive into the engine: --format is not used");
    }
    let client = Client { engine: a.engine, address: a.address, namespace: a.namespace };
    let mut build = a.build;
    // The request is a stream's; `stream` writes it into the loader, never to stdout.
    build.output = Some("-".to_owned());
    let req = crate::flags::build_request(build)?;
    let started = Instant::now();
    let present = client.layers_present()?;

    let mut loader = client.loader();
    let mut child = loader
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| client.spawn_error(e))?;
    let mut err_pipe = child.stderr.take().expect("piped stderr");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let mut sink = Counting { inner: child.stdin.take().expect("piped stdin"), bytes: 0 };
    let skipped = std::cell::Cell::new(0usize);
    let is_present = |chain: &[Digest]| {
        let there = chain_id(chain).is_some_and(|c| present.contains(&c));
        skipped.set(skipped.get() + usize::from(there));
        there
    };
    let bar = crate::progress::Bar::new(show_bar);
    let built = nix_layer_pipeline::stream(&req, &bar, &mut sink, &is_present);
    let wait_loader = |child: &mut Child| -> Result<()> {
        let status = child.wait().context("cannot wait for the loader")?;
        let stderr = err_reader.join().unwrap_or_default();
        if !status.success() {
            bail!("`{}` failed ({status}): {}", shown(&loader), stderr.trim());
        }
        Ok(())
    };
    let sent = sink.bytes;
    let summary = match built {
        Ok(summary) => summary,
        Err(e) => {
            // The loader went away: its own words say why.
            if broken_pipe(&e) || matches!(child.try_wait(), Ok(Some(_))) {
                drop(sink);
                wait_loader(&mut child)?;
                return Err(anyhow::Error::new(e).context(format!("`{}` stopped reading", shown(&loader))));
            }
            // The build failed: the loader is stopped before it sees the end of a half stream.
            let _ = child.kill();
            let _ = child.wait();
            return Err(e.into());
        }
    };
    drop(sink); // the end of the stream: the loader sees EOF
    wait_loader(&mut child)?;
    if show_summary {
        eprintln!(
            "loaded {}: sent {sent} bytes to {} ({} layers already there), {} layers in {:.2} s",
            summary.image,
            client.engine.name(),
            skipped.get(),
            summary.layers.len(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
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
    fn a_closed_pipe_is_found_among_causes() {
        use nix_layer_pipeline::Error as E;
        let io = |kind| E::Io { context: "cannot write the stream".into(), source: io::Error::from(kind) };
        assert!(broken_pipe(&io(io::ErrorKind::BrokenPipe)));
        assert!(!broken_pipe(&io(io::ErrorKind::StorageFull)));
        let inside =
            E::Changed { layer: 1, first: "x".into(), cause: Box::new(io(io::ErrorKind::BrokenPipe)) };
        assert!(broken_pipe(&inside));
        let e = anyhow::Error::new(io(io::ErrorKind::BrokenPipe)).context("loading");
        assert!(broken_pipe(e.as_ref()));
    }
}
