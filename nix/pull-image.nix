# pullImage: a base image from a registry, keyed by digests alone.
#
# dockerTools' pullImage (and nix2container's) need the hash of a tarball they
# build, which nobody knows before a first failed build. Here nothing but the
# registry's own digests are asked for: OCI content is named by the sha256 of
# its bytes, so every manifest and blob is a fixed-output derivation whose
# outputHash IS its digest (flat sha256). Nix checks each download against it,
# and a blob already in the store is never fetched again.
#
#   pullImage {
#     lockFile = ./base.lock.json;         # written by `nix-layer lock-image`
#     # or, with import-from-derivation:
#     # imageName = "ghcr.io/owner/base"; imageDigest = "sha256:…";
#     os ? "linux"; arch ? (Go's name for `system`); variant ? null;
#     plainHttp ? false;                   # a registry on localhost
#     sslCertFile ? null;                  # a CA bundle to trust (a path)
#   }
#
# gives an OCI layout directory (the image named `base` in it), which
# buildLayeredImage's `fromImage` takes as is.
#
# With `lockFile`, everything is known at evaluation time: the lock (committed
# beside the flake) lists each platform's manifest and blobs with their
# digests, so evaluation reads no build output and works with
# `allow-import-from-derivation = false` (nix flake check/show, Hydra).
# With `imageDigest` alone, the manifest (and an index, to choose the
# platform's manifest) is fetched and read at evaluation time: that is
# import-from-derivation, which those refuse.
#
# Credentials, proxies and CAs: a fixed-output derivation sees only the
# variables in impureEnvVars below, taken from nix-build's environment in a
# single-user install and from the nix-daemon's in a multi-user one:
# GITHUB_TOKEN (ghcr.io), NIX_LAYER_REGISTRY_CREDS=user:password, or
# REGISTRY_AUTH_FILE / DOCKER_CONFIG naming a file the sandbox can see
# (extra-sandbox-paths); http(s)_proxy, all_proxy, no_proxy (and upper-case);
# NIX_SSL_CERT_FILE / SSL_CERT_FILE / SSL_CERT_DIR naming CA files the sandbox
# can see. HOME is not the user's in a build.
#
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
  # What nixpkgs' fetchers pass (lib.fetchers.proxyImpureEnvVars), less ftp:
  # the registry client reads all_proxy, https_proxy, http_proxy and no_proxy,
  # in either case.
  proxyVars = [
    "http_proxy"
    "https_proxy"
    "all_proxy"
    "no_proxy"
    "HTTP_PROXY"
    "HTTPS_PROXY"
    "ALL_PROXY"
    "NO_PROXY"
  ];
  caVars = [
    "NIX_SSL_CERT_FILE"
    "SSL_CERT_FILE"
    "SSL_CERT_DIR"
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
      sslCertFile,
      # A blob's size from its descriptor: a body running past it is cut off.
      size ? null,
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
      ++ util.optional plainHttp "--plain-http"
      ++ (if size == null then [ ] else [ "--size" (toString size) ])
      ++ (if sslCertFile == null then [ ] else [ "--ca-file" "${sslCertFile}" ]);
      outputHashMode = "flat";
      outputHashAlgo = "sha256";
      outputHash = hexOf media digest;
      # A CA bundle given as an argument (--ca-file) is a store path the
      # sandbox sees, and wins over the environment's.
      impureEnvVars = credentialVars ++ proxyVars ++ caVars;
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

  # As the registry client's Platform::matches: arm64's v8 is no variant.
  normVariant = p: if p.architecture == "arm64" && (p.variant or null) == "v8" then null else p.variant or null;
  platformName = p: concatStringsSep "/" ([ p.os p.architecture ] ++ util.optional ((p.variant or null) != null) p.variant);

  # The layout of one manifest and its blobs (config first, then the layers).
  assemble =
    {
      name,
      imageName,
      manifest,
      blobs,
      passthru,
    }:
    let
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
    in
    layout // passthru // { inherit passthru; };

  pullImage =
    {
      imageName ? null,
      imageDigest ? null,
      lockFile ? null,
      os ? "linux",
      arch ? util.goArch system,
      variant ? defaultVariant,
      plainHttp ? false,
      sslCertFile ? null,
      name ? null,
    }:
    let
      wanted = { architecture = arch; inherit os variant; };
      servesPlatform =
        p:
        p.os == os && p.architecture == arch && (variant == null || normVariant wanted == normVariant p);
      common = { inherit name; };
    in
    if lockFile != null && imageDigest != null then
      fail "give `lockFile` or `imageDigest`, not both (the lock names its digest)"
    else if lockFile != null then
      fromLock (common // { inherit lockFile imageName plainHttp sslCertFile servesPlatform wanted; })
    else if imageDigest == null then
      fail "needs `lockFile` (written by `nix-layer lock-image REF@sha256:… --platform ${platformName wanted}`) or `imageName` and `imageDigest`"
    else if imageName == null then
      fail "`imageDigest` needs `imageName` (the repository)"
    else
      fromDigest (common // { inherit imageName imageDigest plainHttp sslCertFile servesPlatform wanted; });

  # The lock file, committed beside the flake, is read at evaluation time;
  # every store path below is a fixed-output fetch or the layout of them.
  fromLock =
    {
      name,
      lockFile,
      imageName,
      plainHttp,
      sslCertFile,
      servesPlatform,
      wanted,
    }:
    let
      lock =
        let
          l = fromJSON (readFile lockFile);
        in
        if (l.lockVersion or null) != 1 then
          fail "${toString lockFile} is not a lock file this nix-layer reads (lockVersion ${toString (l.lockVersion or "missing")}, not 1): write it again with `nix-layer lock-image`"
        else
          l;
      repo = if imageName != null then imageName else lock.imageName;
      fetchOne = digest: media: fetch { imageName = repo; inherit digest media plainHttp sslCertFile; };
      fetchBlob = b: fetch { imageName = repo; inherit (b) digest; size = b.size or null; media = "blob"; inherit plainHttp sslCertFile; };
      candidates = filter (m: servesPlatform m.platform) lock.manifests;
      entry =
        if candidates == [ ] then
          fail "the lock ${toString lockFile} has no image for ${platformName wanted}; it has: ${
            concatStringsSep ", " (map (m: platformName m.platform) lock.manifests)
          } (add `--platform ${platformName wanted}` to `nix-layer lock-image`)"
        else
          head candidates;
      manifest = fetchOne entry.manifest.digest "manifest";
    in
    assemble {
      inherit name manifest;
      imageName = repo;
      blobs = map fetchBlob ([ entry.config ] ++ entry.layers);
      passthru = {
        imageName = repo;
        inherit (lock) imageDigest;
        inherit manifest lockFile;
        index = if lock ? index then fetchOne lock.index.digest "manifest" else null;
      };
    };

  # The digest alone: the manifest (or index) is read at evaluation time, which
  # is import-from-derivation.
  fromDigest =
    {
      name,
      imageName,
      imageDigest,
      plainHttp,
      sslCertFile,
      servesPlatform,
      wanted,
    }:
    let
      fetchOne = digest: media: fetch { inherit imageName digest media plainHttp sslCertFile; };
      top = fetchOne imageDigest "manifest";
      topDoc = fromJSON (readFile top);
      isIndex = topDoc ? manifests || elem (topDoc.mediaType or "") indexTypes;
      serves = d: d ? platform && !(elem (d.mediaType or "") indexTypes) && servesPlatform d.platform;
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
          map (d: fetch { inherit imageName plainHttp sslCertFile; inherit (d) digest; size = d.size or null; media = "blob"; }) ([ doc.config ] ++ doc.layers or [ ])
        else
          fail "${imageName}@${imageDigest} is not an image manifest (no config)";
    in
    assemble {
      inherit name imageName manifest blobs;
      passthru = {
        inherit imageName imageDigest manifest;
        index = if isIndex then top else null;
      };
    };
in
pullImage
