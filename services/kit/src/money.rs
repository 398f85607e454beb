//! Amounts as buyers read them: integer minor units of an ISO 4217 currency, written the way
//! the country's locale writes money (`19,90 €` in `fr-FR` and `de-DE`, `€19.90` in English).
//! Integer arithmetic only, never floats; the number of minor digits comes from the currency
//! (2 for EUR, 0 for JPY, 3 for KWD). Notifier's messages and ordering's sandbox checkout page
//! write amounts with it.

/// No-break space: between the number and a symbol after it, so an amount never wraps.
const NBSP: char = '\u{a0}';
/// Narrow no-break space: how French groups thousands (the CLDR choice).
const NARROW_NBSP: char = '\u{202f}';

/// How a locale writes amounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Style {
    /// Between groups of three digits.
    group: char,
    /// Before the minor digits.
    decimal: char,
    /// The symbol goes after the number (`19,90 €`) rather than before (`€19.90`).
    symbol_after: bool,
}

impl Style {
    /// The style of a BCP 47 locale (`fr-FR`, `de`, `en-GB`); English conventions for languages
    /// not listed.
    fn of_locale(locale: &str) -> Self {
        let language = locale
            .split(['-', '_'])
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        match language.as_str() {
            "fr" => Self {
                group: NARROW_NBSP,
                decimal: ',',
                symbol_after: true,
            },
            "de" | "es" | "it" | "pt" | "nl" => Self {
                group: '.',
                decimal: ',',
                symbol_after: true,
            },
            _ => Self {
                group: ',',
                decimal: '.',
                symbol_after: false,
            },
        }
    }
}

/// The symbol of `currency` in `locale`, if it has a well-known one; other currencies are
/// written with their ISO code.
fn symbol(currency: &str, locale: &str) -> Option<&'static str> {
    match currency {
        "EUR" => Some("€"),
        "GBP" => Some("£"),
        "JPY" => Some("¥"),
        // A bare `$` is only unambiguous to American readers.
        "USD" if locale.ends_with("-US") || locale.ends_with("_US") => Some("$"),
        "USD" => Some("US$"),
        _ => None,
    }
}

/// `amount_minor` minor units of `currency` (ISO 4217, any case) as readers in `locale` write
/// it: `1 234,50 €` (fr), `1.234,50 €` (de), `€1,234.50` (en), `¥1,234` (JPY has no minor
/// unit). A currency without a well-known symbol shows its code where the symbol would be
/// (`19,90 CHF`, `CHF 19.90`); an unknown code keeps two minor digits.
pub fn format(amount_minor: i64, currency: &str, locale: &str) -> String {
    let currency = currency.to_ascii_uppercase();
    let style = Style::of_locale(locale);
    let digits = u32::from(crate::config::currency_minor_digits(&currency).unwrap_or(2));
    let scale = 10u64.pow(digits);
    let magnitude = amount_minor.unsigned_abs();
    let (units, minor) = (magnitude / scale, magnitude % scale);

    let mut number = group_thousands(units, style.group);
    if digits > 0 {
        number.push(style.decimal);
        number.push_str(&format!("{minor:0width$}", width = digits as usize));
    }
    let sign = if amount_minor < 0 { "-" } else { "" };
    match symbol(&currency, locale) {
        Some(symbol) if style.symbol_after => format!("{sign}{number}{NBSP}{symbol}"),
        Some(symbol) => format!("{sign}{symbol}{number}"),
        None if style.symbol_after => format!("{sign}{number}{NBSP}{currency}"),
        None => format!("{sign}{currency}{NBSP}{number}"),
    }
}

/// `1234567` → `1,234,567` with `separator`.
fn group_thousands(value: u64, separator: char) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() * 2);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(separator);
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spaces made visible: `_` no-break, `^` narrow no-break.
    fn shown(amount: i64, currency: &str, locale: &str) -> String {
        format(amount, currency, locale)
            .replace(NBSP, "_")
            .replace(NARROW_NBSP, "^")
    }

    #[test]
    fn euros_in_french_german_and_english() {
        assert_eq!(shown(1990, "EUR", "fr-FR"), "19,90_€");
        assert_eq!(shown(1990, "EUR", "de-DE"), "19,90_€");
        assert_eq!(shown(1990, "EUR", "en"), "€19.90");
        assert_eq!(shown(1990, "EUR", "en-GB"), "€19.90");
        assert_eq!(shown(1990, "eur", "fr"), "19,90_€", "the code in any case");
        assert_eq!(shown(123_450, "EUR", "fr-FR"), "1^234,50_€");
        assert_eq!(shown(123_450, "EUR", "de-AT"), "1.234,50_€");
        assert_eq!(shown(123_450, "EUR", "en-IE"), "€1,234.50");
    }

    #[test]
    fn minor_digits_come_from_the_currency() {
        assert_eq!(shown(1_234, "JPY", "en-US"), "¥1,234");
        assert_eq!(shown(1_234, "JPY", "fr-FR"), "1^234_¥");
        assert_eq!(shown(1_234_567, "KWD", "en-GB"), "KWD_1,234.567");
        assert_eq!(shown(990, "XYZ", "de-DE"), "9,90_XYZ");
        assert_eq!(shown(123_450, "USD", "en-US"), "$1,234.50");
        assert_eq!(shown(123_450, "USD", "en-GB"), "US$1,234.50");
        assert_eq!(shown(1990, "CHF", "fr-CH"), "19,90_CHF");
        assert_eq!(shown(1990, "CHF", "en"), "CHF_19.90");
    }

    #[test]
    fn small_large_and_negative_amounts() {
        assert_eq!(shown(0, "EUR", "en"), "€0.00");
        assert_eq!(shown(5, "EUR", "fr-FR"), "0,05_€");
        assert_eq!(shown(100, "EUR", "de-DE"), "1,00_€");
        assert_eq!(shown(100_000_000_000, "EUR", "de-DE"), "1.000.000.000,00_€");
        assert_eq!(shown(i64::MAX, "EUR", "en"), "€92,233,720,368,547,758.07");
        assert_eq!(shown(i64::MIN, "EUR", "en"), "-€92,233,720,368,547,758.08");
        assert_eq!(shown(-150, "EUR", "fr-FR"), "-1,50_€");
        assert_eq!(group_thousands(12, ','), "12");
        assert_eq!(group_thousands(123, ','), "123");
        assert_eq!(group_thousands(1234, ','), "1,234");
    }
}
