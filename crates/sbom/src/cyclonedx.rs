//! CycloneDX 1.5 JSON.
//!
//! Store paths are components whose `bom-ref` is the store path; packages are
//! `library`, sources and single files `file` (see [`crate::Kind`]). The image
//! is `metadata.component` (`container`) and depends on its roots.

use serde::Serialize;

use crate::{finish, Entry, Kind, Sbom, TOOL, TOOL_URL, TOOL_VERSION};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Bom {
    #[serde(rename = "$schema")]
    schema: &'static str,
    bom_format: &'static str,
    spec_version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    serial_number: Option<String>,
    version: u32,
    metadata: Metadata,
    components: Vec<Component>,
    dependencies: Vec<Dependency>,
}

#[derive(Serialize)]
struct Metadata {
    timestamp: String,
    tools: Tools,
    component: Component,
}

#[derive(Serialize)]
struct Tools {
    components: Vec<Component>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct Component {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "bom-ref", skip_serializing_if = "Option::is_none")]
    bom_ref: Option<String>,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    hashes: Vec<Hash>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cpe: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    purl: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    external_references: Vec<ExternalReference>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    properties: Vec<Property>,
}

#[derive(Serialize)]
struct Hash {
    alg: &'static str,
    content: String,
}

#[derive(Serialize)]
struct ExternalReference {
    #[serde(rename = "type")]
    kind: &'static str,
    url: &'static str,
}

#[derive(Serialize)]
struct Property {
    name: &'static str,
    value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Dependency {
    #[serde(rename = "ref")]
    reference: String,
    depends_on: Vec<String>,
}

pub(crate) fn document(sbom: &Sbom) -> Vec<u8> {
    let image_ref = sbom.image.reference();
    let image = Component {
        kind: "container",
        bom_ref: Some(image_ref.clone()),
        name: sbom.image.name.clone(),
        version: sbom.image.tag.clone(),
        purl: sbom.image.purl(),
        ..Component::default()
    };
    let tool = Component {
        kind: "application",
        name: TOOL.into(),
        version: Some(TOOL_VERSION.into()),
        external_references: vec![ExternalReference { kind: "website", url: TOOL_URL }],
        ..Component::default()
    };
    // Every component gets an entry, an empty one when it has no
    // dependencies, so "none" is distinguishable from "unknown".
    let mut dependencies = vec![Dependency {
        reference: image_ref,
        depends_on: sbom.roots.iter().map(|r| r.to_string()).collect(),
    }];
    dependencies.extend(sbom.entries.iter().map(|e| Dependency {
        reference: e.info.path.to_string(),
        depends_on: e.deps.iter().map(|d| d.to_string()).collect(),
    }));
    dependencies.sort_by(|a, b| a.reference.cmp(&b.reference));
    let bom = Bom {
        schema: "http://cyclonedx.org/schema/bom-1.5.schema.json",
        bom_format: "CycloneDX",
        spec_version: "1.5",
        serial_number: None,
        version: 1,
        metadata: Metadata {
            timestamp: sbom.image.created.as_str().to_owned(),
            tools: Tools { components: vec![tool] },
            component: image,
        },
        components: sbom.entries.iter().map(component).collect(),
        dependencies,
    };
    finish(bom, |b, id| b.serial_number = Some(format!("urn:uuid:{id}")))
}

fn component(e: &Entry) -> Component {
    let info = e.info;
    let mut properties = Vec::new();
    if let Some(d) = &info.deriver {
        properties.push(Property { name: "nix:deriver", value: d.clone() });
    }
    if let Some(h) = &info.nar_hash {
        properties.push(Property { name: "nix:nar_hash", value: h.to_nix32() });
    }
    // A path only a base image holds has no known NAR: no size rather than a false 0.
    if info.nar_hash.is_some() || info.nar_size > 0 {
        properties.push(Property { name: "nix:nar_size", value: info.nar_size.to_string() });
    }
    if let Some(o) = e.parsed.output {
        properties.push(Property { name: "nix:output", value: o.to_owned() });
    }
    properties.push(Property { name: "nix:store_path", value: info.path.to_string() });
    Component {
        kind: match e.parsed.kind {
            Kind::Package => "library",
            Kind::File => "file",
        },
        bom_ref: Some(info.path.to_string()),
        name: e.parsed.name.to_owned(),
        version: (!e.parsed.version.is_empty()).then(|| e.parsed.version.to_owned()),
        hashes: info
            .nar_hash
            .iter()
            .map(|h| Hash { alg: "SHA-256", content: hex::encode(h.bytes()) })
            .collect(),
        cpe: e.cpe.clone(),
        purl: e.purl.clone(),
        external_references: Vec::new(),
        properties,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use crate::tests::{graph, image, sp};
    use crate::{Format, Sbom};

    fn doc() -> Value {
        let g = graph();
        serde_json::from_slice(&Sbom::new(&g, None, image()).unwrap().to_bytes(Format::CycloneDx)).unwrap()
    }

    fn component<'a>(d: &'a Value, name: &str) -> &'a Value {
        let path = sp(name).to_string();
        d["components"].as_array().unwrap().iter().find(|c| c["bom-ref"] == path.as_str()).unwrap()
    }

