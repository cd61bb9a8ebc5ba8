"""Reference output for nix-layer-tar's byte-for-byte tests, from CPython's tarfile.

Usage: oracle.py MODE < request.json > output
  archive      entries -> a PAX archive written with tarfile.open(mode="w|")
  headers      entries -> the concatenated header blocks (TarInfo.tobuf), no data
  store-layer  {"paths", "uid", "gid", "uname", "gname", "mtime"} -> a store layer
               laid out the way nixpkgs' stream_layered_image.py lays one out

An entry is {"name": hex, "type": "file"|"dir"|"symlink", "target": hex,
"mode", "uid", "gid", "uname", "gname", "mtime", "size", "data": hex}; names
and targets are hex so that non-UTF-8 bytes survive JSON.
"""

import io
import json
import os
import pathlib
import sys
import tarfile

KINDS = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE}


def member(spec):
    info = tarfile.TarInfo(os.fsdecode(bytes.fromhex(spec["name"])))
    info.type = KINDS[spec["type"]]
    if spec["type"] == "symlink":
        info.linkname = os.fsdecode(bytes.fromhex(spec["target"]))
    info.size = spec["size"] if spec["type"] == "file" else 0
    for field in ("mode", "uid", "gid", "uname", "gname", "mtime"):
        setattr(info, field, spec[field])
    return info


def write_archive(entries, out):
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for spec in entries:
            info = member(spec)
            if info.isreg():
                tar.addfile(info, io.BytesIO(bytes.fromhex(spec["data"])))
            else:
                tar.addfile(info)


def write_headers(entries, out):
    for spec in entries:
        out.write(member(spec).tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape"))


def write_store_layer(conf, out):
    def own(info):
        info.uid, info.gid = conf["uid"], conf["gid"]
        info.uname, info.gname = conf["uname"], conf["gname"]
        info.mtime = conf["mtime"]
        return info

    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for top in ("/nix", "/nix/store"):
            info = tarfile.TarInfo(top)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(own(info))

        for root in map(pathlib.Path, conf["paths"]):
            # A symlinked store path is archived as the link alone.
            found = [root] if root.is_symlink() else [root, *root.rglob("*")]
            for path in sorted(found):
                info = tar.gettarinfo(path)
                info.name = "/" + info.name
                if info.islnk():
                    # Second names of an inode are stored as whole files.
                    info.type = tarfile.REGTYPE
                    info.linkname = ""
                    info.size = path.stat().st_size
                own(info)
                if info.isreg():
                    with open(path, "rb") as data:
                        tar.addfile(info, data)
                else:
                    tar.addfile(info)


def main():
    mode = sys.argv[1]
    request = json.load(sys.stdin)
    out = sys.stdout.buffer
    if mode == "archive":
        write_archive(request, out)
    elif mode == "headers":
        write_headers(request, out)
    elif mode == "store-layer":
        write_store_layer(request, out)
    else:
        sys.exit(f"unknown mode {mode}")
    out.flush()


if __name__ == "__main__":
    main()
