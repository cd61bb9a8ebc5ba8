# pullImage: a base image from a registry, keyed by its manifest digest alone.
#
# dockerTools' pullImage (and nix2container's) need the hash of a tarball they
# build, which nobody knows before a first failed build. Here nothing but the
# registry's own digest is asked for: OCI content is named by the sha256 of
# its bytes, so every manifest and blob is a fixed-output derivation whose
# outputHash IS its digest (flat sha256). Nix checks each download against it,
# and a blob already in the store is never fetched again.
#
#   pullImage {
#     imageName = "ghcr.io/owner/base";    # the repository
#     imageDigest = "sha256:…";            # of the manifest or of the index
#     os ? "linux"; arch ? (Go's name for `system`); variant ? null;
#     plainHttp ? false;                   # a registry on localhost
#   }
#
# gives an OCI layout directory (the image named `base` in it), which
# buildLayeredImage's `fromImage` takes as is. When the digest is an index's,
# the manifest of the platform is chosen at evaluation time (the index is
# fetched then: import-from-derivation) and fetched the same way.
#
# Credentials: a fixed-output derivation sees only the environment variables
# below (from nix-build's environment, or the daemon's in a multi-user
# install): GITHUB_TOKEN (ghcr.io), NIX_LAYER_REGISTRY_CREDS=user:password, or
# REGISTRY_AUTH_FILE / DOCKER_CONFIG naming a file the sandbox can see
# (extra-sandbox-paths). HOME is not the user's in a build.
#
#   nixLayer  the nix-layer package (a store path with bin/nix-layer)
#   system    the Nix system the derivations are built on
{
  nixLayer,
  system ? builtins.currentSystem,
}:
let
  inherit (builtins)
    concatStringsSep
    elem
    filter
    fromJSON
    head
    map
    match
    readFile
    replaceStrings
    ;
  util = import ./util.nix;
  nixLayerBin = "${nixLayer}/bin/nix-layer";
  fail = msg: throw "nix-layer pullImage: ${msg}";
  indexTypes = [
    "application/vnd.oci.image.index.v1+json"
    "application/vnd.docker.distribution.manifest.list.v2+json"
  ];
  credentialVars = [
    "GITHUB_TOKEN"
    "GITHUB_ACTOR"
    "NIX_LAYER_REGISTRY_CREDS"
    "REGISTRY_AUTH_FILE"
    "DOCKER_CONFIG"
  ];

  hexOf =
    what: digest:
    let
      m = match "sha256:([0-9a-f]{64})" digest;
    in
    if m == null then fail "${what} `${digest}` is not a sha256 digest (sha256:<64 hex digits>)" else head m;

  # One manifest or blob, named by its digest only: images (and repositories)
  # that share a blob share its store path.
  fetch =
    {
      imageName,
      digest,
      media,
      plainHttp,
    }:
    derivation {
      name = "oci-${media}-${hexOf media digest}";
      inherit system;
      builder = nixLayerBin;
      args = [
        "fetch-blob"
        "--reference"
        imageName
        "--digest"
        digest
        "--media"
        media
        "-o"
        (builtins.placeholder "out")
      ]
      ++ util.optional plainHttp "--plain-http";
      outputHashMode = "flat";
      outputHashAlgo = "sha256";
      outputHash = hexOf media digest;
      impureEnvVars = credentialVars;
      # A blob may mention a store path this derivation has as an input (a
      # config listing the image's glibc, which nix-layer's closure also has):
      # Nix would take that for a reference, which a fixed-output path may
      # not have. Blobs are data, not dependencies: nothing is scanned (Nix
      # >= 2.16; older Nix needs a statically linked nix-layer, whose store
      # path no image mentions).
      __structuredAttrs = true;
      unsafeDiscardReferences.out = true;
      # A download: not worth sending to a remote builder.
      preferLocalBuild = true;
    };

  defaultVariant = { armv7l = "v7"; armv6l = "v6"; }.${head (match "([^-]+)-.*" system)} or null;

  pullImage =
    {
      imageName,
      imageDigest,
      os ? "linux",
      arch ? util.goArch system,
      variant ? defaultVariant,
      plainHttp ? false,
      name ? null,
    }:
    let
      fetchOne = digest: media: fetch { inherit imageName digest media plainHttp; };
      top = fetchOne imageDigest "manifest";
      topDoc = fromJSON (readFile top);
      isIndex = topDoc ? manifests || elem (topDoc.mediaType or "") indexTypes;

      # As the registry client's Platform::matches: arm64's v8 is no variant.
      normVariant = p: if p.architecture == "arm64" && (p.variant or null) == "v8" then null else p.variant or null;
      wanted = { architecture = arch; inherit os variant; };
      serves =
        d:
        d ? platform
        && !(elem (d.mediaType or "") indexTypes)
        && d.platform.os == os
        && d.platform.architecture == arch
        && (variant == null || normVariant wanted == normVariant d.platform);
      platformName = p: concatStringsSep "/" ([ p.os p.architecture ] ++ util.optional ((p.variant or null) != null) p.variant);
      candidates = filter serves topDoc.manifests;
      chosen =
        if candidates == [ ] then
          fail "the index ${imageName}@${imageDigest} has no image for ${platformName wanted}; it has: ${
            concatStringsSep ", " (map (d: platformName d.platform) (filter (d: d ? platform) topDoc.manifests))
          }"
        else
          head candidates;

      manifest = if isIndex then fetchOne chosen.digest "manifest" else top;
      doc = fromJSON (readFile manifest);
      blobs =
        if doc ? config then
          map (d: fetchOne d.digest "blob") ([ doc.config ] ++ doc.layers or [ ])
        else
          fail "${imageName}@${imageDigest} is not an image manifest (no config)";

      layout = derivation {
        name = if name != null then name else "${replaceStrings [ ":" ] [ "-" ] (baseNameOf imageName)}-oci";
        inherit system;
        builder = nixLayerBin;
        args = [
          "assemble-layout"
          "--manifest"
          "${manifest}"
          "-o"
          (builtins.placeholder "out")
        ]
        ++ map (b: "${b}") blobs;
        # Store paths named in the blobs are not the layout's dependencies.
        __structuredAttrs = true;
        unsafeDiscardReferences.out = true;
      };
      passthru = {
        inherit imageName imageDigest manifest;
        index = if isIndex then top else null;
      };
    in
    layout // passthru // { inherit passthru; };
in
pullImage
