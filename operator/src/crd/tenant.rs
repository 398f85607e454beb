//! `CountryTenant`: one country of Pulse, cluster-scoped.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use pulse_kit::config::CountryConfig;
use schemars::{JsonSchema, Schema};
use serde::{Deserialize, Serialize};

use super::condition::Condition;

/// Pattern of a Kubernetes object name (DNS-1123 subdomain, as Secrets and Ingress classes use).
const DNS_SUBDOMAIN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// Pattern of a Kubernetes resource quantity (`100m`, `0.5`, `128Mi`, `1G`).
const QUANTITY: &str = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$";

/// A country served by Pulse. The operator turns it into namespace `pulse-<code>` with the
/// country's ConfigMap and, per enabled component, a Deployment, Service, HorizontalPodAutoscaler
/// and PodDisruptionBudget, plus the Ingress `pulse` and, for notifier's event stream, the
/// unbuffered Ingress `pulse-stream`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "pulse.dev",
    version = "v1alpha1",
    kind = "CountryTenant",
    plural = "countrytenants",
    singular = "countrytenant",
    shortname = "ct",
    category = "pulse",
    status = "CountryTenantStatus",
    derive = "PartialEq",
    doc = "A country served by Pulse: the operator reconciles it into namespace pulse-<code> with the country's services.",
    validation = kube::core::Rule::new("self.metadata.name == self.spec.country.code.lowerAscii()")
        .message("metadata.name must be the country code in lower case (fr for FR)"),
    printcolumn = r#"{"name":"Code","type":"string","jsonPath":".spec.country.code"}"#,
    printcolumn = r#"{"name":"Namespace","type":"string","jsonPath":".status.namespace"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".status.url"}"#,
    printcolumn = r#"{"name":"Development","type":"boolean","jsonPath":".spec.development"}"#,
    printcolumn = r#"{"name":"Payments","type":"string","priority":1,"jsonPath":".spec.payments.provider"}"#,
    printcolumn = r#"{"name":"SMS","type":"string","priority":1,"jsonPath":".spec.sms.provider"}"#,
    printcolumn = r#"{"name":"Image","type":"string","priority":1,"jsonPath":".spec.image"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = kube::core::Rule::new("!self.auth.algorithms.exists(a, a == 'HS256') || has(self.secrets.jwt.secret)")
        .message("auth.algorithms lists HS256, which needs secrets.jwt.secret (the shared secret, at least 32 bytes): reference it, or leave HS256 out"),
    validation = kube::core::Rule::new("self.country.code == oldSelf.country.code")
        .message("country.code is immutable"),
    validation = kube::core::Rule::new("!has(self.payments) || self.payments.provider != 'sandbox' || (has(self.development) && self.development)")
        .message("payments.provider sandbox lets anyone pay any order with no real money and is for development only: set development: true on a development cluster, or use provider stripe with payments.secretRef"),
    validation = kube::core::Rule::new("!has(self.sms) || self.sms.provider != 'sandbox' || (has(self.development) && self.development)")
        .message("sms.provider sandbox writes sign-in codes to a file instead of sending them and is for development only: set development: true on a development cluster, or use provider twilio with sms.account, sms.from and sms.authToken")
)]
pub struct CountryTenantSpec {
    /// Human-readable name of the country (`France`).
    #[schemars(length(min = 1, max = 64))]
    pub display_name: String,
    /// The country configuration, the same struct the services load
    /// (`pulse_kit::config::CountryConfig`); rendered into the ConfigMap as `PULSE_COUNTRY__*`.
    pub country: CountryConfig,
    /// Container image holding the `pulse` binary (`pulse:0.1.0`, usually with a registry).
    #[schemars(length(min = 1))]
    pub image: String,
    /// Image pull policy of the containers; Kubernetes' default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// Per-component settings; every component is enabled with the defaults when omitted.
    #[serde(default)]
    pub components: Components,
    /// Public HTTP routing; no Ingress when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,
    /// Which tokens are accepted and how identity signs them.
    #[serde(default)]
    pub auth: AuthSpec,
    /// References to Secrets in namespace `pulse-<code>` (never the values themselves).
    pub secrets: SecretRefs,
    /// How `ordering` takes payments. Required: a tenant must choose its provider explicitly,
    /// because `ordering`'s own fallback, `sandbox`, lets anyone pay any order with no real money.
    // An `Option` only so that a tenant stored before the field existed can still be read, and
    // be reported as `Degraded` instead of deployed; the schema requires it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub payments: Option<PaymentsSpec>,
    /// How `identity` sends sign-in codes and `notifier` sends SMS notifications (both use the
    /// same provider and credentials). Required for the same reason as `payments`: the
    /// `sandbox` provider sends nothing and writes the messages to a file.
    // An `Option` only so that a tenant stored before the field existed can still be read, and
    // be reported as `Degraded` instead of deployed; the schema requires it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub sms: Option<SmsSpec>,
    /// How `notifier` sends e-mail notifications: an SMTP server and the sender. When omitted,
    /// `notifier` sends no e-mail and records each e-mail delivery as `no_provider` (in-app and
    /// SMS notifications still go out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailSpec>,
    /// A development tenant (a laptop or CI cluster): development-only parts such as the
    /// `sandbox` payment and SMS providers may run (`PULSE_DEVELOPMENT_MODE`). Never in production.
    #[serde(default)]
    pub development: bool,
    /// What happens to namespace `pulse-<code>` when the tenant is deleted. The operator's
    /// objects (Deployments, Services, …) are owned by the tenant and always go with it;
    /// `Retain` keeps the namespace and what else lives in it (Secrets), `Delete` deletes it.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// Image pull policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PullPolicy {
    /// Always pull.
    Always,
    /// Pull when the node does not have the image.
    IfNotPresent,
    /// Never pull.
    Never,
}

