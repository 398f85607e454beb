//! Status conditions, shaped like `metav1.Condition` (Kubernetes API conventions).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `Ready`: everything the object asks for exists and is available, for its current generation.
pub const READY: &str = "Ready";
/// `Progressing`: the operator is still bringing the world to the desired state.
pub const PROGRESSING: &str = "Progressing";
/// `Degraded`: something failed; the message says what.
pub const DEGRADED: &str = "Degraded";

/// Status of a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// The operator cannot tell.
    Unknown,
}

/// One aspect of an object's state, as in `metav1.Condition`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `Progressing` or `Degraded`.
    #[serde(rename = "type")]
    #[schemars(length(min = 1, max = 316))]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// Machine-readable reason in CamelCase (`Available`, `RollingOut`, `ReconcileFailed`).
    #[schemars(
        length(min = 1, max = 1024),
        pattern(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    )]
    pub reason: String,
    /// Human-readable details.
    #[schemars(length(max = 32768))]
    pub message: String,
    /// When the status last changed.
    pub last_transition_time: DateTime<Utc>,
    /// The `metadata.generation` this condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
}

impl Condition {
    /// A condition computed now for `generation`.
    pub fn new(
        type_: &str,
        status: ConditionStatus,
        reason: &str,
        message: impl Into<String>,
        generation: Option<i64>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            type_: type_.to_owned(),
            status,
            reason: reason.to_owned(),
            message: message.into(),
            last_transition_time: now,
            observed_generation: generation,
        }
    }
}

/// The condition of type `type_` in `conditions`, if any.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Puts `next` into `conditions`, replacing the one of the same type. The previous
/// `lastTransitionTime` is kept when the status did not change, as the conventions require.
pub fn upsert(conditions: &mut Vec<Condition>, mut next: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == next.type_) {
        Some(current) => {
            if current.status == next.status {
                next.last_transition_time = current.last_transition_time;
            }
            *current = next;
        }
        None => conditions.push(next),
    }
}

/// Whether the condition of type `type_` is `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == ConditionStatus::True)
}

/// What a failed pass records: `Ready` false and `Degraded` true, both with `reason` and
/// `message`.
pub fn failed(
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Vec<Condition> {
    vec![
        Condition::new(
            READY,
            ConditionStatus::False,
            reason,
            message,
            generation,
            now,
        ),
        Condition::new(
            DEGRADED,
            ConditionStatus::True,
            reason,
            message,
            generation,
            now,
        ),
    ]
}

/// `Degraded` false: nothing failed.
pub fn as_expected(generation: Option<i64>, now: DateTime<Utc>) -> Condition {
    Condition::new(
        DEGRADED,
        ConditionStatus::False,
        "AsExpected",
        "",
        generation,
        now,
    )
}

/// Merges freshly computed conditions into the previous ones (see [`upsert`]) and returns them
/// in a stable order: `Ready`, `Progressing`, `Degraded`, then any others.
pub fn merge(previous: &[Condition], fresh: Vec<Condition>) -> Vec<Condition> {
    let mut out: Vec<Condition> = previous.to_vec();
    for condition in fresh {
        upsert(&mut out, condition);
    }
    let rank = |c: &Condition| match c.type_.as_str() {
        READY => 0,
        PROGRESSING => 1,
        DEGRADED => 2,
        _ => 3,
    };
    out.sort_by_key(rank);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, minute, 0)
            .single()
            .expect("valid time")
    }

    #[test]
    fn transition_time_is_kept_while_the_status_stays() {
        let previous = vec![Condition::new(
            READY,
            ConditionStatus::False,
            "RollingOut",
            "waiting",
            Some(1),
            at(0),
        )];
        let same = Condition::new(
            READY,
            ConditionStatus::False,
            "RollingOut",
            "still waiting",
            Some(2),
            at(5),
        );
        let merged = merge(&previous, vec![same]);
        assert_eq!(merged[0].last_transition_time, at(0));
        assert_eq!(merged[0].message, "still waiting");
        assert_eq!(merged[0].observed_generation, Some(2));

        let flipped = Condition::new(
            READY,
            ConditionStatus::True,
            "Available",
            "",
            Some(2),
            at(9),
        );
        let merged = merge(&merged, vec![flipped]);
        assert_eq!(merged[0].last_transition_time, at(9));
        assert_eq!(merged[0].status, ConditionStatus::True);
    }

    #[test]
    fn merge_orders_ready_first() {
        let fresh = vec![
            Condition::new(
                DEGRADED,
                ConditionStatus::False,
                "AsExpected",
                "",
                None,
                at(0),
            ),
            Condition::new(READY, ConditionStatus::True, "Available", "", None, at(0)),
            Condition::new(
                PROGRESSING,
                ConditionStatus::False,
                "Complete",
                "",
                None,
                at(0),
            ),
        ];
        let types: Vec<String> = merge(&[], fresh).into_iter().map(|c| c.type_).collect();
        assert_eq!(types, [READY, PROGRESSING, DEGRADED]);
    }
}
