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
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::crd::{Component, ComponentSpec, CountryTenant, JwtAlgorithm, ResourceAmounts};

/// Field manager of every server-side apply, and the `managed-by` label value.
pub const MANAGER: &str = "pulse-operator";
/// Name of the country's ConfigMap.
pub const CONFIG_MAP: &str = "pulse-country";
/// Name of the country's Ingress.
pub const INGRESS: &str = "pulse";
/// Pod-template annotation carrying the hash of the ConfigMap, so a config change rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "pulse.dev/config-hash";
/// Label naming the tenant (the lower-case country code) on every object.
pub const TENANT_LABEL: &str = "pulse.dev/tenant";
/// Public HTTP port of `pulse serve`.
pub const HTTP_PORT: i32 = 8080;
/// gRPC port of `pulse serve`.
pub const GRPC_PORT: i32 = 50051;
/// Admin port of `pulse serve` (`/livez`, `/readyz`, `/metrics`).
pub const ADMIN_PORT: i32 = 9090;
/// User and group the containers run as (the image's non-root user).
pub const RUN_AS: i64 = 65532;
/// Where the JWT public key is mounted.
pub const JWT_PUBLIC_KEY_DIR: &str = "/etc/pulse/jwt";
/// File name of the mounted JWT public key.
pub const JWT_PUBLIC_KEY_FILE: &str = "public-key.pem";

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
    /// The JWT algorithm and the referenced keys do not fit together.
    #[error(
        "spec.auth.algorithm {algorithm} needs spec.secrets.jwt.{needed}: reference the Secret key holding it"
    )]
    JwtKey {
        /// The algorithm.
        algorithm: &'static str,
        /// The missing reference.
        needed: &'static str,
    },
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
    /// The country configuration as `PULSE_COUNTRY__*` variables, plus token settings.
    pub config_map: ConfigMap,
    /// Hash of the ConfigMap's data, also put on every pod template.
    pub config_hash: String,
    /// The enabled components, in start-up order.
    pub components: Vec<ComponentObjects>,
    /// The Ingress, when `spec.ingress` is set and a component with public paths is enabled.
    pub ingress: Option<Ingress>,
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
        if let Some(ingress) = &self.ingress {
            out.push(serde_json::to_value(ingress)?);
        }
        Ok(out)
    }

    /// Every object as one multi-document YAML stream, in apply order.
    pub fn to_yaml(&self) -> Result<String, serde_json::Error> {
        Ok(crate::yaml::to_yaml_stream(&self.objects()?))
    }
}

/// The namespace of a country (`pulse-fr`).
pub fn namespace_name(code: &str) -> String {
    format!("pulse-{}", code.to_ascii_lowercase())
}

