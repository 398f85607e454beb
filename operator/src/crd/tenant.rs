//! `CountryTenant`: one country of Pulse, cluster-scoped.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use pulse_kit::config::CountryConfig;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::condition::Condition;

/// Pattern of a Kubernetes object name (DNS-1123 subdomain, as Secrets and Ingress classes use).
const DNS_SUBDOMAIN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// Pattern of a Kubernetes resource quantity (`100m`, `0.5`, `128Mi`, `1G`).
const QUANTITY: &str = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$";

/// A country served by Pulse. The operator turns it into namespace `pulse-<code>` with the
/// country's ConfigMap and, per enabled component, a Deployment, Service, HorizontalPodAutoscaler
/// and PodDisruptionBudget, plus one Ingress.
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
    printcolumn = r#"{"name":"Image","type":"string","priority":1,"jsonPath":".spec.image"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = kube::core::Rule::new("self.auth.algorithm == 'HS256' ? has(self.secrets.jwt.secret) : has(self.secrets.jwt.publicKey)")
        .message("auth.algorithm HS256 needs secrets.jwt.secret; RS256, ES256 and EdDSA need secrets.jwt.publicKey"),
    validation = kube::core::Rule::new("self.country.code == oldSelf.country.code")
        .message("country.code is immutable"),
    validation = kube::core::Rule::new("!has(self.payments) || self.payments.provider != 'sandbox' || (has(self.development) && self.development)")
        .message("payments.provider sandbox pays every order by itself and is for development only: set development: true on a development cluster, or use provider stripe with payments.secretRef")
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
    /// How tokens are checked.
    #[serde(default)]
    pub auth: AuthSpec,
    /// References to Secrets in namespace `pulse-<code>` (never the values themselves).
    pub secrets: SecretRefs,
    /// How `ordering` takes payments. Required: a tenant must choose its provider explicitly,
    /// because `ordering`'s own fallback, `sandbox`, pays every order by itself.
    // An `Option` only so that a tenant stored before the field existed can still be read, and
    // be reported as `Degraded` instead of deployed; the schema requires it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub payments: Option<PaymentsSpec>,
    /// A development tenant (a laptop or CI cluster): development-only parts such as the
    /// `sandbox` payment provider may run (`PULSE_DEVELOPMENT_MODE`). Never in production.
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
}

impl Component {
    /// Every component, in start-up order.
    pub const ALL: [Component; 5] = [
        Component::Identity,
        Component::Booking,
        Component::Marketing,
        Component::Ordering,
        Component::Notifier,
    ];

    /// The `--target` name, also the name of its Deployment and Service.
    pub fn name(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Booking => "booking",
            Self::Marketing => "marketing",
            Self::Ordering => "ordering",
            Self::Notifier => "notifier",
        }
    }

    /// The component named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Public HTTP path prefixes the component's API serves. The Ingress sends each prefix to
    /// the component's Service, so a route outside these prefixes is unreachable from outside.
    pub fn public_paths(self) -> &'static [&'static str] {
        match self {
            Self::Identity => &["/v1/auth", "/.well-known"],
            Self::Booking => &["/v1/practitioners", "/v1/appointments"],
            Self::Marketing => &["/v1/campaigns", "/v1/seckill", "/v1/vouchers"],
            Self::Ordering => &["/v1/products", "/v1/orders", "/v1/payments"],
            Self::Notifier => &["/v1/notifications"],
        }
    }
}

/// Settings of each component.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
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
    /// Extra annotations of the Ingress (for the controller: rewrites, rate limits, …).
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

/// How access tokens are checked (`PULSE_JWT_ALGORITHM`, `PULSE_JWT_ISSUER`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct AuthSpec {
    /// Signature algorithm of the tokens.
    pub algorithm: JwtAlgorithm,
    /// Expected `iss` of the tokens.
    #[schemars(length(min = 1))]
    pub issuer: String,
}

impl Default for AuthSpec {
    fn default() -> Self {
        Self {
            algorithm: JwtAlgorithm::HS256,
            issuer: "pulse".into(),
        }
    }
}

/// JWT signature algorithm.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum JwtAlgorithm {
    /// HMAC with SHA-256 (shared secret).
    #[default]
    HS256,
    /// RSA PKCS#1 with SHA-256.
    RS256,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// Ed25519.
    EdDSA,
}

impl JwtAlgorithm {
    /// The spelling `pulse` expects in `PULSE_JWT_ALGORITHM`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HS256 => "HS256",
            Self::RS256 => "RS256",
            Self::ES256 => "ES256",
            Self::EdDSA => "EdDSA",
        }
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
    /// Token keys.
    #[serde(default)]
    pub jwt: JwtSecretRefs,
    /// Secrets whose keys all become environment variables of every component (SMTP and SMS
    /// credentials; payment credentials go to `payments.secretRef`, which only `ordering` gets).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<SecretName>,
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

/// Token keys: the HS256 secret, or the public key of the asymmetric algorithms.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JwtSecretRefs {
    /// HS256 shared secret, at least 32 bytes (`PULSE_JWT_SECRET`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretKeyRef>,
    /// PEM public key for RS256/ES256/EdDSA, mounted as a file (`PULSE_JWT_PUBLIC_KEY_FILE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<SecretKeyRef>,
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
