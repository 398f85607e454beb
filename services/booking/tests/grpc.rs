//! `booking.v1.Availability` against a running booking server.

mod common;

use std::time::Duration;

use common::TestApp;
use pulse_proto::booking::v1::availability_client::AvailabilityClient;
use pulse_proto::booking::v1::{GetAppointmentRequest, ListFreeSlotsRequest};

#[tokio::test]
async fn internal_callers_read_appointments_and_free_slots_within_their_deadline() {
    let app = TestApp::start().await;
    let (practitioner, slots) = app
        .practitioner_with_slots("Paris", "general-practice", 30, 2)
        .await;
    let id = practitioner["id"].as_str().expect("id").to_owned();
    let patient = app.token("grpc-patient", &["patient"]);
    let (status, booked, _) = app
        .book(&patient, slots[0]["id"].as_str().expect("slot"), "g1")
        .await;
    assert_eq!(status, 201);

    let mut client = AvailabilityClient::connect(format!("http://{}", app.grpc))
        .await
        .expect("connect");
    let appointment = client
        .get_appointment(GetAppointmentRequest {
            appointment_id: booked["id"].as_str().expect("id").to_owned(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(appointment.patient_id, "grpc-patient");
    assert_eq!(appointment.status, "booked");
    assert_eq!(
        appointment.local_start,
        booked["start"].as_str().expect("start")
    );

    let missing = client
        .get_appointment(GetAppointmentRequest {
            appointment_id: pulse_kit::new_id().to_string(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let bad = client
        .get_appointment(GetAppointmentRequest {
            appointment_id: "nope".into(),
        })
        .await
        .expect_err("bad id");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);

    let now = chrono::Utc::now();
    let ts = |t: chrono::DateTime<chrono::Utc>| prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    };
    let free = client
        .list_free_slots(ListFreeSlotsRequest {
            practitioner_id: id.clone(),
            from: Some(ts(now)),
            to: Some(ts(now + chrono::Duration::days(3))),
            limit: 500,
        })
        .await
        .expect("list")
        .into_inner();
    assert!(!free.slots.is_empty());
    assert!(
        free.slots.iter().all(|s| s.id != appointment.slot_id),
        "the booked slot is not free"
    );
    assert!(
        free.slots
            .windows(2)
            .all(|w| w[0].starts_at.as_ref().map(|t| t.seconds)
                < w[1].starts_at.as_ref().map(|t| t.seconds))
    );

    // A deadline the server cannot meet ends the call instead of running on.
    let mut hurried = tonic::Request::new(ListFreeSlotsRequest {
        practitioner_id: id,
        from: Some(ts(now)),
        to: Some(ts(now + chrono::Duration::days(300))),
        limit: 1000,
    });
    hurried.set_timeout(Duration::from_nanos(1));
    let late = client.list_free_slots(hurried).await.expect_err("deadline");
    assert!(
        matches!(
            late.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{late:?}"
    );
}
