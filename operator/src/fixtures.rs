//! Test helpers: example tenants, the test context of either reconciler, and a scripted,
//! mocked Kubernetes API server (kube-rs `tower-test` pattern, as in `controller-rs`'
//! `fixtures.rs`). Every expected call is asserted in order; a missing call or an extra one
//! fails the test.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use kube::{Client, Resource};
use pulse_kit::config::CountryConfig;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tower_test::mock::{self, Handle};

use crate::crd::{
    AuthSpec, Components, Condition, CountryTenant, CountryTenantSpec, DeletionPolicy, IngressSpec,
    JwtSecretRefs, PaymentProvider, PaymentsSpec, SecretKeyRef, SecretName, SecretRefs,
    SmsProvider, SmsSpec, condition,
};
use crate::metrics::Metrics;
use crate::reconciler::{Context, Error, Reconcile, reconcile};

/// The uid every test tenant has.
pub const UID: &str = "6f1c9a6e-0d1e-4b8e-9a57-2c8f7d1f0a11";

fn secret(name: &str, key: &str) -> SecretKeyRef {
    SecretKeyRef {
        name: name.into(),
        key: key.into(),
    }
}

/// France in production shape, everything enabled, with an Ingress, EdDSA tokens only, Stripe
/// payments and Twilio SMS, as the API server would hold it.
pub fn tenant() -> CountryTenant {
    let country: CountryConfig = serde_json::from_value(json!({
        "code": "FR",
        "timezone": "Europe/Paris",
        "currency": "EUR",
        "locale": "fr-FR",
    }))
    .expect("valid country");
    let mut tenant = CountryTenant::new(
        "fr",
        CountryTenantSpec {
            display_name: "France".into(),
            country,
            image: "pulse:1.2.3".into(),
            image_pull_policy: None,
            components: Components::default(),
            ingress: Some(IngressSpec {
                host: "fr.pulse.example".into(),
                class_name: Some("nginx".into()),
                tls_secret_name: Some("pulse-fr-tls".into()),
                path_prefix: String::new(),
                annotations: Default::default(),
            }),
            auth: AuthSpec::default(),
            secrets: SecretRefs {
                database: secret("pulse-fr-backends", "database-url"),
                redis: secret("pulse-fr-backends", "redis-url"),
                kafka: secret("pulse-fr-backends", "kafka-brokers"),
                jwt: JwtSecretRefs::default(),
                identity_keyring: Some(secret("pulse-fr-identity", "keyring")),
                providers: vec![SecretName {
                    name: "pulse-fr-providers".into(),
                }],
            },
            payments: Some(PaymentsSpec {
                provider: PaymentProvider::Stripe,
                secret_ref: Some(SecretName {
                    name: "pulse-fr-payments".into(),
                }),
                base_url: None,
            }),
            sms: Some(SmsSpec {
                provider: SmsProvider::Twilio,
                base_url: None,
                account: Some("AC0123456789abcdef0123456789abcdef".into()),
                from: Some("+33700000000".into()),
                auth_token: Some(secret("pulse-fr-sms", "auth-token")),
            }),
            email: None,
            development: false,
            deletion_policy: DeletionPolicy::Retain,
        },
    );
    tenant.metadata.uid = Some(UID.into());
    tenant.metadata.generation = Some(1);
    tenant.metadata.resource_version = Some("100".into());
    tenant
}

/// The object with its controller's finalizer.
pub fn finalized<K: Reconcile>(mut object: K) -> K {
    object.meta_mut().finalizers = Some(vec![K::FINALIZER.into()]);
    object
}

/// The object being deleted.
pub fn deleting<K: Resource>(mut object: K) -> K {
    object.meta_mut().deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
    );
    object
}

/// The reporter of the test contexts' Events.
pub fn reporter() -> Reporter {
    Reporter {
        controller: "pulse-operator".into(),
        instance: Some("test".into()),
    }
}

/// A test context with a mocked client, fresh metrics and `extra`, with the server side of the
/// client.
pub fn context<T>(extra: T) -> (Context<T>, ApiServer) {
    let (client, server) = mock_client();
    let ctx = Context::new(client, Arc::new(Metrics::new()), reporter(), extra);
    (ctx, server)
}

