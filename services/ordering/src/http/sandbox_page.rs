//! The sandbox provider's checkout pages, served only when `PULSE_PAYMENT_PROVIDER=sandbox`
//! (development mode): plain server-rendered HTML standing in for a real provider's hosted
//! checkout, over [`SandboxCheckout`] (what the buttons do, and why Cancel leaves the order
//! unpaid, is in [`crate::payments::sandbox`]).
//!
//! - `GET /v1/payments/sandbox/checkout/{session}`: the order, what it buys, the amount in the
//!   order's currency written the country's way, the deadline in the country's time zone, and
//!   two buttons (HTML forms, no JavaScript): Pay and Cancel.
//! - `POST …/{session}/pay` and `POST …/{session}/cancel`: 303 to the return URL (the web app's
//!   order page).
//!
//! Pages are in the country's language (French, German, English for any other), or the one
//! `?lang=fr|de|en` asks for. An unknown session answers a 404 page, a paid or expired one a
//! 409 page, a database failure a 503 page: words for a person, never problem+json (these are
//! pages a browser shows, not API answers) and never a 500. They are not in the OpenAPI
//! document: they are the provider's pages, not Pulse's API.

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use pulse_kit::config::CountryConfig;

use crate::payments::sandbox::{
    CHECKOUT_PATH, SandboxCheckout, Session, SessionError, SessionState,
};
use pulse_kit::money;

/// What the handlers share.
#[derive(Clone)]
struct Pages {
    checkout: SandboxCheckout,
    country: Arc<CountryConfig>,
}

/// The checkout pages' routes, under [`CHECKOUT_PATH`].
pub fn sandbox_routes(checkout: SandboxCheckout, country: Arc<CountryConfig>) -> Router {
    Router::new()
        .route(&format!("{CHECKOUT_PATH}/{{session}}"), get(page))
        .route(&format!("{CHECKOUT_PATH}/{{session}}/pay"), post(pay))
        .route(&format!("{CHECKOUT_PATH}/{{session}}/cancel"), post(cancel))
        .with_state(Pages { checkout, country })
}

/// A language the pages are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Language {
    Fr,
    De,
    En,
}

impl Language {
    /// The language of a BCP 47 tag (`fr-FR`, `de`, `en-GB`), if the pages have it.
    fn of_tag(tag: &str) -> Option<Self> {
        let primary = tag.split(['-', '_']).next().unwrap_or_default();
        match primary.to_ascii_lowercase().as_str() {
            "fr" => Some(Self::Fr),
            "de" => Some(Self::De),
            "en" => Some(Self::En),
            _ => None,
        }
    }

    /// Its code, for `<html lang>` and `?lang=`.
    fn code(self) -> &'static str {
        match self {
            Self::Fr => "fr",
            Self::De => "de",
            Self::En => "en",
        }
    }

    fn texts(self) -> &'static Texts {
        match self {
            Self::Fr => &FR,
            Self::De => &DE,
            Self::En => &EN,
        }
    }
}

/// The language of a page: `?lang=` when it names one the pages have, else the country's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Choice {
    language: Language,
    /// Asked for by `?lang=` (kept in the forms' actions).
    asked: bool,
}

impl Choice {
    fn of(query: Option<&str>, country_locale: &str) -> Self {
        let asked = query
            .unwrap_or_default()
            .split('&')
            .filter_map(|pair| pair.strip_prefix("lang="))
            .find_map(Language::of_tag);
        match asked {
            Some(language) => Self {
                language,
                asked: true,
            },
            None => Self {
                language: Language::of_tag(country_locale).unwrap_or(Language::En),
                asked: false,
            },
        }
    }

    /// The locale amounts are written in: the country's, unless the page is in another
    /// language (an English page writes `€19.90`).
    fn locale<'a>(&self, country_locale: &'a str) -> &'a str {
        if Language::of_tag(country_locale) == Some(self.language) {
            country_locale
        } else {
            self.language.code()
        }
    }

    /// The query the forms post to, keeping the language asked for.
    fn query(&self) -> String {
        if self.asked {
            format!("?lang={}", self.language.code())
        } else {
            String::new()
        }
    }
}

