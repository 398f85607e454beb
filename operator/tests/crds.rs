//! The committed CRD files are exactly what `crdgen` generates from the Rust types.

#[path = "support/root.rs"]
mod workspace;
use workspace::root;

#[test]
fn committed_crds_match_the_generated_ones() {
    let files = pulse_operator::crd::crd_files().expect("CRDs render");
    assert_eq!(files.len(), 2);
    for dir in ["crds", "charts/pulse/crds"] {
        for (name, generated) in &files {
            let path = root().join(dir).join(name);
            let committed = std::fs::read_to_string(&path)
                .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
            assert!(
                committed == *generated,
                "{dir}/{name} differs from the generated CRD: run `cargo run -p pulse-operator --bin crdgen` and commit the result"
            );
        }
        let mut present: Vec<String> = std::fs::read_dir(root().join(dir))
            .expect("CRD directory")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".yaml"))
            .collect();
        present.sort();
        let mut expected: Vec<String> = files.iter().map(|(n, _)| (*n).to_owned()).collect();
        expected.sort();
        assert_eq!(present, expected, "{dir} holds stale CRD files");
    }
}

/// The printer column names of a CRD version.
fn column_names(version: &serde_json::Value) -> Vec<&str> {
    version["additionalPrinterColumns"]
        .as_array()
        .expect("columns")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect()
}

#[test]
fn crds_have_the_names_printer_columns_and_status() {
    let files = pulse_operator::crd::crd_files().expect("CRDs render");
    let tenant: serde_json::Value = serde_yaml::from_str(&files[0].1).expect("YAML");
    assert_eq!(tenant["metadata"]["name"], "countrytenants.pulse.dev");
    assert_eq!(tenant["spec"]["scope"], "Cluster");
    assert_eq!(tenant["spec"]["names"]["shortNames"][0], "ct");
    let version = &tenant["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert!(version["subresources"]["status"].is_object());
    let columns = column_names(version);
    for column in ["Code", "Ready", "URL", "Development", "Age"] {
        assert!(columns.contains(&column), "{columns:?}");
    }
    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let required: Vec<&str> = spec["required"]
        .as_array()
        .expect("required")
        .iter()
        .filter_map(|r| r.as_str())
        .collect();
    assert!(required.contains(&"payments"), "{required:?}");
    assert!(required.contains(&"sms"), "{required:?}");
    assert_eq!(spec["properties"]["payments"].get("nullable"), None);
    assert_eq!(spec["properties"]["sms"].get("nullable"), None);
    let secrets = &spec["properties"]["secrets"];
    assert!(
        secrets["required"]
            .as_array()
            .expect("required secrets")
            .contains(&serde_json::json!("identityKeyring")),
        "{secrets}"
    );
    assert!(
        secrets["properties"]["jwt"]["properties"]
            .get("publicKey")
            .is_none()
    );
    let algorithms = &spec["properties"]["auth"]["properties"]["algorithms"];
    assert_eq!(algorithms["default"], serde_json::json!(["EdDSA"]));
    assert_eq!(algorithms["x-kubernetes-list-type"], "set");
    assert_eq!(
        algorithms["items"]["enum"],
        serde_json::json!(["HS256", "ES256", "EdDSA"])
    );
    assert_eq!(spec["properties"]["development"]["default"], false);
    let conditions =
        &version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(conditions["x-kubernetes-list-map-keys"][0], "type");

    let campaign: serde_json::Value = serde_yaml::from_str(&files[1].1).expect("YAML");
    assert_eq!(campaign["spec"]["scope"], "Namespaced");
    assert_eq!(campaign["spec"]["names"]["shortNames"][0], "sk");
    let version = &campaign["spec"]["versions"][0];
    assert!(version["subresources"]["status"].is_object());
    let columns = column_names(version);
    for column in [
        "Phase",
        "Ready",
        "Stock",
        "Sold",
        "Remaining",
        "Starts",
        "Ends",
    ] {
        assert!(columns.contains(&column), "{columns:?}");
    }
}
