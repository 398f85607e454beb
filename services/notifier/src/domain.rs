//! Notifier's rules, free of I/O: what each event tells whom, when a reminder is due, quiet
//! hours, and how long a failed delivery waits.

use std::time::Duration;

use chrono::{DateTime, Days, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A way to reach a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// E-mail over SMTP.
    Email,
    /// Text message through the SMS provider.
    Sms,
    /// Stored in the user's notifications, pushed to open streams.
    InApp,
}

impl Channel {
    /// Every channel, in the order a notice is fanned out.
    pub const ALL: [Channel; 3] = [Channel::Email, Channel::Sms, Channel::InApp];

    /// The name stored and used in metrics (`email`, `sms`, `in_app`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Sms => "sms",
            Self::InApp => "in_app",
        }
    }

    /// The channel stored as `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

/// A language notifications are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// French.
    Fr,
    /// German.
    De,
    /// English.
    En,
}

impl Language {
    /// Every language with templates.
    pub const ALL: [Language; 3] = [Language::Fr, Language::De, Language::En];

    /// The language subtag (`fr`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fr => "fr",
            Self::De => "de",
            Self::En => "en",
        }
    }

    /// The language of a BCP 47 tag (`fr-FR`, `de`), if it has templates.
    pub fn of_tag(tag: &str) -> Option<Self> {
        let primary = tag.split(['-', '_']).next()?.to_ascii_lowercase();
        Self::ALL.into_iter().find(|l| l.as_str() == primary)
    }

    /// The user's language when it has templates, else the country's, else English.
    pub fn pick(user: Option<&str>, country_locale: &str) -> Self {
        user.and_then(Self::of_tag)
            .or_else(|| Self::of_tag(country_locale))
            .unwrap_or(Self::En)
    }
}

/// What one message tells its recipient: the kind and the facts the templates show. Stored
/// with each delivery (`deliveries.notice`); it never holds contact data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum Notice {
    /// The patient booked an appointment.
    #[serde(rename_all = "camelCase")]
    AppointmentBooked {
        /// The appointment.
        appointment_id: Uuid,
        /// Its start.
        starts_at: DateTime<Utc>,
    },
    /// An appointment was moved to another slot.
    #[serde(rename_all = "camelCase")]
    AppointmentRescheduled {
        /// The new appointment.
        appointment_id: Uuid,
        /// Its start.
        starts_at: DateTime<Utc>,
    },
    /// An appointment was cancelled.
    #[serde(rename_all = "camelCase")]
    AppointmentCancelled {
        /// The appointment.
        appointment_id: Uuid,
        /// Its start.
        starts_at: DateTime<Utc>,
        /// Cancelled by someone else than the patient (the practitioner, an administrator):
        /// the patient must hear of it.
        by_practitioner: bool,
    },
    /// The day-before reminder.
    #[serde(rename_all = "camelCase")]
    AppointmentReminder {
        /// The appointment.
        appointment_id: Uuid,
        /// Its start.
        starts_at: DateTime<Utc>,
    },
    /// A flash-sale order was won and waits for payment.
    #[serde(rename_all = "camelCase")]
    OrderCreated {
        /// The order.
        order_id: Uuid,
        /// The campaign.
        campaign_id: String,
        /// What to pay, minor units.
        amount_minor: i64,
        /// Currency.
        currency: String,
        /// Unpaid after this, the order is cancelled.
        pay_by: DateTime<Utc>,
    },
    /// An order was paid.
    #[serde(rename_all = "camelCase")]
    OrderPaid {
        /// The order.
        order_id: Uuid,
        /// What was paid, minor units.
        amount_minor: i64,
        /// Currency.
        currency: String,
    },
    /// An order was cancelled.
    #[serde(rename_all = "camelCase")]
    OrderCancelled {
        /// The order.
        order_id: Uuid,
        /// Why (`payment_timeout`, `payment_failed`, `user`, …), if known.
        reason: Option<String>,
    },
    /// An order was refunded.
    #[serde(rename_all = "camelCase")]
    OrderRefunded {
        /// The order.
        order_id: Uuid,
        /// What was refunded, minor units.
        amount_minor: i64,
        /// Currency.
        currency: String,
    },
    /// A voucher went into the user's wallet.
    #[serde(rename_all = "camelCase")]
    VoucherIssued {
        /// The voucher.
        voucher_id: Uuid,
        /// Its title.
        title: String,
        /// Its value, minor units.
        value_minor: i64,
        /// Currency.
        currency: String,
    },
    /// The user's first sign-in created their account.
    #[serde(rename_all = "camelCase")]
    Welcome {},
    /// Someone signed in to the user's account (a security notice).
    #[serde(rename_all = "camelCase")]
    SignInNotice {
        /// When.
        at: DateTime<Utc>,
    },
}