    #[test]
    fn every_store_path_is_a_component() {
        let d = doc();
        assert_eq!(d["bomFormat"], "CycloneDX");
        assert_eq!(d["specVersion"], "1.5");
        let refs: Vec<&str> =
            d["components"].as_array().unwrap().iter().map(|c| c["bom-ref"].as_str().unwrap()).collect();
        assert_eq!(refs.len(), 5);
        assert!(refs.windows(2).all(|w| w[0] < w[1]), "sorted by store path: {refs:?}");
        let bin = component(&d, "openssl-3.0.13-bin");
        assert_eq!(bin["type"], "library");
        assert_eq!(bin["name"], "openssl");
        assert_eq!(bin["version"], "3.0.13");
        assert_eq!(bin["purl"], "pkg:nix/openssl@3.0.13?output=bin");
        assert_eq!(bin["cpe"], "cpe:2.3:a:openssl:openssl:3.0.13:*:*:*:*:*:*:*");
        // NAR hash 0x14 repeated (size 20 in the fixture), as hex.
        assert_eq!(bin["hashes"][0]["alg"], "SHA-256");
        assert_eq!(bin["hashes"][0]["content"], "14".repeat(32));
        let props: Vec<(&str, &str)> = bin["properties"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["name"].as_str().unwrap(), p["value"].as_str().unwrap()))
            .collect();
        let path = sp("openssl-3.0.13-bin").to_string();
        assert_eq!(props.len(), 4);
        assert_eq!(props[1], ("nix:nar_size", "20"));
        assert_eq!(props[2], ("nix:output", "bin"));
        assert_eq!(props[3], ("nix:store_path", path.as_str()));
        assert!(props[0].1.starts_with("sha256:") && props[0].0 == "nix:nar_hash");
        let src = component(&d, "source");
        assert_eq!(src["type"], "file");
        assert!(src.get("purl").is_none() && src.get("cpe").is_none() && src.get("version").is_none());
    }

    #[test]
    fn metadata_is_the_image_and_its_time() {
        let d = doc();
        let m = &d["metadata"];
        assert_eq!(m["timestamp"], "2024-05-01T12:00:00Z");
        assert_eq!(m["tools"]["components"][0]["name"], "nix-layer");
        assert_eq!(m["tools"]["components"][0]["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(m["component"]["type"], "container");
        assert_eq!(m["component"]["name"], "ghcr.io/org/hello");
        assert_eq!(m["component"]["version"], "1.0");
        assert_eq!(m["component"]["bom-ref"], "ghcr.io/org/hello:1.0");
        let serial = d["serialNumber"].as_str().unwrap();
        assert!(serial.starts_with("urn:uuid:") && serial.len() == 45, "{serial}");
    }

    #[test]
    fn dependencies_are_the_reference_edges() {
        let d = doc();
        let deps = d["dependencies"].as_array().unwrap();
        assert_eq!(deps.len(), 6, "the image and every path");
        let of = |r: &str| -> Vec<String> {
            let dep = deps.iter().find(|x| x["ref"] == r).unwrap_or_else(|| panic!("no entry for {r}"));
            dep["dependsOn"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
        };
        let sorted = |names: &[&str]| {
            let mut v: Vec<String> = names.iter().map(|n| sp(n).to_string()).collect();
            v.sort();
            v
        };
        // The image depends on its roots: what nothing else references.
        assert_eq!(of("ghcr.io/org/hello:1.0"), sorted(&["hello-2.12.1", "source"]));
        // Self-references are not edges.
        assert_eq!(of(sp("hello-2.12.1").as_str()), sorted(&["glibc-2.39-52", "openssl-3.0.13-bin"]));
        assert_eq!(of(sp("openssl-3.0.13-bin").as_str()), sorted(&["glibc-2.39-52", "openssl-3.0.13"]));
        assert!(of(sp("glibc-2.39-52").as_str()).is_empty());
    }

    #[test]
    fn explicit_roots_and_image_digest() {
        let g = graph();
        let mut i = image();
        i.digest = Some(format!("sha256:{}", "0f".repeat(32)));
        let bytes = Sbom::new(&g, Some(&[sp("hello-2.12.1")]), i).unwrap().to_bytes(Format::CycloneDx);
        let d: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(d["metadata"]["component"]["purl"]
            .as_str()
            .unwrap()
            .starts_with("pkg:oci/hello@sha256:0f0f"));
        let image_dep =
            d["dependencies"].as_array().unwrap().iter().find(|x| x["ref"] == "ghcr.io/org/hello:1.0");
        assert_eq!(image_dep.unwrap()["dependsOn"], serde_json::json!([sp("hello-2.12.1").to_string()]));
    }
}
