//! What the tenant reconciler last applied, so a pass can tell whether applying again would
//! change anything.
//!
//! A tenant's objects change status many times while they roll out (each Deployment several
//! times a second), and every change wakes the tenant up. Applying its ~23 objects on each of
//! those passes costs the API server ~23 server-side applies that change nothing. So each
//! successful full apply leaves a [`Record`]: the hash of the desired objects, and per object
//! a fingerprint of the fields the operator sets, *as the API server answered the apply* (its
//! own normalised spelling: `0.5` CPU comes back as `500m`). A later pass applies again only
//! when the desired objects changed, when an object is missing from the watch caches, when the
//! fields it sets no longer have those values (a hand edit, a deleted object), or when the last
//! full apply is older than [`FULL_APPLY_EVERY`]. Fields others set (the autoscaler's
//! replicas, the Deployment controller's revision annotation, every status) are not part of the
//! fingerprint, so they do not cause an apply.
//!
//! Everything here is pure, except the [`Applied`] map that holds the records of this process.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

/// The longest a tenant goes without a full apply, even when nothing seems to differ: the
/// safety net for a change the watch caches missed.
pub const FULL_APPLY_EVERY: Duration = Duration::from_secs(300);

/// Identifies one object of a tenant: kind and name (the namespace is the tenant's).
pub type ObjectKey = (&'static str, String);

/// One desired object beside its copy in the watch cache: its key, itself as JSON, and the
/// cached copy as JSON (`None` when the cache lacks it).
pub type Cached = (ObjectKey, Value, Option<Value>);

/// What one full apply of a tenant left behind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Hash of every desired object ([`hash_desired`]).
    pub desired: u64,
    /// When it was applied.
    pub at: Instant,
    /// Per object, the fingerprint of the fields the operator sets, as the server answered.
    pub objects: HashMap<ObjectKey, u64>,
}

/// Why a pass applies everything again; `None` when nothing would change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reapply {
    /// No record of an earlier apply in this process (a new tenant, or the operator started).
    NeverApplied,
    /// The desired objects differ from those last applied (a spec change, a new operator).
    DesiredChanged,
    /// The last full apply is older than [`FULL_APPLY_EVERY`].
    Periodic,
    /// The object is not in the watch cache (deleted, or not seen yet).
    Missing(ObjectKey),
    /// A field the operator sets has another value than it applied.
    Drifted(ObjectKey),
}

impl Reapply {
    /// The `reason` label of the apply metric.
    pub fn label(&self) -> &'static str {
        match self {
            Self::NeverApplied => "never_applied",
            Self::DesiredChanged => "desired_changed",
            Self::Periodic => "periodic",
            Self::Missing(_) => "missing",
            Self::Drifted(_) => "drifted",
        }
    }
}

impl Record {
    /// Whether applying the desired objects (hashing to `desired_hash`) again is needed, given
    /// each beside its cached copy and the time `now`.
    pub fn reapply<'a>(
        &self,
        desired_hash: u64,
        desired: impl IntoIterator<Item = &'a Cached>,
        now: Instant,
    ) -> Option<Reapply> {
        if self.desired != desired_hash {
            return Some(Reapply::DesiredChanged);
        }
        if now.saturating_duration_since(self.at) >= FULL_APPLY_EVERY {
            return Some(Reapply::Periodic);
        }
        for (key, shape, live) in desired {
            let Some(live) = live else {
                return Some(Reapply::Missing(key.clone()));
            };
            if self.objects.get(key) != Some(&fingerprint(live, shape)) {
                return Some(Reapply::Drifted(key.clone()));
            }
        }
        None
    }
}

/// The records of this process, per tenant name.
#[derive(Debug, Default)]
pub struct Applied(Mutex<HashMap<String, Record>>);

impl Applied {
    /// The record of `tenant`, if it was fully applied by this process.
    pub fn get(&self, tenant: &str) -> Option<Record> {
        self.lock().get(tenant).cloned()
    }

    /// Remembers a full apply of `tenant`.
    pub fn insert(&self, tenant: &str, record: Record) {
        self.lock().insert(tenant.to_owned(), record);
    }