/// The `app.kubernetes.io/instance` value of a country (`pulse-fr`).
fn instance(tenant: &str) -> String {
    format!("pulse-{tenant}")
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
    let jwt = &spec.secrets.jwt;
    match spec.auth.algorithm {
        JwtAlgorithm::HS256 if jwt.secret.is_none() => {
            return Err(SpecError::JwtKey {
                algorithm: "HS256",
                needed: "secret",
            });
        }
        algorithm if algorithm != JwtAlgorithm::HS256 && jwt.public_key.is_none() => {
            return Err(SpecError::JwtKey {
                algorithm: algorithm.as_str(),
                needed: "publicKey",
            });
        }
        _ => {}
    }
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

/// Builds every object of `tenant`. Owner references point at the tenant when it has a uid
/// (it always has one in a cluster; a tenant read from a file has none).
pub fn desired(tenant: &CountryTenant) -> Result<Desired, SpecError> {
    check(tenant)?;
    let name = tenant.name_any();
    let spec = &tenant.spec;
    let ns = namespace_name(&spec.country.code);
    let owner = tenant.controller_owner_ref(&());

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

    let mut data = spec.country.to_env();
    data.insert(
        "PULSE_JWT_ALGORITHM".into(),
        spec.auth.algorithm.as_str().into(),
    );
    data.insert("PULSE_JWT_ISSUER".into(), spec.auth.issuer.clone());
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
    let url = ingress.as_ref().and(spec.ingress.as_ref()).map(|i| i.url());
    Ok(Desired {
        namespace,
        config_map,
        config_hash,
        components,
        ingress,
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

fn secret_env(name: &str, secret: &crate::crd::SecretKeyRef) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
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

fn plain_env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        ..EnvVar::default()
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
    let database = secret_env("PULSE_DATABASE_URL", &spec.secrets.database);

    let mut env = vec![
        database.clone(),
        secret_env("PULSE_REDIS_URL", &spec.secrets.redis),
        secret_env("PULSE_KAFKA_BROKERS", &spec.secrets.kafka),
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
    if let Some(secret) = &spec.secrets.jwt.secret {
        env.push(secret_env("PULSE_JWT_SECRET", secret));
    }
    if let Some(key) = &spec.secrets.jwt.public_key {
        env.push(plain_env(
            "PULSE_JWT_PUBLIC_KEY_FILE",
            format!("{JWT_PUBLIC_KEY_DIR}/{JWT_PUBLIC_KEY_FILE}"),
        ));
        volumes.push(Volume {
            name: "jwt-public-key".to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(key.name.clone()),
                items: Some(vec![KeyToPath {
                    key: key.key.clone(),
                    path: JWT_PUBLIC_KEY_FILE.to_owned(),
                    ..KeyToPath::default()
                }]),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: "jwt-public-key".to_owned(),
            mount_path: JWT_PUBLIC_KEY_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    env.push(plain_env("PULSE_HTTP_ADDR", format!("0.0.0.0:{HTTP_PORT}")));
    env.push(plain_env("PULSE_GRPC_ADDR", format!("0.0.0.0:{GRPC_PORT}")));
    env.push(plain_env(
        "PULSE_ADMIN_ADDR",
        format!("0.0.0.0:{ADMIN_PORT}"),
    ));

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

    let migrate = Container {
        name: "migrate".to_owned(),
        image: Some(spec.image.clone()),
        image_pull_policy: pull_policy.clone(),
        args: Some(vec!["migrate".into(), "--target".into(), target.into()]),
        env: Some(vec![database]),
        resources: Some(resources.clone()),
        security_context: Some(restricted_security_context()),
        ..Container::default()
    };
    let port = |name: &str, port: i32| ContainerPort {
        name: Some(name.to_owned()),
        container_port: port,
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    };
    let serve = Container {
        name: target.to_owned(),
        image: Some(spec.image.clone()),
        image_pull_policy: pull_policy,
        args: Some(vec!["serve".into(), "--target".into(), target.into()]),
        ports: Some(vec![
            port("http", HTTP_PORT),
            port("grpc", GRPC_PORT),
            port("admin", ADMIN_PORT),
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
                    init_containers: Some(vec![migrate]),
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
    let port = |name: &str, port: i32, app_protocol: Option<&str>| ServicePort {
        name: Some(name.to_owned()),
        port,
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
                port("http", HTTP_PORT, Some("http")),
                port("grpc", GRPC_PORT, Some("grpc")),
                port("admin", ADMIN_PORT, Some("http")),
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

fn ingress(
    tenant: &CountryTenant,
    components: &[ComponentObjects],
    ns: &str,
    owner: Option<&OwnerReference>,
) -> Option<Ingress> {
    let settings = tenant.spec.ingress.as_ref()?;
    let paths: Vec<HTTPIngressPath> = components
        .iter()
        .flat_map(|c| {
            c.component
                .public_paths()
                .iter()
                .map(|path| HTTPIngressPath {
                    path: Some(format!("{}{path}", settings.path_prefix)),
                    path_type: "Prefix".to_owned(),
                    backend: IngressBackend {
                        service: Some(IngressServiceBackend {
                            name: c.component.name().to_owned(),
                            port: Some(ServiceBackendPort {
                                name: Some("http".to_owned()),
                                ..ServiceBackendPort::default()
                            }),
                        }),
                        ..IngressBackend::default()
                    },
                })
        })
        .collect();
    if paths.is_empty() {
        return None;
    }
    let name = tenant.name_any();
    let mut metadata = meta(INGRESS, ns, tenant_labels(&name), owner);
    if !settings.annotations.is_empty() {
        metadata.annotations = Some(settings.annotations.clone());
    }
    Some(Ingress {
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
    })
}