/// One reconciliation of `object` against the scripted `calls` (at most `limit` long): what it
/// returned and what the server received.
pub async fn reconcile_scripted<K: Reconcile>(
    object: &K,
    ctx: Arc<Context<K::Extra>>,
    server: ApiServer,
    calls: Vec<Call>,
    limit: Duration,
) -> (Result<Action, Error>, Vec<Recorded>) {
    let server = server.run(calls);
    let result = tokio::time::timeout(limit, reconcile(Arc::new(object.clone()), ctx))
        .await
        .expect("reconcile finished");
    // A wrong sequence of calls is easier to understand with what the reconciler concluded.
    if let Err(err) = &result {
        eprintln!("reconcile failed: {err}");
    }
    (result, finish(server).await)
}

/// The status patch to `path`, answered with `object` carrying the patched status.
pub fn status_call(path: impl Into<String>, object: &impl Serialize) -> Call {
    let base = serde_json::to_value(object).expect("object JSON");
    Call::apply(path).reply(Reply::EchoWith(Box::new(move |body| {
        let mut object = base;
        object["status"] = body["status"].clone();
        object
    })))
}

/// The condition of type `type_`, which must be there.
pub fn condition<'a>(conditions: &'a [Condition], type_: &str) -> &'a Condition {
    condition::find(conditions, type_).unwrap_or_else(|| panic!("no {type_} condition"))
}

/// The patch of the object at `path` that adds (`added`) or removes its controller's
/// finalizer, answered with `object` as it is afterwards.
pub fn finalizer_call<K: Reconcile>(path: impl Into<String>, object: &K, added: bool) -> Call {
    let mut after = object.clone();
    after.meta_mut().finalizers = added.then(|| vec![K::FINALIZER.to_owned()]);
    let reply = serde_json::to_value(after).expect("object JSON");
    Call::new(Method::PATCH, path).reply(Reply::Json(200, reply))
}

/// Asserts that `call` sent a JSON patch with the operation `op`.
pub fn assert_patched(call: &Recorded, op: Value) {
    let patch = call.body.as_array().cloned().expect("a JSON patch");
    assert!(patch.contains(&op), "{patch:?}");
}

/// A Normal Event, as [`events_of`] lists it.
pub fn normal(reason: &str) -> (String, String) {
    ("Normal".to_owned(), reason.to_owned())
}

/// A Warning Event, as [`events_of`] lists it.
pub fn warning(reason: &str) -> (String, String) {
    ("Warning".to_owned(), reason.to_owned())
}

/// How the mocked server answers one call.
pub enum Reply {
    /// 200 with the request body (what SSA returns for a fresh object).
    Echo,
    /// 200 with the request body changed by the function.
    EchoWith(Box<dyn FnOnce(Value) -> Value + Send>),
    /// This status and body.
    Json(u16, Value),
    /// An API error (`metav1.Status`) with this code and reason.
    Error(u16, &'static str),
}

/// One expected call.
pub struct Call {
    /// Expected method.
    pub method: Method,
    /// Expected path (without the query).
    pub path: String,
    /// A server-side apply by the operator's field manager, forced.
    pub apply: bool,
    /// The answer.
    pub reply: Reply,
}

impl Call {
    /// A server-side apply of the object at `path`, answered by echoing it.
    pub fn apply(path: impl Into<String>) -> Self {
        Self {
            method: Method::PATCH,
            path: path.into(),
            apply: false,
            reply: Reply::Echo,
        }
        .ssa()
    }

    fn ssa(mut self) -> Self {
        self.apply = true;
        self
    }

    /// Any call with `method` on `path`, answered by echoing.
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            apply: false,
            reply: Reply::Echo,
        }
    }

    /// Sets the answer.
    pub fn reply(mut self, reply: Reply) -> Self {
        self.reply = reply;
        self
    }
}

/// A call the mocked server received.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Method.
    pub method: Method,
    /// Path.
    pub path: String,
    /// Request body as JSON (`null` when empty).
    pub body: Value,
}

/// The mocked API server's side of the client.
pub struct ApiServer(Handle<Request<Body>, Response<Body>>);

