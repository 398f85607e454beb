//! The notifier's provider stand-ins (`scripts/provider-stand-ins.py`) through their fixture:
//! real SMTP with the notifier's client (lettre), the Twilio-compatible SMS API, and an SMTP
//! outage that loses nothing.

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use pulse_kit::testing::providers::ProviderStandIns;

const WITHIN: Duration = Duration::from_secs(10);

fn email(to: &str, subject: &str, text: &str, html: &str) -> Message {
    Message::builder()
        .from("Pulse <no-reply@pulse.localhost>".parse().expect("from"))
        .to(to.parse::<Mailbox>().expect("to"))
        .subject(subject)
        .message_id(Some(format!("<{}@pulse.localhost>", uuid::Uuid::new_v4())))
        .multipart(MultiPart::alternative_plain_html(
            text.to_owned(),
            html.to_owned(),
        ))
        .expect("message")
}

async fn send(url: &str, message: Message) -> Result<(), lettre::transport::smtp::Error> {
    let mailer = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)?
        .timeout(Some(Duration::from_secs(5)))
        .build();
    mailer.send(message).await.map(|_| ())
}

/// Twilio's "create a message" with the fixture's account; the status and JSON body.
async fn create_sms(
    stand_ins: &ProviderStandIns,
    token: &str,
    form: &[(&str, &str)],
    idempotency_key: Option<&str>,
) -> (u16, serde_json::Value) {
    let url = format!(
        "{}/2010-04-01/Accounts/{}/Messages.json",
        stand_ins.sms_base_url(),
        ProviderStandIns::SMS_ACCOUNT
    );
    let mut request = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .post(url)
        .basic_auth(ProviderStandIns::SMS_ACCOUNT, Some(token))
        .form(form);
    if let Some(key) = idempotency_key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.expect("SMS API answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

#[tokio::test]
async fn an_email_with_text_and_html_is_read_back_decoded() {
    let stand_ins = ProviderStandIns::start().await;
    let message = email(
        "Zoë Martin <zoe@example.fr>",
        "Rappel : rendez-vous demain à 9 h",
        "Bonjour Zoë,\nvotre rendez-vous est demain à 9 h.\n",
        "<p>Bonjour Zoë,</p><p>votre rendez-vous est demain à <b>9 h</b>.</p>\n",
    );
    let message_id = message
        .headers()
        .get_raw("Message-ID")
        .expect("message id")
        .trim_matches(['<', '>'])
        .to_owned();
    // With credentials, as a real provider needs: AUTH is offered without TLS and accepted.
    let url = stand_ins
        .smtp_url()
        .replace("smtp://", "smtp://user:secret@");
    send(&url, message).await.expect("sent");

    let emails = stand_ins.wait_emails(1, WITHIN).await;
    assert_eq!(emails.len(), 1, "{emails:#?}");
    let received = &emails[0];
    assert_eq!(received.message_id, message_id);
    assert_eq!(received.from, "Pulse <no-reply@pulse.localhost>");
    assert_eq!(received.to, vec!["zoe@example.fr".to_owned()]);
    assert_eq!(received.subject, "Rappel : rendez-vous demain à 9 h");
    assert_eq!(
        received.text,
        "Bonjour Zoë,\nvotre rendez-vous est demain à 9 h.\n"
    );
    assert_eq!(
        received.html,
        "<p>Bonjour Zoë,</p><p>votre rendez-vous est demain à <b>9 h</b>.</p>\n"
    );
    assert_eq!(received.headers["to"], "Zoë Martin <zoe@example.fr>");
    assert_eq!(received.auth_user.as_deref(), Some("user"));

    stand_ins.clear().await;
    assert!(stand_ins.emails().await.is_empty());
}

#[tokio::test]
async fn an_sms_is_stored_once_per_idempotency_key_and_needs_the_token() {
    let stand_ins = ProviderStandIns::start().await;
    let form = [
        ("To", "+33612345678"),
        ("From", "+33700000000"),
        ("Body", "Rappel : rendez-vous demain à 9 h"),
    ];
    let token = ProviderStandIns::SMS_AUTH_TOKEN;

    let (status, first) = create_sms(&stand_ins, token, &form, Some("delivery-1")).await;
    assert_eq!(status, 201, "{first}");
    assert!(first["sid"].as_str().is_some_and(|s| s.starts_with("SM")));
    assert_eq!(first["status"], "queued");
    assert_eq!(first["to"], "+33612345678");
    assert_eq!(first["from"], "+33700000000");
    assert_eq!(first["body"], "Rappel : rendez-vous demain à 9 h");
    // The same key again (a retry after a lost response): the first answer, no second message.
    let (status, again) = create_sms(&stand_ins, token, &form, Some("delivery-1")).await;
    assert_eq!(status, 201);
    assert_eq!(again, first);

    let (status, wrong) = create_sms(&stand_ins, "wrong", &form, Some("delivery-2")).await;
    assert_eq!(status, 401, "{wrong}");
    assert_eq!(wrong["code"], 20003);
    assert_eq!(wrong["status"], 401);
    let (status, no_to) = create_sms(&stand_ins, token, &form[1..], None).await;
    assert_eq!(status, 400, "{no_to}");
    assert_eq!(no_to["code"], 21604);

    let sms = stand_ins.sms().await;
    assert_eq!(sms.len(), 1, "{sms:#?}");
    assert_eq!(sms[0].sid, first["sid"]);
    assert_eq!(sms[0].to, "+33612345678");
    assert_eq!(sms[0].from, "+33700000000");
    assert_eq!(sms[0].body, "Rappel : rendez-vous demain à 9 h");
    assert_eq!(sms[0].idempotency_key.as_deref(), Some("delivery-1"));
    assert_eq!(stand_ins.sms_requests().await, 4);
}

#[tokio::test]
async fn armed_failures_fail_the_next_requests_only() {
    let stand_ins = ProviderStandIns::start().await;
    let form = [
        ("To", "+33612345678"),
        ("From", "+33700000000"),
        ("Body", "hi"),
    ];
    let token = ProviderStandIns::SMS_AUTH_TOKEN;

    stand_ins.fail_sms(503, 2).await;
    for _ in 0..2 {
        let (status, body) = create_sms(&stand_ins, token, &form, Some("k")).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["status"], 503);
    }
    let (status, _) = create_sms(&stand_ins, token, &form, Some("k")).await;
    assert_eq!(status, 201);
    assert_eq!(stand_ins.sms().await.len(), 1);

    stand_ins.fail_smtp(451, 1).await;
    let refused = send(
        &stand_ins.smtp_url(),
        email("a@example.fr", "one", "1", "<p>1</p>"),
    )
    .await;
    let error = refused.expect_err("refused with 451");
    assert!(error.is_transient(), "{error:?}");
    send(
        &stand_ins.smtp_url(),
        email("a@example.fr", "two", "2", "<p>2</p>"),
    )
    .await
    .expect("accepted");
    let emails = stand_ins.wait_emails(1, WITHIN).await;
    assert_eq!(
        emails
            .iter()
            .map(|e| e.subject.as_str())
            .collect::<Vec<_>>(),
        ["two"]
    );
    assert_eq!(emails[0].auth_user, None);
}

#[tokio::test]
async fn smtp_goes_down_and_comes_back_on_its_port_keeping_every_email() {
    let mut stand_ins = ProviderStandIns::start().await;
    let url = stand_ins.smtp_url();
    send(
        &url,
        email("a@example.fr", "before", "before", "<p>before</p>"),
    )
    .await
    .expect("sent before the outage");
    stand_ins.wait_emails(1, WITHIN).await;

    stand_ins.stop_smtp().await;
    let down = send(
        &url,
        email("a@example.fr", "during", "during", "<p>during</p>"),
    )
    .await;
    assert!(down.is_err(), "SMTP is down");
    // SMS does not depend on SMTP.
    let form = [
        ("To", "+33612345678"),
        ("From", "+33700000000"),
        ("Body", "hi"),
    ];
    let (status, _) = create_sms(&stand_ins, ProviderStandIns::SMS_AUTH_TOKEN, &form, None).await;
    assert_eq!(status, 201);

    stand_ins.start_smtp().await;
    assert_eq!(stand_ins.smtp_url(), url);
    send(
        &url,
        email("a@example.fr", "after", "after", "<p>after</p>"),
    )
    .await
    .expect("sent after the outage");
    let emails = stand_ins.wait_emails(2, WITHIN).await;
    assert_eq!(
        emails
            .iter()
            .map(|e| e.subject.as_str())
            .collect::<Vec<_>>(),
        ["before", "after"]
    );
    assert_eq!(stand_ins.sms().await.len(), 1);
}