impl Notice {
    /// Every kind, for the templates' completeness test.
    pub const KINDS: [&'static str; 11] = [
        "AppointmentBooked",
        "AppointmentRescheduled",
        "AppointmentCancelled",
        "AppointmentReminder",
        "OrderCreated",
        "OrderPaid",
        "OrderCancelled",
        "OrderRefunded",
        "VoucherIssued",
        "Welcome",
        "SignInNotice",
    ];

    /// The kind (its serde tag and template name).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::AppointmentBooked { .. } => "AppointmentBooked",
            Self::AppointmentRescheduled { .. } => "AppointmentRescheduled",
            Self::AppointmentCancelled { .. } => "AppointmentCancelled",
            Self::AppointmentReminder { .. } => "AppointmentReminder",
            Self::OrderCreated { .. } => "OrderCreated",
            Self::OrderPaid { .. } => "OrderPaid",
            Self::OrderCancelled { .. } => "OrderCancelled",
            Self::OrderRefunded { .. } => "OrderRefunded",
            Self::VoucherIssued { .. } => "VoucherIssued",
            Self::Welcome {} => "Welcome",
            Self::SignInNotice { .. } => "SignInNotice",
        }
    }

    /// Whether the user gets it whatever their preferences (opt-outs, quiet hours): a
    /// cancellation they did not ask for, a sign-in to their account. The message says so.
    pub fn required(&self) -> bool {
        matches!(
            self,
            Self::AppointmentCancelled {
                by_practitioner: true,
                ..
            } | Self::SignInNotice { .. }
        )
    }

    /// The channels it goes out on.
    pub fn channels(&self) -> &'static [Channel] {
        match self {
            // Nothing urgent: e-mail and the app only.
            Self::Welcome {} | Self::VoucherIssued { .. } | Self::OrderRefunded { .. } => {
                &[Channel::Email, Channel::InApp]
            }
            _ => &Channel::ALL,
        }
    }
}

/// A user's notification preferences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preferences {
    /// E-mail wanted.
    pub email: bool,
    /// SMS wanted.
    pub sms: bool,
    /// In-app notifications wanted.
    pub in_app: bool,
    /// Quiet hours (local start, local end); start after end spans midnight.
    pub quiet_hours: Option<(NaiveTime, NaiveTime)>,
}

impl Default for Preferences {
    fn default() -> Self {
        Self {
            email: true,
            sms: true,
            in_app: true,
            quiet_hours: None,
        }
    }
}

impl Preferences {
    /// Whether the user wants `channel`.
    pub fn wants(&self, channel: Channel) -> bool {
        match channel {
            Channel::Email => self.email,
            Channel::Sms => self.sms,
            Channel::InApp => self.in_app,
        }
    }
}

/// What to do with a delivery that is due, given the user's preferences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Send it now.
    Send,
    /// The user turned the channel off: do not send it.
    OptedOut,
    /// Quiet hours: send it at this instant.
    HoldUntil(DateTime<Utc>),
}

/// Whether a `channel` message (required or not) goes out `now` for a user with `prefs` in
/// the country's time zone `tz`. Quiet hours hold e-mail and SMS; in-app messages are silent
/// and never held. Required messages are neither held nor dropped.
pub fn gate(
    prefs: &Preferences,
    channel: Channel,
    required: bool,
    now: DateTime<Utc>,
    tz: Tz,
) -> Gate {
    if required {
        return Gate::Send;
    }
    if !prefs.wants(channel) {
        return Gate::OptedOut;
    }
    if channel == Channel::InApp {
        return Gate::Send;
    }
    match prefs.quiet_hours {
        Some((start, end)) => match quiet_until(start, end, now, tz) {
            Some(until) => Gate::HoldUntil(until),
            None => Gate::Send,
        },
        None => Gate::Send,
    }
}

