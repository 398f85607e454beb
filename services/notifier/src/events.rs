//! The consumers: booking's, ordering's, marketing's and identity's events, each read by its own
//! consumer group. An event becomes a [`Plan`] (pure: which notices to whom, which reminder to
//! schedule or cancel), applied in the consumer's transaction, so the event, its deliveries
//! and its reminder change commit together, once.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pulse_kit::component::ConsumerSpec;
use pulse_kit::config::CountryConfig;
use pulse_kit::consumer::{BatchEvent, BatchFailure, ConsumerConfig, EventHandler, HandlerError};
use pulse_kit::envelope::EventEnvelope;
use serde::Deserialize;
use sqlx::PgConnection;
use tracing::Instrument;
use uuid::Uuid;

use crate::Clock;
use crate::deliveries;
use crate::domain::Notice;
use crate::reminders;

/// What one event asks of notifier.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Notices, each with its recipient.
    pub notices: Vec<(String, Notice)>,
    /// Reminders to schedule: (appointment, user, start).
    pub schedule: Vec<(Uuid, String, DateTime<Utc>)>,
    /// Reminders to cancel: (appointment, user, start).
    pub cancel: Vec<(Uuid, String, DateTime<Utc>)>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AppointmentEvent {
    appointment_id: Uuid,
    patient_id: String,
    starts_at: DateTime<Utc>,
    #[serde(default)]
    previous_appointment_id: Option<Uuid>,
    #[serde(default)]
    cancelled_by: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrderEvent {
    order_id: Uuid,
    kind: String,
    user_id: String,
    #[serde(default)]
    campaign_id: Option<String>,
    amount_minor: i64,
    currency: String,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct VoucherIssued {
    voucher_id: Uuid,
    user_id: String,
    title: String,
    value_minor: i64,
    currency: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserEvent {
    user_id: Uuid,
}

/// What `event` asks of notifier in `country`; an event type notifier has nothing to say about
/// gives an empty plan. A payload that does not parse is an error (retried, then
/// dead-lettered by the consumer).
pub fn plan(event: &EventEnvelope, country: &CountryConfig) -> Result<Plan, serde_json::Error> {
    let mut plan = Plan::default();
    match event.event_type.as_str() {
        "AppointmentBooked" => {
            let e: AppointmentEvent = event.payload_as()?;
            plan.notices.push((
                e.patient_id.clone(),
                Notice::AppointmentBooked {
                    appointment_id: e.appointment_id,
                    starts_at: e.starts_at,
                },
            ));
            plan.schedule
                .push((e.appointment_id, e.patient_id, e.starts_at));
        }
        "AppointmentRescheduled" => {
            let e: AppointmentEvent = event.payload_as()?;
            plan.notices.push((
                e.patient_id.clone(),
                Notice::AppointmentRescheduled {
                    appointment_id: e.appointment_id,
                    starts_at: e.starts_at,
                },
            ));
            if let Some(previous) = e.previous_appointment_id {
                // The old start is not in the event; the row being cancelled keeps its own.
                plan.cancel
                    .push((previous, e.patient_id.clone(), e.starts_at));
            }
            plan.schedule
                .push((e.appointment_id, e.patient_id, e.starts_at));
        }
        "AppointmentCancelled" => {
            let e: AppointmentEvent = event.payload_as()?;
            let by_practitioner = e
                .cancelled_by
                .as_deref()
                .is_some_and(|by| by != e.patient_id);
            plan.notices.push((
                e.patient_id.clone(),
                Notice::AppointmentCancelled {
                    appointment_id: e.appointment_id,
                    starts_at: e.starts_at,
                    by_practitioner,
                },
            ));
            plan.cancel
                .push((e.appointment_id, e.patient_id, e.starts_at));
        }
        kind @ ("OrderCreated" | "OrderPaid" | "OrderCancelled" | "OrderRefunded") => {
            let e: OrderEvent = event.payload_as()?;
            let notice = match kind {
                // A product order is created at the checkout, with the buyer there; a
                // flash-sale win is announced, with the time left to pay.
                "OrderCreated" => match e.campaign_id.filter(|_| e.kind == "SECKILL") {
                    Some(campaign_id) => Some(Notice::OrderCreated {
                        order_id: e.order_id,
                        campaign_id,
                        amount_minor: e.amount_minor,
                        currency: e.currency,
                        pay_by: event.occurred_at
                            + chrono::Duration::seconds(i64::from(
                                country.ordering.payment_timeout_seconds,
                            )),
                    }),
                    None => None,
                },
                "OrderPaid" => Some(Notice::OrderPaid {
                    order_id: e.order_id,
                    amount_minor: e.amount_minor,
                    currency: e.currency,
                }),
                "OrderCancelled" => Some(Notice::OrderCancelled {
                    order_id: e.order_id,
                    reason: e.reason,
                }),
                _ => Some(Notice::OrderRefunded {
                    order_id: e.order_id,
                    amount_minor: e.amount_minor,
                    currency: e.currency,
                }),
            };
            if let Some(notice) = notice {
                plan.notices.push((e.user_id, notice));
            }
        }
        "VoucherIssued" => {
            let e: VoucherIssued = event.payload_as()?;
            plan.notices.push((
                e.user_id,
                Notice::VoucherIssued {
                    voucher_id: e.voucher_id,
                    title: e.title,
                    value_minor: e.value_minor,
                    currency: e.currency,
                },
            ));
        }
        "UserRegistered" => {
            let e: UserEvent = event.payload_as()?;
            plan.notices
                .push((e.user_id.to_string(), Notice::Welcome {}));
        }
        "SignedIn" => {
            let e: UserEvent = event.payload_as()?;
            plan.notices.push((
                e.user_id.to_string(),
                Notice::SignInNotice {
                    at: event.occurred_at,
                },
            ));
        }
        _ => {}
    }
    Ok(plan)
}

/// Applies each event's [`Plan`] in the consumer's transaction.
struct Notifications {
    country: Arc<CountryConfig>,
    clock: Clock,
}

impl Notifications {
    /// Applies the plans of `events` in `tx`: their reminder cancellations event by event (in
    /// each event's span), then every new reminder in one statement and every notice in one.
    /// (A reminder cancelled before it is scheduled stays cancelled, so the order within the
    /// batch does not matter.) An error says which event failed.
    async fn apply(
        &self,
        tx: &mut PgConnection,
        events: &[(&EventEnvelope, Option<&tracing::Span>)],
    ) -> Result<(), BatchFailure> {
        let now = (self.clock)();
        let mut plans = Vec::with_capacity(events.len());
        for (at, (event, span)) in events.iter().enumerate() {
            let fail = |error: HandlerError| BatchFailure { at, error };
            let plan = plan(event, &self.country).map_err(|e| fail(e.into()))?;
            let reminders = async {
                for (appointment, user, starts_at) in &plan.cancel {
                    reminders::cancel(tx, *appointment, user, *starts_at, now).await?;
                }
                Ok::<(), HandlerError>(())
            };
            match span {
                Some(span) => reminders.instrument((*span).clone()).await,
                None => reminders.await,
            }
            .map_err(fail)?;
            plans.push((event, plan));
        }
        let schedule: Vec<(Uuid, &str, DateTime<Utc>)> = plans
            .iter()
            .flat_map(|(_, plan)| {
                plan.schedule
                    .iter()
                    .map(|(appointment, user, starts_at)| (*appointment, user.as_str(), *starts_at))
            })
            .collect();
        reminders::schedule_all(tx, &self.country, &schedule, now)
            .await
            .map_err(BatchFailure::of_batch)?;
        let notices: Vec<deliveries::Enqueued<'_>> = plans
            .iter()
            .flat_map(|(event, plan)| {
                plan.notices
                    .iter()
                    .map(|(recipient, notice)| deliveries::Enqueued {
                        source_id: event.id,
                        recipient,
                        notice,
                        occurred_at: event.occurred_at,
                    })
            })
            .collect();
        deliveries::enqueue_all(tx, &notices, now)
            .await
            .map_err(BatchFailure::of_batch)?;
        Ok(())
    }
}

#[async_trait]
impl EventHandler for Notifications {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        event: &EventEnvelope,
    ) -> Result<(), HandlerError> {
        self.apply(tx, &[(event, None)])
            .await
            .map_err(|failure| failure.error)
    }

    /// A sale's winners or a crowd of bookings: one insert for all their deliveries.
    async fn handle_batch(
        &self,
        tx: &mut PgConnection,
        events: &[BatchEvent<'_>],
    ) -> Result<(), BatchFailure> {
        let events: Vec<(&EventEnvelope, Option<&tracing::Span>)> = events
            .iter()
            .map(|batched| (batched.event, Some(&batched.span)))
            .collect();
        self.apply(tx, &events).await
    }
}

/// The components whose events notifier reads.
pub const SOURCES: [&str; 4] = ["booking", "ordering", "marketing", "identity"];

/// One consumer per source component's topic (`pulse.<keyspace>.<source>.events`), in group
/// `notifier-<source>`.
pub fn consumers(keyspace: &str, country: Arc<CountryConfig>, clock: Clock) -> Vec<ConsumerSpec> {
    let handler: Arc<dyn EventHandler> = Arc::new(Notifications { country, clock });
    SOURCES
        .iter()
        .map(|source| {
            let topic = pulse_kit::kafka::events_topic(keyspace, source);
            let mut config = ConsumerConfig::new(&format!("notifier-{source}"), &topic);
            // Messages are awaited by people: pick up new events quickly.
            config.fetch_max_wait = Duration::from_millis(200);
            ConsumerSpec {
                config,
                handler: Arc::clone(&handler),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn envelope(kind: &str, payload: serde_json::Value) -> EventEnvelope {
        EventEnvelope {
            id: Uuid::now_v7(),
            event_type: kind.into(),
            country: "FR".into(),
            occurred_at: "2026-03-02T10:00:00Z".parse().expect("time"),
            traceparent: None,
            payload,
        }
    }

    fn france() -> CountryConfig {
        serde_json::from_value(json!({
            "code": "FR", "timezone": "Europe/Paris", "currency": "EUR", "locale": "fr-FR"
        }))
        .expect("country")
    }

    #[test]
    fn a_booking_is_one_notice_and_one_reminder() {
        let id = Uuid::now_v7();
        let plan = plan(
            &envelope(
                "AppointmentBooked",
                json!({"appointmentId": id, "slotId": Uuid::nil(), "practitionerId": Uuid::nil(),
                       "patientId": "u1", "startsAt": "2026-03-05T09:00:00Z"}),
            ),
            &france(),
        )
        .expect("plan");
        assert_eq!(plan.notices.len(), 1);
        assert_eq!(plan.notices[0].0, "u1");
        assert_eq!(
            plan.schedule,
            vec![(id, "u1".into(), "2026-03-05T09:00:00Z".parse().expect("t"))]
        );
        assert!(plan.cancel.is_empty());
    }

    #[test]
    fn a_cancellation_by_someone_else_is_required() {
        let payload = |by: &str| {
            json!({"appointmentId": Uuid::nil(), "patientId": "u1",
                   "startsAt": "2026-03-05T09:00:00Z", "cancelledBy": by})
        };
        let by_patient =
            plan(&envelope("AppointmentCancelled", payload("u1")), &france()).expect("plan");
        assert!(!by_patient.notices[0].1.required());
        assert_eq!(by_patient.cancel.len(), 1);
        let by_doctor =
            plan(&envelope("AppointmentCancelled", payload("dr")), &france()).expect("plan");
        assert!(by_doctor.notices[0].1.required());
    }

    #[test]
    fn a_reschedule_moves_the_reminder() {
        let (old, new) = (Uuid::now_v7(), Uuid::now_v7());
        let plan = plan(
            &envelope(
                "AppointmentRescheduled",
                json!({"appointmentId": new, "patientId": "u1", "startsAt": "2026-03-06T09:00:00Z",
                       "previousAppointmentId": old, "previousSlotId": Uuid::nil()}),
            ),
            &france(),
        )
        .expect("plan");
        assert_eq!(plan.cancel[0].0, old);
        assert_eq!(plan.schedule[0].0, new);
    }

    #[test]
    fn only_flash_sale_orders_announce_their_creation() {
        let order = |kind: &str, campaign: Option<&str>| {
            json!({"orderId": Uuid::nil(), "kind": kind, "status": "PENDING_PAYMENT", "userId": "u1",
                   "campaignId": campaign, "quantity": 1, "amountMinor": 990, "currency": "EUR"})
        };
        let won = plan(
            &envelope("OrderCreated", order("SECKILL", Some("spring"))),
            &france(),
        )
        .expect("plan");
        match &won.notices[0].1 {
            Notice::OrderCreated { pay_by, .. } => {
                assert_eq!(
                    *pay_by,
                    "2026-03-02T10:15:00Z".parse::<DateTime<Utc>>().expect("t")
                );
            }
            other => panic!("{other:?}"),
        }
        let product =
            plan(&envelope("OrderCreated", order("PRODUCT", None)), &france()).expect("plan");
        assert!(product.notices.is_empty());
        let paid = plan(&envelope("OrderPaid", order("PRODUCT", None)), &france()).expect("plan");
        assert_eq!(paid.notices.len(), 1);
    }

    #[test]
    fn unknown_events_ask_nothing_and_bad_payloads_fail() {
        assert_eq!(
            plan(&envelope("RolesChanged", json!({})), &france()).expect("plan"),
            Plan::default()
        );
        assert!(plan(&envelope("AppointmentBooked", json!({"x": 1})), &france()).is_err());
    }

    /// A consumer batch (a booking and two flash-sale wins) enqueues each notice on each of
    /// its channels once and schedules the reminder, written with one statement each; applied
    /// again it adds nothing; a bad event is named by its place in the batch.
    #[tokio::test]
    async fn a_batch_enqueues_each_notice_once_and_names_a_bad_event() {
        let db = pulse_kit::testing::TestDatabase::create().await;
        pulse_kit::db::migrate(&db.url, "notifier", &crate::MIGRATIONS)
            .await
            .expect("migrations");
        let pool = pulse_kit::db::schema_pool(&db.url, "notifier", 2).expect("pool");
        let now: DateTime<Utc> = "2026-03-02T10:00:00Z".parse().expect("now");
        let handler = Notifications {
            country: Arc::new(france()),
            clock: Arc::new(move || now),
        };
        let appointment = Uuid::now_v7();
        let won = |user: &str| {
            envelope(
                "OrderCreated",
                json!({"orderId": Uuid::now_v7(), "kind": "SECKILL", "userId": user,
                       "campaignId": "c1", "amountMinor": 100, "currency": "EUR"}),
            )
        };
        let events = vec![
            envelope(
                "AppointmentBooked",
                json!({"appointmentId": appointment, "slotId": Uuid::nil(), "practitionerId": Uuid::nil(),
                       "patientId": "u1", "startsAt": "2026-03-05T09:00:00Z"}),
            ),
            won("u2"),
            won("u3"),
        ];
        fn as_batch(events: &[EventEnvelope]) -> Vec<BatchEvent<'_>> {
            events
                .iter()
                .map(|event| BatchEvent {
                    event,
                    span: tracing::Span::none(),
                })
                .collect()
        }
        for _ in 0..2 {
            let mut tx = pool.begin().await.expect("begin");
            handler
                .handle_batch(&mut tx, &as_batch(&events))
                .await
                .expect("the batch applies");
            tx.commit().await.expect("commit");
        }
        let mut expected = Vec::new();
        for event in &events {
            for (recipient, notice) in plan(event, &france()).expect("plan").notices {
                for channel in notice.channels() {
                    expected.push((event.id, recipient.clone(), channel.as_str().to_owned()));
                }
            }
        }
        expected.sort();
        let enqueued: Vec<(Uuid, String, String)> = sqlx::query_as(
            "SELECT source_id, recipient, channel FROM deliveries ORDER BY source_id, recipient, channel",
        )
        .fetch_all(&pool)
        .await
        .expect("deliveries");
        assert_eq!(enqueued, expected, "each notice on each channel, once");
        assert_eq!(expected.len(), 9, "three notices, three channels each");
        let reminders: Vec<(Uuid, String)> =
            sqlx::query_as("SELECT appointment_id, status FROM reminders")
                .fetch_all(&pool)
                .await
                .expect("reminders");
        assert_eq!(reminders, vec![(appointment, "scheduled".to_owned())]);

        let bad = vec![
            won("u4"),
            envelope("OrderCreated", json!({"orderId": "not a uuid"})),
            won("u5"),
        ];
        let mut tx = pool.begin().await.expect("begin");
        let failure = handler
            .handle_batch(&mut tx, &as_batch(&bad))
            .await
            .expect_err("a bad event fails the batch");
        assert_eq!(failure.at, 1, "the bad event is named: {}", failure.error);
    }
}
