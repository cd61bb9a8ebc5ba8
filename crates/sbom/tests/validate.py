"""Validates SBOM files; exits 1 naming every file that is invalid and why.

*.cdx.json: the official CycloneDX 1.5 JSON schema (strict, with format
checks), purls that parse and print back unchanged, and dependency refs that
name components of the document. *.spdx.json: spdx-tools' full validation of
SPDX 2.3 (fields, SPDX ids, relationships, purl and CPE locators).
"""

import json
import sys


def cyclonedx(path):
    # Imported here: each library takes seconds to load on a busy machine.
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator
    from packageurl import PackageURL

    text = open(path, encoding="utf-8").read()
    error = JsonStrictValidator(SchemaVersion.V1_5).validate_str(text)
    if error is not None:
        return [f"schema: {error}"]
    bom = json.loads(text)
    problems = []
    components = bom.get("components", []) + [bom["metadata"]["component"]]
    for c in components:
        purl = c.get("purl")
        if purl is not None and PackageURL.from_string(purl).to_string() != purl:
            problems.append(f"purl {purl} is not canonical: {PackageURL.from_string(purl).to_string()}")
    refs = {c["bom-ref"] for c in components}
    for d in bom.get("dependencies", []):
        for r in [d["ref"]] + d.get("dependsOn", []):
            if r not in refs:
                problems.append(f"dependency ref {r} is not a component")
    return problems


def spdx(path):
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    try:
        doc = parse_file(path)
    except Exception as e:  # the parser reports missing or malformed fields this way
        return [f"parse: {e}"]
    return [m.validation_message for m in validate_full_spdx_document(doc, "SPDX-2.3")]


def main():
    bad = 0
    for path in sys.argv[1:]:
        if path.endswith(".cdx.json"):
            problems = cyclonedx(path)
        elif path.endswith(".spdx.json"):
            problems = spdx(path)
        else:
            problems = ["unknown kind (name it *.cdx.json or *.spdx.json)"]
        if problems:
            bad += 1
            for p in problems:
                print(f"invalid {path}: {p}", file=sys.stderr)
        else:
            print(f"valid {path}")
    sys.exit(1 if bad else 0)


main()