/// The words of the pages in one language.
struct Texts {
    title: &'static str,
    notice: &'static str,
    notice_detail: &'static str,
    order: &'static str,
    item: &'static str,
    amount: &'static str,
    deadline: &'static str,
    /// `{amount}` is replaced.
    pay: &'static str,
    cancel: &'static str,
    hint: &'static str,
    /// `{campaign}` is replaced.
    seckill_item: &'static str,
    /// `{id}` is replaced.
    unknown_product: &'static str,
    back: &'static str,
    not_found_title: &'static str,
    not_found_text: &'static str,
    paid_title: &'static str,
    paid_text: &'static str,
    expired_title: &'static str,
    expired_text: &'static str,
    unavailable_title: &'static str,
    unavailable_text: &'static str,
    /// `chrono` format of the deadline's date and time.
    date_format: &'static str,
}

const FR: Texts = Texts {
    title: "Paiement de la commande",
    notice: "Bac à sable — aucun argent réel",
    notice_detail: "Cette page remplace celle d’un vrai prestataire de paiement pour les essais : rien n’est débité.",
    order: "Commande",
    item: "Article",
    amount: "Montant",
    deadline: "À payer avant",
    pay: "Payer {amount}",
    cancel: "Annuler",
    hint: "Annuler vous ramène à la commande, qui reste à payer jusqu’à son échéance.",
    seckill_item: "Bon d’achat de la vente flash « {campaign} »",
    unknown_product: "produit {id}",
    back: "Retour à la commande",
    not_found_title: "Paiement introuvable",
    not_found_text: "Ce lien de paiement n’existe pas ou n’est plus valable.",
    paid_title: "Commande déjà payée",
    paid_text: "Cette commande est déjà payée : il n’y a plus rien à faire ici.",
    expired_title: "Paiement expiré",
    expired_text: "Le délai de paiement est passé : la commande est annulée et rien n’a été débité.",
    unavailable_title: "Service momentanément indisponible",
    unavailable_text: "Le paiement ne peut pas être affiché pour l’instant. Réessayez dans un instant.",
    date_format: "%d/%m/%Y à %H:%M",
};

const DE: Texts = Texts {
    title: "Bestellung bezahlen",
    notice: "Sandbox – kein echtes Geld",
    notice_detail: "Diese Seite ersetzt zum Testen die eines echten Zahlungsanbieters: Es wird nichts abgebucht.",
    order: "Bestellung",
    item: "Artikel",
    amount: "Betrag",
    deadline: "Zahlbar bis",
    pay: "{amount} bezahlen",
    cancel: "Abbrechen",
    hint: "Abbrechen führt zurück zur Bestellung; sie bleibt bis zu ihrer Frist zahlbar.",
    seckill_item: "Gutschein aus dem Flash-Sale „{campaign}“",
    unknown_product: "Produkt {id}",
    back: "Zurück zur Bestellung",
    not_found_title: "Zahlung nicht gefunden",
    not_found_text: "Dieser Zahlungslink existiert nicht oder ist nicht mehr gültig.",
    paid_title: "Bestellung bereits bezahlt",
    paid_text: "Diese Bestellung ist bereits bezahlt: Hier ist nichts mehr zu tun.",
    expired_title: "Zahlung abgelaufen",
    expired_text: "Die Zahlungsfrist ist abgelaufen: Die Bestellung wurde storniert, und es wurde nichts abgebucht.",
    unavailable_title: "Vorübergehend nicht verfügbar",
    unavailable_text: "Die Zahlung kann gerade nicht angezeigt werden. Bitte versuchen Sie es gleich noch einmal.",
    date_format: "%d.%m.%Y um %H:%M",
};

const EN: Texts = Texts {
    title: "Pay for your order",
    notice: "Sandbox — no real money",
    notice_detail: "This page stands in for a real payment provider’s checkout, for testing: nothing is charged.",
    order: "Order",
    item: "Item",
    amount: "Amount",
    deadline: "Pay before",
    pay: "Pay {amount}",
    cancel: "Cancel",
    hint: "Cancel takes you back to the order, which you can still pay until its deadline.",
    seckill_item: "Voucher from the flash sale “{campaign}”",
    unknown_product: "product {id}",
    back: "Back to the order",
    not_found_title: "Payment not found",
    not_found_text: "This payment link does not exist or is no longer valid.",
    paid_title: "Order already paid",
    paid_text: "This order is paid already: there is nothing left to do here.",
    expired_title: "Payment expired",
    expired_text: "The time to pay is over: the order was cancelled and nothing was charged.",
    unavailable_title: "Temporarily unavailable",
    unavailable_text: "The payment cannot be shown right now. Please try again in a moment.",
    date_format: "%Y-%m-%d at %H:%M",
};