    /// Forgets `tenant` (a failed apply, a deleted tenant): its next pass applies everything.
    pub fn forget(&self, tenant: &str) {
        self.lock().remove(tenant);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Record>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Hash of the desired objects (as JSON), in apply order.
pub fn hash_desired(objects: &[Value]) -> u64 {
    let mut hasher = DefaultHasher::new();
    for object in objects {
        hash_value(object, &mut hasher);
    }
    hasher.finish()
}

/// Fingerprint of the fields of `live` that `shape` (the desired object) sets.
pub fn fingerprint(live: &Value, shape: &Value) -> u64 {
    let mut hasher = DefaultHasher::new();
    hash_value(&project(live, shape), &mut hasher);
    hasher.finish()
}

/// `live` cut down to the fields present in `shape`: objects keep only the keys `shape` has
/// (recursively); arrays of the same length are cut element by element, and an array of
/// another length is kept whole (so a list that gained or lost an element always differs).
/// A field `shape` has and `live` lacks is absent from the result.
pub fn project(live: &Value, shape: &Value) -> Value {
    match (live, shape) {
        (Value::Object(live), Value::Object(shape)) => {
            let mut out = Map::new();
            for (key, wanted) in shape {
                if let Some(value) = live.get(key) {
                    out.insert(key.clone(), project(value, wanted));
                }
            }
            Value::Object(out)
        }
        (Value::Array(live), Value::Array(shape)) if live.len() == shape.len() => Value::Array(
            live.iter()
                .zip(shape)
                .map(|(value, wanted)| project(value, wanted))
                .collect(),
        ),
        (live, _) => live.clone(),
    }
}

/// Hashes a JSON value; object keys in sorted order, so the hash does not depend on how the
/// map orders them.
fn hash_value(value: &Value, hasher: &mut DefaultHasher) {
    match value {
        Value::Null => 0u8.hash(hasher),
        Value::Bool(b) => {
            1u8.hash(hasher);
            b.hash(hasher);
        }
        Value::Number(n) => {
            2u8.hash(hasher);
            n.to_string().hash(hasher);
        }
        Value::String(s) => {
            3u8.hash(hasher);
            s.hash(hasher);
        }
        Value::Array(items) => {
            4u8.hash(hasher);
            items.len().hash(hasher);
            for item in items {
                hash_value(item, hasher);
            }
        }
        Value::Object(map) => {
            5u8.hash(hasher);
            map.len().hash(hasher);
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for key in keys {
                key.hash(hasher);
                hash_value(&map[key], hasher);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn shape() -> Value {
        json!({
            "metadata": {"name": "booking", "labels": {"a": "1"}},
            "spec": {"template": {"spec": {"containers": [
                {"name": "pulse", "image": "pulse:1", "env": [{"name": "X", "value": "1"}],
                 "resources": {"requests": {"cpu": "0.5"}}}
            ]}}},
        })
    }

    /// The object as the API server answers: normalised quantity, defaults, status, metadata
    /// the server and other controllers set.
    fn served() -> Value {
        json!({
            "metadata": {"name": "booking", "labels": {"a": "1"}, "resourceVersion": "7",
                         "annotations": {"deployment.kubernetes.io/revision": "1"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [
                {"name": "pulse", "image": "pulse:1", "env": [{"name": "X", "value": "1"}],
                 "resources": {"requests": {"cpu": "500m"}}, "imagePullPolicy": "IfNotPresent"}
            ], "dnsPolicy": "ClusterFirst"}}},
            "status": {"observedGeneration": 1},
        })
    }

    fn record(at: Instant) -> Record {
        let key: ObjectKey = ("Deployment", "booking".into());
        Record {
            desired: 42,
            at,
            objects: HashMap::from([(key, fingerprint(&served(), &shape()))]),
        }
    }

    fn check(record: &Record, live: Option<Value>, now: Instant) -> Option<Reapply> {
        let cached = (("Deployment", "booking".to_owned()), shape(), live);
        record.reapply(42, [&cached], now)
    }

    #[test]
    fn what_others_set_does_not_count() {
        let now = Instant::now();
        let mut live = served();
        live["status"] = json!({"observedGeneration": 2, "availableReplicas": 2});
        live["metadata"]["resourceVersion"] = json!("9");
        live["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = json!("2");
        live["spec"]["replicas"] = json!(5);
        assert_eq!(check(&record(now), Some(live), now), None);
    }

    #[test]
    fn a_hand_edit_of_a_field_the_operator_sets_is_drift() {
        let now = Instant::now();
        let mut live = served();
        live["spec"]["template"]["spec"]["containers"][0]["image"] = json!("evil:1");
        assert_eq!(
            check(&record(now), Some(live), now),
            Some(Reapply::Drifted(("Deployment", "booking".into())))
        );
        let mut live = served();
        live["metadata"]["labels"]
            .as_object_mut()
            .expect("labels")
            .remove("a");
        assert!(matches!(
            check(&record(now), Some(live), now),
            Some(Reapply::Drifted(_))
        ));
    }

    #[test]
    fn a_list_that_gained_an_element_is_drift() {
        let now = Instant::now();
        let mut live = served();
        live["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array_mut()
            .expect("env")
            .push(json!({"name": "Y", "value": "2"}));
        assert!(matches!(
            check(&record(now), Some(live), now),
            Some(Reapply::Drifted(_))
        ));
    }

    #[test]
    fn missing_changed_or_old_means_apply_again() {
        let now = Instant::now();
        let r = record(now);
        assert_eq!(
            check(&r, None, now),
            Some(Reapply::Missing(("Deployment", "booking".into())))
        );
        assert_eq!(
            r.reapply(43, std::iter::empty(), now),
            Some(Reapply::DesiredChanged)
        );
        assert_eq!(
            check(&r, Some(served()), now + FULL_APPLY_EVERY),
            Some(Reapply::Periodic)
        );
        assert_eq!(
            check(&r, Some(served()), now + Duration::from_secs(1)),
            None
        );
    }

    #[test]
    fn the_hash_ignores_key_order_but_not_values() {
        let a: Value = serde_json::from_str(r#"{"a":1,"b":{"c":[1,2]}}"#).expect("json");
        let b: Value = serde_json::from_str(r#"{"b":{"c":[1,2]},"a":1}"#).expect("json");
        let c: Value = serde_json::from_str(r#"{"b":{"c":[2,1]},"a":1}"#).expect("json");
        assert_eq!(hash_desired(std::slice::from_ref(&a)), hash_desired(&[b]));
        assert_ne!(hash_desired(&[a]), hash_desired(&[c]));
    }
}
