# Store paths for the end-to-end tests, made without nixpkgs: builtins.derivation
# with /bin/sh as builder (sandbox = false) and a static busybox imported from
# the host. `hello` and `app` form a small closure over busybox; `other` shares
# busybox with them; `deep` has names past tar's 100-byte field; `link` is a
# store path that is itself a symlink.
{ busyboxBin ? /bin/busybox, euidBin ? null }:
let
  mk = name: script: builtins.derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" script ];
    PATH = "/usr/bin:/bin";
  };
  busyboxFile = builtins.path { path = busyboxBin; name = "busybox-static"; };
  euidFile = builtins.path { path = euidBin; name = "euid-static"; };
  applets = "sh ls cat id env mkdir touch echo stat find test wc rm sha256sum readlink whoami";
in rec {
  busybox = mk "busybox-1.35.0" ''
    set -e
    mkdir -p $out/bin
    cp ${busyboxFile} $out/bin/busybox
    chmod 555 $out/bin/busybox
    for a in ${applets}; do ln -s busybox $out/bin/$a; done
  '';
  euid = mk "euid-1.0" ''
    set -e
    mkdir -p $out/bin
    cp ${euidFile} $out/bin/euid
    chmod 555 $out/bin/euid
  '';
  hello = mk "hello-2.12.1" ''
    set -e
    mkdir -p $out/bin $out/share/hello/empty $out/share/hello-extra
    printf '#!${busybox}/bin/sh\necho "hello from nix-layer"\n' > $out/bin/hello
    chmod 555 $out/bin/hello
    echo data > $out/share/hello/a
    ln $out/share/hello/a $out/share/hello/hardlink
    ln -s a $out/share/hello/symlink
    echo extra > $out/share/hello-extra/b
  '';
  app = mk "app-1.0" ''
    set -e
    mkdir -p $out/bin
    ln -s ${hello}/bin/hello $out/bin/app
  '';
  other = mk "other-0.3" ''
    set -e
    mkdir -p $out/bin
    printf '#!${busybox}/bin/sh\necho other\n' > $out/bin/other
    chmod 555 $out/bin/other
  '';
  deep = mk "deep-names" ''
    set -e
    d=$out/share/$(printf 'directory-name-that-is-long-%.0s' 1 2 3 4 5)
    mkdir -p "$d"
    echo deep > "$d/$(printf 'file-with-a-long-name-%.0s' 1 2 3 4 5 6)"
    ln -s "$d" $out/share/link-to-a-long-directory-name-which-makes-the-target-longer-than-a-hundred-bytes
  '';
  link = mk "hello-link" "ln -s ${hello} $out";
}