/// If `now` falls in the quiet hours `[start, end)` (local, spanning midnight when
/// `start > end`), the instant they end; `None` outside them.
pub fn quiet_until(
    start: NaiveTime,
    end: NaiveTime,
    now: DateTime<Utc>,
    tz: Tz,
) -> Option<DateTime<Utc>> {
    if start == end {
        return None;
    }
    let local = now.with_timezone(&tz);
    let time = local.time();
    let today = local.date_naive();
    let end_day = if start < end {
        if time < start || time >= end {
            return None;
        }
        today
    } else if time >= start {
        today.checked_add_days(Days::new(1))?
    } else if time < end {
        today
    } else {
        return None;
    };
    Some(local_instant(tz, end_day.and_time(end)))
}

/// The UTC instant of a local wall-clock time: the earlier of two when the clock goes back,
/// the first valid minute after a gap when it goes forward.
pub fn local_instant(tz: Tz, local: chrono::NaiveDateTime) -> DateTime<Utc> {
    let mut candidate = local;
    // A spring-forward gap is at most a few hours wide; step until a valid time.
    for _ in 0..(4 * 60) {
        if let Some(instant) = tz.from_local_datetime(&candidate).earliest() {
            return instant.with_timezone(&Utc);
        }
        candidate += chrono::Duration::minutes(1);
    }
    Utc.from_utc_datetime(&local)
}

/// When the reminder of an appointment starting at `starts_at` is due: the local day before
/// it, at the country's reminder time.
pub fn reminder_due(starts_at: DateTime<Utc>, tz: Tz, reminder_time: NaiveTime) -> DateTime<Utc> {
    let local_day = starts_at.with_timezone(&tz).date_naive();
    let day_before = local_day.pred_opt().unwrap_or(local_day);
    local_instant(tz, day_before.and_time(reminder_time))
}

