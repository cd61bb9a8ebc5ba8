//! `nix-layer`: the command line. It parses arguments and settings, then
//! hands a `BuildRequest` to `nix-layer-pipeline`; no image logic lives here.

mod args;
mod fetch;
mod flags;
mod load;
mod progress;
mod pull;
mod push;
mod sbom;
mod sharing;
mod sign;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;

use args::{Cli, Command};
use nix_layer_image::IndexKind;

fn main() -> ExitCode {
    // SIGINT/SIGTERM/SIGHUP remove the scratch files, then end the process.
    if let Err(e) = nix_layer_scratch::install_signal_cleanup() {
        eprintln!("nix-layer: warning: cannot catch signals to clean up: {e}");
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that stops early (`nix-layer plan | head`) is not an error worth a
        // message; the status says the output was cut, as a shell's 128 + SIGPIPE would.
        Err(e) if e.is::<ReaderGone>() => ExitCode::from(141),
        Err(e) => {
            eprintln!("nix-layer: error: {}", render(&e));
            ExitCode::FAILURE
        }
    }
}

/// Stdout was closed by its reader before a report was printed in full.
#[derive(Debug, thiserror::Error)]
#[error("stdout was closed before the output was complete")]
struct ReaderGone;

/// Prints a report to stdout: a closed pipe is [`ReaderGone`], any other failure (a full
/// disk behind a redirect) an error with its cause.
fn print_report(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(ReaderGone.into()),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to stdout")),
    }
}

/// The error and its causes on one line. Library errors often quote their
/// cause already; a cause whose text is already there is not repeated.
fn render(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let msg = cause.to_string();
        if out.contains(&msg) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&msg);
    }
    out
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Build(a) => {
            let (bar, summary) = display(a.quiet, a.verbose);
            let req = flags::build_request(*a)?;
            build(req, bar, summary)
        }
        Command::Load(a) => {
            let (bar, summary) = display(a.build.quiet, a.build.verbose);
            load::run(*a, bar, summary)
        }
        Command::NixBuild(a) => {
            use nix_layer_contract::nix_build::{self, NixBuild};
            let attrs = nix_build::read_nix_attrs(a.attrs.as_deref())?;
            match nix_build::nix_build(attrs)? {
                NixBuild::Image(req) => build(*req, false, true),
                NixBuild::File { path, text, executable } => {
                    Ok(nix_build::write_output_file(&path, &text, executable)?)
                }
            }
        }
        Command::Contract(a) => {
            let text = nix_layer_contract::contract::to_json_text();
            if a.json {
                print!("{text}");
            } else {
                println!(
                    "nix-layer contract version {}; `nix-layer contract --json` prints it (nix/contract.json)",
                    nix_layer_contract::contract::VERSION
                );
            }
            Ok(())
        }
        Command::Plan(a) => {
            let nix_layer_contract::settings::PlanInputs { graph, strategy, budget, family } =
                flags::plan_inputs(&a)?;
            let plan = nix_layer_plan::plan(&graph, strategy, budget, family.as_ref())?;
            let mut text = String::new();
            if a.json {
                text = serde_json::to_string(&plan)? + "\n";
            } else {
                use std::fmt::Write;
                for (i, layer) in plan.layers.iter().enumerate() {
                    let bytes: u64 =
                        layer.iter().filter_map(|p| graph.index_of(p)).map(|j| graph.info(j).nar_size).sum();
                    let size = progress::human_bytes(bytes);
                    writeln!(text, "layer {:>3}  {size:>10}  {} paths", i + 1, layer.len())?;
                    for p in layer {
                        writeln!(text, "            {p}")?;
                    }
                }
            }
            print_report(&text)
        }
        Command::Sharing(a) => sharing::run(a),
        Command::LockImage(a) => fetch::lock_image(&a),
        Command::FetchBlob(a) => fetch::fetch_blob(&a),
        Command::AssembleLayout(a) => fetch::assemble_layout(&a),
        Command::Sbom(a) => sbom::run(*a),
        Command::Push(a) => {
            let verbose = a.build.verbose;
            push::run(*a, verbose)
        }
        Command::PushIndex(a) => push::push_index(a),
        Command::Keygen(a) => sign::keygen(&a),
        Command::Sign(a) => sign::sign(&a),
        Command::Verify(a) => sign::verify(&a),
        Command::Index(a) => {
            let kind = if a.docker { IndexKind::DockerManifestList } else { IndexKind::Oci };
            nix_layer_image::ImageRef::split(&a.name)?
                .1
                .with_context(|| format!("--name `{}` needs a tag", a.name))?;
            let layout = nix_layer_image::OciLayout::open_existing(&a.layout)?;
            let doc = layout.add_platform_index(&a.name, &a.images, kind)?;
            print_report(&format!("{} {}\n", doc.digest(), a.name))
        }
        Command::CacheVerify(a) => {
            let cache = nix_layer_blob::LayerCache::open_existing(&a.dir)?;
            let report = cache.verify_all()?;
            print_report(&format!("{report}\n"))
        }
    }
}

/// Whether to show the progress bar and the summary line: both on a terminal; in pipes
/// and logs silent unless asked for.
fn display(quiet: bool, verbose: bool) -> (bool, bool) {
    let terminal = std::io::stderr().is_terminal();
    (terminal && !quiet, (terminal || verbose) && !quiet)
}

fn build(req: nix_layer_pipeline::BuildRequest, show_bar: bool, show_summary: bool) -> Result<()> {
    let started = Instant::now();
    let bar = progress::Bar::new(show_bar);
    let destination = match &req.write.output {
        nix_layer_pipeline::Output::Path(p) => p.display().to_string(),
        nix_layer_pipeline::Output::Stdout => "stdout".to_owned(),
    };
    let summary = nix_layer_pipeline::build(&req, &bar)?;
    if show_summary {
        let bytes: u64 = summary.layers.iter().map(|l| l.size).sum();
        eprintln!(
            "built {}: {} layers ({} from cache), {} in {:.2} s → {}",
            summary.image,
            summary.layers.len(),
            summary.cache_hits,
            progress::human_bytes(bytes),
            started.elapsed().as_secs_f64(),
            destination
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn causes_already_quoted_are_not_repeated() {
        let io = std::io::Error::other("disk full");
        let e = anyhow::Error::new(io).context("cannot write x: disk full").context("building y");
        assert_eq!(super::render(&e), "building y: cannot write x: disk full");
    }
}
