# mkUser, mkDevContainer and mkRuntime: images for people, on top of the
# image library (./image.nix).
#
# Written as functions of an explicit set of packages (`deps`), not of
# nixpkgs, so that they evaluate and build without nixpkgs: the flake passes
# nixpkgs' packages, the tests pass stand-ins made with builtins.derivation.
# Everything an image carries besides its packages (users, /etc files, the
# setuid sudo, directories and their owners) is written through the top-layer
# spec: no runCommand, no fakeroot.
#
#   image   the image library: { buildLayeredImage, streamLayeredImage, … }
#   deps    {
#             shell        bash; the devcontainer's login shell and Cmd
#             coreutils    target of /usr/bin/env (null: no /usr/bin/env)
#             findutils    find, for the devcontainer's uid-sync step (null:
#                          the find on PATH)
#             cacert       CA certificates (SSL_CERT_FILE), always included
#             sudo, pam    the devcontainer's sudo and its PAM modules
#             direnv, nix-direnv   hooked into the devcontainer's bash (or null)
#             nixLd        null, or { package; loader; interpreter; libraryPath; }:
#                          nix-ld installed at `loader` (e.g.
#                          /lib64/ld-linux-x86-64.so.2) so that foreign
#                          binaries (VS Code's server) run
#           }
#   nixRegistry   null, or the flake reference `nixpkgs` resolves to inside
#                 devcontainers (e.g. the infrastructure's locked nixpkgs)
#   osRelease     extra /etc/os-release fields, e.g. { VERSION_ID = "26.05"; }
#   defaultFamilyFile   null, or a family catalogue (see image.familyCatalogue)
#                 that images plan against unless told otherwise: the flake
#                 passes the committed catalogue of its package sets
{
  image,
  deps,
  nixRegistry ? null,
  osRelease ? { },
  defaultFamilyFile ? null,
}:
let
  inherit (builtins) concatStringsSep filter toJSON;
  util = import ./util.nix;
  inherit (util) optional optionals mergeEnv mergeTopLayers;

  dir = path: attrs: { inherit path; type = "dir"; } // attrs;
  text = path: mode: content: {
    inherit path mode;
    type = "text";
    text = content;
  };
  symlink = path: target: {
    inherit path target;
    type = "symlink";
  };
  lines = ls: concatStringsSep "\n" ls + "\n";

  sslCertFile = "${deps.cacert}/etc/ssl/certs/ca-bundle.crt";

  osReleaseText = lines (
    builtins.attrValues (
      builtins.mapAttrs (k: v: "${k}=${toJSON v}") (
        {
          NAME = "nix-layer";
          ID = "nix-layer";
          PRETTY_NAME = "Nix closure image (nix-layer)";
          HOME_URL = "https://github.com/nix-layer/nix-layer";
        }
        // osRelease
      )
    )
  );

  # Files every image gets, whatever its user.
  systemFiles = {
    entries = [
      (dir "/tmp" { mode = "1777"; })
      (dir "/var/tmp" { mode = "1777"; })
      (dir "/run" { mode = "0755"; })
      (dir "/root" { mode = "0700"; })
      (text "/etc/os-release" "0644" osReleaseText)
      (text "/etc/nsswitch.conf" "0644" (lines [
        "passwd:    files"
        "group:     files"
        "shadow:    files"
        "hosts:     files dns"
        "networks:  files"
        "ethers:    files"
        "services:  files"
        "protocols: files"
      ]))
    ]
    ++ optional (deps.coreutils or null != null) (symlink "/usr/bin/env" "${deps.coreutils}/bin/env");
  };

  # Merges a base config with a user's extraConfig: Env by variable name,
  # Labels and ExposedPorts/Volumes by key, everything else replaced.
  mergeConfig =
    base: extra:
    base
    // extra
    // {
      Env = mergeEnv (base.Env or [ ]) (extra.Env or [ ]);
      Labels = (base.Labels or { }) // (extra.Labels or { });
    }
    // util.optionalAttrs (base ? ExposedPorts || extra ? ExposedPorts) {
      ExposedPorts = (base.ExposedPorts or { }) // (extra.ExposedPorts or { });
    }
    // util.optionalAttrs (base ? Volumes || extra ? Volumes) {
      Volumes = (base.Volumes or { }) // (extra.Volumes or { });
    };

  pick = stream: if stream then image.streamLayeredImage else image.buildLayeredImage;

  pamModule = m: "${deps.pam}/lib/security/${m}.so";
  # A PAM service that lets root through (pam_rootok) and checks everyone
  # else against /etc/shadow.
  rootOkService = lines [
    "auth     sufficient ${pamModule "pam_rootok"}"
    "auth     required   ${pamModule "pam_unix"}"
    "account  required   ${pamModule "pam_unix"}"
    "password required   ${pamModule "pam_unix"}"
    "session  required   ${pamModule "pam_unix"}"
  ];
  # The PAM services of shadow's tools (users and Dev Containers features
  # run useradd, usermod, chsh, … under sudo). Dev Containers' own uid sync
  # uses none of them: see reownNixScript.
  accountTools = [
    "chage"
    "chfn"
    "chgpasswd"
    "chpasswd"
    "chsh"
    "groupadd"
    "groupdel"
    "groupmems"
    "groupmod"
    "newusers"
    "passwd"
    "useradd"
    "userdel"
    "usermod"
  ];

  # The arguments mkDevContainer and mkRuntime share, with their defaults.
  sharedArgs = {
    tag = "latest";
    strategy = "shared";
    # Package sets to plan layers against (e.g. all of
    # `legacyPackages.<system>.packageSets`): every image built with the same
    # family shares identical layers for them, at the price of realising the
    # whole family when building.
    family = { };
    # A family catalogue file instead: planning reads only the members'
    # graphs, so nothing of the family is realised.
    familyFile = defaultFamilyFile;
    format = "docker-archive";
    compression = null;
    # null: the codec's default level (gzip 5, zstd 3).
    compressionLevel = null;
    created = "1970-01-01T00:00:01Z";
    # org.opencontainers.image.* annotations on the manifest (source, revision,
    # version, licenses); config labels of that family are copied there too.
    annotations = { };
    architecture = null;
    stream = false;
    # null, or { key = "/run/secrets/cosign.key"; provenance = true;
    # flakeLock = ./flake.lock; }: copyToRegistry signs what it pushes.
    sign = null;
    passthru = { };
    meta = { };
  };

  # A builder's arguments: `packages`, its own (`own`, with defaults) and the
  # shared ones; anything else is an error, as for a function's formals.
  builderArgs =
    fn: own: args:
    let
      known = [ "packages" ] ++ builtins.attrNames (sharedArgs // own);
      unknown = filter (n: !(builtins.elem n known)) (builtins.attrNames args);
    in
    if !(builtins.isAttrs args) then
      throw "nix-layer: ${fn}: takes one attribute set of arguments"
    else if unknown != [ ] then
      throw "nix-layer: ${fn}: unexpected argument '${builtins.head unknown}'; it takes ${util.quoteList known}"
    else if !(args ? packages) then
      throw "nix-layer: ${fn}: `packages` (a list of packages) is required"
    else
      sharedArgs // own // args;

  # The image library call for a builder's arguments `a`: the shared
  # arguments go through as they are (architecture only when set).
  toImage =
    a: image':
    (pick a.stream) (
      builtins.intersectAttrs (
        builtins.removeAttrs sharedArgs [
          "architecture"
          "stream"
        ]
        // {
          name = null;
          maxLayers = null;
          includeNixDB = null;
        }
      ) a
      // util.optionalAttrs (a.architecture != null) { inherit (a) architecture; }
      // image'
    );

  # TZDIR, only when `packages` brings tzdata (its zoneinfo in the store).
  tzEnv =
    packages:
    let
      tz = filter (p: builtins.isAttrs p && (builtins.parseDrvName (p.name or "")).name == "tzdata") packages;
    in
    optional (tz != [ ]) "TZDIR=${builtins.head tz}/share/zoneinfo";

  # What a developer expects of Python (and of pipx, uv tool, …): commands
  # installed for the user land in ~/.local/bin, which is on PATH. nixpkgs'
  # interpreter lives in the read-only store, so pip refuses system-wide
  # installs (PEP 668 marks it externally managed); this lets `pip install
  # --user` (and a plain `pip install`, which then falls back to --user)
  # install into ~/.local. Venvs are not affected (they are not externally
  # managed). PIP_USER is not set: pip in a venv refuses --user.
  pipEnv = [ "PIP_BREAK_SYSTEM_PACKAGES=1" ];

  # Drops from `packages` every derivation equal to one of `drop`.
  without = drop: filter (p: !(builtins.elem p drop));

  # The arguments of both builders beyond the shared ones, with the defaults
  # they have in common; each builder adds its own (name, user, workdir,
  # maxLayers, …).
  userArgs = {
    uid = 1000;
    gid = 1000;
    extraConfig = { };
    topLayer = { };
  };

  # The image both builders make of their arguments `a`: `contents` and the CA
  # certificates; `baseConfig` merged with `a.extraConfig`; a top layer of the
  # system files, `files`, then `a.topLayer` (which wins by path).
  userImage =
    a:
    {
      contents,
      baseConfig,
      files,
    }:
    toImage a {
      contents = contents ++ [ deps.cacert ];
      config = mergeConfig baseConfig a.extraConfig;
      topLayer = mergeTopLayers ([ systemFiles ] ++ files ++ [ a.topLayer ]);
    };

  # Each builder's own arguments with their defaults (beyond sharedArgs).
  devContainerArgs = userArgs // {
    name = "devcontainer";
    user = "vscode";
    workdir = "/workspace";
    nixConfig = "";
    sudo = true;
    direnv = true;
    nixLd = true;
    includeNixDB = true;
    maxLayers = 100;
  };
  runtimeArgs = userArgs // {
    name = "runtime";
    user = "app";
    workdir = "/app";
    maxLayers = 50;
  };

  # Dev Containers' updateRemoteUserUID (Linux hosts whose user is not uid
  # 1000) rewrites the user's uid and gid in /etc/passwd and /etc/group and
  # re-owns $HOME only: /nix keeps the image's owner and Nix can no longer
  # write the store or its database. This script gives the user /nix back,
  # through the image's password-less sudo, when the owner of /nix/store is
  # not the user: /nix, /nix/store and everything under /nix/var (the
  # database, profiles, roots), and the directories of the image's store
  # paths (so that garbage collection can delete them). The files in them
  # keep their owner: re-owning a file copies it into the container's layer
  # (overlayfs), which for a whole store would double its size; reading and
  # deleting need no ownership of the file. /nix/store goes last, as the
  # mark that the rest is done. It runs from the Dev Containers entrypoint
  # (the image's devcontainer.metadata) and from the user's .bashrc.
  reownNixPath = "/usr/local/libexec/nix-layer/reown-nix";
  reownNixScript =
    let
      from = pkg: n: if pkg != null then "${pkg}/bin/${n}" else n;
      bin = from (deps.coreutils or null);
      find = from (deps.findutils or null) "find";
    in
    lines [
      "#!${deps.shell}/bin/sh"
      "# Written by nix-layer's mkDevContainer: gives /nix to the user after"
      "# Dev Containers changed the user's uid/gid (see docs/flake.md)."
      "uid=$(${bin "id"} -u) gid=$(${bin "id"} -g)"
      "[ \"$uid\" = 0 ] && exit 0"
      "owner=$(${bin "stat"} -c %u:%g /nix/store) || exit 1"
      "[ \"$owner\" = \"$uid:$gid\" ] && exit 0"
      "reown() { /usr/bin/sudo -n ${bin "chown"} -h \"$@\"; }"
      "if reown -R \"$uid:$gid\" /nix/var &&"
      "  /usr/bin/sudo -n ${find} /nix/store -mindepth 1 -type d -exec ${bin "chown"} -h \"$uid:$gid\" {} + &&"
      "  reown \"$uid:$gid\" /nix /nix/store; then"
      "  exit 0"
      "fi"
      "echo \"nix-layer: /nix belongs to $owner, not to $(${bin "id"} -un) ($uid:$gid), and password-less sudo could not re-own it: Nix cannot write the store (docs/flake.md, 'Dev Containers and the uid')\" >&2"
      "exit 1"
    ];
