//! Compresses stdin to stdout with nix-layer's layer encoder, for benches/compress.py:
//! `tar -cf - … | compress gzip:6 [THREADS]`. THREADS (default: the cores) sizes the rayon
//! pool the encoder runs in, as `--jobs` does for a build.
use std::io::{self, BufWriter, Read, Write};
use std::process::ExitCode;

use nix_layer_blob::Compression;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(spec), threads) = (args.next(), args.next()) else {
        eprintln!("usage: compress SPEC [THREADS]  (SPEC: gzip, gzip:9, zstd:3, gzip-zlib, …)");
        return ExitCode::from(2);
    };
    let run = || -> Result<(), Box<dyn std::error::Error>> {
        let compression: Compression = spec.parse()?;
        let threads = threads.map(|t| t.parse::<usize>()).transpose()?.unwrap_or(0);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
        pool.install(|| -> io::Result<()> {
            let mut enc = compression.encoder(BufWriter::new(io::stdout().lock()))?;
            let mut buf = vec![0; 256 * 1024];
            loop {
                let n = io::stdin().lock().read(&mut buf)?;
                if n == 0 {
                    break;
                }
                enc.write_all(&buf[..n])?;
            }
            enc.finish()?.flush()
        })?;
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("compress: {e}");
            ExitCode::FAILURE
        }
    }
}
