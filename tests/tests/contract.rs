//! The settings contract between the operator and `pulse serve`: for each example tenant (and a
//! production variant of it), every variable the operator renders is read by the component it is
//! given to, and every component starts with what it is given. Renaming a setting on one side
//! fails here instead of in a cluster.

use std::collections::{BTreeMap, BTreeSet};

use pulse_kit::settings::Env;
use serde_json::Value;

/// Stand-in for a value the operator takes from a Secret or a mounted file.
const SECRET_VALUE: &str = "placeholder-secret-value-0123456789abcdef";

/// The variable naming identity's mounted keyring file.
const KEYRING_FILE_VAR: &str = "PULSE_IDENTITY_KEYRING_SECRET_FILE";

fn example(name: &str) -> String {
    let path = format!(
        "{}/../manifests/examples/{name}.yaml",
        // Read when the test runs, as the operator's tests do (see `operator/tests/support/root.rs`).
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned())
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The example tenant as a production country would write it: Stripe, Twilio, e-mail through an
/// SMTP server, tokens from identity only (no HS256), no development mode.
fn production(text: &str) -> String {
    let mut tenant: Value = serde_yaml::from_str(text).expect("yaml");
    tenant["spec"]["development"] = Value::Bool(false);
    tenant["spec"]["payments"] = serde_json::json!({
        "provider": "stripe",
        "secretRef": { "name": "pulse-fr-payments" },
        "baseUrl": "https://api.stripe.com",
    });
    tenant["spec"]["sms"] = serde_json::json!({
        "provider": "twilio",
        "baseUrl": "https://api.twilio.com",
        "account": "AC0123456789abcdef0123456789abcdef",
        "from": "+33700000000",
        "authToken": { "name": "pulse-fr-sms", "key": "auth-token" },
    });
    tenant["spec"]["email"] = serde_json::json!({
        "smtpUrlSecret": { "name": "pulse-fr-smtp", "key": "url" },
        "from": "Pulse <no-reply@pulse.example>",
    });
    tenant["spec"]["auth"]["algorithms"] = serde_json::json!(["ES256", "EdDSA"]);
    serde_yaml::to_string(&tenant).expect("yaml")
}

/// The objects `pulse-operator render` prints for `text`.
fn render(text: &str, origin: &str) -> Vec<Value> {
    let stream = pulse_operator::render::render_text(text, origin)
        .unwrap_or_else(|e| panic!("{origin} renders: {e:#}"));
    stream
        .split("\n---")
        .filter_map(|doc| serde_yaml::from_str::<Value>(doc).ok())
        .filter(|doc| doc.is_object())
        .collect()
}

/// What one container of a Deployment is given.
struct Given {
    target: String,
    args: Vec<String>,
    /// Variables set on the container itself (not through the shared ConfigMap).
    own: BTreeMap<String, String>,
    /// Everything it sees, the shared ConfigMap included.
    all: BTreeMap<String, String>,
}

fn containers(objects: &[Value]) -> Vec<Given> {
    let config_maps: BTreeMap<String, BTreeMap<String, String>> = objects
        .iter()
        .filter(|o| o["kind"] == "ConfigMap")
        .map(|o| {
            let data = o["data"]
                .as_object()
                .map(|d| {
                    d.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            (
                o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                data,
            )
        })
        .collect();
    let mut out = Vec::new();
    for deployment in objects.iter().filter(|o| o["kind"] == "Deployment") {
        let spec = &deployment["spec"]["template"]["spec"];
        let all_containers = spec["containers"]
            .as_array()
            .into_iter()
            .chain(spec["initContainers"].as_array())
            .flatten();
        for container in all_containers {
            let args: Vec<String> = container["args"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let target = args
                .iter()
                .skip_while(|a| *a != "--target")
                .nth(1)
                .cloned()
                .unwrap_or_else(|| panic!("{args:?} has no --target"));
            let mut all = BTreeMap::new();
            // A Secret given whole (`envFrom.secretRef`, the tenant's provider credentials) holds
            // what its owner put in it; only the ConfigMaps are the operator's own writing.
            for source in container["envFrom"].as_array().into_iter().flatten() {
                let Some(name) = source["configMapRef"]["name"].as_str() else {
                    continue;
                };
                let data = config_maps
                    .get(name)
                    .unwrap_or_else(|| panic!("envFrom names ConfigMap {name}, not rendered"));
                all.extend(data.clone());
            }
            let mut own = BTreeMap::new();
            for var in container["env"].as_array().into_iter().flatten() {
                let name = var["name"].as_str().unwrap_or_default().to_owned();
                let value = match var["value"].as_str() {
                    Some(value) => value.to_owned(),
                    // What a platform engineer puts in the SMTP Secret: a URL with credentials.
                    None if var["valueFrom"]["secretKeyRef"].is_object()
                        && (name == pulse_kit::settings::notifier::SMTP_URL.var
                            || name == pulse_kit::settings::identity::SMTP_URL.var) =>
                    {
                        "smtps://pulse:placeholder-password@smtp.example.com:465".to_owned()
                    }
                    None if var["valueFrom"]["secretKeyRef"].is_object() => SECRET_VALUE.to_owned(),
                    None => panic!("{name}: a source this test does not know: {var}"),
                };
                own.insert(name, value);
            }
            all.extend(own.clone());
            out.push(Given {
                target,
                args,
                own,
                all,
            });
        }
    }
    out
}

/// Files the operator mounts (identity's keyring): point them at a real file so `pulse` can
/// read it.
fn with_files(
    mut vars: BTreeMap<String, String>,
    keyring_file: &std::path::Path,
) -> BTreeMap<String, String> {
    if let Some(path) = vars.get_mut(KEYRING_FILE_VAR) {
        *path = keyring_file.display().to_string();
    }
    vars
}

/// What every component needs to verify tokens, and what identity alone needs to sign them and
/// send its codes, is given to the right containers.
fn check_token_wiring(objects: &[Value], given: &[Given], origin: &str) {
    let namespace = objects
        .iter()
        .find(|o| o["kind"] == "Namespace")
        .and_then(|o| o["metadata"]["name"].as_str())
        .unwrap_or_else(|| panic!("{origin}: no Namespace"));
    let jwks = format!("http://identity.{namespace}.svc:8080/.well-known/jwks.json");
    // The URL's port is the identity Service's HTTP port.
    let identity_service = objects
        .iter()
        .find(|o| o["kind"] == "Service" && o["metadata"]["name"] == "identity")
        .unwrap_or_else(|| panic!("{origin}: no identity Service"));
    assert!(
        identity_service["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["name"] == "http" && p["port"] == 8080),
        "{origin}: {identity_service}"
    );
    for container in given
        .iter()
        .filter(|c| c.args.first().map(String::as_str) == Some("serve"))
    {
        let target = &container.target;
        assert_eq!(
            container.all.get("PULSE_JWKS_URL"),
            Some(&jwks),
            "{origin}: {target}"
        );
        let algorithms = container
            .all
            .get("PULSE_JWT_ALGORITHMS")
            .unwrap_or_else(|| panic!("{origin}: {target} has no PULSE_JWT_ALGORITHMS"));
        assert!(
            algorithms.split(',').any(|a| a == "ES256" || a == "EdDSA"),
            "{origin}: {target}: {algorithms}"
        );
        for gone in ["PULSE_JWT_ALGORITHM", "PULSE_JWT_PUBLIC_KEY_FILE"] {
            assert!(
                !container.all.contains_key(gone),
                "{origin}: {target} gets {gone}"
            );
        }
        let identity_vars: Vec<&String> = container
            .own
            .keys()
            .filter(|k| k.starts_with("PULSE_IDENTITY_"))
            .collect();
        if target == "identity" {
            for var in [
                KEYRING_FILE_VAR,
                "PULSE_IDENTITY_SIGNING_ALGORITHM",
                "PULSE_IDENTITY_SMS_PROVIDER",
            ] {
                assert!(
                    identity_vars.iter().any(|v| *v == var),
                    "{origin}: identity lacks {var}"
                );
            }
        } else {
            assert!(
                identity_vars.is_empty(),
                "{origin}: {target} gets {identity_vars:?}"
            );
        }
        // Notifier's settings (the SMTP URL, the SMS token) are notifier's alone.
        let notifier_vars: Vec<&String> = container
            .own
            .keys()
            .filter(|k| k.starts_with("PULSE_NOTIFIER_"))
            .collect();
        if target == "notifier" {
            for var in [
                "PULSE_NOTIFIER_IDENTITY_GRPC_URL",
                "PULSE_NOTIFIER_SMS_PROVIDER",
            ] {
                assert!(
                    notifier_vars.iter().any(|v| *v == var),
                    "{origin}: notifier lacks {var}"
                );
            }
        } else {
            assert!(
                notifier_vars.is_empty(),
                "{origin}: {target} gets {notifier_vars:?}"
            );
        }
    }
}

fn check_tenant(text: &str, origin: &str) {
    let objects = render(text, origin);
    let given = containers(&objects);
    assert!(given.len() >= 5, "{origin}: too few containers rendered");
    let shared: BTreeSet<String> = objects
        .iter()
        .filter(|o| o["kind"] == "ConfigMap")
        .flat_map(|o| {
            o["data"]
                .as_object()
                .map(|d| d.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
        })
        .filter(|k| k.starts_with("PULSE_"))
        .collect();
    check_token_wiring(&objects, &given, origin);
    let keyring_file = std::env::temp_dir().join(format!(
        "pulse-contract-test-keyring-{}",
        std::process::id()
    ));
    std::fs::write(&keyring_file, SECRET_VALUE).expect("write keyring");
    let mut read_by_some = BTreeSet::new();
    for container in &given {
        let vars = with_files(container.all.clone(), &keyring_file);
        let env = Env::from_map(vars);
        match container.args.first().map(String::as_str) {
            Some("serve") => {
                pulse::ServeSettings::read(&env, Some(&container.target)).unwrap_or_else(|e| {
                    panic!(
                        "{origin}: `pulse serve --target {}` refuses what the operator gives it: {e:#}",
                        container.target
                    )
                });
            }
            Some("migrate") => {
                env.required(&pulse_kit::settings::server::DATABASE_URL)
                    .unwrap_or_else(|e| panic!("{origin}: `pulse migrate`: {e}"));
            }
            other => panic!("{origin}: unexpected command {other:?}"),
        }
        let read = env.read();
        for var in container.own.keys().filter(|k| k.starts_with("PULSE_")) {
            assert!(
                read.contains(var),
                "{origin}: the operator sets {var} on `pulse {}` for {}, which never reads it",
                container.args.join(" "),
                container.target
            );
        }
        // Every component verifies tokens itself: it must read the shared token settings.
        if container.args.first().map(String::as_str) == Some("serve") {
            for var in ["PULSE_JWT_ALGORITHMS", "PULSE_JWKS_URL", "PULSE_JWT_ISSUER"] {
                assert!(
                    read.contains(var),
                    "{origin}: `pulse serve --target {}` never reads {var}",
                    container.target
                );
            }
        }
        read_by_some.extend(read);
    }
    std::fs::remove_file(&keyring_file).ok();
    for var in &shared {
        assert!(
            read_by_some.contains(var),
            "{origin}: the country ConfigMap sets {var}, which no component reads"
        );
    }
}

#[test]
fn every_example_tenant_gives_each_component_what_it_reads() {
    for name in ["fr", "de"] {
        let text = example(name);
        check_tenant(&text, &format!("manifests/examples/{name}.yaml"));
        check_tenant(
            &production(&text),
            &format!("{name} with stripe, no development mode"),
        );
    }
}

#[test]
fn a_setting_the_operator_renders_but_pulse_ignores_fails_the_check() {
    // The check itself must be able to fail: a variable nobody reads is caught.
    let env = Env::from_map([
        ("PULSE_DATABASE_URL", "postgres://u:p@db/pulse_fr"),
        ("PULSE_JWT_SECRET", SECRET_VALUE),
        ("PULSE_DEVELOPMENT_MODE", "true"),
        ("PULSE_COUNTRY__CODE", "FR"),
        ("PULSE_COUNTRY__TIMEZONE", "Europe/Paris"),
        ("PULSE_COUNTRY__CURRENCY", "EUR"),
        ("PULSE_COUNTRY__LOCALE", "fr-FR"),
        ("PULSE_PAYMENTS_PROVIDER", "stripe"),
    ]);
    pulse::ServeSettings::read(&env, Some("booking")).expect("booking starts");
    assert!(!env.read().contains("PULSE_PAYMENTS_PROVIDER"));
    assert!(env.read().contains("PULSE_DATABASE_URL"));
}
