use std::collections::BTreeSet;

use super::*;

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().expect("RFC 3339")
}

fn templates() -> Templates {
    Templates::load().expect("the embedded templates compile")
}

fn country(code: &str, timezone: &str, currency: &str, locale: &str) -> CountryConfig {
    serde_json::from_value(serde_json::json!({
        "code": code,
        "timezone": timezone,
        "currency": currency,
        "locale": locale,
    }))
    .expect("a valid country")
}

/// A realistic id whose order reference (its first eight hex digits) varies with `n`.
fn uuid(n: u128) -> Uuid {
    Uuid::from_u128(0x9b1d_eb4d_3b7d_4bad_9bdd_2b0d_7b3d_cb6d ^ (n << 100))
}

/// A winter Tuesday, 14:30 in Paris.
const STARTS: &str = "2026-03-03T13:30:00Z";

/// One notice per kind, in `Notice::KINDS` order.
fn samples() -> Vec<Notice> {
    vec![
        Notice::AppointmentBooked {
            appointment_id: uuid(1),
            starts_at: utc(STARTS),
        },
        Notice::AppointmentRescheduled {
            appointment_id: uuid(2),
            starts_at: utc(STARTS),
        },
        Notice::AppointmentCancelled {
            appointment_id: uuid(3),
            starts_at: utc(STARTS),
            by_practitioner: true,
        },
        Notice::AppointmentReminder {
            appointment_id: uuid(4),
            starts_at: utc(STARTS),
        },
        Notice::OrderCreated {
            order_id: Uuid::from_u128(0x3f25_04e0_4f89_11d3_9a0c_0305_e82c_3301),
            campaign_id: "spring-sale".to_owned(),
            amount_minor: 123_450,
            currency: "EUR".to_owned(),
            pay_by: utc("2026-03-03T13:45:00Z"),
        },
        Notice::OrderPaid {
            order_id: uuid(6),
            amount_minor: 123_450,
            currency: "EUR".to_owned(),
        },
        Notice::OrderCancelled {
            order_id: uuid(7),
            reason: Some("payment_timeout".to_owned()),
        },
        Notice::OrderRefunded {
            order_id: uuid(8),
            amount_minor: 123_450,
            currency: "EUR".to_owned(),
        },
        Notice::VoucherIssued {
            voucher_id: uuid(9),
            title: "Spring check-up".to_owned(),
            value_minor: 2_500,
            currency: "EUR".to_owned(),
        },
        Notice::Welcome {},
        Notice::SignInNotice { at: utc(STARTS) },
    ]
}

/// What must appear in the e-mail parts (`long`) and in the SMS (`short`) of `notice`.
fn expected_facts(
    notice: &Notice,
    language: Language,
    country: &CountryConfig,
) -> Vec<(String, String)> {
    let tz = country.tz();
    let when = |at: &DateTime<Utc>| {
        (
            format::long_datetime(*at, tz, language),
            format::short_datetime(*at, tz, language),
        )
    };
    let money = |minor: i64, currency: &str| {
        let m = format::money(minor, currency, &country.locale);
        (m.clone(), sms_text(&m))
    };
    match notice {
        Notice::AppointmentBooked { starts_at, .. }
        | Notice::AppointmentRescheduled { starts_at, .. }
        | Notice::AppointmentCancelled { starts_at, .. }
        | Notice::AppointmentReminder { starts_at, .. } => vec![when(starts_at)],
        Notice::OrderCreated {
            amount_minor,
            currency,
            pay_by,
            ..
        } => vec![money(*amount_minor, currency), when(pay_by)],
        Notice::OrderPaid {
            order_id,
            amount_minor,
            currency,
        }
        | Notice::OrderRefunded {
            order_id,
            amount_minor,
            currency,
        } => vec![
            money(*amount_minor, currency),
            (order_ref(order_id), order_ref(order_id)),
        ],
        Notice::OrderCancelled { order_id, .. } => {
            vec![(order_ref(order_id), order_ref(order_id))]
        }
        Notice::VoucherIssued {
            title,
            value_minor,
            currency,
            ..
        } => vec![
            money(*value_minor, currency),
            (title.clone(), title.clone()),
        ],
        Notice::Welcome {} => vec![],
        Notice::SignInNotice { at } => vec![when(at)],
    }
}

/// The words each language uses to say a message is sent whatever the user's settings.
fn required_marker(language: Language) -> &'static str {
    match language {
        Language::Fr => "quels que soient vos réglages",
        Language::De => "unabhängig von Ihren",
        Language::En => "whatever your",
    }
}