in
rec {
  # A user as a top-layer fragment: /etc/passwd, /etc/group and /etc/shadow
  # (with root and nobody), and a home directory the user owns.
  # The result is a top-layer spec ({ entries; rules; }): pass it as
  # `topLayer`, or merge it with others.
  mkUser =
    {
      name,
      uid ? 1000,
      gid ? 1000,
      home ? "/home/${name}",
      shell ? "/bin/sh",
      group ? name,
      groups ? [ ], # extra groups, e.g. [ "wheel" ]
      description ? name,
    }:
    let
      inWheel = builtins.elem "wheel" groups;
      # Extra groups other than wheel get gids from 101 up, one each, in
      # the order given (skipping the user's own gid).
      others = filter (g: g != "wheel" && g != group) groups;
      candidates = filter (n: n != gid) (builtins.genList (i: 101 + i) (builtins.length others + 1));
      extraGroups = builtins.genList (i: {
        name = builtins.elemAt others i;
        gid = builtins.elemAt candidates i;
      }) (builtins.length others);
    in
    if uid == 0 || gid == 0 then
      throw "nix-layer: mkUser: '${name}' would be root (uid/gid 0); images already have root"
    else if name == "root" || name == "nobody" then
      throw "nix-layer: mkUser: the user name '${name}' is reserved"
    else
      {
        entries = [
          (text "/etc/passwd" "0644" (lines [
            "root:x:0:0:root:/root:/bin/sh"
            "${name}:x:${toString uid}:${toString gid}:${description}:${home}:${shell}"
            "nobody:x:65534:65534:nobody:/var/empty:/bin/false"
          ]))
          (text "/etc/group" "0644" (lines (
            [
              "root:x:0:"
              "wheel:x:10:${if inWheel then name else ""}"
              "${group}:x:${toString gid}:"
            ]
            ++ map (g: "${g.name}:x:${toString g.gid}:${name}") extraGroups
            ++ [ "nogroup:x:65534:" ]
          )))
          # "!" locks the password; 1 (not 0) as last change, so that PAM
          # does not demand a new password.
          (text "/etc/shadow" "0600" (lines [
            "root:!:1::::::"
            "${name}:!:1::::::"
            "nobody:!:1::::::"
          ]))
          (dir home {
            inherit uid gid;
            mode = "0755";
          })
        ];
        rules = [
          {
            path = home;
            inherit uid gid;
          }
        ];
      };

  # Password-less sudo for `user`: a setuid-root copy of sudo, sudoers, and
  # PAM services for sudo and shadow's account tools.
  sudoFragment =
    { user, path }:
  {
    entries = [
      # The store cannot hold setuid bits: the top layer carries a
      # setuid-root copy of the real binary.
      {
        path = "/usr/bin/sudo";
        type = "copy";
        source = "${deps.sudo}/bin/sudo";
        mode = "4755";
        uid = 0;
        gid = 0;
      }
      (text "/etc/sudoers" "0440" (lines [
        "Defaults env_reset"
        "Defaults secure_path=\"${path}\""
        "Defaults lecture=never"
        "root ALL=(ALL:ALL) ALL"
        "@includedir /etc/sudoers.d"
      ]))
      (dir "/etc/sudoers.d" { mode = "0750"; })
      (text "/etc/sudoers.d/${user}" "0440" "${user} ALL=(ALL:ALL) NOPASSWD: ALL\n")
      (text "/etc/pam.d/sudo" "0644" rootOkService)
      (text "/etc/pam.d/sudo-i" "0644" "@include sudo\n")
      # Anything else that asks PAM is refused.
      (text "/etc/pam.d/other" "0644" (lines [
        "auth     required ${pamModule "pam_deny"}"
        "account  required ${pamModule "pam_deny"}"
        "password required ${pamModule "pam_deny"}"
        "session  required ${pamModule "pam_deny"}"
      ]))
    ]
    # shadow's account tools (nixpkgs builds shadow with PAM): root, as
    # through sudo, passes; without their services they would fall
    # through to `other` and be denied.
    ++ map (tool: text "/etc/pam.d/${tool}" "0644" rootOkService) accountTools
    ++ [
      (dir "/var/db/sudo" { mode = "0711"; })
    ];
  };

  # Single-user Nix for `user` (uid, gid): the user owns /nix, /nix/store and
  # /nix/var (an upper layer's directory metadata wins in overlayfs); the
  # database nix-layer writes registers every store path of the image. If
  # Dev Containers later changes the user's uid, reownNixScript (run at
  # container start and from .bashrc) re-owns them; nothing else does.
  nixFragment =
    {
      user,
      uid,
      gid,
      nixConfig,
    }:
    let
      owned = { inherit uid gid; };
    in
  {
    entries = [
      (dir "/nix" (owned // { mode = "0755"; }))
      (dir "/nix/store" (owned // { mode = "0755"; }))
      (dir "/nix/var" (owned // { mode = "0755"; }))
      (dir "/nix/var/nix" (owned // { mode = "0755"; }))
      (dir "/nix/var/nix/gcroots" (owned // { mode = "0755"; }))
      (dir "/nix/var/nix/gcroots/per-user/${user}" (owned // { mode = "0755"; }))
      (dir "/nix/var/nix/profiles" (owned // { mode = "0755"; }))
      (dir "/nix/var/nix/profiles/per-user/${user}" (owned // { mode = "0755"; }))
      (dir "/nix/var/nix/temproots" (owned // { mode = "0755"; }))
      (dir "/nix/var/log/nix" (owned // { mode = "0755"; }))
      (text "/etc/nix/nix.conf" "0644" (
        lines [
          "experimental-features = nix-command flakes"
          "build-users-group ="
          "sandbox = false"
        ]
        + nixConfig
      ))
    ]
    ++ optional (nixRegistry != null) (
      text "/etc/nix/registry.json" "0644" (toJSON {
        version = 2;
        flakes = [
          {
            from = {
              type = "indirect";
              id = "nixpkgs";
            };
            to = nixRegistry;
          }
        ];
      })
    );
    rules = [
      {
        path = "/nix/var";
        inherit uid gid;
      }
    ];
  };

  # The user's bash: Nix profile, the direnv hook, the working directory.
  shellFragment =
    {
      home,
      workdir,
      owned,
      withDirenv,
      reownNix ? false,
    }:
    let
      nixDirenv = deps.nix-direnv or null;
    in
  {
    entries = [
      (text "${home}/.bashrc" "0644" (
        lines [
          "# Written by nix-layer's mkDevContainer."
          "[ -r /etc/bashrc ] && . /etc/bashrc"
          "if [ -e \"$HOME/.nix-profile/etc/profile.d/nix.sh\" ]; then . \"$HOME/.nix-profile/etc/profile.d/nix.sh\"; fi"
        ]
        + util.optionalString reownNix ''
          # Dev Containers may have changed this user's uid: give /nix back.
          if [ -x ${reownNixPath} ]; then ${reownNixPath}; fi
        ''
        + util.optionalString withDirenv ''
          if command -v direnv >/dev/null 2>&1; then eval "$(direnv hook bash)"; fi
        ''
      ))
      (text "${home}/.bash_profile" "0644" "[ -r \"$HOME/.bashrc\" ] && . \"$HOME/.bashrc\"\n")
      (dir workdir (owned // { mode = "0755"; }))
    ]
    ++ optional (withDirenv && nixDirenv != null) (
      text "${home}/.config/direnv/direnvrc" "0644" "source ${nixDirenv}/share/nix-direnv/direnvrc\n"
    );
  };

  # A development container: the user (default vscode, uid 1000) with
  # password-less sudo, Nix working in single-user mode on a database that
  # registers the whole image, direnv hooked into bash, and what VS Code's
  # Dev Containers need.
  mkDevContainer =
    # Written out so that builtins.functionArgs (nix repl, documentation
    # tools, wrappers) sees them; the defaults are devContainerArgs' and
    # sharedArgs', which builderArgs applies.
    {
      packages,
      name ? devContainerArgs.name,
      user ? devContainerArgs.user,
      uid ? devContainerArgs.uid,
      gid ? devContainerArgs.gid,
      workdir ? devContainerArgs.workdir,
      nixConfig ? devContainerArgs.nixConfig,
      sudo ? devContainerArgs.sudo,
      direnv ? devContainerArgs.direnv,
      nixLd ? devContainerArgs.nixLd,
      includeNixDB ? devContainerArgs.includeNixDB,
      maxLayers ? devContainerArgs.maxLayers,
      extraConfig ? devContainerArgs.extraConfig,
      topLayer ? devContainerArgs.topLayer,
      tag ? sharedArgs.tag,
      strategy ? sharedArgs.strategy,
      family ? sharedArgs.family,
      familyFile ? sharedArgs.familyFile,
      format ? sharedArgs.format,
      compression ? sharedArgs.compression,
      compressionLevel ? sharedArgs.compressionLevel,
      created ? sharedArgs.created,
      annotations ? sharedArgs.annotations,
      architecture ? sharedArgs.architecture,
      stream ? sharedArgs.stream,
      sign ? sharedArgs.sign,
      passthru ? sharedArgs.passthru,
      meta ? sharedArgs.meta,
      # Unknown names get builderArgs' message (it lists what is taken).
      ...
    }@args:
    let
      a = builderArgs "mkDevContainer" devContainerArgs args;
      inherit (a)
        user
        uid
        gid
        workdir
        nixConfig
        sudo
        direnv
        nixLd
        ;
      home = "/home/${user}";
      owned = { inherit uid gid; };
      shellPath = "${deps.shell}/bin/bash";
      path = concatStringsSep ":" [
        "${home}/.local/bin"
        "${home}/.nix-profile/bin"
        "/nix/var/nix/profiles/default/bin"
        "/usr/local/bin"
        "/usr/bin"
        "/bin"
      ];
      withNixLd = nixLd && deps.nixLd or null != null;
      withDirenv = direnv && deps.direnv or null != null;

      userFiles = mkUser {
        name = user;
        inherit uid gid home;
        shell = shellPath;
        groups = [ "wheel" ];
      };

      sudoFiles = sudoFragment { inherit user path; };
      nixFiles = nixFragment { inherit user uid gid nixConfig; };
      shellFiles = shellFragment {
        inherit home workdir owned withDirenv;
        reownNix = sudo;
      };
      # Without sudo nothing can re-own /nix: the docs say to keep the uid
      # (updateRemoteUserUID = false) then.
      reownFiles = {
        entries = [ (text reownNixPath "0755" reownNixScript) ];
      };
      nixLdFiles = util.optionalAttrs withNixLd {
        entries = [ (symlink deps.nixLd.loader "${deps.nixLd.package}/libexec/nix-ld") ];
      };

      baseConfig = {
        User = user;
        WorkingDir = workdir;
        Cmd = [ shellPath ];
        Env = [
          "HOME=${home}"
          "USER=${user}"
          "SHELL=${shellPath}"
          "PATH=${path}"
          "SSL_CERT_FILE=${sslCertFile}"
          "NIX_SSL_CERT_FILE=${sslCertFile}"
          "LANG=C.UTF-8"
        ]
        ++ tzEnv a.packages
        ++ pipEnv
        ++ optional (nixRegistry != null) "NIX_PATH=nixpkgs=flake:nixpkgs"
        ++ optionals withNixLd [
          "NIX_LD=${deps.nixLd.interpreter}"
          "NIX_LD_LIBRARY_PATH=${deps.nixLd.libraryPath}"
        ];
        Labels = {
          "devcontainer.metadata" = toJSON [
            (
              {
                remoteUser = user;
                containerUser = user;
              }
              # Runs as the user each time the container starts, before
              # anything else (the Dev Containers CLI runs image entrypoints).
              // util.optionalAttrs sudo { entrypoint = reownNixPath; }
            )
          ];
        };
      };
    in
    userImage a {
      # sudo comes as the setuid copy; the package itself would put a useless
      # non-setuid sudo and its own /etc/sudoers in the image.
      contents = without (optional sudo deps.sudo) a.packages;
      inherit baseConfig;
      files = [
        userFiles
        nixFiles
        shellFiles
      ]
      ++ optionals sudo [
        sudoFiles
        reownFiles
      ]
      ++ optional withNixLd nixLdFiles;
    };

  # A production container: a non-root user (default app, uid 1000) whose
  # home is the working directory, the packages, CA certificates, and nothing
  # else: no setuid file, no Nix, no shell unless `packages` brings one.
  mkRuntime =
    # Written out for builtins.functionArgs, as mkDevContainer's.
    {
      packages,
      name ? runtimeArgs.name,
      user ? runtimeArgs.user,
      uid ? runtimeArgs.uid,
      gid ? runtimeArgs.gid,
      workdir ? runtimeArgs.workdir,
      maxLayers ? runtimeArgs.maxLayers,
      extraConfig ? runtimeArgs.extraConfig,
      topLayer ? runtimeArgs.topLayer,
      tag ? sharedArgs.tag,
      strategy ? sharedArgs.strategy,
      family ? sharedArgs.family,
      familyFile ? sharedArgs.familyFile,
      format ? sharedArgs.format,
      compression ? sharedArgs.compression,
      compressionLevel ? sharedArgs.compressionLevel,
      created ? sharedArgs.created,
      annotations ? sharedArgs.annotations,
      architecture ? sharedArgs.architecture,
      stream ? sharedArgs.stream,
      sign ? sharedArgs.sign,
      passthru ? sharedArgs.passthru,
      meta ? sharedArgs.meta,
      ...
    }@args:
    let
      a = builderArgs "mkRuntime" runtimeArgs args;
      inherit (a)
        user
        uid
        gid
        workdir
        ;
      baseConfig = {
        # Numeric, so that Kubernetes' runAsNonRoot can check it.
        User = "${toString uid}:${toString gid}";
        WorkingDir = workdir;
        Env = [
          "HOME=${workdir}"
          "USER=${user}"
          "PATH=${workdir}/.local/bin:/usr/local/bin:/usr/bin:/bin"
          "SSL_CERT_FILE=${sslCertFile}"
          "NIX_SSL_CERT_FILE=${sslCertFile}"
          "LANG=C.UTF-8"
        ]
        ++ tzEnv a.packages
        ++ pipEnv;
      };
    in
    userImage a {
      contents = a.packages;
      inherit baseConfig;
      files = [
        (mkUser {
          name = user;
          inherit uid gid;
          home = workdir;
        })
      ];
    };
}