/// How long a delivery waits after its `attempts`-th failure: `base` doubled per failure up to
/// `max`, with "equal jitter" (half fixed, half random from `jitter` in `[0, 1)`) so that
/// retries of many deliveries do not hit a recovering provider at once.
pub fn retry_delay(attempts: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let exponent = attempts.saturating_sub(1).min(20);
    let full = base.saturating_mul(1u32 << exponent).min(max);
    let half = full / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paris() -> Tz {
        chrono_tz::Europe::Paris
    }

    fn at(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).expect("valid time")
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().expect("RFC 3339")
    }

    #[test]
    fn language_falls_back_to_the_country_then_english() {
        assert_eq!(Language::pick(Some("de-DE"), "fr-FR"), Language::De);
        assert_eq!(Language::pick(Some("it-IT"), "fr-FR"), Language::Fr);
        assert_eq!(Language::pick(None, "de-AT"), Language::De);
        assert_eq!(Language::pick(Some("es"), "es-ES"), Language::En);
        assert_eq!(Language::pick(Some(""), "en-GB"), Language::En);
    }

    #[test]
    fn notices_round_trip_with_their_kind_as_tag() {
        let notice = Notice::AppointmentCancelled {
            appointment_id: Uuid::nil(),
            starts_at: utc("2026-03-03T13:30:00Z"),
            by_practitioner: true,
        };
        let json = serde_json::to_value(&notice).expect("serializes");
        assert_eq!(json["kind"], "AppointmentCancelled");
        assert_eq!(json["byPractitioner"], true);
        let back: Notice = serde_json::from_value(json).expect("deserializes");
        assert_eq!(back, notice);
        assert!(notice.required());
        assert_eq!(notice.kind(), "AppointmentCancelled");
        assert!(Notice::KINDS.contains(&notice.kind()));
    }

    #[test]
    fn reminders_are_due_the_local_day_before_across_daylight_saving_changes() {
        let six = at(18, 0);
        // Winter: Paris is UTC+1.
        assert_eq!(
            reminder_due(utc("2026-01-15T09:00:00Z"), paris(), six),
            utc("2026-01-14T17:00:00Z")
        );
        // Appointment on Monday 30 March 2026 (after the 29 March spring-forward, UTC+2);
        // reminder on Sunday 29 March at 18:00 local, already summer time.
        assert_eq!(
            reminder_due(utc("2026-03-30T07:00:00Z"), paris(), six),
            utc("2026-03-29T16:00:00Z")
        );
        // Appointment on Sunday 29 March (the change day), reminder on Saturday 28 at 18:00
        // winter time.
        assert_eq!(
            reminder_due(utc("2026-03-29T08:00:00Z"), paris(), six),
            utc("2026-03-28T17:00:00Z")
        );
        // Autumn: appointment Monday 26 October 2026 (UTC+1), reminder Sunday 25 (the change
        // day) at 18:00 winter time.
        assert_eq!(
            reminder_due(utc("2026-10-26T08:00:00Z"), paris(), six),
            utc("2026-10-25T17:00:00Z")
        );
        // An appointment just after local midnight belongs to its local day.
        assert_eq!(
            reminder_due(utc("2026-06-09T22:30:00Z"), paris(), six),
            utc("2026-06-09T16:00:00Z")
        );
    }

    #[test]
    fn a_reminder_time_inside_the_spring_gap_moves_to_the_first_valid_minute() {
        // 02:30 does not exist in Paris on 29 March 2026.
        let due = reminder_due(utc("2026-03-30T08:00:00Z"), paris(), at(2, 30));
        assert_eq!(due, utc("2026-03-29T01:00:00Z"));
    }

    #[test]
    fn quiet_hours_hold_until_they_end_even_across_midnight() {
        let (start, end) = (at(22, 0), at(7, 0));
        // 23:30 local (UTC+1 in January) → held until 07:00 the next morning.
        assert_eq!(
            quiet_until(start, end, utc("2026-01-15T22:30:00Z"), paris()),
            Some(utc("2026-01-16T06:00:00Z"))
        );
        // 05:00 local → until 07:00 the same day.
        assert_eq!(
            quiet_until(start, end, utc("2026-01-16T04:00:00Z"), paris()),
            Some(utc("2026-01-16T06:00:00Z"))
        );
        // 12:00 local → not quiet.
        assert_eq!(
            quiet_until(start, end, utc("2026-01-16T11:00:00Z"), paris()),
            None
        );
        // Same-day window 12:00–14:00.
        assert_eq!(
            quiet_until(at(12, 0), at(14, 0), utc("2026-01-16T11:30:00Z"), paris()),
            Some(utc("2026-01-16T13:00:00Z"))
        );
        assert_eq!(quiet_until(at(12, 0), at(12, 0), Utc::now(), paris()), None);
    }

    #[test]
    fn the_gate_honours_opt_outs_and_quiet_hours_but_never_for_required_messages() {
        let night = utc("2026-01-15T22:30:00Z");
        let prefs = Preferences {
            sms: false,
            quiet_hours: Some((at(22, 0), at(7, 0))),
            ..Preferences::default()
        };
        let morning = utc("2026-01-16T06:00:00Z");
        assert_eq!(
            gate(&prefs, Channel::Sms, false, night, paris()),
            Gate::OptedOut
        );
        assert_eq!(
            gate(&prefs, Channel::Email, false, night, paris()),
            Gate::HoldUntil(morning)
        );
        assert_eq!(
            gate(&prefs, Channel::InApp, false, night, paris()),
            Gate::Send
        );
        assert_eq!(gate(&prefs, Channel::Sms, true, night, paris()), Gate::Send);
        assert_eq!(
            gate(&prefs, Channel::Email, true, night, paris()),
            Gate::Send
        );
    }

    #[test]
    fn retries_back_off_exponentially_with_bounded_jitter() {
        let base = Duration::from_secs(2);
        let max = Duration::from_secs(900);
        assert_eq!(retry_delay(1, base, max, 0.0), Duration::from_secs(1));
        assert_eq!(retry_delay(1, base, max, 1.0), Duration::from_secs(2));
        assert_eq!(retry_delay(3, base, max, 0.0), Duration::from_secs(4));
        assert_eq!(retry_delay(3, base, max, 0.999).as_secs(), 7);
        assert_eq!(retry_delay(30, base, max, 1.0), max);
        assert!(retry_delay(30, base, max, 0.0) >= max / 2);
    }
}