impl PullPolicy {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

/// What deleting a tenant does to its namespace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeletionPolicy {
    /// Keep the namespace (and its Secrets); the operator's objects are garbage-collected.
    #[default]
    Retain,
    /// Delete the namespace and everything in it.
    Delete,
}

/// The components of Pulse, in start-up order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    /// Users, OTP, signing keys.
    Identity,
    /// Practitioners, slots, appointments.
    Booking,
    /// Campaigns, vouchers, wallets.
    Marketing,
    /// Products, stock, orders, payments.
    Ordering,
    /// Notifications and reminders.
    Notifier,
    /// The patient and buyer web app: static files embedded in the binary, served at `/`.
    Web,
}

impl Component {
    /// Every component, in start-up order.
    pub const ALL: [Component; 6] = [
        Component::Identity,
        Component::Booking,
        Component::Marketing,
        Component::Ordering,
        Component::Notifier,
        Component::Web,
    ];

    /// The `--target` name, also the name of its Deployment and Service.
    pub fn name(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Booking => "booking",
            Self::Marketing => "marketing",
            Self::Ordering => "ordering",
            Self::Notifier => "notifier",
            Self::Web => "web",
        }
    }

    /// Whether the component keeps state in PostgreSQL (its own schema, migrated by
    /// `pulse migrate --target <component>` before it starts). `web` serves files embedded in
    /// the binary and has no schema.
    pub fn uses_database(self) -> bool {
        !matches!(self, Self::Web)
    }

    /// The component named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Public HTTP path prefixes the component serves. The Ingress sends each prefix to the
    /// component's Service, so a route outside these prefixes is unreachable from outside.
    ///
    /// `web` takes `/`, the shortest prefix there is: the Ingress API gives a request to the
    /// longest matching prefix, so every API path above still reaches its component, and what
    /// no API claims (`/`, `/assets/…`) reaches the web app.
    pub fn public_paths(self) -> &'static [&'static str] {
        match self {
            Self::Identity => &["/v1/auth", "/.well-known", "/v1/me/profile", "/v1/users"],
            Self::Booking => &["/v1/practitioners", "/v1/appointments"],
            Self::Marketing => &["/v1/campaigns", "/v1/seckill", "/v1/vouchers"],
            Self::Ordering => &["/v1/products", "/v1/orders", "/v1/payments"],
            Self::Notifier => &[
                "/v1/notifications",
                "/v1/me/notification-preferences",
                "/v1/admin/notifications",
            ],
            Self::Web => &["/"],
        }
    }

    /// Public paths (each also under one of [`Self::public_paths`]) that answer with a
    /// long-lived stream (Server-Sent Events). They get an Ingress of their own, because the
    /// controller must neither buffer their responses nor cut them after its usual read timeout,
    /// and ingress-nginx takes such settings per Ingress object.
    pub fn stream_paths(self) -> &'static [&'static str] {
        match self {
            Self::Notifier => &["/v1/notifications/stream"],
            _ => &[],
        }
    }
}