/// The style of every page: readable on a phone, large touch targets, visible focus.
const STYLE: &str = "\
:root{font-family:system-ui,-apple-system,\"Segoe UI\",Roboto,sans-serif;line-height:1.5;\
color:#1a1a1a;background:#f4f5f7}\
*,*::before,*::after{box-sizing:border-box}\
body{margin:0}\
main{max-width:30rem;margin:0 auto;padding:1.25rem}\
h1{font-size:1.5rem;margin:0 0 1rem}\
.notice{background:#fff4ce;border:2px solid #8a6d00;border-radius:.5rem;padding:.75rem 1rem;\
margin:0 0 1.25rem}\
dl{background:#fff;border-radius:.5rem;padding:1rem;margin:0 0 1.25rem;display:grid;\
grid-template-columns:auto 1fr;gap:.5rem 1rem}\
dt{color:#4a4a4a}\
dd{margin:0;overflow-wrap:anywhere}\
.amount{font-size:1.5rem;font-weight:700}\
form{margin:0 0 .75rem}\
button{width:100%;min-height:3rem;padding:.5rem 1rem;font:inherit;font-size:1.125rem;\
border-radius:.5rem;cursor:pointer}\
.pay{background:#0b57d0;color:#fff;border:2px solid #0b57d0;font-weight:700}\
.cancel{background:#fff;color:#1a1a1a;border:2px solid #4a4a4a}\
button:focus-visible,a:focus-visible{outline:3px solid #1a1a1a;outline-offset:3px}\
a{color:#0b57d0}\
.hint{color:#4a4a4a;font-size:.95rem}";

/// `text` safe in HTML text and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page in `language`, `main` being its (escaped) content.
fn document(language: Language, title: &str, main: &str) -> String {
    let t = language.texts();
    format!(
        "<!doctype html>\n<html lang=\"{lang}\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"robots\" content=\"noindex\">\n<title>{title} · {notice}</title>\n\
         <style>{STYLE}</style>\n</head>\n<body>\n<main>\n\
         <p class=\"notice\" role=\"note\"><strong>{notice}</strong><br>{detail}</p>\n\
         {main}</main>\n</body>\n</html>\n",
        lang = language.code(),
        title = escape(title),
        notice = escape(t.notice),
        detail = escape(t.notice_detail),
    )
}

/// What an order buys, in words.
fn item(session: &Session, t: &Texts) -> String {
    let order = &session.order;
    match (&order.campaign_id, order.product_id) {
        (Some(campaign), _) => t.seckill_item.replace("{campaign}", campaign),
        (None, product) => {
            let name = session.product_name.clone().unwrap_or_else(|| {
                let id = product.map(|p| p.to_string()).unwrap_or_default();
                t.unknown_product.replace("{id}", &id)
            });
            format!("{} × {name}", order.quantity)
        }
    }
}

/// The page of an open session: the order and the two buttons.
fn checkout_page(session: &Session, choice: Choice, country: &CountryConfig) -> String {
    let t = choice.language.texts();
    let order = &session.order;
    let amount = money::format(
        order.amount_minor,
        &order.currency,
        choice.locale(&country.locale),
    );
    let deadline = order.payment_deadline.with_timezone(&country.tz());
    let deadline = format!(
        "{} (UTC{})",
        deadline.format(t.date_format),
        deadline.format("%:z")
    );
    // Relative actions: `{session}/pay` next to the page, behind whatever host and prefix.
    let action = |button: &str| escape(&format!("{}/{button}{}", session.id, choice.query()));
    let main = format!(
        "<h1>{title}</h1>\n<dl>\n\
         <dt>{order_label}</dt><dd>{order_id}</dd>\n\
         <dt>{item_label}</dt><dd>{item}</dd>\n\
         <dt>{amount_label}</dt><dd class=\"amount\">{amount}</dd>\n\
         <dt>{deadline_label}</dt><dd>{deadline}</dd>\n</dl>\n\
         <form method=\"post\" action=\"{pay_action}\">\
         <button type=\"submit\" class=\"pay\">{pay}</button></form>\n\
         <form method=\"post\" action=\"{cancel_action}\">\
         <button type=\"submit\" class=\"cancel\" aria-describedby=\"cancel-hint\">{cancel}</button></form>\n\
         <p class=\"hint\" id=\"cancel-hint\">{hint}</p>\n",
        title = escape(t.title),
        order_label = escape(t.order),
        order_id = escape(&order.id.to_string()),
        item_label = escape(t.item),
        item = escape(&item(session, t)),
        amount_label = escape(t.amount),
        amount = escape(&amount),
        deadline_label = escape(t.deadline),
        deadline = escape(&deadline),
        pay_action = action("pay"),
        pay = escape(&t.pay.replace("{amount}", &amount)),
        cancel_action = action("cancel"),
        cancel = escape(t.cancel),
        hint = escape(t.hint),
    );
    document(choice.language, t.title, &main)
}

