//! What messages say: templates per kind and language, rendered with the country's time zone
//! and currency.
//!
//! Each kind has one file per language, `templates/<lang>/<Kind>.j2`, with the blocks
//! `subject`, `sms`, `text` and `html` (and `required_reason` for kinds that can be sent
//! whatever the user's settings). The `text` and `html` blocks are only the message's body:
//! the greeting, the note on required messages and the signature come from the language's
//! layouts, `_layout.txt.j2` and `_layout.html.j2`.
//!
//! The files are embedded at compile time, so the binary needs nothing on disk and a missing
//! file is a build error. Every kind file is registered twice, as `<lang>/<Kind>.txt` and
//! `<lang>/<Kind>.html`: the environment escapes HTML in templates whose name ends in `.html`,
//! so the `html` block is rendered from the second and everything else from the first. Facts
//! (dates, amounts) are formatted in Rust beforehand ([`format`]) and handed to the templates
//! as strings.

pub mod format;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use minijinja::syntax::SyntaxConfig;
use minijinja::value::Serde;
use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value, context};
use pulse_kit::config::CountryConfig;
use serde::Serialize;
use uuid::Uuid;

use crate::domain::{Language, Notice};

/// A notice written out for every channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// E-mail subject; also the in-app title.
    pub subject: String,
    /// E-mail text part.
    pub text: String,
    /// E-mail HTML part.
    pub html: String,
    /// SMS text; also the in-app body.
    pub sms: String,
}

/// Why a notice could not be rendered.
#[derive(Debug, thiserror::Error)]
#[error("cannot render {kind} in {language}: {message}")]
pub struct ContentError {
    /// The notice's kind.
    pub kind: String,
    /// The language.
    pub language: &'static str,
    /// What failed.
    pub message: String,
}

/// Expands to `[(kind, source); 11]` for the kind files of one language. The kind list lives
/// here once; a test checks it against [`Notice::KINDS`].
macro_rules! kind_files {
    ($lang:literal) => {
        kind_files!(
            @ $lang;
            AppointmentBooked,
            AppointmentRescheduled,
            AppointmentCancelled,
            AppointmentReminder,
            OrderCreated,
            OrderPaid,
            OrderCancelled,
            OrderRefunded,
            VoucherIssued,
            Welcome,
            SignInNotice,
        )
    };
    (@ $lang:literal; $($kind:ident),* $(,)?) => {
        [$((
            stringify!($kind),
            include_str!(concat!("../../templates/", $lang, "/", stringify!($kind), ".j2")),
        )),*]
    };
}

/// The layouts of one language: `(text, html)`.
macro_rules! layout_files {
    ($lang:literal) => {
        (
            include_str!(concat!("../../templates/", $lang, "/_layout.txt.j2")),
            include_str!(concat!("../../templates/", $lang, "/_layout.html.j2")),
        )
    };
}

/// The embedded files of `language`: its layouts `(text, html)` and its kind files.
fn files(
    language: Language,
) -> (
    (&'static str, &'static str),
    [(&'static str, &'static str); 11],
) {
    match language {
        Language::Fr => (layout_files!("fr"), kind_files!("fr")),
        Language::De => (layout_files!("de"), kind_files!("de")),
        Language::En => (layout_files!("en"), kind_files!("en")),
    }
}

/// The environment every template is compiled in: syntax, strictness, escaping.
fn environment() -> Result<Environment<'static>, ContentError> {
    let mut env = Environment::new();
    // Block tags on their own lines leave no blank lines behind.
    let syntax = SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
        .map_err(|e| load_error("syntax", e))?;
    env.set_syntax(syntax);
    // A misspelt variable is an error, not a silently empty sentence.
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    Ok(env)
}

/// The embedded source of template `name` (`fr/_layout.txt`, `de/OrderPaid.html`).
fn source_of(name: &str) -> Option<&'static str> {
    let (lang, file) = name.split_once('/')?;
    let language = Language::ALL.into_iter().find(|l| l.as_str() == lang)?;
    let ((text_layout, html_layout), kinds) = files(language);
    match file {
        "_layout.txt" => Some(text_layout),
        "_layout.html" => Some(html_layout),
        _ => {
            let (kind, flavour) = file.rsplit_once('.')?;
            if !matches!(flavour, "txt" | "html") {
                return None;
            }
            kinds
                .into_iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, source)| source)
        }
    }
}

/// The templates, loaded once; cheap to clone.
#[derive(Debug, Clone)]
pub struct Templates {
    env: Arc<Environment<'static>>,
}