fn assert_clean(part: &str, what: &str) {
    assert!(!part.trim().is_empty(), "{what}: empty");
    for leftover in ["{{", "}}", "{%", "%}", "{#", "#}"] {
        assert!(
            !part.contains(leftover),
            "{what}: leftover `{leftover}`:\n{part}"
        );
    }
    assert!(
        !part.contains("none"),
        "{what}: an absent value shows:\n{part}"
    );
}

#[test]
fn the_samples_and_the_embedded_files_cover_every_kind_exactly() {
    let sampled: Vec<&str> = samples().iter().map(Notice::kind).collect();
    assert_eq!(sampled, Notice::KINDS);
    for language in Language::ALL {
        let kinds: Vec<&str> = files(language).1.iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds, Notice::KINDS, "{}", language.as_str());
    }
    let unique: BTreeSet<&str> = Notice::KINDS.into_iter().collect();
    assert_eq!(unique.len(), Notice::KINDS.len());
}

#[test]
fn templates_are_cheap_shareable_handles() {
    fn shareable<T: Clone + Send + Sync + std::fmt::Debug + 'static>() {}
    shareable::<Templates>();
}

#[test]
fn every_kind_renders_in_every_language_with_its_facts() {
    let templates = templates();
    let france = pulse_kit::testing::france();
    for notice in samples() {
        for language in Language::ALL {
            let what = format!("{} in {}", notice.kind(), language.as_str());
            let r = templates
                .render(&notice, language, &france, Some("Anna"))
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_clean(&r.subject, &format!("{what}, subject"));
            assert_clean(&r.text, &format!("{what}, text"));
            assert_clean(&r.html, &format!("{what}, html"));
            assert_clean(&r.sms, &format!("{what}, sms"));

            assert!(!r.subject.contains('\n'), "{what}: subject on one line");
            assert!(!r.sms.contains('\n'), "{what}: sms on one line");
            assert!(
                !r.sms.contains(['<', '>', '&']) && !r.subject.contains(['<', '>', '&']),
                "{what}: markup outside the HTML part"
            );
            assert!(
                r.sms.chars().count() <= 160,
                "{what}: SMS of {} characters: {}",
                r.sms.chars().count(),
                r.sms
            );
            assert!(
                !r.sms.contains(['\u{a0}', '\u{202f}']),
                "{what}: SMS spaces"
            );
            assert!(r.html.starts_with("<!DOCTYPE html>"), "{what}");
            assert!(
                r.html
                    .contains(&format!("<html lang=\"{}\">", language.as_str())),
                "{what}"
            );
            assert!(r.text.contains("Anna"), "{what}: greeting");
            assert!(r.html.contains("Anna"), "{what}: greeting");
            assert!(r.text.contains("Pulse"), "{what}: signature");

            for (long, short) in expected_facts(&notice, language, &france) {
                assert!(r.text.contains(&long), "{what}: `{long}` in\n{}", r.text);
                assert!(r.html.contains(&long), "{what}: `{long}` in\n{}", r.html);
                assert!(r.sms.contains(&short), "{what}: `{short}` in {}", r.sms);
            }
        }
    }
}

#[test]
fn the_text_part_reads_naturally() {
    let r = templates()
        .render(
            &samples()[4],
            Language::En,
            &pulse_kit::testing::france(),
            Some("Anna"),
        )
        .expect("renders");
    assert_eq!(
        r.subject,
        "You won the flash sale: please pay by 14:45 (UTC+01:00)"
    );
    assert_eq!(
        r.text,
        "Hello Anna,\n\
         \n\
         Congratulations, you won the flash sale! Your order 3F2504E0 is reserved for you.\n\
         \n\
         Amount to pay: 1\u{202f}234,50\u{a0}€\n\
         Pay by: Tuesday 3 March 2026 at 14:45 (UTC+01:00)\n\
         \n\
         You can pay in the Pulse app. If the order is not paid by then, it is cancelled \
         automatically and the offer goes to someone else.\n\
         \n\
         Kind regards,\n\
         The Pulse team"
    );
    assert_eq!(
        r.sms,
        "Pulse: you won the flash sale! Please pay 1 234,50 € by \
         Tue 3 Mar 2026, 14:45 (UTC+01:00) in the app, or the order will be cancelled."
    );
}