/// A page that only says something, with a link back to the order when there is one.
fn message_page(language: Language, title: &str, text: &str, back: Option<&str>) -> String {
    let link = back
        .map(|url| {
            format!(
                "<p><a href=\"{}\">{}</a></p>\n",
                escape(url),
                escape(language.texts().back)
            )
        })
        .unwrap_or_default();
    let main = format!(
        "<h1>{}</h1>\n<p>{}</p>\n{link}",
        escape(title),
        escape(text)
    );
    document(language, title, &main)
}

/// The origin (`https://host:port`) of an absolute URL, `None` for a path.
fn origin(url: &str) -> Option<&str> {
    let scheme = if url.starts_with("https://") {
        "https://".len()
    } else if url.starts_with("http://") {
        "http://".len()
    } else {
        return None;
    };
    let end = url[scheme..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| scheme + i);
    Some(&url[..end])
}

/// An HTML answer: never cached, nothing loaded from elsewhere, no framing. The forms may
/// post here and lead on to `return_origin` (the return URL's, when it is absolute).
fn html(status: StatusCode, body: String, return_origin: Option<&str>) -> Response {
    let form_action = match return_origin {
        Some(origin) => format!("'self' {origin}"),
        None => "'self'".to_owned(),
    };
    let policy = format!(
        "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; \
         frame-ancestors 'none'; form-action {form_action}"
    );
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(policy) = HeaderValue::try_from(policy) {
        headers.insert(HeaderName::from_static("content-security-policy"), policy);
    }
    response
}

impl Pages {
    fn choice(&self, query: Option<&str>) -> Choice {
        Choice::of(query, &self.country.locale)
    }

    /// The origin the return URL leads to, when it is another one.
    fn return_origin(&self) -> Option<String> {
        origin(self.checkout.return_url_template()).map(str::to_owned)
    }

    fn page(&self, status: StatusCode, body: String) -> Response {
        html(status, body, self.return_origin().as_deref())
    }

    /// The page of a session nobody may pay or leave any more: 409.
    fn finished(&self, language: Language, session: &Session) -> Response {
        let t = language.texts();
        let (title, text) = match session.state {
            SessionState::Paid => (t.paid_title, t.paid_text),
            SessionState::Expired | SessionState::Open => (t.expired_title, t.expired_text),
        };
        self.page(
            StatusCode::CONFLICT,
            message_page(language, title, text, Some(&session.return_url)),
        )
    }

    /// The page of a session that is not one (404).
    fn not_found(&self, language: Language) -> Response {
        let t = language.texts();
        self.page(
            StatusCode::NOT_FOUND,
            message_page(language, t.not_found_title, t.not_found_text, None),
        )
    }

    /// The page of what went wrong.
    fn failed(&self, language: Language, err: SessionError) -> Response {
        match err {
            SessionError::Unknown => self.not_found(language),
            SessionError::Finished(session) => self.finished(language, &session),
            SessionError::Order(err) => {
                tracing::error!(error = %err, "sandbox checkout page failed");
                let t = language.texts();
                let mut response = self.page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    message_page(language, t.unavailable_title, t.unavailable_text, None),
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                response
            }
        }
    }

    /// Sends the buyer to `url` (303: the browser follows with a GET).
    fn back_to(&self, language: Language, url: &str) -> Response {
        match HeaderValue::try_from(url) {
            Ok(location) => (
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, location),
                    (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                ],
            )
                .into_response(),
            // A return URL no header can carry: a link the buyer follows instead.
            Err(_) => {
                let t = language.texts();
                self.page(
                    StatusCode::OK,
                    message_page(language, t.title, t.notice_detail, Some(url)),
                )
            }
        }
    }
}

