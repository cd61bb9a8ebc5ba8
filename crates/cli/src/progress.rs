//! A progress bar on stderr when it is a terminal; nothing otherwise.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use nix_layer_pipeline::{LayerKind, Progress};

pub struct Bar(Option<ProgressBar>);

impl Bar {
    pub fn new(visible: bool) -> Self {
        Bar(visible.then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} {msg}",
                )
                .expect("static template"),
            );
            bar
        }))
    }
}

impl Progress for Bar {
    fn start(&self, layers: usize, bytes: u64) {
        if let Some(b) = &self.0 {
            b.set_length(bytes);
            b.set_message(format!("{layers} layers"));
        }
    }
    fn layer_done(&self, kind: &LayerKind, bytes: u64, cached: bool) {
        if let Some(b) = &self.0 {
            if matches!(kind, LayerKind::Store(_)) {
                b.inc(bytes);
            }
            b.set_message(format!("{kind}{}", if cached { " (cached)" } else { "" }));
        }
    }
    fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