/// Settings of each component.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Components {
    /// `identity`: users, OTP, signing keys, JWKS.
    pub identity: ComponentSpec,
    /// `booking`: practitioners, slots, appointments.
    pub booking: ComponentSpec,
    /// `marketing`: campaigns, seckill, vouchers.
    pub marketing: ComponentSpec,
    /// `ordering`: products, orders, payments.
    pub ordering: ComponentSpec,
    /// `notifier`: notifications and reminders.
    pub notifier: ComponentSpec,
    /// `web`: the patient and buyer web app, served at `/` of the Ingress (every API path
    /// still goes to its component). It only serves files embedded in the binary, so its
    /// resources default to less than the others' (50m CPU and 64Mi requested, 256Mi at most),
    /// also when only some of its fields are given.
    #[serde(deserialize_with = "web_spec")]
    #[schemars(transform = web_defaults)]
    pub web: ComponentSpec,
}

impl Default for Components {
    fn default() -> Self {
        Self {
            identity: ComponentSpec::default(),
            booking: ComponentSpec::default(),
            marketing: ComponentSpec::default(),
            ordering: ComponentSpec::default(),
            notifier: ComponentSpec::default(),
            web: ComponentSpec::web(),
        }
    }
}

/// `web`'s resources as the API server's defaulting writes them: its own defaults wherever the
/// schema of [`ComponentSpec`] carries the generic ones (`resources`, `resources.requests`,
/// `resources.limits`).
fn web_defaults(schema: &mut Schema) {
    let web = ResourceSpec::web();
    let Ok(resources) = serde_json::to_value(&web) else {
        return;
    };
    let Some(resources_schema) = schema
        .get_mut("properties")
        .and_then(|p| p.get_mut("resources"))
        .and_then(|r| r.as_object_mut())
    else {
        return;
    };
    resources_schema.insert("default".into(), resources.clone());
    for part in ["requests", "limits"] {
        if let Some(part_schema) = resources_schema
            .get_mut("properties")
            .and_then(|p| p.get_mut(part))
            .and_then(|p| p.as_object_mut())
        {
            part_schema.insert("default".into(), resources[part].clone());
        }
    }
}

/// Reads `web`'s settings with [`web_defaults`]' defaults for what is left out, as the API
/// server fills them in (a tenant read from a file has not been through it).
fn web_spec<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<ComponentSpec, D::Error> {
    use serde::de::Error as _;
    let mut value = serde_json::Value::deserialize(deserializer)?;
    if let Some(spec) = value.as_object_mut() {
        let web = serde_json::to_value(ResourceSpec::web()).map_err(D::Error::custom)?;
        let resources = spec
            .entry("resources")
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
        // Anything but an object is left for `ComponentSpec` to refuse.
        if let Some(resources) = resources.as_object_mut() {
            for part in ["requests", "limits"] {
                resources.entry(part).or_insert_with(|| web[part].clone());
            }
        }
    }
    serde_path_to_error::deserialize(value)
        .map_err(|err| D::Error::custom(format!("{}: {}", err.path(), err.inner())))
}

impl Components {
    /// The settings of `component`.
    pub fn get(&self, component: Component) -> &ComponentSpec {
        match component {
            Component::Identity => &self.identity,
            Component::Booking => &self.booking,
            Component::Marketing => &self.marketing,
            Component::Ordering => &self.ordering,
            Component::Notifier => &self.notifier,
            Component::Web => &self.web,
        }
    }

    /// The settings of `component`, for changing them.
    pub fn get_mut(&mut self, component: Component) -> &mut ComponentSpec {
        match component {
            Component::Identity => &mut self.identity,
            Component::Booking => &mut self.booking,
            Component::Marketing => &mut self.marketing,
            Component::Ordering => &mut self.ordering,
            Component::Notifier => &mut self.notifier,
            Component::Web => &mut self.web,
        }
    }

    /// The enabled components, in start-up order.
    pub fn enabled(&self) -> Vec<Component> {
        Component::ALL
            .into_iter()
            .filter(|c| self.get(*c).enabled)
            .collect()
    }
}

