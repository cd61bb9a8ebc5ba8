//! `keygen`, `sign` and `verify`: cosign-compatible keys and image signatures
//! (the work is in nix-layer-sign).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use nix_layer_registry::Reference;
use nix_layer_sign::{KeySigner, PrivateKey, PublicKey};

#[derive(Args)]
pub struct KeygenArgs {
    /// Write PREFIX.key (encrypted private key) and PREFIX.pub (public key); existing files
    /// are never overwritten.
    #[arg(long, value_name = "PREFIX", default_value = "cosign")]
    pub output_prefix: PathBuf,
}

#[derive(Args)]
pub struct SignArgs {
    /// The image to sign, by tag or digest; an index is signed with each of its manifests.
    #[arg(value_name = "REF")]
    pub image: String,
    /// A cosign private key (password from COSIGN_PASSWORD or the terminal).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The image whose manifest digest must be signed.
    #[arg(value_name = "REF")]
    pub image: String,
    /// The signer's public key (PEM).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Also require in-toto attestations (SLSA provenance) attached to the manifest (as
    /// referrers or under cosign's `sha256-<hex>.att` tag), each a DSSE envelope signed by
    /// the key whose subject is the manifest's digest, and every SBOM referrer to be signed
    /// by the key.
    #[arg(long)]
    pub attestations: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Args)]
pub struct RegistryArgs {
    /// Speak plain HTTP to the registry; never implied.
    #[arg(long)]
    pub plain_http: bool,
    /// Registry credentials `user:password` (default: auth files and credential helpers).
    #[arg(long, value_name = "USER:PASSWORD")]
    pub creds: Option<String>,
}

pub fn keygen(a: &KeygenArgs) -> Result<()> {
    let with = |ext: &str| {
        let mut p = a.output_prefix.clone().into_os_string();
        p.push(ext);
        PathBuf::from(p)
    };
    let (key_path, pub_path) = (with(".key"), with(".pub"));
    for p in [&key_path, &pub_path] {
        anyhow::ensure!(!p.exists(), "{} exists; nix-layer keygen never overwrites a key", p.display());
    }
    let password = nix_layer_sign::password(true)?;
    let (private, public) = nix_layer_sign::generate_pair(&password)?;
    write_new(&key_path, private.as_bytes(), 0o600)?;
    if let Err(e) = write_new(&pub_path, public.as_bytes(), 0o644) {
        // No half-written pair: a private key without its public key is removed again.
        let _ = std::fs::remove_file(&key_path);
        return Err(e);
    }
    eprintln!("Private key written to {}\nPublic key written to {}", key_path.display(), pub_path.display());
    Ok(())
}

/// Writes a new file (never replacing one) through a temporary file in the same
/// directory, so a failure leaves nothing behind.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).with_context(|| format!("cannot write in {}", dir.display()))?;
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist_noclobber(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

pub fn sign(a: &SignArgs) -> Result<()> {
    let image = Reference::parse(&a.image)?;
    let password = nix_layer_sign::password(false)?;
    let key = PrivateKey::read(&a.key, &password)?;
    let client = crate::pull::client(a.registry.plain_http, a.registry.creds.as_deref())?;
    let signed = nix_layer_sign::sign_image(&client, &image, &KeySigner::new(key))
        .with_context(|| format!("cannot sign {image}"))?;
    let mut text = String::new();
    for s in signed {
        let what = if s.added { "signed" } else { "already signed" };
        text.push_str(&format!("{} {what}\n", s.digest));
    }
    crate::print_report(&text)
}

pub fn verify(a: &VerifyArgs) -> Result<()> {
    let image = Reference::parse(&a.image)?;
    let key = PublicKey::read(&a.key)?;
    let client = crate::pull::client(a.registry.plain_http, a.registry.creds.as_deref())?;
    let v = nix_layer_sign::verify_image(&client, &image, &key)?;
    let mut text = format!("{} verified: signed as {} ({})\n", v.digest, v.docker_reference, v.source);
    if a.attestations {
        for at in nix_layer_sign::verify_attestations(&client, &image.with_digest(v.digest), &key)? {
            text.push_str(&format!(
                "{} attestation {} ({}) verified: {}\n",
                v.digest, at.envelope, at.source, at.predicate_type
            ));
        }
        let sboms = [nix_layer_sbom::CYCLONEDX_MEDIA_TYPE, nix_layer_sbom::SPDX_MEDIA_TYPE];
        for s in nix_layer_sign::verify_referrers_signed(&client, &image.with_digest(v.digest), &key, &sboms)?
        {
            text.push_str(&format!("{} SBOM {} verified\n", v.digest, s.digest));
        }
    }
    crate::print_report(&text)
}
