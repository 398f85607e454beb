//! The page and the embedded files, and the two handlers that serve them.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LANGUAGE, CONTENT_SECURITY_POLICY, CONTENT_TYPE,
    HeaderMap, HeaderValue, REFERRER_POLICY, VARY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{Response, StatusCode};
use axum::response::IntoResponse;
use pulse_kit::config::CountryConfig;
use pulse_kit::problem::Problem;
use serde::Serialize;

/// One embedded file of the app.
#[derive(Debug)]
pub struct Asset {
    /// Its path under `assets/` (`app.js`, `views/sale.js`).
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// The file.
    pub plain: &'static [u8],
    /// The file, gzip-compressed.
    pub gzip: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// The route of the embedded files: `/assets/<VERSION>/<path>`.
pub const ASSETS_ROUTE: &str = "/assets/{version}/{*path}";

/// Only the page's own files run and load; no frame may hold it (the checkout link is a
/// navigation); API calls stay on this origin.
const CONTENT_SECURITY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; manifest-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// What the app knows of its country before any request: the page carries it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct AppSettings<'a> {
    country: &'a str,
    locale: &'a str,
    timezone: &'a str,
    currency: &'a str,
    /// Languages the app speaks, the country's first.
    languages: Vec<&'static str>,
    min_notice_minutes: u32,
    cancellation_cutoff_minutes: u32,
    max_appointments_per_patient_per_day: u32,
    horizon_days: u32,
    payment_timeout_seconds: u32,
    /// A development deployment: the sandbox providers show their codes and pages.
    development: bool,
}

/// Languages the app has texts in.
const LANGUAGES: [&str; 3] = ["fr", "de", "en"];

/// The page of one country, written once at start-up.
#[derive(Debug)]
pub struct Page {
    html: Vec<u8>,
    language: &'static str,
}

impl Page {
    /// The page for `country`.
    pub fn new(country: &CountryConfig, development: bool) -> Result<Self, serde_json::Error> {
        let language = language_of(&country.locale);
        let mut languages = vec![language];
        languages.extend(LANGUAGES.iter().filter(|l| **l != language));
        let settings = AppSettings {
            country: &country.code,
            locale: &country.locale,
            timezone: &country.timezone,
            currency: &country.currency,
            languages,
            min_notice_minutes: country.booking.min_notice_minutes,
            cancellation_cutoff_minutes: country.booking.cancellation_cutoff_minutes,
            max_appointments_per_patient_per_day: country
                .booking
                .max_appointments_per_patient_per_day,
            horizon_days: country.booking.horizon_days,
            payment_timeout_seconds: country.ordering.payment_timeout_seconds,
            development,
        };
        // `<` written as `\u003c`: no text of the settings can close the script element.
        let json = serde_json::to_string(&settings)?.replace('<', "\\u003c");
        let html = INDEX_TEMPLATE
            .replace("{{lang}}", language)
            .replace("{{assets}}", &format!("/assets/{VERSION}"))
            .replace("{{settings}}", &json);
        Ok(Self {
            html: html.into_bytes(),
            language,
        })
    }

    /// The page's HTML.
    pub fn html(&self) -> &[u8] {
        &self.html
    }
}

/// The app's language for a BCP 47 `locale` (`de-DE` → `de`), English when it has no texts
/// in that language.
fn language_of(locale: &str) -> &'static str {
    let primary = locale.split(['-', '_']).next().unwrap_or_default();
    LANGUAGES
        .iter()
        .find(|l| l.eq_ignore_ascii_case(primary))
        .copied()
        .unwrap_or("en")
}

/// `GET /`: the page. Never cached without asking (it names this build's files).
pub async fn index(State(page): State<Arc<Page>>) -> impl IntoResponse {
    let mut response = Response::new(Body::from(page.html.clone()));
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(CONTENT_LANGUAGE, HeaderValue::from_static(page.language));
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    response
}