/// How one component runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = kube::core::Rule::new("self.minReplicas <= self.maxReplicas")
        .message("minReplicas must not be greater than maxReplicas")
)]
pub struct ComponentSpec {
    /// Run this component (its Deployment, Service, autoscaler, disruption budget and Ingress paths).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Fewest replicas the autoscaler keeps.
    #[serde(default = "two")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: i32,
    /// Most replicas the autoscaler may run.
    #[serde(default = "five")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Average CPU use, in percent of the request, the autoscaler aims for.
    #[serde(rename = "targetCPUUtilizationPercentage", default = "seventy")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percentage: i32,
    /// CPU and memory of the component's container.
    #[serde(default)]
    pub resources: ResourceSpec,
}

fn yes() -> bool {
    true
}

fn two() -> i32 {
    2
}

fn five() -> i32 {
    5
}

fn seventy() -> i32 {
    70
}

impl Default for ComponentSpec {
    fn default() -> Self {
        Self {
            enabled: yes(),
            min_replicas: two(),
            max_replicas: five(),
            target_cpu_utilization_percentage: seventy(),
            resources: ResourceSpec::default(),
        }
    }
}

impl ComponentSpec {
    /// The defaults of `web`: those of every component but its resources ([`ResourceSpec::web`]).
    pub fn web() -> Self {
        Self {
            resources: ResourceSpec::web(),
            ..Self::default()
        }
    }
}

/// Requests and limits of a container.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ResourceSpec {
    /// What the scheduler reserves; the CPU request is the autoscaler's 100 %.
    pub requests: ResourceAmounts,
    /// Hard caps.
    pub limits: ResourceAmounts,
}

impl Default for ResourceSpec {
    fn default() -> Self {
        Self {
            requests: ResourceAmounts {
                cpu: Some("100m".into()),
                memory: Some("128Mi".into()),
            },
            limits: ResourceAmounts {
                cpu: None,
                memory: Some("512Mi".into()),
            },
        }
    }
}

impl ResourceSpec {
    /// The defaults of `web`, which serves files embedded in the binary and keeps no pool busy:
    /// 50m CPU and 64Mi requested, at most 256Mi.
    pub fn web() -> Self {
        Self {
            requests: ResourceAmounts {
                cpu: Some("50m".into()),
                memory: Some("64Mi".into()),
            },
            limits: ResourceAmounts {
                cpu: None,
                memory: Some("256Mi".into()),
            },
        }
    }
}

/// CPU and memory quantities.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceAmounts {
    /// CPU (`100m`, `1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(QUANTITY))]
    pub cpu: Option<String>,
    /// Memory (`128Mi`, `1Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(QUANTITY))]
    pub memory: Option<String>,
}

/// Public HTTP routing of the country.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    /// Host name the country is served on (`fr.pulse.example`).
    #[schemars(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN))]
    pub host: String,
    /// IngressClass to use; the cluster's default class when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DNS_SUBDOMAIN))]
    pub class_name: Option<String>,
    /// Secret (type kubernetes.io/tls, in `pulse-<code>`) with the host's certificate; plain
    /// HTTP when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DNS_SUBDOMAIN))]
    pub tls_secret_name: Option<String>,
    /// Prefix put before every public path (`/fr` routes `/fr/v1/appointments`); empty for
    /// none. The Ingress controller must strip it (see `annotations`).
    #[serde(default)]
    #[schemars(pattern(r"^(/[A-Za-z0-9._~-]+)*$"))]
    pub path_prefix: String,
    /// Extra annotations of the Ingresses (for the controller: rewrites, rate limits, …). The
    /// stream Ingress `pulse-stream` (notifier's `/v1/notifications/stream`) gets them too, except
    /// cert-manager's (`cert-manager.io/*`: one Certificate, requested by `pulse`, serves both),
    /// with ingress-nginx's `proxy-buffering: "off"` and `proxy-read-timeout: "3600"` over them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl IngressSpec {
    /// The public base URL (`https://fr.pulse.example`).
    pub fn url(&self) -> String {
        let scheme = if self.tls_secret_name.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}{}", self.host, self.path_prefix)
    }
}

