//! The one bridge between this crate's [`Digest`] and oci-spec's descriptor types, used by
//! every crate that writes manifests (image, registry, sbom, sign).

use oci_spec::image::{Descriptor, MediaType};

use crate::{Digest, Error};

/// The digest as oci-spec's type.
pub fn oci_digest(digest: &Digest) -> oci_spec::image::Digest {
    digest.to_string().parse().expect("a sha256 digest is a valid OCI digest")
}

/// oci-spec's digest as this crate's (sha256 only: anything else is an error).
pub fn blob_digest(digest: &oci_spec::image::Digest) -> Result<Digest, Error> {
    digest.as_ref().parse::<Digest>()
}

/// A descriptor of `size` bytes with `digest`, and no optional fields.
pub fn descriptor(media_type: &str, digest: &Digest, size: u64) -> Descriptor {
    Descriptor::new(MediaType::from(media_type), size, oci_digest(digest))
}

/// The descriptor of `bytes` as `media_type`, with no optional fields.
pub fn descriptor_of(media_type: &str, bytes: &[u8]) -> Descriptor {
    descriptor(media_type, &Digest::of(bytes), bytes.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_convert_both_ways_and_only_sha256_is_accepted() {
        let d = Digest::of(b"{}");
        let desc = descriptor_of("application/vnd.oci.empty.v1+json", b"{}");
        assert_eq!(desc.digest(), &oci_digest(&d));
        assert_eq!(desc.size(), 2);
        assert_eq!(blob_digest(desc.digest()).unwrap(), d);
        let sha512: oci_spec::image::Digest = format!("sha512:{}", "a".repeat(128)).parse().unwrap();
        assert!(blob_digest(&sha512).is_err());
    }
}