#[test]
fn required_messages_say_so_in_every_language_and_others_do_not() {
    let templates = templates();
    let france = pulse_kit::testing::france();
    let by_patient = Notice::AppointmentCancelled {
        appointment_id: uuid(3),
        starts_at: utc(STARTS),
        by_practitioner: false,
    };
    let mut notices = samples();
    notices.push(by_patient);
    let mut required = 0;
    for notice in &notices {
        for language in Language::ALL {
            let what = format!(
                "{} (required: {}) in {}",
                notice.kind(),
                notice.required(),
                language.as_str()
            );
            let r = templates
                .render(notice, language, &france, None)
                .expect("renders");
            let marker = required_marker(language);
            for (part, body) in [("text", &r.text), ("html", &r.html), ("sms", &r.sms)] {
                assert_eq!(
                    body.contains(marker),
                    notice.required(),
                    "{what}, {part}:\n{body}"
                );
            }
            if notice.required() {
                required += 1;
            }
        }
    }
    assert_eq!(required, 2 * Language::ALL.len());
}

#[test]
fn the_reason_for_a_required_message_is_spelt_out() {
    let r = templates()
        .render(
            &samples()[2],
            Language::En,
            &pulse_kit::testing::france(),
            None,
        )
        .expect("renders");
    assert!(r.text.contains(
        "You receive this message whatever your notification settings because it concerns an \
         appointment cancelled by your practitioner."
    ));
    let r = templates()
        .render(
            &samples()[10],
            Language::Fr,
            &pulse_kit::testing::france(),
            None,
        )
        .expect("renders");
    assert!(r.html.contains(
        "Vous recevez ce message quels que soient vos réglages de notification, car il concerne \
         une connexion à votre compte."
    ));
}

#[test]
fn without_a_name_the_greeting_is_neutral() {
    let templates = templates();
    let france = pulse_kit::testing::france();
    let welcome = Notice::Welcome {};
    for name in [None, Some(""), Some("   ")] {
        for (language, greeting) in [
            (Language::Fr, "Bonjour,"),
            (Language::De, "Guten Tag,"),
            (Language::En, "Hello,"),
        ] {
            let r = templates
                .render(&welcome, language, &france, name)
                .expect("renders");
            assert!(r.text.starts_with(&format!("{greeting}\n\n")), "{}", r.text);
            assert!(r.html.contains(&format!("<p>{greeting}</p>")), "{}", r.html);
        }
    }
    let r = templates
        .render(&welcome, Language::De, &france, Some(" Jörg  Müller\n"))
        .expect("renders");
    assert!(r.text.starts_with("Guten Tag Jörg Müller,\n"), "{}", r.text);
}

#[test]
fn html_is_escaped_and_plain_parts_are_not() {
    let templates = templates();
    let france = pulse_kit::testing::france();
    let title = "<script>alert(\"x\")</script> & more";
    let voucher = Notice::VoucherIssued {
        voucher_id: uuid(9),
        title: title.to_owned(),
        value_minor: 500,
        currency: "EUR".to_owned(),
    };
    for language in Language::ALL {
        let r = templates
            .render(&voucher, language, &france, Some("<b>Eve</b>"))
            .expect("renders");
        assert!(!r.html.contains("<script>"), "{}", r.html);
        assert!(!r.html.contains("<b>Eve"), "{}", r.html);
        assert!(r.html.contains("&lt;script&gt;"), "{}", r.html);
        assert!(r.html.contains("&amp; more"), "{}", r.html);
        assert!(r.html.contains("&lt;b&gt;Eve"), "{}", r.html);
        // The template's own markup is kept.
        assert!(r.html.contains("<strong>"), "{}", r.html);
        assert!(r.text.contains(title), "{}", r.text);
        assert!(r.text.contains("<b>Eve</b>"), "{}", r.text);
        assert!(r.subject.contains(title), "{}", r.subject);
        assert!(r.sms.contains(title), "{}", r.sms);
        // The subject is the HTML title, escaped there too.
        assert!(!r.html.contains(&format!("<title>{}", r.subject)));
    }
}

#[test]
fn a_title_cannot_break_the_subject_line() {
    let voucher = Notice::VoucherIssued {
        voucher_id: uuid(9),
        title: "Free\r\nBcc: someone@example.com".to_owned(),
        value_minor: 500,
        currency: "EUR".to_owned(),
    };
    let r = templates()
        .render(&voucher, Language::En, &pulse_kit::testing::france(), None)
        .expect("renders");
    assert!(!r.subject.contains(['\r', '\n']), "{:?}", r.subject);
    assert!(!r.sms.contains(['\r', '\n']), "{:?}", r.sms);
}

