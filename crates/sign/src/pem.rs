//! PEM armour (RFC 7468): the one container every cosign key file uses.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

/// `bytes` armoured under `label`, 64 base64 characters a line.
pub fn encode(label: &str, bytes: &[u8]) -> String {
    let text = B64.encode(bytes);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The label and bytes of the first PEM block in `text`.
pub fn decode(text: &str) -> Result<(String, Vec<u8>), String> {
    let mut lines = text.lines().map(str::trim);
    let label = lines
        .by_ref()
        .find_map(|l| l.strip_prefix("-----BEGIN ").and_then(|r| r.strip_suffix("-----")))
        .ok_or("no PEM block (-----BEGIN ...-----)")?
        .to_owned();
    let end = format!("-----END {label}-----");
    let mut body = String::new();
    for line in lines {
        if line == end {
            let bytes =
                B64.decode(body.as_bytes()).map_err(|e| format!("the {label} block is not base64: {e}"))?;
            return Ok((label, bytes));
        }
        if line.contains(':') {
            return Err(format!("the {label} block has headers, which cosign keys never have"));
        }
        body.push_str(line);
    }
    Err(format!("the {label} block has no {end} line"))
}