/// Which access tokens every component accepts (`PULSE_JWT_ALGORITHMS`, `PULSE_JWT_ISSUER`,
/// verified through identity's JWKS) and how `identity` signs them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = kube::core::Rule::new("self.algorithms.exists(a, a == 'ES256' || a == 'EdDSA')")
        .message("auth.algorithms must contain ES256 or EdDSA: identity signs its tokens with the first of them (HS256 alone would leave it nothing to sign with)")
)]
pub struct AuthSpec {
    /// Signature algorithms a token may use: the allow-list every component enforces (the
    /// token's header never decides). Must contain `ES256` or `EdDSA`; `identity` signs with the
    /// first of those two in the list. `HS256` (tokens from `pulse token`, for development and
    /// tests) needs `secrets.jwt.secret`.
    #[serde(default = "eddsa")]
    #[schemars(length(min = 1, max = 3), extend("x-kubernetes-list-type" = "set"))]
    pub algorithms: Vec<JwtAlgorithm>,
    /// Expected `iss` of the tokens, and the `iss` identity writes.
    #[serde(default = "pulse")]
    #[schemars(length(min = 1))]
    pub issuer: String,
    /// Days between two scheduled rotations of identity's signing key
    /// (`PULSE_IDENTITY_KEY_ROTATION_DAYS`); identity's default (30) when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 365))]
    pub key_rotation_days: Option<u32>,
}

fn eddsa() -> Vec<JwtAlgorithm> {
    vec![JwtAlgorithm::EdDSA]
}

fn pulse() -> String {
    "pulse".into()
}

impl Default for AuthSpec {
    fn default() -> Self {
        Self {
            algorithms: eddsa(),
            issuer: pulse(),
            key_rotation_days: None,
        }
    }
}

impl AuthSpec {
    /// The algorithm `identity` signs with: the first asymmetric one of the list.
    pub fn signing_algorithm(&self) -> Option<JwtAlgorithm> {
        self.algorithms.iter().copied().find(|a| a.can_sign())
    }

    /// Whether tokens signed with the shared HS256 secret are accepted.
    pub fn accepts_hs256(&self) -> bool {
        self.algorithms.contains(&JwtAlgorithm::HS256)
    }

    /// The allow-list as `PULSE_JWT_ALGORITHMS` spells it: comma-separated, in the tenant's
    /// order, each once.
    pub fn algorithms_var(&self) -> String {
        let mut seen: Vec<&str> = Vec::new();
        for algorithm in &self.algorithms {
            if !seen.contains(&algorithm.as_str()) {
                seen.push(algorithm.as_str());
            }
        }
        seen.join(",")
    }
}

/// JWT signature algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum JwtAlgorithm {
    /// HMAC with SHA-256 (the shared secret of `secrets.jwt.secret`; development and tests).
    HS256,
    /// ECDSA P-256 with SHA-256: identity can sign with it.
    ES256,
    /// Ed25519: identity can sign with it.
    EdDSA,
}

impl JwtAlgorithm {
    /// The spelling `pulse` expects in `PULSE_JWT_ALGORITHMS` and
    /// `PULSE_IDENTITY_SIGNING_ALGORITHM`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HS256 => "HS256",
            Self::ES256 => "ES256",
            Self::EdDSA => "EdDSA",
        }
    }

    /// Whether `identity` can sign with it (an asymmetric algorithm whose public key it
    /// publishes in its JWKS).
    pub fn can_sign(self) -> bool {
        matches!(self, Self::ES256 | Self::EdDSA)
    }
}

/// References to the Secrets a country needs, all in namespace `pulse-<code>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRefs {
    /// PostgreSQL URL of the country's database (`PULSE_DATABASE_URL`).
    pub database: SecretKeyRef,
    /// Redis URL (`PULSE_REDIS_URL`).
    pub redis: SecretKeyRef,
    /// Kafka bootstrap brokers, comma-separated (`PULSE_KAFKA_BROKERS`).
    pub kafka: SecretKeyRef,
    /// The HS256 shared secret, when `auth.algorithms` lists HS256.
    #[serde(default)]
    pub jwt: JwtSecretRefs,
    /// The secret (at least 32 bytes) that seals identity's token-signing keys in its database
    /// and keys its sign-in code hashes. Mounted read-only as a file into identity's pods only
    /// (`PULSE_IDENTITY_KEYRING_SECRET_FILE`); never inlined. Changing it makes the sealed keys
    /// unreadable: identity then needs new keys (`pulse keys rotate`).
    // An `Option` only so that a tenant stored before the field existed can still be read, and
    // be reported as `Degraded` instead of deployed; the schema requires it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub identity_keyring: Option<SecretKeyRef>,
    /// Secrets whose keys all become environment variables of every component (extra provider
    /// settings; the SMS auth token goes to `sms.authToken`, which only `identity` and
    /// `notifier` get, the SMTP URL to `email.smtpUrlSecret`, which only `notifier` and `identity` get, and
    /// payment credentials to `payments.secretRef`, which only `ordering` gets).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<SecretName>,
}