#[test]
fn order_cancellations_give_the_reason_in_words_when_known() {
    let templates = templates();
    let france = pulse_kit::testing::france();
    let cancelled = |reason: Option<&str>| Notice::OrderCancelled {
        order_id: uuid(7),
        reason: reason.map(str::to_owned),
    };
    let render = |reason, language| {
        templates
            .render(&cancelled(reason), language, &france, None)
            .expect("renders")
    };
    for language in Language::ALL {
        let unknown = render(None, language);
        assert_eq!(render(Some("gremlins"), language), unknown);
        let known: BTreeSet<String> = ["payment_timeout", "payment_failed", "user"]
            .into_iter()
            .map(|reason| render(Some(reason), language).sms)
            .collect();
        assert_eq!(known.len(), 3, "{}: distinct wording", language.as_str());
        assert!(!known.contains(&unknown.sms));
    }
    assert!(
        render(Some("payment_timeout"), Language::En)
            .text
            .contains("has been cancelled because it was not paid in time.")
    );
    assert!(
        render(Some("payment_failed"), Language::Fr)
            .sms
            .contains("le paiement n'a pas abouti")
    );
    assert!(
        render(Some("user"), Language::De)
            .sms
            .contains("auf Ihren Wunsch")
    );
    assert!(
        render(None, Language::En)
            .sms
            .ends_with("has been cancelled.")
    );
}

#[test]
fn times_and_money_follow_the_country() {
    let templates = templates();
    let uk = country("GB", "Europe/London", "GBP", "en-GB");
    let germany = country("DE", "Europe/Berlin", "EUR", "de-DE");
    let japan = country("JP", "Asia/Tokyo", "JPY", "en-US");
    let summer = Notice::AppointmentReminder {
        appointment_id: uuid(4),
        starts_at: utc("2026-07-14T08:05:00Z"),
    };

    let r = templates
        .render(&summer, Language::Fr, &pulse_kit::testing::france(), None)
        .expect("renders");
    assert!(
        r.text.contains("mardi 14 juillet 2026 à 10:05 (UTC+02:00)"),
        "{}",
        r.text
    );
    let r = templates
        .render(&summer, Language::En, &uk, None)
        .expect("renders");
    assert!(
        r.text.contains("Tuesday 14 July 2026 at 09:05 (UTC+01:00)"),
        "{}",
        r.text
    );
    let r = templates
        .render(&summer, Language::De, &germany, None)
        .expect("renders");
    assert!(
        r.text
            .contains("Dienstag, 14. Juli 2026 um 10:05 (UTC+02:00)"),
        "{}",
        r.text
    );
    assert!(
        r.sms.contains("Di., 14. Juli 2026, 10:05 (UTC+02:00)"),
        "{}",
        r.sms
    );

    let paid = |amount_minor, currency: &str| Notice::OrderPaid {
        order_id: uuid(6),
        amount_minor,
        currency: currency.to_owned(),
    };
    let r = templates
        .render(&paid(123_450, "GBP"), Language::En, &uk, None)
        .expect("renders");
    assert_eq!(r.subject, "Payment received: £1,234.50");
    let r = templates
        .render(&paid(123_450, "EUR"), Language::De, &germany, None)
        .expect("renders");
    assert_eq!(r.subject, "Zahlung erhalten: 1.234,50\u{a0}€");
    let r = templates
        .render(&paid(1_234_500, "JPY"), Language::En, &japan, None)
        .expect("renders");
    assert_eq!(r.subject, "Payment received: ¥1,234,500");
    // A notice without its currency falls back to the country's.
    let r = templates
        .render(&paid(990, ""), Language::En, &uk, None)
        .expect("renders");
    assert_eq!(r.subject, "Payment received: £9.90");
}

#[test]
fn tidying_collapses_blank_lines_and_whitespace() {
    assert_eq!(tidy("\n\n a  \n\n\n\nb\nc  \n\n"), " a\n\nb\nc");
    assert_eq!(one_line(" a\n b\u{a0}c \r\n"), "a b\u{a0}c");
    assert_eq!(sms_text(" 1\u{202f}234,50\u{a0}€\n"), "1 234,50 €");
    assert_eq!(order_ref(&Uuid::from_u128(0xabcdef12 << 96)), "ABCDEF12");
}
