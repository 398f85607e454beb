//! Desired state of a country: the pure builders that turn a [`CountryTenant`] into the
//! Kubernetes objects the reconciler applies (and `pulse-operator render` prints).
//!
//! Nothing here talks to a cluster, so every object can be checked in unit tests.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapEnvSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvFromSource, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath, Namespace, PodSecurityContext,
    PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretEnvSource,
    SecretKeySelector, SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec,
    TopologySpreadConstraint, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec as K8sIngressSpec, IngressTLS, ServiceBackendPort,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use pulse_kit::settings::{Env, Setting, SettingError, cluster, ordering, server};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::crd::{
    Component, ComponentSpec, CountryTenant, EmailSpec, IngressSpec, PaymentProvider, PaymentsSpec,
    ResourceAmounts, SecretKeyRef, SmsProvider, SmsSpec,
};

use pulse_kit::settings::identity as identity_vars;
use pulse_kit::settings::notifier as notifier_vars;

/// Field manager of every server-side apply, and the `managed-by` label value.
pub const MANAGER: &str = "pulse-operator";
/// Name of the country's ConfigMap.
pub const CONFIG_MAP: &str = "pulse-country";
/// Name of the country's Ingress.
pub const INGRESS: &str = "pulse";
/// Name of the country's second Ingress, for the paths that stream ([`Component::stream_paths`]):
/// the same host, with [`STREAM_ANNOTATIONS`].
pub const STREAM_INGRESS: &str = "pulse-stream";
/// ingress-nginx annotations of [`STREAM_INGRESS`]: responses pass through unbuffered, so each
/// Server-Sent Event reaches the client when it is written, and a stream may stay open an hour
/// without a byte (the client reconnects with `Last-Event-ID` after that).
pub const STREAM_ANNOTATIONS: [(&str, &str); 2] = [
    ("nginx.ingress.kubernetes.io/proxy-buffering", "off"),
    ("nginx.ingress.kubernetes.io/proxy-read-timeout", "3600"),
];
/// Pod-template annotation carrying the hash of the ConfigMap, so a config change rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "pulse.dev/config-hash";
/// Label naming the tenant (the lower-case country code) on every object.
pub const TENANT_LABEL: &str = "pulse.dev/tenant";
/// User and group the containers run as (the image's non-root user).
pub const RUN_AS: i64 = 65532;
/// Where identity's keyring Secret is mounted (read-only, identity's pods only).
pub const IDENTITY_KEYRING_DIR: &str = "/etc/pulse/identity";
/// File name of the mounted keyring.
pub const IDENTITY_KEYRING_FILE: &str = "keyring";
/// Where the sandbox SMS provider writes: the pod's writable `/tmp` (the root file system is
/// read-only), read with `kubectl exec deploy/identity -- cat /tmp/sms-sandbox.jsonl`.
pub const SANDBOX_SMS_PATH: &str = "/tmp/sms-sandbox.jsonl";
/// Where notifier's sandbox SMS provider writes: its pod's writable `/tmp`, read with
/// `kubectl exec deploy/notifier -- cat /tmp/notifier-sms-sandbox.jsonl`.
pub const NOTIFIER_SANDBOX_SMS_PATH: &str = "/tmp/notifier-sms-sandbox.jsonl";
/// Where identity writes e-mail verification codes on a development tenant (it has no mail
/// provider yet): the pod's writable `/tmp` too.
pub const SANDBOX_EMAIL_PATH: &str = "/tmp/email-sandbox.jsonl";
/// Path of identity's JWKS.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// Why a tenant cannot be turned into objects.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The tenant has no `metadata.name`.
    #[error("the CountryTenant has no metadata.name")]
    NoName,
    /// The name does not match the country code.
    #[error("metadata.name `{name}` must be the country code in lower case (`{expected}`)")]
    NameMismatch {
        /// The tenant's name.
        name: String,
        /// What it should be.
        expected: String,
    },
    /// The country configuration is invalid (time zone, currency, …).
    #[error("spec.country: {0}")]
    Country(#[from] pulse_kit::config::ConfigError),
    /// The allow-list has no algorithm identity can sign with.
    #[error(
        "spec.auth.algorithms must contain ES256 or EdDSA: identity signs its tokens with the first of them, and HS256 alone would leave it nothing to sign with"
    )]
    NoSigningAlgorithm,
    /// HS256 is allowed without its shared secret.
    #[error(
        "spec.auth.algorithms lists HS256, which needs spec.secrets.jwt.secret (the shared secret, at least 32 bytes): reference it, or leave HS256 out"
    )]
    NoJwtSecret,
    /// The tenant has no `spec.secrets.identityKeyring` (stored before the field existed).
    #[error(
        "spec.secrets.identityKeyring is missing, so nothing is deployed: identity cannot seal its signing keys without it, and no component could verify a token. Create a Secret in {namespace} with a random value of at least 32 bytes (kubectl -n {namespace} create secret generic {namespace}-identity --from-literal=keyring=\"$(openssl rand -hex 32)\") and reference it as spec.secrets.identityKeyring {{name, key}}"
    )]
    NoIdentityKeyring {
        /// Where the Secret must be.
        namespace: String,
    },
    /// The tenant has no `spec.sms` (stored before the field existed).
    #[error(
        "spec.sms is missing, so nothing is deployed: identity could not send sign-in codes. Add spec.sms with provider twilio, account, from and authToken (a Secret key in {namespace}), or provider sandbox on a tenant with spec.development: true"
    )]
    NoSmsProvider {
        /// Where the auth token's Secret must be.
        namespace: String,
    },
    /// The sandbox SMS provider on a tenant that is not a development one.
    #[error(
        "spec.sms.provider sandbox writes sign-in codes to a file instead of sending them and is for development only: set spec.development: true on a development cluster, or use provider twilio with spec.sms.account, spec.sms.from and spec.sms.authToken"
    )]
    SmsSandboxOutsideDevelopment,
    /// Twilio without what it needs.
    #[error(
        "spec.sms.provider twilio needs spec.sms.{missing}: the account SID (account), the sender number in E.164 (from) and the auth token's Secret key in {namespace} (authToken)"
    )]
    SmsIncomplete {
        /// The first missing field.
        missing: &'static str,
        /// Where the auth token's Secret must be.
        namespace: String,
    },
    /// `spec.sms.baseUrl` is not a usable URL.
    #[error("spec.sms.baseUrl: {0}")]
    SmsBaseUrl(SettingError),
    /// `spec.email.from` is not a sender address.
    #[error(
        "spec.email.from `{from}` is not a sender address: write one line holding the address, `Name <address@domain>` or `address@domain` (Pulse France <no-reply@fr.pulse.example>); notifier sends e-mail from it"
    )]
    EmailFrom {
        /// The value given.
        from: String,
    },
    /// The tenant has no `spec.payments` (stored before the field became required).
    #[error(
        "spec.payments is missing, so nothing is deployed: ordering would fall back to the sandbox provider, which lets anyone pay any order with no real money. Add spec.payments with provider stripe and secretRef (a Secret with keys api-key and webhook-secret), or provider sandbox on a tenant with spec.development: true"
    )]
    NoPaymentProvider,
    /// The sandbox provider on a tenant that is not a development one.
    #[error(
        "spec.payments.provider sandbox lets anyone pay any order with no real money and is for development only: set spec.development: true on a development cluster, or use provider stripe with spec.payments.secretRef"
    )]
    SandboxOutsideDevelopment,
    /// Stripe without its credentials.
    #[error(
        "spec.payments.provider stripe needs spec.payments.secretRef: the name of a Secret in {namespace} with the keys api-key and webhook-secret"
    )]
    NoPaymentSecret {
        /// Where the Secret must be.
        namespace: String,
    },
    /// `spec.payments.baseUrl` is not a usable URL.
    #[error("spec.payments.baseUrl: {0}")]
    PaymentBaseUrl(SettingError),
    /// `minReplicas` is above `maxReplicas`.
    #[error(
        "spec.components.{component}: minReplicas {min} must not be greater than maxReplicas {max}"
    )]
    Replicas {
        /// The component.
        component: &'static str,
        /// Its minimum.
        min: i32,
        /// Its maximum.
        max: i32,
    },
}

impl SpecError {
    /// Reason of the `Ready`/`Degraded` conditions and of the Warning Event.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoPaymentProvider => "NoPaymentProvider",
            Self::NoIdentityKeyring { .. } => "NoIdentityKeyring",
            Self::NoSmsProvider { .. } => "NoSmsProvider",
            _ => "InvalidSpec",
        }
    }
}

/// The objects of one enabled component.
#[derive(Clone, Debug, PartialEq)]
pub struct ComponentObjects {
    /// Which component.
    pub component: Component,
    /// `pulse serve --target <component>`.
    pub deployment: Deployment,
    /// HTTP, gRPC and admin ports.
    pub service: Service,
    /// CPU-based autoscaling between the component's bounds.
    pub hpa: HorizontalPodAutoscaler,
    /// At most one replica down during voluntary disruptions.
    pub pdb: PodDisruptionBudget,
}

/// Everything the reconciler applies for one tenant.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    /// `pulse-<code>`.
    pub namespace: Namespace,
    /// The country configuration as `PULSE_COUNTRY__*` variables, plus the other plain
    /// settings every component reads (tokens, development mode, payment provider, …); secrets
    /// are referenced by the Deployments instead.
    pub config_map: ConfigMap,
    /// Hash of the ConfigMap's data, also put on every pod template.
    pub config_hash: String,
    /// The enabled components, in start-up order.
    pub components: Vec<ComponentObjects>,
    /// The Ingress, when `spec.ingress` is set and a component with public paths is enabled.
    pub ingress: Option<Ingress>,
    /// The Ingress of the streaming paths ([`STREAM_INGRESS`]), when `spec.ingress` is set and a
    /// component with such paths (notifier) is enabled.
    pub stream_ingress: Option<Ingress>,
    /// Public base URL.
    pub url: Option<String>,
}

impl Desired {
    /// Every object, in the order the reconciler applies them, as JSON.
    pub fn objects(&self) -> Result<Vec<serde_json::Value>, serde_json::Error> {
        let mut out = vec![
            serde_json::to_value(&self.namespace)?,
            serde_json::to_value(&self.config_map)?,
        ];
        for c in &self.components {
            out.push(serde_json::to_value(&c.deployment)?);
            out.push(serde_json::to_value(&c.service)?);
            out.push(serde_json::to_value(&c.hpa)?);
            out.push(serde_json::to_value(&c.pdb)?);
        }
        for ingress in self.ingress.iter().chain(&self.stream_ingress) {
            out.push(serde_json::to_value(ingress)?);
        }
        Ok(out)
    }

    /// Every object as one multi-document YAML stream, in apply order.
    pub fn to_yaml(&self) -> Result<String, serde_json::Error> {
        Ok(crate::yaml::to_yaml_stream(&self.objects()?))
    }
}

/// The `app.kubernetes.io/instance` value of a country: the name of its namespace (`pulse-fr`).
fn instance(tenant: &str) -> String {
    cluster::namespace(tenant)
}

/// Labels on every object of a tenant.
pub fn tenant_labels(tenant: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "pulse".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), instance(tenant)),
        ("app.kubernetes.io/part-of".to_owned(), "pulse".to_owned()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            MANAGER.to_owned(),
        ),
        (TENANT_LABEL.to_owned(), tenant.to_owned()),
    ])
}

/// The label selector of the objects the operator manages for `tenant`.
pub fn tenant_selector(tenant: &str) -> String {
    format!("app.kubernetes.io/managed-by={MANAGER},{TENANT_LABEL}={tenant}")
}

/// Labels selecting one component's pods.
pub fn selector_labels(tenant: &str, component: Component) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "pulse".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), instance(tenant)),
        (
            "app.kubernetes.io/component".to_owned(),
            component.name().to_owned(),
        ),
    ])
}

fn component_labels(tenant: &str, component: Component) -> BTreeMap<String, String> {
    let mut labels = tenant_labels(tenant);
    labels.extend(selector_labels(tenant, component));
    labels
}

/// Hex SHA-256 of anything serialisable (stable for `BTreeMap`s), cut to 16 characters.
pub fn hash_of<T: Serialize>(value: &T) -> String {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    hex::encode(&digest[..8])
}