/// How `identity` sends its sign-in codes and `notifier` its SMS notifications: one provider,
/// one account, the same credentials (`PULSE_IDENTITY_SMS_*` and `PULSE_NOTIFIER_SMS_*`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = kube::core::Rule::new("self.provider != 'twilio' || (has(self.account) && has(self.from) && has(self.authToken))")
        .message("sms.provider twilio needs sms.account (the account SID), sms.from (the sender number, E.164) and sms.authToken (a Secret key in namespace pulse-<code>)")
)]
pub struct SmsSpec {
    /// The SMS provider (`PULSE_IDENTITY_SMS_PROVIDER`, `PULSE_NOTIFIER_SMS_PROVIDER`).
    pub provider: SmsProvider,
    /// API base URL of the Twilio-compatible provider (`PULSE_IDENTITY_SMS_BASE_URL`,
    /// `PULSE_NOTIFIER_SMS_BASE_URL`); the components' default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048), pattern(r"^https?://[^\s/@]+(/\S*)?$"))]
    pub base_url: Option<String>,
    /// Account SID, letters and digits (`PULSE_IDENTITY_SMS_ACCOUNT`,
    /// `PULSE_NOTIFIER_SMS_ACCOUNT`); required for `twilio`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), pattern(r"^[A-Za-z0-9]+$"))]
    pub account: Option<String>,
    /// Sender number in E.164 form, `+33700000000` (`PULSE_IDENTITY_SMS_FROM`,
    /// `PULSE_NOTIFIER_SMS_FROM`); required for `twilio`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^\+[1-9][0-9]{6,14}$"))]
    pub from: Option<String>,
    /// Key of a Secret in namespace `pulse-<code>` holding the provider's auth token
    /// (`PULSE_IDENTITY_SMS_AUTH_TOKEN`, `PULSE_NOTIFIER_SMS_AUTH_TOKEN`, as Secret references);
    /// required for `twilio`. Only `identity` and `notifier` get it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<SecretKeyRef>,
}

/// An SMS provider of `identity` and `notifier`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SmsProvider {
    /// Twilio, or a service with the same request shape at `baseUrl`.
    Twilio,
    /// Sends nothing: appends each message to `/tmp/sms-sandbox.jsonl` in the identity pod and
    /// to `/tmp/notifier-sms-sandbox.jsonl` in the notifier pod (development tenants only).
    Sandbox,
}

impl SmsProvider {
    /// The spelling `pulse` expects in `PULSE_IDENTITY_SMS_PROVIDER`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Twilio => "twilio",
            Self::Sandbox => "sandbox",
        }
    }
}

/// How `notifier` sends e-mail notifications and `identity` its e-mail verification codes:
/// through an SMTP server whose URL, credentials included, is kept in a Secret. Without it,
/// notifier records e-mail deliveries as `no_provider`, and identity cannot verify e-mail
/// addresses (503) except in development mode.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = kube::core::Rule::new(r"self.from.matches('[^ @<>]@[^ @<>]')")
        .message("email.from must be a sender address, `Name <address@domain>` or `address@domain` (Pulse France <no-reply@fr.pulse.example>)")
)]
pub struct EmailSpec {
    /// Key of a Secret in namespace `pulse-<code>` whose value is the whole SMTP URL with its
    /// credentials: `smtps://user:password@smtp.example:465` (TLS from the start) or
    /// `smtp://user:password@smtp.example:587?tls=required` (STARTTLS). Given to `notifier` and
    /// `identity` only, as a Secret reference (`PULSE_NOTIFIER_SMTP_URL`,
    /// `PULSE_IDENTITY_SMTP_URL`). Create it with
    /// `kubectl -n pulse-<code> create secret generic pulse-<code>-smtp --from-literal=url='smtps://…'`.
    /// A plain `smtp://127.0.0.1:1025` only reaches the pod itself: in a cluster, name the SMTP
    /// server's host or Service.
    pub smtp_url_secret: SecretKeyRef,
    /// Sender of the e-mails, `Name <address>` or a bare address, on one line
    /// (`Pulse France <no-reply@fr.pulse.example>`; `PULSE_NOTIFIER_EMAIL_FROM`,
    /// `PULSE_IDENTITY_EMAIL_FROM`). The SMTP
    /// server must accept it as a sender.
    #[schemars(length(min = 3, max = 320), pattern(r"^[^\r\n]+$"))]
    pub from: String,
}