/// A client talking to a mocked API server.
pub fn mock_client() -> (Client, ApiServer) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), ApiServer(handle))
}

fn status_body(code: u16, reason: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!("mocked {reason}"),
        "reason": reason,
        "code": code,
    })
}

impl ApiServer {
    /// Serves `calls` in order, asserting each, then fails on any further call. Returns what it
    /// received.
    pub fn run(self, calls: Vec<Call>) -> JoinHandle<Vec<Recorded>> {
        let mut handle = self.0;
        tokio::spawn(async move {
            let mut recorded = Vec::new();
            let total = calls.len();
            for (i, call) in calls.into_iter().enumerate() {
                let next =
                    tokio::time::timeout(Duration::from_secs(5), handle.next_request()).await;
                let Ok(Some((request, send))) = next else {
                    panic!(
                        "missing call {}/{total}: expected {} {} (received so far: {:?})",
                        i + 1,
                        call.method,
                        call.path,
                        recorded
                            .iter()
                            .map(|r: &Recorded| format!("{} {}", r.method, r.path))
                            .collect::<Vec<_>>()
                    );
                };
                let method = request.method().clone();
                let path = request.uri().path().to_owned();
                let query = request.uri().query().unwrap_or("").to_owned();
                let content_type = request
                    .headers()
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                let bytes = request
                    .into_body()
                    .collect_bytes()
                    .await
                    .expect("request body");
                let body: Value = if bytes.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&bytes).expect("request body is JSON")
                };
                assert_eq!(
                    (&method, path.as_str()),
                    (&call.method, call.path.as_str()),
                    "call {}/{total}: unexpected request (query {query}, body {body})",
                    i + 1
                );
                if call.apply {
                    assert_eq!(
                        content_type,
                        "application/apply-patch+yaml",
                        "call {}/{total} {path}: not a server-side apply",
                        i + 1
                    );
                    assert!(
                        query.contains("fieldManager=pulse-operator")
                            && query.contains("force=true"),
                        "call {}/{total} {path}: apply must be forced with field manager pulse-operator, query was {query}",
                        i + 1
                    );
                }
                let (code, reply) = match call.reply {
                    Reply::Echo => (200, body.clone()),
                    Reply::EchoWith(f) => (200, f(body.clone())),
                    Reply::Json(code, value) => (code, value),
                    Reply::Error(code, reason) => (code, status_body(code, reason)),
                };
                recorded.push(Recorded { method, path, body });
                let response = Response::builder()
                    .status(code)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Body::from(serde_json::to_vec(&reply).expect("reply JSON")))
                    .expect("response");
                send.send_response(response);
            }
            if let Ok(Some((request, _send))) =
                tokio::time::timeout(Duration::from_millis(300), handle.next_request()).await
            {
                panic!(
                    "unexpected extra call after the {total} expected: {} {}",
                    request.method(),
                    request.uri()
                );
            }
            recorded
        })
    }
}

/// Waits for the mocked server and returns what it recorded, re-raising its assertion failures.
pub async fn finish(server: JoinHandle<Vec<Recorded>>) -> Vec<Recorded> {
    match server.await {
        Ok(recorded) => recorded,
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        Err(err) => panic!("mock API server task failed: {err}"),
    }
}

/// `(type, reason)` of every Event posted to `events_path`, in order.
pub fn events_of(recorded: &[Recorded], events_path: &str) -> Vec<(String, String)> {
    recorded
        .iter()
        .filter(|r| r.path == events_path)
        .map(|r| {
            (
                r.body["type"].as_str().unwrap_or("").to_owned(),
                r.body["reason"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// The status of the last patch sent to `status_path`, checked to be a `kind` object.
pub fn last_status<T: serde::de::DeserializeOwned>(
    recorded: &[Recorded],
    status_path: &str,
    kind: &str,
) -> T {
    let call = recorded
        .iter()
        .rev()
        .find(|r| r.path == status_path)
        .unwrap_or_else(|| panic!("no status patch to {status_path}"));
    assert_eq!(call.body["apiVersion"], "pulse.dev/v1alpha1");
    assert_eq!(call.body["kind"], kind);
    serde_json::from_value(call.body["status"].clone()).unwrap_or_else(|e| panic!("status: {e}"))
}