/// Checks what the CRD schema cannot, or what a client may have bypassed.
pub fn check(tenant: &CountryTenant) -> Result<(), SpecError> {
    let name = tenant.metadata.name.as_deref().ok_or(SpecError::NoName)?;
    let spec = &tenant.spec;
    let expected = spec.country.code.to_ascii_lowercase();
    if name != expected {
        return Err(SpecError::NameMismatch {
            name: name.to_owned(),
            expected,
        });
    }
    spec.country.validate()?;
    let namespace = || cluster::namespace(&spec.country.code);
    if spec.secrets.identity_keyring.is_none() {
        return Err(SpecError::NoIdentityKeyring {
            namespace: namespace(),
        });
    }
    if spec.auth.signing_algorithm().is_none() {
        return Err(SpecError::NoSigningAlgorithm);
    }
    if spec.auth.accepts_hs256() && spec.secrets.jwt.secret.is_none() {
        return Err(SpecError::NoJwtSecret);
    }
    check_payments(spec.payments.as_ref(), spec.development, &spec.country.code)?;
    check_sms(spec.sms.as_ref(), spec.development, &spec.country.code)?;
    check_email(spec.email.as_ref())?;
    for component in Component::ALL {
        let settings = spec.components.get(component);
        if settings.min_replicas > settings.max_replicas {
            return Err(SpecError::Replicas {
                component: component.name(),
                min: settings.min_replicas,
                max: settings.max_replicas,
            });
        }
    }
    Ok(())
}

/// The payment rules of the CRD schema, for a tenant stored before them or sent around them.
fn check_payments(
    payments: Option<&PaymentsSpec>,
    development: bool,
    code: &str,
) -> Result<(), SpecError> {
    let payments = payments.ok_or(SpecError::NoPaymentProvider)?;
    match payments.provider {
        PaymentProvider::Sandbox if !development => {
            return Err(SpecError::SandboxOutsideDevelopment);
        }
        PaymentProvider::Stripe if payments.secret_ref.is_none() => {
            return Err(SpecError::NoPaymentSecret {
                namespace: cluster::namespace(code),
            });
        }
        _ => {}
    }
    if let Some(url) = &payments.base_url {
        // The same check `pulse` makes when it reads the variable.
        let setting = ordering::STRIPE_BASE_URL;
        Env::from_map([(setting.var, url.as_str())])
            .url(&setting, url)
            .map_err(SpecError::PaymentBaseUrl)?;
    }
    Ok(())
}

/// The SMS rules of the CRD schema, for a tenant stored before them or sent around them.
fn check_sms(sms: Option<&SmsSpec>, development: bool, code: &str) -> Result<(), SpecError> {
    let namespace = || cluster::namespace(code);
    let sms = sms.ok_or_else(|| SpecError::NoSmsProvider {
        namespace: namespace(),
    })?;
    match sms.provider {
        SmsProvider::Sandbox if !development => {
            return Err(SpecError::SmsSandboxOutsideDevelopment);
        }
        SmsProvider::Sandbox => {}
        SmsProvider::Twilio => {
            let missing = [
                ("account", sms.account.is_none()),
                ("from", sms.from.is_none()),
                ("authToken", sms.auth_token.is_none()),
            ]
            .into_iter()
            .find_map(|(field, absent)| absent.then_some(field));
            if let Some(missing) = missing {
                return Err(SpecError::SmsIncomplete {
                    missing,
                    namespace: namespace(),
                });
            }
        }
    }
    if let Some(url) = &sms.base_url {
        // The same check `pulse` makes when it reads the variable.
        let setting = identity_vars::SMS_BASE_URL;
        Env::from_map([(setting.var, url.as_str())])
            .url(&setting, url)
            .map_err(SpecError::SmsBaseUrl)?;
    }
    Ok(())
}

/// The e-mail rules of the CRD schema, for a tenant sent around them.
fn check_email(email: Option<&EmailSpec>) -> Result<(), SpecError> {
    match email {
        Some(email) if !email.from_is_usable() => Err(SpecError::EmailFrom {
            from: email.from.clone(),
        }),
        _ => Ok(()),
    }
}

/// Identity's JWKS in namespace `ns`, through its Service's HTTP port: where every component
/// fetches the public keys of the tokens.
pub fn jwks_url(ns: &str) -> String {
    format!(
        "http://{}:{}{JWKS_PATH}",
        cluster::service_host(Component::Identity.name(), ns),
        cluster::HTTP_PORT
    )
}

/// The country's plain settings, which every component reads from the ConfigMap.
fn config_data(tenant: &CountryTenant, ns: &str, url: Option<&str>) -> BTreeMap<String, String> {
    let spec = &tenant.spec;
    let mut data = spec.country.to_env();
    let mut set = |setting: &Setting, value: String| data.insert(setting.var.to_owned(), value);
    set(&server::JWT_ALGORITHMS, spec.auth.algorithms_var());
    set(&server::JWT_ISSUER, spec.auth.issuer.clone());
    // Every component, identity too, verifies tokens with the keys identity publishes.
    set(&server::JWKS_URL, jwks_url(ns));
    // Clients arrive through the Ingress: their address is the first X-Forwarded-For hop.
    set(&server::TRUST_FORWARDED_FOR, "true".into());
    set(&server::DEVELOPMENT_MODE, spec.development.to_string());
    // Ordering validates vouchers with marketing through its Service (no service registry).
    set(
        &ordering::MARKETING_GRPC_URL,
        cluster::grpc_url(Component::Marketing.name(), ns),
    );
    if let Some(payments) = &spec.payments {
        set(
            &ordering::PAYMENT_PROVIDER,
            payments.provider.as_str().into(),
        );
        // Only the Stripe adapter calls out and sends buyers away: the sandbox reads neither.
        if payments.provider == PaymentProvider::Stripe {
            if let Some(base_url) = &payments.base_url {
                set(&ordering::STRIPE_BASE_URL, base_url.clone());
            }
            // After a checkout the buyer comes back to the country's public URL, not to the
            // pod: to the order's page of the web app when the tenant runs it, else the order.
            if let Some(url) = url {
                let back = if spec.components.get(Component::Web).enabled {
                    format!("{url}/#/orders/{{ORDER_ID}}")
                } else {
                    format!("{url}/v1/orders/{{ORDER_ID}}")
                };
                set(&ordering::PAYMENT_RETURN_URL, back);
            }
        }
    }
    data
}

/// Builds every object of `tenant`. Owner references point at the tenant when it has a uid
/// (it always has one in a cluster; a tenant read from a file has none).
pub fn desired(tenant: &CountryTenant) -> Result<Desired, SpecError> {
    check(tenant)?;
    let name = tenant.name_any();
    let spec = &tenant.spec;
    let ns = cluster::namespace(&spec.country.code);
    let owner = tenant.controller_owner_ref(&());
    let public_url = spec.ingress.as_ref().map(|i| i.url());

    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(ns.clone()),
            labels: Some({
                let mut labels = tenant_labels(&name);
                // Every pod the operator creates meets the restricted Pod Security Standard.
                labels.insert(
                    "pod-security.kubernetes.io/enforce".into(),
                    "restricted".into(),
                );
                labels
            }),
            annotations: Some(BTreeMap::from([(
                "pulse.dev/display-name".to_owned(),
                spec.display_name.clone(),
            )])),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };

    let data = config_data(tenant, &ns, public_url.as_deref());
    let config_hash = hash_of(&data);
    let config_map = ConfigMap {
        metadata: meta(CONFIG_MAP, &ns, tenant_labels(&name), owner.as_ref()),
        data: Some(data),
        ..ConfigMap::default()
    };

    let components: Vec<ComponentObjects> = spec
        .components
        .enabled()
        .into_iter()
        .map(|component| ComponentObjects {
            component,
            deployment: deployment(tenant, component, &ns, &config_hash, owner.as_ref()),
            service: service(&name, component, &ns, owner.as_ref()),
            hpa: hpa(
                &name,
                component,
                spec.components.get(component),
                &ns,
                owner.as_ref(),
            ),
            pdb: pdb(&name, component, &ns, owner.as_ref()),
        })
        .collect();

    let ingress = ingress(tenant, &components, &ns, owner.as_ref());
    let stream_ingress = stream_ingress(tenant, &components, &ns, owner.as_ref());
    let url = ingress.as_ref().and(spec.ingress.as_ref()).map(|i| i.url());
    Ok(Desired {
        namespace,
        config_map,
        config_hash,
        components,
        ingress,
        stream_ingress,
        url,
    })
}

fn meta(
    name: &str,
    ns: &str,
    labels: BTreeMap<String, String>,
    owner: Option<&OwnerReference>,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(ns.to_owned()),
        labels: Some(labels),
        owner_references: owner.map(|o| vec![o.clone()]),
        ..ObjectMeta::default()
    }
}

fn quantities(amounts: &ResourceAmounts) -> Option<BTreeMap<String, Quantity>> {
    let mut out = BTreeMap::new();
    if let Some(cpu) = &amounts.cpu {
        out.insert("cpu".to_owned(), Quantity(cpu.clone()));
    }
    if let Some(memory) = &amounts.memory {
        out.insert("memory".to_owned(), Quantity(memory.clone()));
    }
    (!out.is_empty()).then_some(out)
}