impl EmailSpec {
    /// Whether `from` passes the schema's loose check: one line, and an `@` with something
    /// other than a space, `@`, `<` or `>` on each side.
    pub fn from_is_usable(&self) -> bool {
        let bad = |c: char| matches!(c, ' ' | '@' | '<' | '>');
        let chars: Vec<char> = self.from.chars().collect();
        !self.from.contains(['\r', '\n'])
            && chars
                .windows(3)
                .any(|w| w[1] == '@' && !bad(w[0]) && !bad(w[2]))
    }
}

/// How `ordering` takes payments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = kube::core::Rule::new("self.provider != 'stripe' || has(self.secretRef)")
        .message("payments.provider stripe needs payments.secretRef: the name of a Secret in namespace pulse-<code> with the keys api-key and webhook-secret")
)]
pub struct PaymentsSpec {
    /// The payment provider (`PULSE_PAYMENT_PROVIDER`).
    pub provider: PaymentProvider,
    /// Secret in namespace `pulse-<code>` with the provider's credentials: key `api-key`
    /// (`PULSE_STRIPE_API_KEY`) and key `webhook-secret` (`PULSE_PAYMENT_WEBHOOK_SECRET`, several
    /// comma-separated during a rotation). Required for `stripe`; for `sandbox`, optional, and
    /// only its `webhook-secret` is used. Only `ordering` gets these values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretName>,
    /// API base URL of the Stripe-compatible provider (`PULSE_STRIPE_BASE_URL`);
    /// `https://api.stripe.com` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048), pattern(r"^https?://[^\s/@]+(/\S*)?$"))]
    pub base_url: Option<String>,
}

impl PaymentsSpec {
    /// Key of the provider's API key in the Secret of `secretRef`.
    pub const API_KEY: &'static str = "api-key";
    /// Key of the webhook signing secret(s) in the Secret of `secretRef`.
    pub const WEBHOOK_SECRET: &'static str = "webhook-secret";
}

/// A payment provider of `ordering`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PaymentProvider {
    /// Stripe, or a service with the same API at `baseUrl`.
    Stripe,
    /// Pays every order by itself after a delay: development tenants only.
    Sandbox,
}

impl PaymentProvider {
    /// The spelling `pulse` expects in `PULSE_PAYMENT_PROVIDER`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stripe => "stripe",
            Self::Sandbox => "sandbox",
        }
    }
}

/// One key of one Secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN))]
    pub name: String,
    /// Key in the Secret.
    #[schemars(length(min = 1, max = 253), pattern(r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// A whole Secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretName {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN))]
    pub name: String,
}

/// The shared token secret. Asymmetric tokens need no key here: every component fetches
/// identity's public keys from its JWKS.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JwtSecretRefs {
    /// HS256 shared secret, at least 32 bytes (`PULSE_JWT_SECRET`); given to every component
    /// only while `auth.algorithms` lists HS256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretKeyRef>,
}

/// What the operator observed of a tenant.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CountryTenantStatus {
    /// The `metadata.generation` this status describes; `Ready` is only meaningful when it
    /// equals the object's generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing` and `Degraded`.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The country's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Public base URL, when an Ingress is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Replicas of each enabled component.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub components: Vec<ComponentStatus>,
}

/// Replicas of one component's Deployment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    /// Component name.
    pub name: String,
    /// Replicas the Deployment wants.
    pub replicas: i32,
    /// Replicas passing their readiness probe.
    pub ready_replicas: i32,
    /// Replicas running the current pod template.
    pub updated_replicas: i32,
    /// Replicas available for at least `minReadySeconds`.
    pub available_replicas: i32,
    /// The Deployment's current generation is fully rolled out and available.
    pub available: bool,
}