impl Templates {
    /// Loads the templates embedded in the binary. Fails if one does not compile: every one is
    /// compiled here once, then dropped; the environment kept compiles each template the first
    /// time it is rendered (a process that sends no e-mail of a kind holds none of its compiled
    /// templates: about 3 MB for all of them).
    pub fn load() -> Result<Self, ContentError> {
        let mut check = environment()?;
        for language in Language::ALL {
            let lang = language.as_str();
            let ((text_layout, html_layout), kinds) = files(language);
            check
                .add_template_owned(format!("{lang}/_layout.txt"), text_layout)
                .map_err(|e| load_error(lang, e))?;
            check
                .add_template_owned(format!("{lang}/_layout.html"), html_layout)
                .map_err(|e| load_error(lang, e))?;
            for (kind, source) in kinds {
                for flavour in ["txt", "html"] {
                    check
                        .add_template_owned(format!("{lang}/{kind}.{flavour}"), source)
                        .map_err(|e| ContentError {
                            kind: kind.to_owned(),
                            language: lang,
                            message: detailed(&e),
                        })?;
                }
            }
        }
        drop(check);
        let mut env = environment()?;
        env.set_loader(|name| Ok(source_of(name).map(str::to_owned)));
        Ok(Self { env: Arc::new(env) })
    }

    /// Writes `notice` in `language` for a recipient called `name` (if known), with times in
    /// `country`'s time zone and money in its format.
    pub fn render(
        &self,
        notice: &Notice,
        language: Language,
        country: &CountryConfig,
        name: Option<&str>,
    ) -> Result<Rendered, ContentError> {
        let kind = notice.kind();
        let lang = language.as_str();
        let fail = |e: minijinja::Error| ContentError {
            kind: kind.to_owned(),
            language: lang,
            message: detailed(&e),
        };
        let facts = Value::from(Serde(Facts::of(notice, language, country, name)));

        let text_template = self
            .env
            .get_template(&format!("{lang}/{kind}.txt"))
            .map_err(fail)?;
        let mut captured = text_template.render_captured(facts.clone()).map_err(fail)?;
        let blocks = captured.with_state_mut(|state| {
            let subject = state.render_block("subject")?;
            let sms = state.render_block("sms")?;
            let text = state.render_block("text")?;
            let reason = if notice.required() {
                Some(state.render_block("required_reason")?)
            } else {
                None
            };
            Ok::<_, minijinja::Error>((subject, sms, text, reason))
        });
        let (subject, sms, text_body, required_reason) = blocks.map_err(fail)?;
        let subject = one_line(&subject);
        let required_reason = required_reason.map(|r: String| one_line(&r));

        let html_template = self
            .env
            .get_template(&format!("{lang}/{kind}.html"))
            .map_err(fail)?;
        let mut captured = html_template.render_captured(facts.clone()).map_err(fail)?;
        let html_body = captured
            .with_state_mut(|state| state.render_block("html"))
            .map_err(fail)?;

        let text = self
            .env
            .get_template(&format!("{lang}/_layout.txt"))
            .and_then(|t| {
                t.render(context! {
                    body => tidy(&text_body),
                    subject => subject.clone(),
                    required_reason => required_reason.clone(),
                    ..facts.clone()
                })
            })
            .map_err(fail)?;
        let html = self
            .env
            .get_template(&format!("{lang}/_layout.html"))
            .and_then(|t| {
                t.render(context! {
                    // Already escaped where it was rendered.
                    body => Value::from_safe_string(tidy(&html_body)),
                    subject => subject.clone(),
                    required_reason => required_reason.clone(),
                    ..facts
                })
            })
            .map_err(fail)?;

        Ok(Rendered {
            subject,
            text: tidy(&text),
            html: tidy(&html),
            sms: sms_text(&sms),
        })
    }
}

fn load_error(language: &'static str, e: minijinja::Error) -> ContentError {
    ContentError {
        kind: "layout".to_owned(),
        language,
        message: detailed(&e),
    }
}