/// `GET /assets/<version>/<path>`: an embedded file, compressed when the client takes gzip;
/// cached for good, since another build has another version.
pub async fn asset(
    Path((version, path)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response<Body>, Problem> {
    let file = (version == VERSION)
        .then(|| FILES.iter().find(|f| f.path == path))
        .flatten()
        .ok_or_else(|| {
            Problem::not_found(format!(
                "no file `{path}` in this version of the app: reload the page (/)"
            ))
        })?;
    let gzip = accepts_gzip(&headers);
    let mut response = Response::new(Body::from(if gzip { file.gzip } else { file.plain }));
    let out = response.headers_mut();
    out.insert(CONTENT_TYPE, HeaderValue::from_static(file.content_type));
    out.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    out.insert(VARY, HeaderValue::from_static("accept-encoding"));
    out.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if gzip {
        out.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    *response.status_mut() = StatusCode::OK;
    Ok(response)
}

/// Whether `Accept-Encoding` takes gzip (`gzip`, `x-gzip` or `*`, with a weight above 0).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(axum::http::header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or_default().trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            !refused
                && ["gzip", "x-gzip", "*"]
                    .iter()
                    .any(|n| n.eq_ignore_ascii_case(name))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_encoding(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            axum::http::header::ACCEPT_ENCODING,
            HeaderValue::from_str(value).expect("header"),
        );
        headers
    }

    #[test]
    fn gzip_is_sent_only_to_clients_that_take_it() {
        assert!(accepts_gzip(&with_encoding("gzip, deflate, br, zstd")));
        assert!(accepts_gzip(&with_encoding("br;q=1.0, gzip;q=0.8")));
        assert!(accepts_gzip(&with_encoding("*")));
        assert!(!accepts_gzip(&with_encoding("gzip;q=0, br")));
        assert!(!accepts_gzip(&with_encoding("identity")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    /// The first load fetches the page's stylesheet and module graph; every JavaScript and CSS
    /// file counts, so the budget holds whatever the app loads first.
    #[test]
    fn javascript_and_css_stay_under_150_kb_compressed() {
        let compressed: usize = FILES
            .iter()
            .filter(|f| f.path.ends_with(".js") || f.path.ends_with(".css"))
            .map(|f| f.gzip.len())
            .sum();
        assert!(
            compressed < 150 * 1024,
            "the app's JavaScript and CSS weigh {compressed} bytes compressed (budget: 150 KB)"
        );
    }

    #[test]
    fn each_file_is_embedded_whole_in_both_forms() {
        use std::io::Read as _;
        assert!(FILES.len() >= 8, "{} files", FILES.len());
        for file in FILES {
            let mut unpacked = Vec::new();
            flate2::read::GzDecoder::new(file.gzip)
                .read_to_end(&mut unpacked)
                .expect("gzip");
            assert_eq!(unpacked, file.plain, "{}", file.path);
        }
    }

    /// A module the app imports but the binary lacks would break the page in every browser.
    #[test]
    fn every_module_import_and_page_reference_names_an_embedded_file() {
        let exists = |path: &str| FILES.iter().any(|f| f.path == path);
        for file in FILES.iter().filter(|f| f.path.ends_with(".js")) {
            let text = std::str::from_utf8(file.plain).expect("utf-8");
            let dir: Vec<&str> = file.path.split('/').rev().skip(1).collect::<Vec<_>>();
            for import in text.split(" from '").skip(1) {
                let target = import.split('\'').next().unwrap_or_default();
                let mut parts: Vec<&str> = dir.iter().rev().copied().collect();
                for piece in target.split('/') {
                    match piece {
                        "." => {}
                        ".." => {
                            parts.pop();
                        }
                        name => parts.push(name),
                    }
                }
                let resolved = parts.join("/");
                assert!(
                    exists(&resolved),
                    "{} imports {target}: no {resolved}",
                    file.path
                );
            }
        }
        for reference in INDEX_TEMPLATE.split("{{assets}}/").skip(1) {
            let name = reference.split('"').next().unwrap_or_default();
            assert!(exists(name), "the page names {name}, which is not embedded");
        }
    }

    #[test]
    fn the_page_carries_the_country_and_nothing_can_close_its_script() {
        let vars = [
            ("CODE", "DE"),
            ("TIMEZONE", "Europe/Berlin"),
            ("CURRENCY", "EUR"),
            ("LOCALE", "de-DE"),
        ];
        let mut country = CountryConfig::from_env_vars(vars.iter().map(|(k, v)| {
            (
                format!("{}{k}", pulse_kit::config::COUNTRY_ENV_PREFIX),
                (*v).to_owned(),
            )
        }))
        .expect("DE");
        country.currency = "EUR</script><script>alert(1)</script>".into();
        let page = Page::new(&country, true).expect("page");
        let html = std::str::from_utf8(page.html()).expect("utf-8");
        assert!(
            html.starts_with("<!doctype html>\n<html lang=\"de\">"),
            "{html}"
        );
        assert!(
            html.contains(&format!("/assets/{VERSION}/app.js")),
            "{html}"
        );
        assert_eq!(html.matches("</script>").count(), 2, "{html}");
        let start = html.find("id=\"pulse-settings\">").expect("settings") + 20;
        let end = start + html[start..].find("</script>").expect("end");
        let settings: serde_json::Value = serde_json::from_str(&html[start..end]).expect("json");
        assert_eq!(settings["country"], "DE");
        assert_eq!(settings["timezone"], "Europe/Berlin");
        assert_eq!(settings["languages"], serde_json::json!(["de", "fr", "en"]));
        assert_eq!(settings["development"], true);
        assert_eq!(
            settings["currency"],
            "EUR</script><script>alert(1)</script>"
        );
    }

    #[test]
    fn the_language_follows_the_locale() {
        assert_eq!(language_of("fr-FR"), "fr");
        assert_eq!(language_of("de_DE"), "de");
        assert_eq!(language_of("en-GB"), "en");
        assert_eq!(language_of("it-IT"), "en");
    }
}
