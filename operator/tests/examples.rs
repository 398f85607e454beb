//! `manifests/examples/*.yaml` are valid against the generated CRD schemas: structural schema
//! (types, patterns, bounds, required fields, enums) with `jsonschema`, and the
//! `x-kubernetes-validations` CEL rules with `kube-cel`, after applying the schema defaults as
//! the API server does. Broken variants of the examples must be refused.

use std::path::{Path, PathBuf};

use pulse_operator::crd::{CountryTenant, SeckillCampaign};
use serde_json::{Value, json};

#[path = "support/root.rs"]
mod workspace;
use workspace::root;

fn schema(kind: &str) -> Value {
    let file = match kind {
        "CountryTenant" => "countrytenant.yaml",
        "SeckillCampaign" => "seckillcampaign.yaml",
        other => panic!("no CRD for kind {other}"),
    };
    let text = std::fs::read_to_string(root().join("crds").join(file)).expect("CRD file");
    let crd: Value = serde_yaml::from_str(&text).expect("CRD YAML");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// Validates like the API server: defaults, structural schema, CEL rules (with `old` for
/// transition rules). Returns the defaulted object or every error.
fn validate(object: &Value, old: Option<&Value>) -> Result<Value, Vec<String>> {
    let kind = object["kind"].as_str().expect("kind");
    assert_eq!(object["apiVersion"], "pulse.dev/v1alpha1");
    let schema = schema(kind);
    let defaulted = kube_cel::apply_defaults(&schema, object);
    let validator = jsonschema::draft4::new(&schema).expect("the CRD schema compiles");
    let mut errors: Vec<String> = validator
        .iter_errors(&defaulted)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    let old = old.map(|o| kube_cel::apply_defaults(&schema, o));
    if let Err(cel) = kube_cel::validate(&schema, &defaulted, old.as_ref()) {
        errors.extend(cel.as_slice().iter().map(|e| e.to_string()));
    }
    if errors.is_empty() {
        Ok(defaulted)
    } else {
        Err(errors)
    }
}

fn read(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("example file");
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("YAML document"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn example(name: &str) -> Value {
    read(&root().join("manifests/examples").join(name))
        .into_iter()
        .next()
        .expect("one document")
}

fn examples() -> Vec<(PathBuf, Value)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(root().join("manifests/examples"))
        .expect("examples directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .flat_map(|p| read(&p).into_iter().map(move |v| (p.clone(), v)))
        .collect()
}

#[test]
fn every_example_is_valid_and_usable() {
    let all = examples();
    let kinds: Vec<&str> = all.iter().filter_map(|(_, v)| v["kind"].as_str()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "CountryTenant").count(),
        2,
        "{kinds:?}"
    );
    assert!(kinds.contains(&"SeckillCampaign"), "{kinds:?}");
    for (path, object) in &all {
        let defaulted = validate(object, None).unwrap_or_else(|errors| {
            panic!("{} is invalid:\n{}", path.display(), errors.join("\n"))
        });
        match object["kind"].as_str() {
            Some("CountryTenant") => {
                let tenant: CountryTenant =
                    serde_json::from_value(defaulted).expect("CountryTenant");
                let desired = pulse_operator::resources::desired(&tenant)
                    .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
                assert!(!desired.components.is_empty());
                // `./dev up` and `pulse` read the same file as their country configuration.
                let loaded = pulse_kit::config::CountryConfig::load(Some(path))
                    .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
                assert_eq!(loaded, tenant.spec.country, "{}", path.display());
            }
            Some("SeckillCampaign") => {
                let campaign: SeckillCampaign =
                    serde_json::from_value(defaulted).expect("SeckillCampaign");
                assert!(
                    campaign
                        .metadata
                        .namespace
                        .as_deref()
                        .is_some_and(|ns| ns.starts_with("pulse-"))
                );
                assert!(campaign.spec.ends_at > campaign.spec.starts_at);
            }
            other => panic!("{}: unexpected kind {other:?}", path.display()),
        }
    }
}

fn set(mut object: Value, pointer: &str, value: Value) -> Value {
    *object
        .pointer_mut(pointer)
        .unwrap_or_else(|| panic!("no {pointer}")) = value;
    object
}

/// `object` with `key` (absent or not) set to `value`.
fn with(mut object: Value, key: &str, value: Value) -> Value {
    object[key] = value;
    object
}

/// `object` with `spec.<key>` (absent or not) set to `value`.
fn with_spec(mut object: Value, key: &str, value: Value) -> Value {
    object["spec"][key] = value;
    object
}

fn remove(mut object: Value, parent: &str, key: &str) -> Value {
    object
        .pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("no {parent}"))
        .remove(key);
    object
}

fn assert_refused(object: &Value, old: Option<&Value>, needle: &str, what: &str) {
    match validate(object, old) {
        Ok(_) => panic!("{what}: accepted, but it must be refused"),
        Err(errors) => assert!(
            errors.iter().any(|e| e.contains(needle)),
            "{what}: refused, but no error mentions `{needle}`: {errors:?}"
        ),
    }
}

#[test]
fn broken_tenants_are_refused() {
    let fr = example("fr.yaml");
    assert_refused(
        &set(fr.clone(), "/spec/country/code", json!("fr")),
        None,
        "^[A-Z]{2}$",
        "lower-case code",
    );
    assert_refused(
        &set(fr.clone(), "/metadata/name", json!("france")),
        None,
        "metadata.name must be the country code",
        "name differs from the code",
    );
    assert_refused(
        &set(
            fr.clone(),
            "/spec/components/booking/minReplicas",
            json!(11),
        ),
        None,
        "minReplicas must not be greater than maxReplicas",
        "min > max",
    );
    assert_refused(
        &set(fr.clone(), "/spec/components/booking/maxReplicas", json!(0)),
        None,
        "minimum",
        "zero replicas",
    );
    // Tokens: identity must have an algorithm to sign with; HS256 only with its secret.
    assert_refused(
        &set(fr.clone(), "/spec/auth/algorithms", json!(["HS256"])),
        None,
        "auth.algorithms must contain ES256 or EdDSA",
        "algorithms without ES256 or EdDSA",
    );
    assert_refused(
        &set(fr.clone(), "/spec/auth/algorithms", json!([])),
        None,
        "auth.algorithms must contain ES256 or EdDSA",
        "no algorithm at all",
    );
    assert_refused(
        &remove(fr.clone(), "/spec/secrets", "jwt"),
        None,
        "lists HS256, which needs secrets.jwt.secret",
        "HS256 without its secret",
    );
    assert_refused(
        &set(
            fr.clone(),
            "/spec/auth/algorithms",
            json!(["EdDSA", "RS256"]),
        ),
        None,
        "RS256",
        "an algorithm identity does not publish",
    );
    assert_refused(
        &set(fr.clone(), "/spec/auth/keyRotationDays", json!(0)),
        None,
        "minimum",
        "a zero rotation period",
    );
    let eddsa_only = remove(
        set(fr.clone(), "/spec/auth/algorithms", json!(["EdDSA"])),
        "/spec/secrets",
        "jwt",
    );
    validate(&eddsa_only, None).expect("EdDSA without any shared secret");
    let defaulted = validate(&remove(fr.clone(), "/spec/auth", "algorithms"), None)
        .expect("algorithms left to the default");
    assert_eq!(defaulted["spec"]["auth"]["algorithms"], json!(["EdDSA"]));
    // Identity's keyring: required, a Secret key, never a value.
    assert_refused(
        &remove(fr.clone(), "/spec/secrets", "identityKeyring"),
        None,
        "\"identityKeyring\" is a required property",
        "no identity keyring",
    );
    assert_refused(
        &set(
            fr.clone(),
            "/spec/secrets/identityKeyring",
            json!("0123456789abcdef0123456789abcdef"),
        ),
        None,
        "object",
        "an inlined keyring",
    );
    assert_refused(
        &set(fr.clone(), "/spec/deletionPolicy", json!("Keep")),
        None,
        "Keep",
        "unknown deletion policy",
    );
    assert_refused(
        &set(fr.clone(), "/spec/ingress/host", json!("FR.pulse.example")),
        None,
        "FR.pulse.example",
        "upper-case host",
    );
    assert_refused(
        &remove(fr.clone(), "/spec/secrets", "database"),
        None,
        "database",
        "no database secret",
    );
    assert_refused(
        &remove(fr.clone(), "/spec", "image"),
        None,
        "image",
        "no image",
    );
    // Payments: required, the sandbox only on a development tenant, Stripe with its Secret.
    assert_refused(
        &remove(fr.clone(), "/spec", "payments"),
        None,
        "payments",
        "no payment provider",
    );
    assert_refused(
        &set(fr.clone(), "/spec/development", json!(false)),
        None,
        "payments.provider sandbox lets anyone pay any order with no real money",
        "sandbox without development",
    );
    assert_refused(
        &remove(fr.clone(), "/spec", "development"),
        None,
        "payments.provider sandbox lets anyone pay any order with no real money",
        "sandbox with development left to its default",
    );
    assert_refused(
        &set(fr.clone(), "/spec/payments/provider", json!("stripe")),
        None,
        "payments.provider stripe needs payments.secretRef",
        "stripe without its Secret",
    );
    assert_refused(
        &set(fr.clone(), "/spec/payments/provider", json!("paypal")),
        None,
        "paypal",
        "unknown provider",
    );
    // A production tenant also sends its codes with Twilio (the SMS sandbox is development-only).
    let twilio = json!({
        "provider": "twilio",
        "account": "AC0123456789abcdef0123456789abcdef",
        "from": "+33700000000",
        "authToken": {"name": "pulse-fr-sms", "key": "auth-token"},
    });
    let stripe = |base_url: Option<&str>| {
        let mut payments =
            json!({"provider": "stripe", "secretRef": {"name": "pulse-fr-payments"}});
        if let Some(url) = base_url {
            payments["baseUrl"] = json!(url);
        }
        let production = remove(fr.clone(), "/spec", "development");
        let production = set(production, "/spec/sms", twilio.clone());
        set(production, "/spec/payments", payments)
    };
    let defaulted = validate(&stripe(None), None).expect("a production tenant with Stripe");
    assert_eq!(defaulted["spec"]["development"], false);
    assert_refused(
        &stripe(Some("stripe.example")),
        None,
        "stripe.example",
        "a base URL without a scheme",
    );
    validate(
        &stripe(Some("https://stripe-mock.pulse-dev.svc:12111")),
        None,
    )
    .expect("a base URL");
    // SMS: required, the sandbox only on a development tenant, Twilio with what it needs.
    let paid = |tenant: Value| {
        set(
            tenant,
            "/spec/payments",
            json!({"provider": "stripe", "secretRef": {"name": "pulse-fr-payments"}}),
        )
    };
    assert_refused(
        &remove(fr.clone(), "/spec", "sms"),
        None,
        "\"sms\" is a required property",
        "no SMS provider",
    );
    assert_refused(
        &set(paid(fr.clone()), "/spec/development", json!(false)),
        None,
        "sms.provider sandbox writes sign-in codes to a file",
        "SMS sandbox without development",
    );
    assert_refused(
        &remove(paid(fr.clone()), "/spec", "development"),
        None,
        "sms.provider sandbox writes sign-in codes to a file",
        "SMS sandbox with development left to its default",
    );
    assert_refused(
        &set(fr.clone(), "/spec/sms/provider", json!("ovh")),
        None,
        "ovh",
        "unknown SMS provider",
    );
    let production = |sms: Value| {
        let tenant = remove(paid(fr.clone()), "/spec", "development");
        set(tenant, "/spec/sms", sms)
    };
    validate(&production(twilio.clone()), None).expect("a production tenant with Twilio");
    for field in ["account", "from", "authToken"] {
        assert_refused(
            &production(remove(twilio.clone(), "", field)),
            None,
            "sms.provider twilio needs sms.account",
            &format!("twilio without {field}"),
        );
    }
    assert_refused(
        &production(set(twilio.clone(), "/from", json!("0700000000"))),
        None,
        "0700000000",
        "a sender number that is not E.164",
    );
    assert_refused(
        &production(set(twilio.clone(), "/account", json!("AC/../x"))),
        None,
        "AC/../x",
        "an account SID that could leave the URL path",
    );
    assert_refused(
        &production(with(twilio.clone(), "baseUrl", json!("api.twilio.com"))),
        None,
        "api.twilio.com",
        "an SMS base URL without a scheme",
    );
    validate(
        &production(with(
            twilio.clone(),
            "baseUrl",
            json!("https://twilio-mock.pulse-dev.svc:4010"),
        )),
        None,
    )
    .expect("an SMS base URL");
    // E-mail: optional; a Secret key for the SMTP URL, never a value, and a sender address.
    let email = json!({
        "smtpUrlSecret": {"name": "pulse-fr-smtp", "key": "url"},
        "from": "Pulse France <no-reply@fr.pulse.example>",
    });
    let defaulted = validate(&with_spec(fr.clone(), "email", email.clone()), None)
        .expect("a tenant with e-mail");
    let tenant: CountryTenant = serde_json::from_value(defaulted).expect("CountryTenant");
    pulse_operator::resources::desired(&tenant).expect("renders with e-mail");
    validate(
        &with_spec(
            fr.clone(),
            "email",
            set(email.clone(), "/from", json!("no-reply@fr.pulse.example")),
        ),
        None,
    )
    .expect("a bare sender address");
    for from in [
        "Pulse France",
        "@fr.pulse.example",
        "no-reply@",
        "Pulse <no-reply @ fr.pulse.example>",
    ] {
        assert_refused(
            &with_spec(
                fr.clone(),
                "email",
                set(email.clone(), "/from", json!(from)),
            ),
            None,
            "email.from must be a sender address",
            &format!("sender {from:?}"),
        );
    }
    assert_refused(
        &with_spec(
            fr.clone(),
            "email",
            set(
                email.clone(),
                "/from",
                json!("no-reply@fr.pulse.example\r\nBcc: all@example.com"),
            ),
        ),
        None,
        "Bcc",
        "a sender with a line break",
    );
    assert_refused(
        &with_spec(fr.clone(), "email", remove(email.clone(), "", "from")),
        None,
        "\"from\" is a required property",
        "e-mail without a sender",
    );
    assert_refused(
        &with_spec(
            fr.clone(),
            "email",
            set(
                email.clone(),
                "/smtpUrlSecret",
                json!("smtps://user:password@smtp.example:465"),
            ),
        ),
        None,
        "object",
        "an inlined SMTP URL",
    );
    // The country's reminder time is part of its configuration.
    let defaulted = validate(&fr, None).expect("fr");
    assert_eq!(
        defaulted["spec"]["country"]["notifications"]["reminderTime"],
        "18:00"
    );
    assert_refused(
        &with_spec(
            fr.clone(),
            "country",
            with(
                fr["spec"]["country"].clone(),
                "notifications",
                json!({"reminderTime": "25:00"}),
            ),
        ),
        None,
        "25:00",
        "a reminder time that is no time of day",
    );
    // A transition: the code cannot change on update.
    let renamed = set(fr.clone(), "/spec/country/code", json!("DE"));
    assert_refused(
        &renamed,
        Some(&fr),
        "country.code is immutable",
        "code change",
    );
    // And the untouched example passes as an update of itself.
    validate(&fr, Some(&fr)).expect("unchanged update");
}

#[test]
fn broken_campaigns_are_refused() {
    let campaign = example("campaign.yaml");
    assert_refused(
        &set(campaign.clone(), "/spec/stock", json!(-1)),
        None,
        "minimum",
        "negative stock",
    );
    assert_refused(
        &set(campaign.clone(), "/spec/perUserLimit", json!(0)),
        None,
        "minimum",
        "zero per-user limit",
    );
    assert_refused(
        &set(
            campaign.clone(),
            "/spec/endsAt",
            json!("2026-11-27T07:00:00Z"),
        ),
        None,
        "endsAt must be after startsAt",
        "ends before it starts",
    );

    // Stock is immutable once the campaign is active, free while it is scheduled.
    let restocked = set(campaign.clone(), "/spec/stock", json!(600));
    let active = |object: &Value, phase: &str| {
        let mut o = object.clone();
        o["status"] = json!({"phase": phase, "conditions": []});
        o
    };
    assert_refused(
        &active(&restocked, "Active"),
        Some(&active(&campaign, "Active")),
        "spec.stock is immutable",
        "restock while active",
    );
    validate(
        &active(&restocked, "Scheduled"),
        Some(&active(&campaign, "Scheduled")),
    )
    .expect("restock while scheduled");
    validate(&restocked, Some(&campaign)).expect("restock before any status");
}

/// `web` serves static files and has smaller default resources than the other components:
/// the API server's defaulting (the CRD schema) and a tenant read from a file (`pulse-operator
/// render -f`) give it the same ones, whichever of its fields the tenant sets.
#[test]
fn web_gets_its_own_defaults_from_the_api_server_and_from_a_file() {
    use pulse_operator::crd::{Component, ResourceAmounts, ResourceSpec};
    let fr = example("fr.yaml");
    let web = ResourceSpec::web();
    let custom = |cpu: Option<&str>, memory: Option<&str>| ResourceAmounts {
        cpu: cpu.map(str::to_owned),
        memory: memory.map(str::to_owned),
    };
    let cases: [(Option<Value>, ResourceSpec); 5] = [
        (None, web.clone()),
        (Some(json!({ "minReplicas": 3 })), web.clone()),
        (Some(json!({ "resources": {} })), web.clone()),
        (
            Some(json!({ "resources": { "limits": { "memory": "1Gi" } } })),
            ResourceSpec {
                requests: web.requests.clone(),
                limits: custom(None, Some("1Gi")),
            },
        ),
        (
            Some(json!({ "resources": { "requests": { "cpu": "20m" } } })),
            ResourceSpec {
                requests: custom(Some("20m"), None),
                limits: web.limits.clone(),
            },
        ),
    ];
    for (spec, expected) in cases {
        let mut tenant = fr.clone();
        if let Some(spec) = &spec {
            tenant["spec"]["components"]["web"] = spec.clone();
        }
        let defaulted = validate(&tenant, None).expect("valid");
        let from_server: CountryTenant = serde_json::from_value(defaulted).expect("tenant");
        let text = serde_yaml::to_string(&tenant).expect("YAML");
        let from_file =
            pulse_operator::render::parse_tenant(&text, "fr.yaml").expect("a tenant from a file");
        for (origin, read) in [("server", &from_server), ("file", &from_file)] {
            let components = &read.spec.components;
            assert_eq!(
                components.get(Component::Web).resources,
                expected,
                "{origin}: {spec:?}"
            );
            assert!(components.get(Component::Web).enabled);
            // The others keep theirs: identity is left to the defaults in fr.yaml.
            assert_eq!(
                components.get(Component::Identity).resources,
                ResourceSpec::default(),
                "{origin}"
            );
        }
        assert_eq!(from_server.spec.components, from_file.spec.components);
    }
    // A bad field of web is named like any other.
    let mut bad = fr.clone();
    bad["spec"]["components"]["web"] = json!({ "minReplicas": "two" });
    let text = serde_yaml::to_string(&bad).expect("YAML");
    let err = pulse_operator::render::parse_tenant(&text, "fr.yaml")
        .expect_err("a string for a number")
        .to_string();
    assert!(
        err.contains("spec.components.web") && err.contains("minReplicas"),
        "{err}"
    );
}