fn secret_env(setting: &Setting, secret: &SecretKeyRef) -> EnvVar {
    EnvVar {
        name: setting.var.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.name.clone(),
                key: secret.key.clone(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn plain_env(setting: &Setting, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: setting.var.to_owned(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

/// The payment credentials `ordering` reads, from the Secret of `payments.secretRef`: the API
/// key for `stripe` only, the webhook secret for either provider.
fn payment_secrets(payments: Option<&PaymentsSpec>) -> Vec<EnvVar> {
    let Some((provider, secret)) =
        payments.and_then(|p| p.secret_ref.as_ref().map(|s| (p.provider, &s.name)))
    else {
        return Vec::new();
    };
    let key = |key: &str| SecretKeyRef {
        name: secret.clone(),
        key: key.to_owned(),
    };
    let mut env = Vec::new();
    if provider == PaymentProvider::Stripe {
        env.push(secret_env(
            &ordering::STRIPE_API_KEY,
            &key(PaymentsSpec::API_KEY),
        ));
    }
    env.push(secret_env(
        &ordering::PAYMENT_WEBHOOK_SECRET,
        &key(PaymentsSpec::WEBHOOK_SECRET),
    ));
    env
}

/// Name of the volume holding identity's keyring.
const KEYRING_VOLUME: &str = "identity-keyring";

/// The keyring Secret's one key as a file, readable by its owner (root) and the pod's group
/// only: the kubelet makes the files of a Secret volume group-owned by the pod's `fsGroup`.
fn keyring_volume(keyring: &SecretKeyRef) -> Volume {
    Volume {
        name: KEYRING_VOLUME.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(keyring.name.clone()),
            items: Some(vec![KeyToPath {
                key: keyring.key.clone(),
                path: IDENTITY_KEYRING_FILE.to_owned(),
                ..KeyToPath::default()
            }]),
            default_mode: Some(0o440),
            optional: Some(false),
        }),
        ..Volume::default()
    }
}

/// Identity's own settings: how it signs and rotates, and how it sends its codes. Only identity
/// gets them, on its container (the SMS auth token as a Secret reference), never in the
/// ConfigMap.
fn identity_env(tenant: &CountryTenant) -> Vec<EnvVar> {
    let spec = &tenant.spec;
    let mut env = Vec::new();
    if let Some(algorithm) = spec.auth.signing_algorithm() {
        env.push(plain_env(
            &identity_vars::SIGNING_ALGORITHM,
            algorithm.as_str(),
        ));
    }
    if let Some(days) = spec.auth.key_rotation_days {
        env.push(plain_env(
            &identity_vars::KEY_ROTATION_DAYS,
            days.to_string(),
        ));
    }
    if let Some(sms) = &spec.sms {
        env.extend(sms_env(sms, &IDENTITY_SMS));
    }
    // Verification codes go through the tenant's SMTP server, the one notifier sends with.
    if let Some(email) = &spec.email {
        env.push(secret_env(&identity_vars::SMTP_URL, &email.smtp_url_secret));
        env.push(plain_env(&identity_vars::EMAIL_FROM, email.from.clone()));
    }
    // Only development mode writes e-mail codes to a file; its default, in the working
    // directory, is on the read-only root file system.
    if spec.development {
        env.push(plain_env(
            &identity_vars::SANDBOX_EMAIL_FILE,
            SANDBOX_EMAIL_PATH,
        ));
    }
    env
}

/// The variables of one component's SMS adapter, and where its sandbox writes.
struct SmsVars {
    provider: Setting,
    base_url: Setting,
    account: Setting,
    from: Setting,
    auth_token: Setting,
    sandbox_file: Setting,
    sandbox_path: &'static str,
}

/// Identity's SMS adapter: sign-in codes.
const IDENTITY_SMS: SmsVars = SmsVars {
    provider: identity_vars::SMS_PROVIDER,
    base_url: identity_vars::SMS_BASE_URL,
    account: identity_vars::SMS_ACCOUNT,
    from: identity_vars::SMS_FROM,
    auth_token: identity_vars::SMS_AUTH_TOKEN,
    sandbox_file: identity_vars::SANDBOX_SMS_FILE,
    sandbox_path: SANDBOX_SMS_PATH,
};

/// Notifier's SMS adapter: notifications, through the same provider as identity's.
const NOTIFIER_SMS: SmsVars = SmsVars {
    provider: notifier_vars::SMS_PROVIDER,
    base_url: notifier_vars::SMS_BASE_URL,
    account: notifier_vars::SMS_ACCOUNT,
    from: notifier_vars::SMS_FROM,
    auth_token: notifier_vars::SMS_AUTH_TOKEN,
    sandbox_file: notifier_vars::SANDBOX_SMS_FILE,
    sandbox_path: NOTIFIER_SANDBOX_SMS_PATH,
};

/// The tenant's SMS provider as the variables of one component (`vars`): the auth token as a
/// Secret reference, the sandbox's file in the pod's writable `/tmp`.
fn sms_env(sms: &SmsSpec, vars: &SmsVars) -> Vec<EnvVar> {
    let mut env = vec![plain_env(&vars.provider, sms.provider.as_str())];
    match sms.provider {
        // Only the Twilio adapter calls out: the sandbox reads none of its settings.
        SmsProvider::Twilio => {
            let plain = [
                (&vars.base_url, &sms.base_url),
                (&vars.account, &sms.account),
                (&vars.from, &sms.from),
            ];
            for (setting, value) in plain {
                if let Some(value) = value {
                    env.push(plain_env(setting, value.clone()));
                }
            }
            if let Some(token) = &sms.auth_token {
                env.push(secret_env(&vars.auth_token, token));
            }
        }
        // Its default, in the working directory, is on the read-only root file system.
        SmsProvider::Sandbox => env.push(plain_env(&vars.sandbox_file, vars.sandbox_path)),
    }
    env
}

/// Notifier's own settings: where it reads recipients' contact data (identity's Service), and
/// how it sends SMS (the tenant's one SMS provider) and e-mail (`spec.email`; without it, no
/// SMTP variable, and notifier records e-mail deliveries as `no_provider`). Only notifier gets
/// them, on its container (the SMTP URL and the SMS auth token as Secret references), never in
/// the ConfigMap.
fn notifier_env(tenant: &CountryTenant, ns: &str) -> Vec<EnvVar> {
    let spec = &tenant.spec;
    // Identity's Service, whether or not this tenant runs identity: notifier's own default (its
    // process's gRPC listener) only works when one process runs every component, and a tenant
    // without identity has no token issuer either (`PULSE_JWKS_URL` names the same Service).
    let mut env = vec![plain_env(
        &notifier_vars::IDENTITY_GRPC_URL,
        cluster::grpc_url(Component::Identity.name(), ns),
    )];
    if let Some(sms) = &spec.sms {
        env.extend(sms_env(sms, &NOTIFIER_SMS));
    }
    if let Some(email) = &spec.email {
        env.push(secret_env(&notifier_vars::SMTP_URL, &email.smtp_url_secret));
        env.push(plain_env(&notifier_vars::EMAIL_FROM, email.from.clone()));
    }
    env
}

/// A container port of `pulse serve`.
fn container_port(name: &str, port: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: i32::from(port),
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }
}

fn restricted_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("admin".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

fn deployment(
    tenant: &CountryTenant,
    component: Component,
    ns: &str,
    config_hash: &str,
    owner: Option<&OwnerReference>,
) -> Deployment {
    let name = tenant.name_any();
    let spec = &tenant.spec;
    let settings = spec.components.get(component);
    let target = component.name();
    let database = secret_env(&server::DATABASE_URL, &spec.secrets.database);

    let mut env = vec![
        database.clone(),
        secret_env(&server::REDIS_URL, &spec.secrets.redis),
        secret_env(&server::KAFKA_BROKERS, &spec.secrets.kafka),
    ];
    let mut volumes = vec![Volume {
        name: "tmp".to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "tmp".to_owned(),
        mount_path: "/tmp".to_owned(),
        ..VolumeMount::default()
    }];
    // The shared secret only while HS256 tokens are accepted: nobody else needs it.
    if let Some(secret) = spec.secrets.jwt.secret.as_ref()
        && spec.auth.accepts_hs256()
    {
        env.push(secret_env(&server::JWT_SECRET, secret));
    }
    match component {
        Component::Identity => {
            if let Some(keyring) = &spec.secrets.identity_keyring {
                env.push(plain_env(
                    &identity_vars::KEYRING_SECRET_FILE,
                    format!("{IDENTITY_KEYRING_DIR}/{IDENTITY_KEYRING_FILE}"),
                ));
                volumes.push(keyring_volume(keyring));
                mounts.push(VolumeMount {
                    name: KEYRING_VOLUME.to_owned(),
                    mount_path: IDENTITY_KEYRING_DIR.to_owned(),
                    read_only: Some(true),
                    ..VolumeMount::default()
                });
            }
            env.extend(identity_env(tenant));
        }
        Component::Ordering => env.extend(payment_secrets(spec.payments.as_ref())),
        Component::Notifier => env.extend(notifier_env(tenant, ns)),
        // The base settings alone. `web` serves the app's files and has no schema, but the kit
        // reads the database URL at start-up whatever it runs, and limits requests through
        // Redis; it gets no other component's settings or secrets.
        Component::Booking | Component::Marketing | Component::Web => {}
    }
    let listen = |port: u16| format!("0.0.0.0:{port}");
    env.push(plain_env(&server::HTTP_ADDR, listen(cluster::HTTP_PORT)));
    env.push(plain_env(&server::GRPC_ADDR, listen(cluster::GRPC_PORT)));
    env.push(plain_env(&server::ADMIN_ADDR, listen(cluster::ADMIN_PORT)));

    let mut env_from = vec![EnvFromSource {
        config_map_ref: Some(ConfigMapEnvSource {
            name: CONFIG_MAP.to_owned(),
            optional: Some(false),
        }),
        ..EnvFromSource::default()
    }];
    env_from.extend(spec.secrets.providers.iter().map(|p| EnvFromSource {
        secret_ref: Some(SecretEnvSource {
            name: p.name.clone(),
            optional: Some(false),
        }),
        ..EnvFromSource::default()
    }));

    let resources = ResourceRequirements {
        requests: quantities(&settings.resources.requests),
        limits: quantities(&settings.resources.limits),
        ..ResourceRequirements::default()
    };
    let pull_policy = spec.image_pull_policy.map(|p| p.as_str().to_owned());

    // A component with a schema migrates it before serving; `web` has none.
    let migrate = component.uses_database().then(|| Container {
        name: "migrate".to_owned(),
        image: Some(spec.image.clone()),
        image_pull_policy: pull_policy.clone(),
        args: Some(vec!["migrate".into(), "--target".into(), target.into()]),
        env: Some(vec![database]),
        resources: Some(resources.clone()),
        security_context: Some(restricted_security_context()),
        ..Container::default()
    });
    let serve = Container {
        name: target.to_owned(),
        image: Some(spec.image.clone()),
        image_pull_policy: pull_policy,
        args: Some(vec!["serve".into(), "--target".into(), target.into()]),
        ports: Some(vec![
            container_port("http", cluster::HTTP_PORT),
            container_port("grpc", cluster::GRPC_PORT),
            container_port("admin", cluster::ADMIN_PORT),
        ]),
        env: Some(env),
        env_from: Some(env_from),
        resources: Some(resources),
        startup_probe: Some(http_probe("/livez", 2, 60)),
        liveness_probe: Some(http_probe("/livez", 10, 3)),
        readiness_probe: Some(http_probe("/readyz", 5, 2)),
        security_context: Some(restricted_security_context()),
        volume_mounts: Some(mounts),
        ..Container::default()
    };

    let selector = selector_labels(&name, component);
    Deployment {
        metadata: meta(target, ns, component_labels(&name, component), owner),
        spec: Some(DeploymentSpec {
            // No `replicas`: the HorizontalPodAutoscaler owns that field.
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            revision_history_limit: Some(5),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::String("25%".to_owned())),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(component_labels(&name, component)),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.to_owned(),
                        config_hash.to_owned(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS),
                        run_as_group: Some(RUN_AS),
                        fs_group: Some(RUN_AS),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_owned(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    termination_grace_period_seconds: Some(30),
                    topology_spread_constraints: Some(vec![TopologySpreadConstraint {
                        max_skew: 1,
                        topology_key: "kubernetes.io/hostname".to_owned(),
                        when_unsatisfiable: "ScheduleAnyway".to_owned(),
                        label_selector: Some(LabelSelector {
                            match_labels: Some(selector),
                            ..LabelSelector::default()
                        }),
                        ..TopologySpreadConstraint::default()
                    }]),
                    init_containers: migrate.map(|migrate| vec![migrate]),
                    containers: vec![serve],
                    volumes: Some(volumes),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

fn service(
    tenant: &str,
    component: Component,
    ns: &str,
    owner: Option<&OwnerReference>,
) -> Service {
    let port = |name: &str, port: u16, app_protocol: Option<&str>| ServicePort {
        name: Some(name.to_owned()),
        port: i32::from(port),
        target_port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".to_owned()),
        app_protocol: app_protocol.map(str::to_owned),
        ..ServicePort::default()
    };
    Service {
        metadata: meta(
            component.name(),
            ns,
            component_labels(tenant, component),
            owner,
        ),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(selector_labels(tenant, component)),
            ports: Some(vec![
                port("http", cluster::HTTP_PORT, Some("http")),
                port("grpc", cluster::GRPC_PORT, Some("grpc")),
                port("admin", cluster::ADMIN_PORT, Some("http")),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn hpa(
    tenant: &str,
    component: Component,
    settings: &ComponentSpec,
    ns: &str,
    owner: Option<&OwnerReference>,
) -> HorizontalPodAutoscaler {
    HorizontalPodAutoscaler {
        metadata: meta(
            component.name(),
            ns,
            component_labels(tenant, component),
            owner,
        ),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".to_owned()),
                kind: "Deployment".to_owned(),
                name: component.name().to_owned(),
            },
            min_replicas: Some(settings.min_replicas),
            max_replicas: settings.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".to_owned(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".to_owned(),
                    target: MetricTarget {
                        type_: "Utilization".to_owned(),
                        average_utilization: Some(settings.target_cpu_utilization_percentage),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            ..HorizontalPodAutoscalerSpec::default()
        }),
        ..HorizontalPodAutoscaler::default()
    }
}

fn pdb(
    tenant: &str,
    component: Component,
    ns: &str,
    owner: Option<&OwnerReference>,
) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(
            component.name(),
            ns,
            component_labels(tenant, component),
            owner,
        ),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(tenant, component)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

/// The Ingress paths of `routes` (public path, component), most specific first.
///
/// The Ingress API gives a request to the longest matching `Prefix` path, element by element,
/// whatever the order of the list, so `/v1/me/profile` (identity) wins over a shorter `/v1/me`
/// of another component. Listing the paths with more elements first makes controllers that
/// match in list order (first match wins) route the same way. The sort is stable: paths of
/// equal depth keep the components' order.
fn ingress_paths(routes: impl IntoIterator<Item = (String, Component)>) -> Vec<HTTPIngressPath> {
    let mut routes: Vec<(String, Component)> = routes.into_iter().collect();
    routes.sort_by_key(|(path, _)| std::cmp::Reverse(path_elements(path).count()));
    routes
        .into_iter()
        .map(|(path, component)| HTTPIngressPath {
            path: Some(path),
            path_type: "Prefix".to_owned(),
            backend: IngressBackend {
                service: Some(IngressServiceBackend {
                    name: component.name().to_owned(),
                    port: Some(ServiceBackendPort {
                        name: Some("http".to_owned()),
                        ..ServiceBackendPort::default()
                    }),
                }),
                ..IngressBackend::default()
            },
        })
        .collect()
}

/// The `/`-separated elements of a path, as `Prefix` matching compares them.
fn path_elements(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|element| !element.is_empty())
}

/// `path` under the tenant's `prefix`: `/fr/v1/orders` for `/v1/orders`, and `/fr` itself
/// (not `/fr/`) for web's `/`.
fn prefixed(prefix: &str, path: &str) -> String {
    if path == "/" && !prefix.is_empty() {
        prefix.to_owned()
    } else {
        format!("{prefix}{path}")
    }
}

/// The public routes of `paths` (each component's paths under the tenant's prefix), most
/// specific first, or `None` when there is none (an Ingress without paths is invalid).
fn routes(
    settings: &IngressSpec,
    components: &[ComponentObjects],
    paths: fn(Component) -> &'static [&'static str],
) -> Option<Vec<HTTPIngressPath>> {
    let routes = components.iter().flat_map(|c| {
        paths(c.component)
            .iter()
            .map(|path| (prefixed(&settings.path_prefix, path), c.component))
    });
    let paths = ingress_paths(routes);
    (!paths.is_empty()).then_some(paths)
}

/// An Ingress of the tenant's host named `name`, with `paths` and `annotations`.
fn ingress_object(
    tenant: &CountryTenant,
    settings: &IngressSpec,
    name: &str,
    paths: Vec<HTTPIngressPath>,
    annotations: BTreeMap<String, String>,
    ns: &str,
    owner: Option<&OwnerReference>,
) -> Ingress {
    let mut metadata = meta(name, ns, tenant_labels(&tenant.name_any()), owner);
    if !annotations.is_empty() {
        metadata.annotations = Some(annotations);
    }
    Ingress {
        metadata,
        spec: Some(K8sIngressSpec {
            ingress_class_name: settings.class_name.clone(),
            tls: settings.tls_secret_name.as_ref().map(|secret| {
                vec![IngressTLS {
                    hosts: Some(vec![settings.host.clone()]),
                    secret_name: Some(secret.clone()),
                }]
            }),
            rules: Some(vec![IngressRule {
                host: Some(settings.host.clone()),
                http: Some(HTTPIngressRuleValue { paths }),
            }]),
            ..K8sIngressSpec::default()
        }),
        ..Ingress::default()
    }
}

fn ingress(
    tenant: &CountryTenant,
    components: &[ComponentObjects],
    ns: &str,
    owner: Option<&OwnerReference>,
) -> Option<Ingress> {
    let settings = tenant.spec.ingress.as_ref()?;
    let paths = routes(settings, components, Component::public_paths)?;
    Some(ingress_object(
        tenant,
        settings,
        INGRESS,
        paths,
        settings.annotations.clone(),
        ns,
        owner,
    ))
}

/// Whether an annotation asks cert-manager for a certificate: only the main Ingress carries
/// those, so that one Certificate (named after the TLS Secret) has one owner; the stream Ingress
/// uses the same Secret.
fn requests_a_certificate(annotation: &str) -> bool {
    annotation.starts_with("cert-manager.io/") || annotation.starts_with("acme.cert-manager.io/")
}

/// The Ingress of the streaming paths: the same host, TLS and class as the main one, the
/// tenant's annotations (but cert-manager's) with [`STREAM_ANNOTATIONS`] over them. The Ingress
/// API gives a request to the longest matching path across the Ingresses of a host, so
/// `/v1/notifications/stream` comes here and the rest of `/v1/notifications` to the main one.
fn stream_ingress(
    tenant: &CountryTenant,
    components: &[ComponentObjects],
    ns: &str,
    owner: Option<&OwnerReference>,
) -> Option<Ingress> {
    let settings = tenant.spec.ingress.as_ref()?;
    let paths = routes(settings, components, Component::stream_paths)?;
    let mut annotations: BTreeMap<String, String> = settings
        .annotations
        .iter()
        .filter(|(key, _)| !requests_a_certificate(key))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    annotations.extend(
        STREAM_ANNOTATIONS
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned())),
    );
    Some(ingress_object(
        tenant,
        settings,
        STREAM_INGRESS,
        paths,
        annotations,
        ns,
        owner,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{JwtAlgorithm, SecretName};
    use crate::fixtures::{UID, tenant};
    use pulse_kit::config::COUNTRY_ENV_PREFIX;

    fn names<T: Resource>(objects: impl IntoIterator<Item = T>) -> Vec<String> {
        objects.into_iter().map(|o| o.name_any()).collect()
    }

    fn container(deployment: &Deployment) -> &Container {
        &deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod spec")
            .containers[0]
    }

    fn pod_spec(deployment: &Deployment) -> &PodSpec {
        deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod spec")
    }

    fn config_hash_of(deployment: &Deployment) -> String {
        deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(CONFIG_HASH_ANNOTATION))
            .cloned()
            .expect("config hash annotation")
    }

    #[test]
    fn every_object_of_a_tenant() {
        let desired = desired(&tenant()).expect("valid tenant");
        assert_eq!(desired.namespace.name_any(), "pulse-fr");
        let ns_labels = desired.namespace.metadata.labels.clone().expect("labels");
        assert_eq!(ns_labels[TENANT_LABEL], "fr");
        assert_eq!(
            ns_labels["pod-security.kubernetes.io/enforce"],
            "restricted"
        );

        assert_eq!(desired.config_map.name_any(), CONFIG_MAP);
        assert_eq!(desired.config_map.namespace().as_deref(), Some("pulse-fr"));
        let data = desired.config_map.data.clone().expect("data");
        for (key, value) in tenant().spec.country.to_env() {
            assert_eq!(data.get(&key), Some(&value), "{key}");
        }
        assert_eq!(
            data[&format!("{COUNTRY_ENV_PREFIX}TIMEZONE")],
            "Europe/Paris"
        );
        assert_eq!(data[server::JWT_ALGORITHMS.var], "EdDSA");
        assert_eq!(data[server::JWT_ISSUER.var], "pulse");
        assert_eq!(
            data[server::JWKS_URL.var],
            "http://identity.pulse-fr.svc:8080/.well-known/jwks.json"
        );
        assert_eq!(data[server::TRUST_FORWARDED_FOR.var], "true");
        assert_eq!(
            data[ordering::MARKETING_GRPC_URL.var],
            "http://marketing.pulse-fr.svc:50051"
        );

        let all = [
            "identity",
            "booking",
            "marketing",
            "ordering",
            "notifier",
            "web",
        ];
        assert_eq!(
            names(desired.components.iter().map(|c| c.deployment.clone())),
            all
        );
        assert_eq!(
            names(desired.components.iter().map(|c| c.service.clone())),
            all
        );
        assert_eq!(names(desired.components.iter().map(|c| c.hpa.clone())), all);
        assert_eq!(names(desired.components.iter().map(|c| c.pdb.clone())), all);
        assert_eq!(
            desired.ingress.as_ref().map(|i| i.name_any()).as_deref(),
            Some(INGRESS)
        );
        assert_eq!(
            desired
                .stream_ingress
                .as_ref()
                .map(|i| i.name_any())
                .as_deref(),
            Some(STREAM_INGRESS)
        );
        assert_eq!(desired.url.as_deref(), Some("https://fr.pulse.example"));
        // 2 + 6 × 4 + 2 objects, in apply order, each with apiVersion and kind.
        let objects = desired.objects().expect("json");
        assert_eq!(objects.len(), 28);
        let kinds: Vec<&str> = objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(
            &kinds[..6],
            [
                "Namespace",
                "ConfigMap",
                "Deployment",
                "Service",
                "HorizontalPodAutoscaler",
                "PodDisruptionBudget"
            ]
        );
        assert_eq!(kinds[26..], ["Ingress", "Ingress"]);
        assert!(objects.iter().all(|o| o["apiVersion"].is_string()));
    }

    #[test]
    fn deployments_run_their_target_and_migrate_first() {
        let desired = desired(&tenant()).expect("valid tenant");
        for objects in &desired.components {
            let target = objects.component.name();
            let serve = container(&objects.deployment);
            assert_eq!(serve.image.as_deref(), Some("pulse:1.2.3"));
            assert_eq!(
                serve.args.clone().unwrap_or_default(),
                ["serve", "--target", target]
            );
            let init = pod_spec(&objects.deployment)
                .init_containers
                .clone()
                .unwrap_or_default();
            if objects.component.uses_database() {
                assert_eq!(init.len(), 1, "{target}");
                assert_eq!(
                    init[0].args.clone().unwrap_or_default(),
                    ["migrate", "--target", target]
                );
            } else {
                // Web has no schema to migrate.
                assert!(init.is_empty(), "{target}");
            }
            // HPA owns the replica count.
            assert_eq!(
                objects.deployment.spec.as_ref().and_then(|s| s.replicas),
                None
            );
            let selector = objects
                .deployment
                .spec
                .as_ref()
                .map(|s| s.selector.clone())
                .unwrap_or_default();
            assert_eq!(
                selector.match_labels,
                Some(selector_labels("fr", objects.component))
            );
        }
    }

    #[test]
    fn secrets_are_referenced_never_inlined() {
        let desired = desired(&tenant()).expect("valid tenant");
        for objects in &desired.components {
            let env = container(&objects.deployment)
                .env
                .clone()
                .unwrap_or_default();
            for (name, secret, key) in [
                (
                    server::DATABASE_URL.var,
                    "pulse-fr-backends",
                    "database-url",
                ),
                (server::REDIS_URL.var, "pulse-fr-backends", "redis-url"),
                (
                    server::KAFKA_BROKERS.var,
                    "pulse-fr-backends",
                    "kafka-brokers",
                ),
            ] {
                assert_eq!(
                    env_source(&env, name),
                    Some((None, Some((secret.to_owned(), key.to_owned())))),
                    "{name} of {} must be a secretKeyRef",
                    objects.component.name()
                );
            }
            // EdDSA only: no shared secret, and no public key either (that is the JWKS's job).
            assert!(env_source(&env, server::JWT_SECRET.var).is_none());
            assert!(env_source(&env, "PULSE_JWT_PUBLIC_KEY_FILE").is_none());
        }
        let serve = container(&desired.components[0].deployment);
        let env_from = serve.env_from.clone().unwrap_or_default();
        assert_eq!(
            env_from[0].config_map_ref.as_ref().map(|c| c.name.as_str()),
            Some(CONFIG_MAP)
        );
        assert_eq!(
            env_from[1].secret_ref.as_ref().map(|s| s.name.as_str()),
            Some("pulse-fr-providers")
        );
        // Nothing secret in the ConfigMap either.
        let data = desired.config_map.data.clone().unwrap_or_default();
        assert!(data.keys().all(|k| !k.contains("SECRET")
            && !k.contains("DATABASE")
            && !k.contains("KEYRING")
            && !k.contains("TOKEN")));
    }

    #[test]
    fn hs256_gets_the_shared_secret_only_while_allowed() {
        let mut t = tenant();
        t.spec.auth.algorithms = vec![JwtAlgorithm::EdDSA, JwtAlgorithm::HS256];
        t.spec.secrets.jwt.secret = Some(SecretKeyRef {
            name: "pulse-fr-jwt".into(),
            key: "secret".into(),
        });
        let allowed = desired_of(&t);
        assert_eq!(
            allowed.config_map.data.clone().unwrap_or_default()[server::JWT_ALGORITHMS.var],
            "EdDSA,HS256"
        );
        for component in Component::ALL {
            assert_eq!(
                env_source(&env_of(&allowed, component), server::JWT_SECRET.var),
                Some((None, Some(("pulse-fr-jwt".into(), "secret".into())))),
                "{}",
                component.name()
            );
        }
        // The secret stays referenced, but HS256 is off: nobody gets it.
        t.spec.auth.algorithms = vec![JwtAlgorithm::ES256];
        let refused = desired_of(&t);
        for component in Component::ALL {
            assert!(env_source(&env_of(&refused, component), server::JWT_SECRET.var).is_none());
        }
        // The list is a set: a repeated algorithm is written once.
        t.spec.auth.algorithms = vec![JwtAlgorithm::ES256, JwtAlgorithm::ES256];
        assert_eq!(
            desired_of(&t).config_map.data.clone().unwrap_or_default()[server::JWT_ALGORITHMS.var],
            "ES256"
        );
    }

    /// Identity's container env, as name → plain value or `secret:<name>/<key>`.
    fn identity_vars(desired: &Desired) -> BTreeMap<String, String> {
        env_of(desired, Component::Identity)
            .into_iter()
            .filter(|v| v.name.starts_with("PULSE_IDENTITY_"))
            .map(|v| {
                let value = match (v.value, v.value_from.and_then(|f| f.secret_key_ref)) {
                    (Some(value), None) => value,
                    (None, Some(s)) => format!("secret:{}/{}", s.name, s.key),
                    other => panic!("{}: {other:?}", v.name),
                };
                (v.name, value)
            })
            .collect()
    }

    #[test]
    fn identity_gets_its_keyring_signing_and_sms_settings() {
        let mut t = tenant();
        t.spec.auth.algorithms = vec![
            JwtAlgorithm::HS256,
            JwtAlgorithm::ES256,
            JwtAlgorithm::EdDSA,
        ];
        t.spec.secrets.jwt.secret = Some(SecretKeyRef {
            name: "pulse-fr-jwt".into(),
            key: "secret".into(),
        });
        t.spec.auth.key_rotation_days = Some(14);
        if let Some(sms) = t.spec.sms.as_mut() {
            sms.base_url = Some("https://sms.internal.example".into());
        }
        let desired = desired_of(&t);
        let expected: BTreeMap<String, String> = [
            (
                identity_vars::KEYRING_SECRET_FILE.var,
                "/etc/pulse/identity/keyring",
            ),
            // The first algorithm identity can sign with, not the first of the list.
            (identity_vars::SIGNING_ALGORITHM.var, "ES256"),
            (identity_vars::KEY_ROTATION_DAYS.var, "14"),
            (identity_vars::SMS_PROVIDER.var, "twilio"),
            (
                identity_vars::SMS_BASE_URL.var,
                "https://sms.internal.example",
            ),
            (
                identity_vars::SMS_ACCOUNT.var,
                "AC0123456789abcdef0123456789abcdef",
            ),
            (identity_vars::SMS_FROM.var, "+33700000000"),
            (
                identity_vars::SMS_AUTH_TOKEN.var,
                "secret:pulse-fr-sms/auth-token",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(identity_vars(&desired), expected);

        // The keyring is a read-only file of identity's pod, from the referenced key only.
        let deployment = &desired.components[0].deployment;
        let volume = pod_spec(deployment)
            .volumes
            .clone()
            .unwrap_or_default()
            .into_iter()
            .find(|v| v.name == "identity-keyring")
            .expect("keyring volume");
        let source = volume.secret.expect("secret volume");
        assert_eq!(source.secret_name.as_deref(), Some("pulse-fr-identity"));
        let items = source.items.unwrap_or_default();
        assert_eq!(
            (items[0].key.as_str(), items[0].path.as_str()),
            ("keyring", IDENTITY_KEYRING_FILE)
        );
        assert_eq!(source.default_mode, Some(0o440));
        let mount = container(deployment)
            .volume_mounts
            .clone()
            .unwrap_or_default()
            .into_iter()
            .find(|m| m.name == "identity-keyring")
            .expect("keyring mount");
        assert_eq!(
            (mount.mount_path.as_str(), mount.read_only),
            (IDENTITY_KEYRING_DIR, Some(true))
        );
        // The init container migrates with the database URL alone.
        let init = &pod_spec(deployment)
            .init_containers
            .clone()
            .unwrap_or_default()[0];
        assert_eq!(
            init.env
                .clone()
                .unwrap_or_default()
                .iter()
                .map(|v| v.name.as_str())
                .collect::<Vec<_>>(),
            [server::DATABASE_URL.var]
        );

        // Nobody else gets identity's settings, its keyring or its SMS token.
        for objects in desired.components.iter().skip(1) {
            let serve = container(&objects.deployment);
            assert!(
                serve
                    .env
                    .iter()
                    .flatten()
                    .all(|v| !v.name.starts_with("PULSE_IDENTITY_")),
                "{}",
                objects.component.name()
            );
            assert!(
                pod_spec(&objects.deployment)
                    .volumes
                    .iter()
                    .flatten()
                    .all(|v| v.name != "identity-keyring")
            );
        }
        let data = desired.config_map.data.clone().unwrap_or_default();
        assert!(
            data.keys().all(|k| !k.starts_with("PULSE_IDENTITY_")),
            "{data:?}"
        );

        // Defaults: EdDSA, identity's own rotation period, the base URL left to identity.
        let plain = desired_of(&tenant());
        let vars_of = identity_vars(&plain);
        assert_eq!(vars_of[identity_vars::SIGNING_ALGORITHM.var], "EdDSA");
        assert!(!vars_of.contains_key(identity_vars::KEY_ROTATION_DAYS.var));
        assert!(!vars_of.contains_key(identity_vars::SMS_BASE_URL.var));
    }

    #[test]
    fn the_sms_sandbox_writes_to_each_pods_writable_tmp_and_reads_no_credentials() {
        let mut t = tenant();
        t.spec.development = true;
        t.spec.sms = Some(SmsSpec {
            provider: SmsProvider::Sandbox,
            base_url: Some("https://sms.internal.example".into()),
            account: Some("AC1".into()),
            from: Some("+33700000000".into()),
            auth_token: Some(SecretKeyRef {
                name: "pulse-fr-sms".into(),
                key: "auth-token".into(),
            }),
        });
        let desired = desired_of(&t);
        let identity = identity_vars(&desired);
        assert_eq!(identity[identity_vars::SMS_PROVIDER.var], "sandbox");
        assert_eq!(
            identity[identity_vars::SANDBOX_SMS_FILE.var],
            SANDBOX_SMS_PATH
        );
        // Development mode also writes e-mail codes to a file: in `/tmp` as well.
        assert_eq!(
            identity[identity_vars::SANDBOX_EMAIL_FILE.var],
            SANDBOX_EMAIL_PATH
        );
        for setting in [
            identity_vars::SMS_BASE_URL,
            identity_vars::SMS_ACCOUNT,
            identity_vars::SMS_FROM,
            identity_vars::SMS_AUTH_TOKEN,
        ] {
            assert!(!identity.contains_key(setting.var), "{setting}");
        }
        // Notifier sends through the same sandbox, into its own pod's `/tmp`.
        let notifier = notifier_vars(&desired);
        assert_eq!(notifier[notifier_vars::SMS_PROVIDER.var], "sandbox");
        assert_eq!(
            notifier[notifier_vars::SANDBOX_SMS_FILE.var],
            NOTIFIER_SANDBOX_SMS_PATH
        );
        for setting in [
            notifier_vars::SMS_BASE_URL,
            notifier_vars::SMS_ACCOUNT,
            notifier_vars::SMS_FROM,
            notifier_vars::SMS_AUTH_TOKEN,
        ] {
            assert!(!notifier.contains_key(setting.var), "{setting}");
        }
        // `/tmp` is the pod's one writable directory.
        assert!(
            [
                SANDBOX_SMS_PATH,
                SANDBOX_EMAIL_PATH,
                NOTIFIER_SANDBOX_SMS_PATH
            ]
            .iter()
            .all(|path| path.starts_with("/tmp/"))
        );
        for component in [Component::Identity, Component::Notifier] {
            let deployment = &desired
                .components
                .iter()
                .find(|c| c.component == component)
                .expect("deployed")
                .deployment;
            assert!(
                container(deployment)
                    .volume_mounts
                    .iter()
                    .flatten()
                    .any(|m| m.mount_path == "/tmp"),
                "{component:?}"
            );
        }
    }

    #[test]
    fn sms_rules_are_checked_here_too() {
        let mut sandbox = tenant();
        sandbox.spec.sms = Some(SmsSpec {
            provider: SmsProvider::Sandbox,
            base_url: None,
            account: None,
            from: None,
            auth_token: None,
        });
        let err = desired(&sandbox).expect_err("sandbox outside development");
        assert!(err.to_string().contains("spec.development: true"), "{err}");
        assert_eq!(err.reason(), "InvalidSpec");

        for missing in ["account", "from", "authToken"] {
            let mut incomplete = tenant();
            if let Some(sms) = incomplete.spec.sms.as_mut() {
                match missing {
                    "account" => sms.account = None,
                    "from" => sms.from = None,
                    _ => sms.auth_token = None,
                }
            }
            let err = desired(&incomplete).expect_err("twilio without all it needs");
            assert!(
                err.to_string()
                    .contains(&format!("needs spec.sms.{missing}"))
                    && err.to_string().contains("pulse-fr"),
                "{err}"
            );
        }

        let mut bad_url = tenant();
        if let Some(sms) = bad_url.spec.sms.as_mut() {
            sms.base_url = Some("https://user:pw@api.twilio.example".into());
        }
        let err = desired(&bad_url).expect_err("credentials in the URL");
        assert!(
            err.to_string().starts_with(&format!(
                "spec.sms.baseUrl: {}",
                identity_vars::SMS_BASE_URL.var
            )),
            "{err}"
        );

        let mut missing = tenant();
        missing.spec.sms = None;
        let err = desired(&missing).expect_err("no SMS provider");
        assert_eq!(err.reason(), "NoSmsProvider");
        assert!(err.to_string().contains("nothing is deployed"), "{err}");
    }

    #[test]
    fn probes_hit_the_admin_port() {
        let desired = desired(&tenant()).expect("valid tenant");
        let serve = container(&desired.components[1].deployment);
        let get = |probe: &Option<Probe>| {
            let action = probe
                .as_ref()
                .and_then(|p| p.http_get.clone())
                .expect("http probe");
            (action.path.unwrap_or_default(), action.port)
        };
        let admin = IntOrString::String("admin".into());
        assert_eq!(get(&serve.liveness_probe), ("/livez".into(), admin.clone()));
        assert_eq!(
            get(&serve.readiness_probe),
            ("/readyz".into(), admin.clone())
        );
        assert_eq!(get(&serve.startup_probe), ("/livez".into(), admin));
        let ports: Vec<(String, i32)> = serve
            .ports
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|p| (p.name.unwrap_or_default(), p.container_port))
            .collect();
        assert_eq!(
            ports,
            [
                ("http".into(), 8080),
                ("grpc".into(), 50051),
                ("admin".into(), 9090)
            ]
        );
        let env = serve.env.clone().unwrap_or_default();
        let admin_addr = env
            .iter()
            .find(|v| v.name == server::ADMIN_ADDR.var)
            .and_then(|v| v.value.clone());
        assert_eq!(admin_addr.as_deref(), Some("0.0.0.0:9090"));
    }

    #[test]
    fn services_expose_http_and_grpc() {
        let desired = desired(&tenant()).expect("valid tenant");
        let service = &desired.components[2].service;
        assert_eq!(service.name_any(), "marketing");
        let spec = service.spec.clone().expect("spec");
        assert_eq!(
            spec.selector,
            Some(selector_labels("fr", Component::Marketing))
        );
        let ports: Vec<(String, i32, Option<String>)> = spec
            .ports
            .unwrap_or_default()
            .into_iter()
            .map(|p| (p.name.unwrap_or_default(), p.port, p.app_protocol))
            .collect();
        assert_eq!(ports[0], ("http".into(), 8080, Some("http".into())));
        assert_eq!(ports[1], ("grpc".into(), 50051, Some("grpc".into())));
    }

    #[test]
    fn hpa_bounds_and_pdb() {
        let mut t = tenant();
        let booking = t.spec.components.get_mut(Component::Booking);
        booking.min_replicas = 3;
        booking.max_replicas = 12;
        booking.target_cpu_utilization_percentage = 55;
        let desired = desired(&t).expect("valid tenant");
        let objects = &desired.components[1];
        assert_eq!(objects.component, Component::Booking);
        let spec = objects.hpa.spec.clone().expect("spec");
        assert_eq!(spec.min_replicas, Some(3));
        assert_eq!(spec.max_replicas, 12);
        assert_eq!(spec.scale_target_ref.kind, "Deployment");
        assert_eq!(spec.scale_target_ref.name, "booking");
        let metric = spec.metrics.unwrap_or_default()[0]
            .resource
            .clone()
            .expect("cpu metric");
        assert_eq!(metric.name, "cpu");
        assert_eq!(metric.target.average_utilization, Some(55));
        // Defaults elsewhere.
        let identity = desired.components[0].hpa.spec.clone().expect("spec");
        assert_eq!((identity.min_replicas, identity.max_replicas), (Some(2), 5));
        let pdb = objects.pdb.spec.clone().expect("pdb spec");
        assert_eq!(pdb.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(
            pdb.selector.and_then(|s| s.match_labels),
            Some(selector_labels("fr", Component::Booking))
        );
    }

    #[test]
    fn disabled_components_are_omitted_with_their_paths() {
        let mut t = tenant();
        t.spec.components.get_mut(Component::Notifier).enabled = false;
        t.spec.components.get_mut(Component::Booking).enabled = false;
        let desired = desired(&t).expect("valid tenant");
        assert_eq!(
            names(desired.components.iter().map(|c| c.deployment.clone())),
            ["identity", "marketing", "ordering", "web"]
        );
        let objects = desired.objects().expect("json");
        assert_eq!(objects.len(), 2 + 4 * 4 + 1);
        assert!(
            objects
                .iter()
                .all(|o| o["metadata"]["name"] != "notifier" && o["metadata"]["name"] != "booking")
        );
        let paths = ingress_paths(&desired);
        assert!(paths.iter().all(|(p, s)| !p.starts_with("/v1/appointments")
            && !p.contains("notification")
            && s != "notifier"));
        // Without notifier, nothing streams: no stream Ingress (the reconciler deletes it).
        assert!(desired.stream_ingress.is_none());
        assert!(
            paths
                .iter()
                .any(|(p, s)| p == "/v1/orders" && s == "ordering")
        );
    }

    fn ingress_paths(desired: &Desired) -> Vec<(String, String)> {
        paths_of(desired.ingress.as_ref())
    }

    /// The (path, service) pairs of an Ingress, checking that each is a `Prefix` path to the
    /// Service's `http` port.
    fn paths_of(ingress: Option<&Ingress>) -> Vec<(String, String)> {
        let spec = ingress.cloned().and_then(|i| i.spec).expect("ingress spec");
        spec.rules.unwrap_or_default()[0]
            .http
            .clone()
            .expect("http rule")
            .paths
            .into_iter()
            .map(|p| {
                assert_eq!(p.path_type, "Prefix");
                let backend = p.backend.service.expect("service backend");
                assert_eq!(
                    backend.port.and_then(|port| port.name).as_deref(),
                    Some("http")
                );
                (p.path.unwrap_or_default(), backend.name)
            })
            .collect()
    }

    #[test]
    fn ingress_routes_every_public_prefix() {
        let desired = desired(&tenant()).expect("valid tenant");
        let paths = ingress_paths(&desired);
        let expected: Vec<(String, String)> = [
            // Deepest first (see `ingress_paths`), then in the components' order.
            ("/v1/me/profile", "identity"),
            ("/v1/me/notification-preferences", "notifier"),
            ("/v1/admin/notifications", "notifier"),
            ("/v1/auth", "identity"),
            ("/v1/users", "identity"),
            ("/v1/practitioners", "booking"),
            ("/v1/appointments", "booking"),
            ("/v1/campaigns", "marketing"),
            ("/v1/seckill", "marketing"),
            ("/v1/vouchers", "marketing"),
            ("/v1/products", "ordering"),
            ("/v1/orders", "ordering"),
            ("/v1/payments", "ordering"),
            ("/v1/notifications", "notifier"),
            ("/.well-known", "identity"),
            // The web app: whatever no API path above claims.
            ("/", "web"),
        ]
        .into_iter()
        .map(|(p, s)| (p.to_owned(), s.to_owned()))
        .collect();
        assert_eq!(paths, expected);
        let spec = desired.ingress.clone().and_then(|i| i.spec).expect("spec");
        assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
        let tls = spec.tls.unwrap_or_default();
        assert_eq!(tls[0].secret_name.as_deref(), Some("pulse-fr-tls"));
        assert_eq!(tls[0].hosts, Some(vec!["fr.pulse.example".to_owned()]));
        assert_eq!(
            spec.rules.unwrap_or_default()[0].host.as_deref(),
            Some("fr.pulse.example")
        );
    }

    /// The service a request for `request` reaches, by the Ingress API's rules: among the
    /// `Prefix` paths whose elements begin the request's elements, the longest wins. `first`
    /// instead takes the first match in list order, as some controllers do.
    fn route(paths: &[(String, String)], request: &str, first: bool) -> Option<String> {
        let request: Vec<&str> = path_elements(request).collect();
        let mut matches = paths.iter().filter(|(path, _)| {
            let prefix: Vec<&str> = path_elements(path).collect();
            request.starts_with(&prefix)
        });
        let chosen = if first {
            matches.next()
        } else {
            matches.max_by_key(|(path, _)| path_elements(path).count())
        };
        chosen.map(|(_, service)| service.clone())
    }

    #[test]
    fn every_identity_path_reaches_identity_and_profile_wins_over_me() {
        let desired = desired(&tenant()).expect("valid tenant");
        let paths = ingress_paths(&desired);
        for request in [
            "/v1/auth/otp",
            "/v1/auth/token",
            "/.well-known/jwks.json",
            "/v1/me/profile",
            "/v1/me/profile/email",
            "/v1/users/0192b0c4-0000-7000-8000-000000000000/roles",
        ] {
            for first in [false, true] {
                assert_eq!(
                    route(&paths, request, first).as_deref(),
                    Some("identity"),
                    "{request}"
                );
            }
        }
        // Element-wise: `/v1/me/profile` does not catch `/v1/me/profiles` (no API serves it,
        // so it falls to the web app's `/`).
        assert_eq!(
            route(&paths, "/v1/me/profiles", false).as_deref(),
            Some("web")
        );

        // Should another component ever route `/v1/me` (or `/v1`), the more specific identity
        // path still wins, by length and by position.
        let routes = Component::ALL.into_iter().flat_map(|c| {
            c.public_paths()
                .iter()
                .map(move |path| ((*path).to_owned(), c))
        });
        let shadowing = [
            ("/v1".to_owned(), Component::Booking),
            ("/v1/me".to_owned(), Component::Notifier),
        ];
        let paths: Vec<(String, String)> =
            super::ingress_paths(shadowing.into_iter().chain(routes))
                .into_iter()
                .map(|p| {
                    let service = p.backend.service.map(|s| s.name).unwrap_or_default();
                    (p.path.unwrap_or_default(), service)
                })
                .collect();
        for first in [false, true] {
            assert_eq!(
                route(&paths, "/v1/me/profile", first).as_deref(),
                Some("identity")
            );
            assert_eq!(route(&paths, "/v1/me", first).as_deref(), Some("notifier"));
            assert_eq!(
                route(&paths, "/v1/me/vouchers", first).as_deref(),
                Some("notifier")
            );
            assert_eq!(
                route(&paths, "/v1/orders/1", first).as_deref(),
                Some("ordering")
            );
            assert_eq!(
                route(&paths, "/v1/other", first).as_deref(),
                Some("booking")
            );
        }
        // No path comes after a path that is its prefix.
        for (i, (later, _)) in paths.iter().enumerate() {
            let later: Vec<&str> = path_elements(later).collect();
            for (earlier, _) in &paths[..i] {
                let earlier: Vec<&str> = path_elements(earlier).collect();
                assert!(
                    !(later.starts_with(&earlier) && later.len() > earlier.len()),
                    "{later:?} comes after its prefix {earlier:?}"
                );
            }
        }
    }

    /// A request path under each API prefix, deeper than the prefix itself.
    fn below(prefix: &str) -> String {
        format!("{prefix}/0192b0c4-0000-7000-8000-000000000000")
    }

    #[test]
    fn the_web_app_is_served_at_the_root_and_no_api_path_falls_to_it() {
        let desired = desired_of(&tenant());
        let paths = ingress_paths(&desired);
        // `/` with `Prefix` (checked by `paths_of`) to web's Service, last of the list.
        assert_eq!(paths.last(), Some(&("/".to_owned(), "web".to_owned())));
        assert_eq!(paths.iter().filter(|(_, s)| s == "web").count(), 1);
        // Web's own paths reach it, whichever way the controller matches.
        for request in [
            "/",
            "/index.html",
            "/assets",
            "/assets/app.js",
            "/assets/css/app.css",
            "/app/config.json",
            "/appointments",
        ] {
            for first in [false, true] {
                assert_eq!(
                    route(&paths, request, first).as_deref(),
                    Some("web"),
                    "{request}"
                );
            }
        }
        // Every API prefix, and what lies below it, still reaches its own component.
        for component in Component::ALL.into_iter().filter(|c| *c != Component::Web) {
            for prefix in component.public_paths() {
                for request in [(*prefix).to_owned(), below(prefix)] {
                    for first in [false, true] {
                        assert_eq!(
                            route(&paths, &request, first).as_deref(),
                            Some(component.name()),
                            "{request}"
                        );
                    }
                }
            }
        }
        // The stream Ingress is unchanged: notifier's stream only, nothing of web.
        assert_eq!(
            paths_of(desired.stream_ingress.as_ref()),
            [("/v1/notifications/stream".into(), "notifier".into())]
        );

        // Without web, no `/` rule; the API paths are exactly those of before.
        let mut without = tenant();
        without.spec.components.get_mut(Component::Web).enabled = false;
        let without = desired_of(&without);
        let api_paths = ingress_paths(&without);
        assert!(api_paths.iter().all(|(p, s)| p != "/" && s != "web"));
        assert_eq!(api_paths, paths[..paths.len() - 1]);
        assert_eq!(route(&api_paths, "/assets/app.js", false), None);
        assert_eq!(
            paths_of(without.stream_ingress.as_ref()),
            paths_of(desired.stream_ingress.as_ref())
        );
        assert!(
            without
                .components
                .iter()
                .all(|c| c.component != Component::Web)
        );

        // Web alone still makes an Ingress: the app, and no API.
        let mut alone = tenant();
        for c in Component::ALL {
            alone.spec.components.get_mut(c).enabled = c == Component::Web;
        }
        let alone = desired_of(&alone);
        assert_eq!(ingress_paths(&alone), [("/".to_owned(), "web".to_owned())]);
        assert!(alone.stream_ingress.is_none());
    }

    #[test]
    fn web_runs_its_target_with_the_base_settings_only() {
        let names_of = |env: &[EnvVar]| -> Vec<String> {
            let mut names: Vec<String> = env.iter().map(|v| v.name.clone()).collect();
            names.sort();
            names
        };
        let base = |extra: &[&str]| -> Vec<String> {
            let mut names: Vec<String> = [
                server::DATABASE_URL.var,
                server::REDIS_URL.var,
                server::KAFKA_BROKERS.var,
                server::HTTP_ADDR.var,
                server::GRPC_ADDR.var,
                server::ADMIN_ADDR.var,
            ]
            .iter()
            .chain(extra)
            .map(|n| (*n).to_owned())
            .collect();
            names.sort();
            names
        };

        let mut t = with_email(tenant());
        t.spec.development = true;
        let desired = desired_of(&t);
        let web = desired
            .components
            .iter()
            .find(|c| c.component == Component::Web)
            .expect("web is enabled by default");
        let serve = container(&web.deployment);
        assert_eq!(serve.name, "web");
        assert_eq!(
            serve.args.clone().unwrap_or_default(),
            ["serve", "--target", "web"]
        );
        // The same probes, ports and security as every component.
        let booking = &desired.components[1].deployment;
        for (ours, theirs) in [
            (&serve.startup_probe, &container(booking).startup_probe),
            (&serve.liveness_probe, &container(booking).liveness_probe),
            (&serve.readiness_probe, &container(booking).readiness_probe),
        ] {
            assert!(ours.is_some());
            assert_eq!(ours, theirs);
        }
        assert_eq!(serve.ports, container(booking).ports);
        assert_eq!(serve.security_context, container(booking).security_context);

        // The base settings, as Secret references, and nothing of another component: no
        // keyring, no signing or SMS settings, no SMTP URL, no payment credentials.
        let env = serve.env.clone().unwrap_or_default();
        assert_eq!(names_of(&env), base(&[]));
        for (name, key) in [
            (server::DATABASE_URL.var, "database-url"),
            (server::REDIS_URL.var, "redis-url"),
            (server::KAFKA_BROKERS.var, "kafka-brokers"),
        ] {
            assert_eq!(
                env_source(&env, name),
                Some((None, Some(("pulse-fr-backends".to_owned(), key.to_owned())))),
                "{name}"
            );
        }
        assert_eq!(serve.env_from, container(booking).env_from);
        let volumes: Vec<String> = pod_spec(&web.deployment)
            .volumes
            .iter()
            .flatten()
            .map(|v| v.name.clone())
            .collect();
        assert_eq!(volumes, ["tmp"]);
        // No schema, so no `pulse migrate` before it starts: nothing waits for the database.
        assert_eq!(pod_spec(&web.deployment).init_containers, None);
        assert!(!Component::Web.uses_database());

        // While HS256 tokens are accepted, the kit refuses to start without the shared secret:
        // web gets it like everyone, and nothing more.
        t.spec.auth.algorithms = vec![JwtAlgorithm::EdDSA, JwtAlgorithm::HS256];
        t.spec.secrets.jwt.secret = Some(SecretKeyRef {
            name: "pulse-fr-jwt".into(),
            key: "secret".into(),
        });
        let env = env_of(&desired_of(&t), Component::Web);
        assert_eq!(names_of(&env), base(&[server::JWT_SECRET.var]));

        // Small resources by default, and its Service, autoscaler and disruption budget.
        let resources = serve.resources.clone().expect("resources");
        let quantity = |map: &Option<BTreeMap<String, Quantity>>, key: &str| {
            map.as_ref().and_then(|m| m.get(key)).map(|q| q.0.clone())
        };
        assert_eq!(quantity(&resources.requests, "cpu").as_deref(), Some("50m"));
        assert_eq!(
            quantity(&resources.requests, "memory").as_deref(),
            Some("64Mi")
        );
        assert_eq!(
            quantity(&resources.limits, "memory").as_deref(),
            Some("256Mi")
        );
        assert_eq!(quantity(&resources.limits, "cpu"), None);
        assert_eq!(web.service.name_any(), "web");
        assert_eq!(
            web.service.spec.as_ref().and_then(|s| s.selector.clone()),
            Some(selector_labels("fr", Component::Web))
        );
        let hpa = web.hpa.spec.clone().expect("hpa spec");
        assert_eq!(hpa.scale_target_ref.name, "web");
        assert_eq!((hpa.min_replicas, hpa.max_replicas), (Some(2), 5));
        assert_eq!(web.pdb.name_any(), "web");
    }

    #[test]
    fn ingress_prefix_and_absence() {
        let mut t = tenant();
        if let Some(ingress) = t.spec.ingress.as_mut() {
            ingress.path_prefix = "/fr".into();
            ingress.tls_secret_name = None;
        }
        let desired_prefixed = desired(&t).expect("valid tenant");
        let prefixed = ingress_paths(&desired_prefixed);
        assert!(
            prefixed
                .iter()
                .all(|(p, _)| p == "/fr" || p.starts_with("/fr/")),
            "{prefixed:?}"
        );
        // The web app at the prefix itself, last; the APIs under it.
        assert_eq!(prefixed.last(), Some(&("/fr".to_owned(), "web".to_owned())));
        assert_eq!(route(&prefixed, "/fr", false).as_deref(), Some("web"));
        assert_eq!(
            route(&prefixed, "/fr/assets/app.js", false).as_deref(),
            Some("web")
        );
        assert_eq!(
            route(&prefixed, "/fr/v1/orders/1", false).as_deref(),
            Some("ordering")
        );
        assert_eq!(route(&prefixed, "/de", false), None);
        assert_eq!(
            paths_of(desired_prefixed.stream_ingress.as_ref()),
            [("/fr/v1/notifications/stream".into(), "notifier".into())]
        );
        let stream = desired_prefixed
            .stream_ingress
            .and_then(|i| i.spec)
            .expect("stream spec");
        assert_eq!(stream.tls, None);
        assert_eq!(
            desired_prefixed.url.as_deref(),
            Some("http://fr.pulse.example/fr")
        );

        t.spec.ingress = None;
        let without = desired(&t).expect("valid tenant");
        assert!(without.ingress.is_none());
        assert!(without.stream_ingress.is_none());
        assert!(without.url.is_none());

        let mut none_enabled = tenant();
        for c in Component::ALL {
            none_enabled.spec.components.get_mut(c).enabled = false;
        }
        let empty = desired(&none_enabled).expect("valid tenant");
        assert!(empty.components.is_empty());
        assert!(
            empty.ingress.is_none() && empty.stream_ingress.is_none(),
            "an Ingress without paths is invalid"
        );
    }

    #[test]
    fn owner_references_point_at_the_tenant() {
        let desired = desired(&tenant()).expect("valid tenant");
        let objects = desired.objects().expect("json");
        for object in &objects[1..] {
            let owners = object["metadata"]["ownerReferences"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            assert_eq!(owners.len(), 1, "{}", object["kind"]);
            let owner = &owners[0];
            assert_eq!(owner["kind"], "CountryTenant");
            assert_eq!(owner["apiVersion"], "pulse.dev/v1alpha1");
            assert_eq!(owner["name"], "fr");
            assert_eq!(owner["uid"], UID);
            assert_eq!(owner["controller"], true);
        }
        // The namespace is not owned: its fate is the deletion policy's.
        assert!(objects[0]["metadata"].get("ownerReferences").is_none());
        // A tenant read from a file has no uid yet: no owner references.
        let mut from_file = tenant();
        from_file.metadata.uid = None;
        let rendered = desired_objects(&from_file);
        assert!(
            rendered
                .iter()
                .all(|o| o["metadata"].get("ownerReferences").is_none())
        );
    }

    fn desired_objects(t: &CountryTenant) -> Vec<serde_json::Value> {
        desired(t).expect("valid tenant").objects().expect("json")
    }

    #[test]
    fn config_hash_follows_the_configuration() {
        let base = desired(&tenant()).expect("valid tenant");
        let mut changed = tenant();
        changed.spec.country.timezone = "Europe/Berlin".into();
        let after = desired(&changed).expect("valid tenant");
        assert_ne!(base.config_hash, after.config_hash);
        for (before, now) in base.components.iter().zip(&after.components) {
            assert_eq!(config_hash_of(&before.deployment), base.config_hash);
            assert_eq!(config_hash_of(&now.deployment), after.config_hash);
            assert_ne!(
                config_hash_of(&before.deployment),
                config_hash_of(&now.deployment)
            );
        }
        let mut issuer = tenant();
        issuer.spec.auth.issuer = "pulse-prod".into();
        assert_ne!(
            desired(&issuer).expect("valid").config_hash,
            base.config_hash
        );
        // Not a config change: the hash stays, so pods do not roll.
        let mut scaled = tenant();
        scaled
            .spec
            .components
            .get_mut(Component::Booking)
            .max_replicas = 9;
        assert_eq!(
            desired(&scaled).expect("valid").config_hash,
            base.config_hash
        );
    }

    #[test]
    fn pods_meet_the_restricted_standard() {
        let desired = desired(&tenant()).expect("valid tenant");
        let pod = pod_spec(&desired.components[0].deployment);
        let ctx = pod.security_context.clone().expect("pod security context");
        assert_eq!(ctx.run_as_non_root, Some(true));
        assert_eq!(
            ctx.seccomp_profile.map(|s| s.type_).as_deref(),
            Some("RuntimeDefault")
        );
        for c in pod
            .containers
            .iter()
            .chain(pod.init_containers.iter().flatten())
        {
            let sc = c
                .security_context
                .clone()
                .expect("container security context");
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
            assert_eq!(
                sc.capabilities.and_then(|c| c.drop),
                Some(vec!["ALL".to_owned()])
            );
        }
    }

    #[test]
    fn invalid_tenants_are_refused_with_the_field() {
        let mut renamed = tenant();
        renamed.metadata.name = Some("france".into());
        let err = desired(&renamed).expect_err("name must match");
        assert!(err.to_string().contains("`fr`"), "{err}");

        let mut zone = tenant();
        zone.spec.country.timezone = "Europe/Pariss".into();
        let err = desired(&zone).expect_err("bad zone");
        assert!(err.to_string().contains("timezone"), "{err}");

        let mut bounds = tenant();
        bounds
            .spec
            .components
            .get_mut(Component::Ordering)
            .min_replicas = 9;
        let err = desired(&bounds).expect_err("min > max");
        assert!(
            err.to_string().contains("spec.components.ordering"),
            "{err}"
        );

        let mut no_key = tenant();
        no_key.spec.auth.algorithms = vec![JwtAlgorithm::EdDSA, JwtAlgorithm::HS256];
        no_key.spec.secrets.jwt.secret = None;
        let err = desired(&no_key).expect_err("HS256 needs a secret");
        assert!(err.to_string().contains("secrets.jwt.secret"), "{err}");

        for algorithms in [vec![JwtAlgorithm::HS256], vec![]] {
            let mut no_signer = tenant();
            no_signer.spec.auth.algorithms = algorithms;
            no_signer.spec.secrets.jwt.secret = Some(SecretKeyRef {
                name: "pulse-fr-jwt".into(),
                key: "secret".into(),
            });
            let err = desired(&no_signer).expect_err("identity needs an algorithm to sign with");
            assert!(err.to_string().contains("ES256 or EdDSA"), "{err}");
            assert_eq!(err.reason(), "InvalidSpec");
        }

        let mut no_keyring = tenant();
        no_keyring.spec.secrets.identity_keyring = None;
        let err = desired(&no_keyring).expect_err("identity needs its keyring");
        assert_eq!(err.reason(), "NoIdentityKeyring");
        assert!(
            err.to_string().contains("spec.secrets.identityKeyring")
                && err.to_string().contains("pulse-fr")
                && err.to_string().contains("nothing is deployed"),
            "{err}"
        );
    }

    /// Where a variable comes from: a plain value, or a Secret's name and key.
    type EnvSource = Option<(Option<String>, Option<(String, String)>)>;

    /// Where `name` comes from in `env`, if it is there.
    fn env_source(env: &[EnvVar], name: &str) -> EnvSource {
        env.iter().find(|v| v.name == name).map(|v| {
            let secret = v
                .value_from
                .as_ref()
                .and_then(|f| f.secret_key_ref.as_ref())
                .map(|s| (s.name.clone(), s.key.clone()));
            (v.value.clone(), secret)
        })
    }

    fn env_of(desired: &Desired, component: Component) -> Vec<EnvVar> {
        let objects = desired
            .components
            .iter()
            .find(|c| c.component == component)
            .expect("component enabled");
        container(&objects.deployment)
            .env
            .clone()
            .unwrap_or_default()
    }

    #[test]
    fn payment_settings_are_rendered_from_the_constants() {
        let mut t = tenant();
        if let Some(payments) = t.spec.payments.as_mut() {
            payments.base_url = Some("https://stripe.internal.example".into());
        }
        let desired = desired(&t).expect("valid tenant");
        let data = desired.config_map.data.clone().expect("data");
        assert_eq!(data[ordering::PAYMENT_PROVIDER.var], "stripe");
        assert_eq!(data[server::DEVELOPMENT_MODE.var], "false");
        assert_eq!(
            data[ordering::STRIPE_BASE_URL.var],
            "https://stripe.internal.example"
        );
        assert_eq!(
            data[ordering::PAYMENT_RETURN_URL.var],
            "https://fr.pulse.example/#/orders/{ORDER_ID}",
            "the buyer comes back to the web app's order page"
        );
        let mut without_web = t.clone();
        without_web.spec.components.get_mut(Component::Web).enabled = false;
        let data = super::desired(&without_web)
            .expect("valid tenant")
            .config_map
            .data
            .expect("data");
        assert_eq!(
            data[ordering::PAYMENT_RETURN_URL.var],
            "https://fr.pulse.example/v1/orders/{ORDER_ID}",
            "without the web app, to the order itself"
        );
        let data = desired.config_map.data.clone().expect("data");
        // Plain values only: the credentials are never in the ConfigMap.
        assert!(!data.contains_key(ordering::STRIPE_API_KEY.var));
        assert!(!data.contains_key(ordering::PAYMENT_WEBHOOK_SECRET.var));

        // The credentials go to ordering, as Secret references, and to nobody else.
        let ordering_env = env_of(&desired, Component::Ordering);
        let from_secret = |key: &str| -> EnvSource {
            Some((None, Some(("pulse-fr-payments".to_owned(), key.to_owned()))))
        };
        assert_eq!(
            env_source(&ordering_env, ordering::STRIPE_API_KEY.var),
            from_secret(PaymentsSpec::API_KEY)
        );
        assert_eq!(
            env_source(&ordering_env, ordering::PAYMENT_WEBHOOK_SECRET.var),
            from_secret(PaymentsSpec::WEBHOOK_SECRET)
        );
        for component in Component::ALL
            .into_iter()
            .filter(|c| *c != Component::Ordering)
        {
            let env = env_of(&desired, component);
            for setting in [ordering::STRIPE_API_KEY, ordering::PAYMENT_WEBHOOK_SECRET] {
                assert!(
                    env_source(&env, setting.var).is_none(),
                    "{} must not get {setting}",
                    component.name()
                );
            }
        }

        // A development tenant with the sandbox: no API key, no base URL, development mode on.
        let mut dev = tenant();
        dev.spec.development = true;
        dev.spec.payments = Some(PaymentsSpec {
            provider: PaymentProvider::Sandbox,
            secret_ref: None,
            base_url: None,
        });
        let rendered = desired_of(&dev);
        let data = rendered.config_map.data.clone().expect("data");
        assert_eq!(data[ordering::PAYMENT_PROVIDER.var], "sandbox");
        assert_eq!(data[server::DEVELOPMENT_MODE.var], "true");
        assert!(!data.contains_key(ordering::STRIPE_BASE_URL.var));
        let ordering_env = env_of(&rendered, Component::Ordering);
        assert!(env_source(&ordering_env, ordering::STRIPE_API_KEY.var).is_none());
        assert!(env_source(&ordering_env, ordering::PAYMENT_WEBHOOK_SECRET.var).is_none());

        // With a Secret, the sandbox signs its webhooks with the secret's key, still no API key.
        dev.spec.payments = Some(PaymentsSpec {
            provider: PaymentProvider::Sandbox,
            secret_ref: Some(SecretName {
                name: "pulse-fr-payments".into(),
            }),
            base_url: None,
        });
        let ordering_env = env_of(&desired_of(&dev), Component::Ordering);
        assert!(env_source(&ordering_env, ordering::STRIPE_API_KEY.var).is_none());
        assert_eq!(
            env_source(&ordering_env, ordering::PAYMENT_WEBHOOK_SECRET.var),
            from_secret(PaymentsSpec::WEBHOOK_SECRET)
        );
    }

    fn desired_of(t: &CountryTenant) -> Desired {
        desired(t).expect("valid tenant")
    }

    #[test]
    fn payment_rules_are_checked_here_too() {
        let mut sandbox = tenant();
        sandbox.spec.payments = Some(PaymentsSpec {
            provider: PaymentProvider::Sandbox,
            secret_ref: None,
            base_url: None,
        });
        let err = desired(&sandbox).expect_err("sandbox outside development");
        assert!(err.to_string().contains("spec.development: true"), "{err}");
        assert_eq!(err.reason(), "InvalidSpec");

        let mut no_secret = tenant();
        if let Some(payments) = no_secret.spec.payments.as_mut() {
            payments.secret_ref = None;
        }
        let err = desired(&no_secret).expect_err("stripe without its Secret");
        assert!(
            err.to_string().contains("secretRef") && err.to_string().contains("pulse-fr"),
            "{err}"
        );

        let mut bad_url = tenant();
        if let Some(payments) = bad_url.spec.payments.as_mut() {
            payments.base_url = Some("https://user:pw@stripe.example".into());
        }
        let err = desired(&bad_url).expect_err("credentials in the URL");
        assert!(
            err.to_string().starts_with(&format!(
                "spec.payments.baseUrl: {}",
                ordering::STRIPE_BASE_URL.var
            )),
            "{err}"
        );

        let mut missing = tenant();
        missing.spec.payments = None;
        let err = desired(&missing).expect_err("no provider");
        assert_eq!(err.reason(), "NoPaymentProvider");
        assert!(err.to_string().contains("nothing is deployed"), "{err}");
    }
    /// Notifier's container env, as name → plain value or `secret:<name>/<key>`.
    fn notifier_vars(desired: &Desired) -> BTreeMap<String, String> {
        env_of(desired, Component::Notifier)
            .into_iter()
            .filter(|v| v.name.starts_with("PULSE_NOTIFIER_"))
            .map(|v| {
                let value = match (v.value, v.value_from.and_then(|f| f.secret_key_ref)) {
                    (Some(value), None) => value,
                    (None, Some(s)) => format!("secret:{}/{}", s.name, s.key),
                    other => panic!("{}: {other:?}", v.name),
                };
                (v.name, value)
            })
            .collect()
    }

    fn with_email(mut t: CountryTenant) -> CountryTenant {
        t.spec.email = Some(EmailSpec {
            smtp_url_secret: SecretKeyRef {
                name: "pulse-fr-smtp".into(),
                key: "url".into(),
            },
            from: "Pulse France <no-reply@fr.pulse.example>".into(),
        });
        t
    }

    #[test]
    fn notifier_gets_identity_the_sms_provider_and_smtp() {
        let mut t = with_email(tenant());
        if let Some(sms) = t.spec.sms.as_mut() {
            sms.base_url = Some("https://sms.internal.example".into());
        }
        let desired = desired_of(&t);
        let expected: BTreeMap<String, String> = [
            (
                notifier_vars::IDENTITY_GRPC_URL.var,
                "http://identity.pulse-fr.svc:50051",
            ),
            // The same provider, account, sender and token Secret as identity's.
            (notifier_vars::SMS_PROVIDER.var, "twilio"),
            (
                notifier_vars::SMS_BASE_URL.var,
                "https://sms.internal.example",
            ),
            (
                notifier_vars::SMS_ACCOUNT.var,
                "AC0123456789abcdef0123456789abcdef",
            ),
            (notifier_vars::SMS_FROM.var, "+33700000000"),
            (
                notifier_vars::SMS_AUTH_TOKEN.var,
                "secret:pulse-fr-sms/auth-token",
            ),
            (notifier_vars::SMTP_URL.var, "secret:pulse-fr-smtp/url"),
            (
                notifier_vars::EMAIL_FROM.var,
                "Pulse France <no-reply@fr.pulse.example>",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(notifier_vars(&desired), expected);
        assert_eq!(
            cluster::grpc_url("identity", "pulse-fr"),
            expected[notifier_vars::IDENTITY_GRPC_URL.var]
        );
        let identity = identity_vars(&desired);
        for (ours, theirs) in [
            (notifier_vars::SMS_ACCOUNT, identity_vars::SMS_ACCOUNT),
            (notifier_vars::SMS_FROM, identity_vars::SMS_FROM),
            (notifier_vars::SMS_AUTH_TOKEN, identity_vars::SMS_AUTH_TOKEN),
            // Identity sends its verification codes through the same SMTP server.
            (notifier_vars::SMTP_URL, identity_vars::SMTP_URL),
            (notifier_vars::EMAIL_FROM, identity_vars::EMAIL_FROM),
        ] {
            assert_eq!(expected[ours.var], identity[theirs.var], "{ours}");
        }

        // Nobody else gets notifier's settings, the SMTP URL above all; nothing of it is in the
        // ConfigMap.
        for component in Component::ALL
            .into_iter()
            .filter(|c| *c != Component::Notifier)
        {
            let env = env_of(&desired, component);
            assert!(
                env.iter().all(|v| !v.name.starts_with("PULSE_NOTIFIER_")),
                "{}",
                component.name()
            );
        }
        let data = desired.config_map.data.clone().unwrap_or_default();
        assert!(
            data.keys().all(|k| !k.starts_with("PULSE_NOTIFIER_")),
            "{data:?}"
        );
        assert!(
            data.values()
                .all(|v| !v.contains("smtp") && !v.contains("no-reply")),
            "{data:?}"
        );
    }

    #[test]
    fn without_spec_email_notifier_gets_no_smtp() {
        let desired = desired_of(&tenant());
        let vars = notifier_vars(&desired);
        assert!(!vars.contains_key(notifier_vars::SMTP_URL.var), "{vars:?}");
        assert!(
            !vars.contains_key(notifier_vars::EMAIL_FROM.var),
            "{vars:?}"
        );
        // The rest is there all the same.
        assert_eq!(vars[notifier_vars::SMS_PROVIDER.var], "twilio");
        assert!(vars.contains_key(notifier_vars::IDENTITY_GRPC_URL.var));
    }

    #[test]
    fn notifier_reaches_identity_even_when_this_tenant_does_not_run_it() {
        let mut t = tenant();
        t.spec.components.get_mut(Component::Identity).enabled = false;
        let vars = notifier_vars(&desired_of(&t));
        assert_eq!(
            vars[notifier_vars::IDENTITY_GRPC_URL.var],
            "http://identity.pulse-fr.svc:50051"
        );
    }

    #[test]
    fn the_sse_stream_has_its_own_unbuffered_ingress() {
        let mut t = tenant();
        if let Some(ingress) = t.spec.ingress.as_mut() {
            ingress.annotations = BTreeMap::from([
                (
                    "cert-manager.io/cluster-issuer".into(),
                    "letsencrypt".into(),
                ),
                ("nginx.ingress.kubernetes.io/limit-rps".into(), "50".into()),
                (
                    "nginx.ingress.kubernetes.io/proxy-buffering".into(),
                    "on".into(),
                ),
            ]);
        }
        let desired = desired_of(&t);
        let stream = desired.stream_ingress.clone().expect("stream ingress");
        assert_eq!(stream.name_any(), STREAM_INGRESS);
        assert_eq!(stream.namespace().as_deref(), Some("pulse-fr"));
        // Owned and labelled like every other object, so it is watched and garbage-collected.
        assert_eq!(stream.metadata.labels, Some(tenant_labels("fr")));
        let owners = stream.metadata.owner_references.clone().unwrap_or_default();
        assert_eq!(owners.len(), 1);
        assert_eq!(
            (owners[0].kind.as_str(), owners[0].uid.as_str()),
            ("CountryTenant", UID)
        );

        // Only the stream path, to notifier's HTTP port (`http`, 8080 in the Service).
        let spec = stream.spec.clone().expect("spec");
        let paths = spec.rules.clone().unwrap_or_default()[0]
            .http
            .clone()
            .expect("http")
            .paths;
        assert_eq!(paths.len(), 1);
        assert_eq!(paths[0].path.as_deref(), Some("/v1/notifications/stream"));
        let backend = paths[0].backend.service.clone().expect("service backend");
        assert_eq!(backend.name, "notifier");
        let port = backend.port.and_then(|p| p.name).expect("port name");
        let notifier_service = desired
            .components
            .iter()
            .find(|c| c.component == Component::Notifier)
            .and_then(|c| c.service.spec.clone())
            .expect("notifier service");
        assert!(
            notifier_service
                .ports
                .unwrap_or_default()
                .iter()
                .any(|p| p.name.as_deref() == Some(port.as_str())
                    && p.port == i32::from(cluster::HTTP_PORT))
        );
        // The same host, class and TLS as the main Ingress.
        let main = desired.ingress.clone().and_then(|i| i.spec).expect("main");
        assert_eq!(spec.ingress_class_name, main.ingress_class_name);
        assert_eq!(spec.tls, main.tls);
        assert_eq!(
            spec.rules.unwrap_or_default()[0].host,
            main.rules.unwrap_or_default()[0].host
        );

        // Unbuffered, with a long read timeout, over the tenant's own annotations; the
        // certificate is requested by the main Ingress only.
        let annotations = stream.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            annotations["nginx.ingress.kubernetes.io/proxy-buffering"],
            "off"
        );
        assert_eq!(
            annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"],
            "3600"
        );
        assert_eq!(annotations["nginx.ingress.kubernetes.io/limit-rps"], "50");
        assert!(!annotations.contains_key("cert-manager.io/cluster-issuer"));
        let main_annotations = desired
            .ingress
            .and_then(|i| i.metadata.annotations)
            .unwrap_or_default();
        assert_eq!(
            main_annotations["cert-manager.io/cluster-issuer"],
            "letsencrypt"
        );
        assert!(!main_annotations.contains_key("nginx.ingress.kubernetes.io/proxy-read-timeout"));
    }

    #[test]
    fn notifier_paths_reach_notifier_and_the_stream_its_own_ingress() {
        let desired = desired_of(&tenant());
        let main = ingress_paths(&desired);
        let stream = paths_of(desired.stream_ingress.as_ref());
        // Across the Ingresses of one host the longest matching path wins.
        let all: Vec<(String, String)> = main.iter().chain(&stream).cloned().collect();
        for request in [
            "/v1/notifications",
            "/v1/notifications/0192b0c4-0000-7000-8000-000000000000/read",
            "/v1/notifications/stream",
            "/v1/me/notification-preferences",
            "/v1/admin/notifications",
            "/v1/admin/notifications/dead-letters",
        ] {
            assert_eq!(
                route(&all, request, false).as_deref(),
                Some("notifier"),
                "{request}"
            );
        }
        // The main Ingress serves everything but the stream, which only the stream Ingress has.
        assert_eq!(
            route(&main, "/v1/notifications/stream", false).as_deref(),
            Some("notifier")
        );
        assert!(main.iter().all(|(p, _)| p != "/v1/notifications/stream"));
        assert_eq!(route(&stream, "/v1/notifications", false), None);
        assert_eq!(
            route(&stream, "/v1/notifications/stream", false).as_deref(),
            Some("notifier")
        );
        // Identity's profile stays identity's.
        assert_eq!(
            route(&all, "/v1/me/profile", false).as_deref(),
            Some("identity")
        );
        // Every stream path is also under one of its component's public paths.
        for component in Component::ALL {
            for path in component.stream_paths() {
                let path: Vec<&str> = path_elements(path).collect();
                assert!(component.public_paths().iter().any(|public| {
                    let public: Vec<&str> = path_elements(public).collect();
                    path.starts_with(&public)
                }));
            }
        }
    }

    #[test]
    fn email_rules_are_checked_here_too() {
        desired(&with_email(tenant())).expect("a sender address");
        for from in [
            "no-reply@fr.pulse.example",
            "Pulse France <no-reply@fr.pulse.example>",
        ] {
            let mut t = with_email(tenant());
            if let Some(email) = t.spec.email.as_mut() {
                email.from = from.into();
            }
            desired(&t).unwrap_or_else(|err| panic!("{from}: {err}"));
        }
        for from in [
            "",
            "Pulse France",
            "@fr.pulse.example",
            "no-reply@",
            "Pulse <no-reply @ fr.pulse.example>",
            "no-reply@fr.pulse.example\nBcc: everyone@example.com",
        ] {
            let mut t = with_email(tenant());
            if let Some(email) = t.spec.email.as_mut() {
                email.from = from.into();
            }
            let err = desired(&t).expect_err(from);
            assert_eq!(err.reason(), "InvalidSpec");
            assert!(
                err.to_string().starts_with("spec.email.from")
                    && err.to_string().contains("Name <address@domain>"),
                "{err}"
            );
        }
    }
}