/// `GET /v1/payments/sandbox/checkout/{session}`: the checkout page.
async fn page(
    State(pages): State<Pages>,
    session: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Response {
    let choice = pages.choice(query.as_deref());
    let Ok(Path(id)) = session else {
        return pages.not_found(choice.language);
    };
    match pages.checkout.session(&id).await {
        Ok(session) if session.state == SessionState::Open => pages.page(
            StatusCode::OK,
            checkout_page(&session, choice, &pages.country),
        ),
        Ok(session) => pages.finished(choice.language, &session),
        Err(err) => pages.failed(choice.language, err),
    }
}

/// `POST …/{session}/pay`: pays through the signed webhook, then back to the order.
async fn pay(
    State(pages): State<Pages>,
    session: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Response {
    leave(&pages, session, query.as_deref(), Leaving::Pay).await
}

/// `POST …/{session}/cancel`: back to the order, which stays unpaid.
async fn cancel(
    State(pages): State<Pages>,
    session: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Response {
    leave(&pages, session, query.as_deref(), Leaving::Cancel).await
}

/// How the buyer leaves the checkout page.
#[derive(Debug, Clone, Copy)]
enum Leaving {
    Pay,
    Cancel,
}

/// Leaves `session` the buyer's way, then sends them back to the order (or explains why not).
async fn leave(
    pages: &Pages,
    session: Result<Path<String>, PathRejection>,
    query: Option<&str>,
    leaving: Leaving,
) -> Response {
    let choice = pages.choice(query);
    let Ok(Path(id)) = session else {
        return pages.not_found(choice.language);
    };
    let left = match leaving {
        Leaving::Pay => pages.checkout.pay(&id).await,
        Leaving::Cancel => pages.checkout.cancel(&id).await,
    };
    match left {
        Ok(url) => pages.back_to(choice.language, &url),
        Err(err) => pages.failed(choice.language, err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_language_is_asked_for_or_the_countrys() {
        let fr = Choice::of(None, "fr-FR");
        assert_eq!((fr.language, fr.query()), (Language::Fr, String::new()));
        assert_eq!(fr.locale("fr-FR"), "fr-FR");
        let de = Choice::of(Some("x=1&lang=de-AT"), "fr-FR");
        assert_eq!((de.language, de.query()), (Language::De, "?lang=de".into()));
        assert_eq!(de.locale("fr-FR"), "de");
        assert_eq!(Choice::of(Some("lang=EN"), "de-DE").language, Language::En);
        // Unknown languages fall back to the country's; countries without pages to English.
        assert_eq!(Choice::of(Some("lang=xx"), "de-DE").language, Language::De);
        assert_eq!(Choice::of(Some("lang="), "fr-BE").language, Language::Fr);
        assert_eq!(Choice::of(None, "it-IT").language, Language::En);
        assert_eq!(Choice::of(None, "it-IT").locale("it-IT"), "en");
    }

    #[test]
    fn text_and_attributes_are_escaped() {
        assert_eq!(
            escape(r#"<a href="x">Tom & Jerry's</a>"#),
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; Jerry&#39;s&lt;/a&gt;"
        );
        let page = message_page(Language::En, "<b>", "\"quoted\"", Some("/#/o?a=1&b=2"));
        assert!(page.contains("<h1>&lt;b&gt;</h1>"), "{page}");
        assert!(page.contains("href=\"/#/o?a=1&amp;b=2\""), "{page}");
        assert!(
            page.starts_with("<!doctype html>\n<html lang=\"en\">"),
            "{page}"
        );
        assert!(page.contains("Sandbox — no real money"), "{page}");
    }

    #[test]
    fn origins_of_absolute_urls_only() {
        assert_eq!(
            origin("https://shop.example:8443/#/orders/1"),
            Some("https://shop.example:8443")
        );
        assert_eq!(
            origin("http://127.0.0.1:5173?x#y"),
            Some("http://127.0.0.1:5173")
        );
        assert_eq!(origin("http://host"), Some("http://host"));
        assert_eq!(origin("/#/orders/1"), None);
    }
}
