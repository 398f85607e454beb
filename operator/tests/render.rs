//! `pulse-operator render -f <tenant.yaml>` prints exactly the desired objects, without a cluster.

use std::process::Command;

use serde_json::Value;

#[path = "support/root.rs"]
mod workspace;
use workspace::root;

fn render(file: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pulse-operator"))
        .args(["render", "-f", file])
        .current_dir(root())
        .output()
        .expect("run pulse-operator")
}

#[test]
fn renders_the_example_tenants() {
    for code in ["fr", "de"] {
        let path = format!("manifests/examples/{code}.yaml");
        let out = render(&path);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).expect("UTF-8");
        let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
            .map(|d| serde::Deserialize::deserialize(d).expect("YAML document"))
            .filter(|v: &Value| !v.is_null())
            .collect();

        // The same objects the reconciler applies, in the same order.
        let tenant = pulse_operator::render::parse_tenant(
            &std::fs::read_to_string(root().join(&path)).expect("example"),
            &path,
        )
        .expect("tenant");
        let expected = pulse_operator::resources::desired(&tenant)
            .expect("desired")
            .objects()
            .expect("json");
        assert_eq!(docs, expected, "{path}");
        assert_eq!(docs[0]["kind"], "Namespace");
        assert_eq!(docs[0]["metadata"]["name"], format!("pulse-{code}"));
        assert!(docs.iter().any(|d| d["kind"] == "Ingress"));
    }
}

#[test]
fn render_explains_a_bad_file() {
    let dir = std::env::temp_dir().join(format!("pulse-render-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let bad = dir.join("bad.yaml");
    let fr = std::fs::read_to_string(root().join("manifests/examples/fr.yaml")).expect("fr");
    std::fs::write(
        &bad,
        fr.replace("timezone: Europe/Paris", "timezone: Europe/Pariss"),
    )
    .expect("write");
    let out = render(bad.to_str().expect("path"));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("timezone") && stderr.contains("Europe/Pariss"),
        "{stderr}"
    );

    let campaign = render("manifests/examples/campaign.yaml");
    assert!(!campaign.status.success());
    assert!(String::from_utf8_lossy(&campaign.stderr).contains("not a CountryTenant"));
    std::fs::remove_dir_all(dir).ok();
}
