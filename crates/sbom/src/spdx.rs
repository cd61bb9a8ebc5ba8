//! SPDX 2.3 JSON.
//!
//! One package for the image (`SPDXRef-Image`, which the document
//! DESCRIBES) and one per store path (`SPDXRef-StorePath-<hash part>`); the
//! image CONTAINS every path and DEPENDS_ON its roots, each path DEPENDS_ON
//! what it references. The document namespace ends in a UUID of the content.

use serde::Serialize;

use crate::{finish, ids, Entry, Kind, Sbom, TOOL, TOOL_URL, TOOL_VERSION};

const IMAGE_ID: &str = "SPDXRef-Image";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    spdx_version: &'static str,
    data_license: &'static str,
    #[serde(rename = "SPDXID")]
    spdx_id: &'static str,
    name: String,
    document_namespace: String,
    creation_info: CreationInfo,
    packages: Vec<Package>,
    relationships: Vec<Relationship>,
}

#[derive(Serialize)]
struct CreationInfo {
    created: String,
    creators: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Package {
    #[serde(rename = "SPDXID")]
    spdx_id: String,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    version_info: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    package_file_name: Option<String>,
    download_location: &'static str,
    files_analyzed: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    checksums: Vec<Checksum>,
    primary_package_purpose: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    external_refs: Vec<ExternalRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Checksum {
    algorithm: &'static str,
    checksum_value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExternalRef {
    reference_category: &'static str,
    reference_type: &'static str,
    reference_locator: String,
}

#[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
struct Relationship {
    spdx_element_id: String,
    relationship_type: &'static str,
    related_spdx_element: String,
}

fn purl_ref(purl: String) -> ExternalRef {
    ExternalRef { reference_category: "PACKAGE-MANAGER", reference_type: "purl", reference_locator: purl }
}

fn id_of(path: &nix_layer_graph::StorePath) -> String {
    format!("SPDXRef-StorePath-{}", path.hash_part())
}

pub(crate) fn document(sbom: &Sbom) -> Vec<u8> {
    let image = &sbom.image;
    let mut packages = vec![Package {
        spdx_id: IMAGE_ID.into(),
        name: image.name.clone(),
        version_info: image.tag.clone(),
        package_file_name: None,
        download_location: "NOASSERTION",
        files_analyzed: false,
        checksums: Vec::new(),
        primary_package_purpose: "CONTAINER",
        external_refs: image.purl().into_iter().map(purl_ref).collect(),
        comment: None,
    }];
    packages.extend(sbom.entries.iter().map(package));
    let rel = |from: &str, kind, to: String| Relationship {
        spdx_element_id: from.to_owned(),
        relationship_type: kind,
        related_spdx_element: to,
    };
    let mut relationships = vec![rel("SPDXRef-DOCUMENT", "DESCRIBES", IMAGE_ID.into())];
    relationships.extend(sbom.roots.iter().map(|r| rel(IMAGE_ID, "DEPENDS_ON", id_of(r))));
    for e in &sbom.entries {
        let id = id_of(&e.info.path);
        relationships.push(rel(IMAGE_ID, "CONTAINS", id.clone()));
        relationships.extend(e.deps.iter().map(|d| rel(&id, "DEPENDS_ON", id_of(d))));
    }
    relationships.sort();
    let doc = Document {
        spdx_version: "SPDX-2.3",
        data_license: "CC0-1.0",
        spdx_id: "SPDXRef-DOCUMENT",
        name: image.reference(),
        document_namespace: String::new(),
        creation_info: CreationInfo {
            created: image.created.as_str().to_owned(),
            creators: vec![format!("Tool: {TOOL}-{TOOL_VERSION}")],
        },
        packages,
        relationships,
    };
    let base = format!("{TOOL_URL}/spdx/{}", ids::percent(&image.reference()));
    finish(doc, |d, id| d.document_namespace = format!("{base}-{id}"))
}

fn package(e: &Entry) -> Package {
    let info = e.info;
    let mut external_refs: Vec<ExternalRef> = e.purl.clone().into_iter().map(purl_ref).collect();
    external_refs.extend(e.cpe.clone().map(|c| ExternalRef {
        reference_category: "SECURITY",
        reference_type: "cpe23Type",
        reference_locator: c,
    }));
    Package {
        spdx_id: id_of(&info.path),
        name: e.parsed.name.to_owned(),
        version_info: (!e.parsed.version.is_empty()).then(|| e.parsed.version.to_owned()),
        package_file_name: Some(info.path.to_string()),
        download_location: "NOASSERTION",
        files_analyzed: false,
        checksums: info
            .nar_hash
            .iter()
            .map(|h| Checksum { algorithm: "SHA256", checksum_value: hex::encode(h.bytes()) })
            .collect(),
        primary_package_purpose: match e.parsed.kind {
            Kind::Package => "LIBRARY",
            Kind::File => "FILE",
        },
        external_refs,
        comment: Some(if info.nar_hash.is_some() || info.nar_size > 0 {
            format!(
                "Nix store path{}; NAR size {}; the checksum is the SHA-256 of its NAR serialisation",
                e.parsed.output.map(|o| format!(", output {o}")).unwrap_or_default(),
                info.nar_size
            )
        } else {
            format!(
                "Nix store path{} held by the base image; its NAR is not known",
                e.parsed.output.map(|o| format!(", output {o}")).unwrap_or_default()
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use crate::tests::{graph, image, sp};
    use crate::{Format, Sbom};

    #[test]
    fn packages_and_relationships() {
        let g = graph();
        let d: Value =
            serde_json::from_slice(&Sbom::new(&g, None, image()).unwrap().to_bytes(Format::Spdx)).unwrap();
        assert_eq!(d["spdxVersion"], "SPDX-2.3");
        assert_eq!(d["creationInfo"]["created"], "2024-05-01T12:00:00Z");
        let ns = d["documentNamespace"].as_str().unwrap();
        assert!(
            ns.starts_with("https://github.com/nix-layer/nix-layer/spdx/ghcr.io%2Forg%2Fhello:1.0-"),
            "{ns}"
        );
        let pkgs = d["packages"].as_array().unwrap();
        assert_eq!(pkgs.len(), 6);
        let bin_id = format!("SPDXRef-StorePath-{}", sp("openssl-3.0.13-bin").hash_part());
        let bin = pkgs.iter().find(|p| p["SPDXID"] == bin_id.as_str()).unwrap();
        assert_eq!(bin["name"], "openssl");
        assert_eq!(bin["versionInfo"], "3.0.13");
        assert_eq!(bin["checksums"][0]["checksumValue"], "14".repeat(32));
        assert_eq!(bin["externalRefs"][0]["referenceLocator"], "pkg:nix/openssl@3.0.13?output=bin");
        assert_eq!(bin["externalRefs"][1]["referenceType"], "cpe23Type");
        let rels: Vec<(String, String, String)> = d["relationships"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let s = |k: &str| r[k].as_str().unwrap().to_owned();
                (s("spdxElementId"), s("relationshipType"), s("relatedSpdxElement"))
            })
            .collect();
        let id = |n: &str| format!("SPDXRef-StorePath-{}", sp(n).hash_part());
        assert!(rels.contains(&("SPDXRef-DOCUMENT".into(), "DESCRIBES".into(), "SPDXRef-Image".into())));
        assert!(rels.contains(&(bin_id.clone(), "DEPENDS_ON".into(), id("openssl-3.0.13"))));
        assert!(rels.contains(&("SPDXRef-Image".into(), "DEPENDS_ON".into(), id("hello-2.12.1"))));
        // 1 DESCRIBES + 2 roots + 5 CONTAINS + 5 reference edges.
        assert_eq!(rels.len(), 13);
        assert!(rels.windows(2).all(|w| w[0] < w[1]));
    }
}