/// The error with its template, line and causes, for logs.
fn detailed(e: &minijinja::Error) -> String {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// What the templates may show, already formatted for the recipient. Every field is always
/// present (`none` when it does not apply to the kind) so that strict undefined checking only
/// catches real mistakes.
#[derive(Debug, Serialize)]
struct Facts {
    /// The notice's kind.
    kind: &'static str,
    /// The message's language subtag.
    language: &'static str,
    /// The recipient's name, `none` when unknown or blank.
    name: Option<String>,
    /// Sent whatever the user's settings; the layouts say so.
    required: bool,
    /// Appointment start, in full and abbreviated.
    starts_at: Option<String>,
    starts_at_short: Option<String>,
    /// The appointment was cancelled by the practitioner (or an administrator).
    by_practitioner: Option<bool>,
    /// A short order reference the user can quote (`3F2504E0`).
    order_ref: Option<String>,
    /// Order amount (to pay, paid or refunded).
    amount: Option<String>,
    /// Payment deadline of a won flash sale: in full, abbreviated, time of day only.
    pay_by: Option<String>,
    pay_by_short: Option<String>,
    pay_by_time: Option<String>,
    /// Why an order was cancelled: the raw code, put in words by the templates.
    reason: Option<String>,
    /// Voucher title and value.
    title: Option<String>,
    value: Option<String>,
    /// Sign-in instant, in full and abbreviated.
    at: Option<String>,
    at_short: Option<String>,
}

impl Facts {
    fn of(
        notice: &Notice,
        language: Language,
        country: &CountryConfig,
        name: Option<&str>,
    ) -> Self {
        let tz = country.tz();
        let long = |at: &DateTime<Utc>| Some(format::long_datetime(*at, tz, language));
        let short = |at: &DateTime<Utc>| Some(format::short_datetime(*at, tz, language));
        // Amounts are in the notice's currency (normally the country's), written the
        // country's way.
        let money = |minor: i64, currency: &str| {
            let currency = if currency.trim().is_empty() {
                country.currency.as_str()
            } else {
                currency.trim()
            };
            Some(format::money(minor, currency, &country.locale))
        };
        let mut facts = Self {
            kind: notice.kind(),
            language: language.as_str(),
            name: name
                .map(|n| n.split_whitespace().collect::<Vec<_>>().join(" "))
                .filter(|n| !n.is_empty()),
            required: notice.required(),
            starts_at: None,
            starts_at_short: None,
            by_practitioner: None,
            order_ref: None,
            amount: None,
            pay_by: None,
            pay_by_short: None,
            pay_by_time: None,
            reason: None,
            title: None,
            value: None,
            at: None,
            at_short: None,
        };
        match notice {
            Notice::AppointmentBooked { starts_at, .. }
            | Notice::AppointmentRescheduled { starts_at, .. }
            | Notice::AppointmentReminder { starts_at, .. } => {
                facts.starts_at = long(starts_at);
                facts.starts_at_short = short(starts_at);
            }
            Notice::AppointmentCancelled {
                starts_at,
                by_practitioner,
                ..
            } => {
                facts.starts_at = long(starts_at);
                facts.starts_at_short = short(starts_at);
                facts.by_practitioner = Some(*by_practitioner);
            }
            Notice::OrderCreated {
                order_id,
                amount_minor,
                currency,
                pay_by,
                ..
            } => {
                facts.order_ref = Some(order_ref(order_id));
                facts.amount = money(*amount_minor, currency);
                facts.pay_by = long(pay_by);
                facts.pay_by_short = short(pay_by);
                facts.pay_by_time = Some(format::time_of_day(*pay_by, tz));
            }
            Notice::OrderPaid {
                order_id,
                amount_minor,
                currency,
            }
            | Notice::OrderRefunded {
                order_id,
                amount_minor,
                currency,
            } => {
                facts.order_ref = Some(order_ref(order_id));
                facts.amount = money(*amount_minor, currency);
            }
            Notice::OrderCancelled { order_id, reason } => {
                facts.order_ref = Some(order_ref(order_id));
                facts.reason = reason.as_deref().map(str::trim).map(str::to_owned);
            }
            Notice::VoucherIssued {
                title,
                value_minor,
                currency,
                ..
            } => {
                facts.title = Some(title.trim().to_owned());
                facts.value = money(*value_minor, currency);
            }
            Notice::Welcome {} => {}
            Notice::SignInNotice { at } => {
                facts.at = long(at);
                facts.at_short = short(at);
            }
        }
        facts
    }
}

/// The first eight hex digits of an order id, upper case: short enough to read out to support
/// and unique enough among one user's orders.
fn order_ref(id: &Uuid) -> String {
    let mut simple = id.simple().to_string();
    simple.truncate(8);
    simple.to_ascii_uppercase()
}

/// Template output as a single line: runs of ASCII whitespace (line breaks included) become one
/// space; no-break spaces inside amounts stay.
fn one_line(s: &str) -> String {
    s.split(|c: char| c.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// SMS text: one line, and plain spaces only, since no-break spaces are outside the GSM
/// alphabet and would halve the length of one SMS.
fn sms_text(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Multi-line output without trailing spaces, with at most one blank line in a row and no
/// blank lines at the ends.
fn tidy(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut blank_run = 0;
    for line in s.lines().map(str::trim_end) {
        if line.is_empty() {
            blank_run += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank_run > 0 { "\n\n" } else { "\n" });
        }
        blank_run = 0;
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests;
