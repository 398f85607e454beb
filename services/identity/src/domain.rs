//! Identity's rules, without I/O: phone numbers of the deployment's country in E.164, the
//! shape of codes, profile fields (name, BCP 47 language tag, date of birth, e-mail address)
//! and roles. Input is parsed into its canonical form here, or refused with the field at fault.

use chrono::{Datelike, NaiveDate};

/// Sign-in codes live this long.
pub const OTP_TTL_SECONDS: i64 = 300;
/// Verification attempts allowed per code (sign-in and e-mail codes alike).
pub const MAX_CODE_ATTEMPTS: i32 = 5;
/// Seconds between two sign-in codes sent to one phone.
pub const OTP_RESEND_SECONDS: i64 = 60;
/// Sign-in codes one phone may receive in a rolling day.
pub const OTP_SENDS_PER_PHONE_PER_DAY: i64 = 10;
/// E-mail verification codes live this long.
pub const EMAIL_CODE_TTL_SECONDS: i64 = 1800;
/// Seconds between two e-mail verification codes for one user.
pub const EMAIL_RESEND_SECONDS: i64 = 60;
/// The role every user gets at sign-up.
pub const PATIENT: &str = "patient";
/// Every role identity grants.
pub const ROLES: &[&str] = &["patient", "practitioner", "admin"];

/// A field that does not hold a usable value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    /// The field (as the API names it).
    pub field: &'static str,
    /// What is wrong and what to send instead.
    pub message: String,
    /// Whether the value is well-formed and refused only against today's date (a date of
    /// birth in the future): a rule no schema can state.
    pub against_today: bool,
}

impl Invalid {
    /// A value that is not usable in itself.
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
            against_today: false,
        }
    }

    fn against_today(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            against_today: true,
            ..Self::new(field, message)
        }
    }
}

/// `^…$` around `body`, with the white space the parsers trim allowed on both sides.
fn trimmed_pattern(body: &str) -> String {
    let blank = pulse_kit::text::whitespace_class();
    format!("^{blank}*{body}{blank}*$")
}

/// A phone number in E.164 (`+33612345678`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Phone(String);

impl Phone {
    /// The E.164 text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Phone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a phone number is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    /// Not a phone number of any shape.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// A number of another country than the deployment's.
    #[error(
        "phone: +{calling_code}… is not a number of {country} (+{expected}); this deployment signs in {country} numbers only"
    )]
    OtherCountry {
        /// The deployment's country.
        country: String,
        /// Its calling code.
        expected: &'static str,
        /// The calling code the number starts with.
        calling_code: String,
    },
}

/// Characters a phone number may hold between its digits (`+33 (0)6 12.34-56/78`).
const PHONE_SEPARATORS: [char; 6] = [' ', '.', '(', ')', '/', '-'];

/// Characters a phone number may have as sent, white space around included.
pub const PHONE_MAX_CHARS: usize = 32;

/// How one country numbers its phones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    /// ISO 3166-1 alpha-2.
    country: &'static str,
    /// ITU-T E.164 calling code, without `+`.
    calling_code: &'static str,
    /// Prefix dialled before national numbers inside the country (`0` in France), if any.
    trunk_prefix: Option<&'static str>,
    /// Digits of a national significant number (after the calling code).
    min_digits: usize,
    max_digits: usize,
    /// Whether a national significant number may start with 0 (Italian landlines).
    leading_zero: bool,
}

const fn plan(
    country: &'static str,
    calling_code: &'static str,
    trunk_prefix: Option<&'static str>,
    min_digits: usize,
    max_digits: usize,
) -> Plan {
    Plan {
        country,
        calling_code,
        trunk_prefix,
        min_digits,
        max_digits,
        leading_zero: false,
    }
}

/// The countries identity can serve. A country missing here cannot run identity (start-up
/// fails), since its numbers could not be checked.
const PLANS: &[Plan] = &[
    plan("FR", "33", Some("0"), 9, 9),
    plan("DE", "49", Some("0"), 6, 13),
    plan("ES", "34", None, 9, 9),
    Plan {
        leading_zero: true,
        ..plan("IT", "39", None, 6, 11)
    },
    plan("GB", "44", Some("0"), 9, 10),
    plan("IE", "353", Some("0"), 7, 9),
    plan("BE", "32", Some("0"), 8, 9),
    plan("NL", "31", Some("0"), 9, 9),
    plan("LU", "352", None, 4, 11),
    plan("CH", "41", Some("0"), 9, 9),
    plan("AT", "43", Some("0"), 4, 13),
    plan("PT", "351", None, 9, 9),
    plan("PL", "48", None, 9, 9),
    plan("CZ", "420", None, 9, 9),
    plan("SE", "46", Some("0"), 7, 13),
    plan("DK", "45", None, 8, 8),
    plan("NO", "47", None, 8, 8),
    plan("FI", "358", Some("0"), 5, 12),
    plan("GR", "30", None, 10, 10),
    plan("US", "1", Some("1"), 10, 10),
    plan("CA", "1", Some("1"), 10, 10),
    plan("MX", "52", None, 10, 10),
    plan("MA", "212", Some("0"), 9, 9),
    plan("TN", "216", None, 8, 8),
    plan("SN", "221", None, 9, 9),
    plan("IN", "91", Some("0"), 10, 10),
    plan("JP", "81", Some("0"), 9, 10),
    plan("AU", "61", Some("0"), 9, 9),
];

/// Every calling code of [`PLANS`], to tell which country a foreign number belongs to.
fn calling_code_of(digits: &str) -> Option<&'static str> {
    PLANS
        .iter()
        .map(|p| p.calling_code)
        .filter(|code| digits.starts_with(code))
        .max_by_key(|code| code.len())
}

/// Parses the phone numbers of one country.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Numbering {
    plan: Plan,
}

impl Numbering {
    /// The numbering of `country` (ISO 3166-1 alpha-2), if identity knows it.
    pub fn of(country: &str) -> Option<Self> {
        PLANS
            .iter()
            .find(|p| p.country.eq_ignore_ascii_case(country))
            .map(|&plan| Self { plan })
    }

    /// The country's calling code (`33`).
    pub fn calling_code(&self) -> &'static str {
        self.plan.calling_code
    }

    /// The pattern of the texts [`Numbering::parse`] accepts (with [`PHONE_MAX_CHARS`]), built
    /// from the same plan: an optional `+` or `00` and the calling code, or a national number,
    /// optionally with the trunk prefix; the digits of a national significant number, with
    /// separators anywhere after the first character.
    pub fn pattern(&self) -> String {
        let plan = &self.plan;
        // `-` last, where a class takes it literally.
        let separators: String = PHONE_SEPARATORS
            .iter()
            .filter(|&&c| c != '-')
            .chain(PHONE_SEPARATORS.iter().filter(|&&c| c == '-'))
            .collect();
        let sep = format!("[{separators}]*");
        let digit = |class: &str| format!("{class}{sep}");
        // The digits left after `taken` of a national significant number.
        let rest = |taken: usize| {
            let (min, max) = (plan.min_digits - taken, plan.max_digits - taken);
            let quantifier = if min == max {
                format!("{{{min}}}")
            } else {
                format!("{{{min},{max}}}")
            };
            format!("(?:{}){quantifier}", digit("[0-9]"))
        };
        let class = |digits: &[char]| format!("[{}]", digits.iter().collect::<String>());
        let first: Vec<char> = ('0'..='9')
            .filter(|&d| plan.leading_zero || d != '0')
            .collect();
        let trunk = plan.trunk_prefix;
        // A national significant number, maybe behind the trunk prefix. `national` leaves out
        // digits starting `00`: without `+`, those are read as an international number.
        let significant = |national: bool| -> String {
            let mut branches = Vec::new();
            if let Some(trunk) = trunk {
                let after: Vec<char> = first
                    .iter()
                    .copied()
                    .filter(|&d| !(national && trunk == "0" && d == '0'))
                    .collect();
                let written: String = trunk.chars().map(|d| digit(&d.to_string())).collect();
                branches.push(format!("{written}{}{}", digit(&class(&after)), rest(1)));
            }
            // With no trunk prefix written, the first digit is not the trunk prefix's.
            let mut starts: Vec<char> = first
                .iter()
                .copied()
                .filter(|&d| trunk.is_none_or(|t| !t.starts_with(d)))
                .collect();
            if national && starts.first() == Some(&'0') {
                starts.remove(0);
                branches.push(format!("{}{}{}", digit("0"), digit("[1-9]"), rest(2)));
            }
            branches.push(format!("{}{}", digit(&class(&starts)), rest(1)));
            format!("(?:{})", branches.join("|"))
        };
        let calling_code: String = plan
            .calling_code
            .chars()
            .map(|d| digit(&d.to_string()))
            .collect();
        trimmed_pattern(&format!(
            "(?:\\+{sep}{calling_code}{international}|{sep}{zero}{zero}{calling_code}{international}|{sep}{national})",
            zero = digit("0"),
            international = significant(false),
            national = significant(true),
        ))
    }

    /// Parses `raw` — international (`+33 6 12 34 56 78`, `0033…`) or national (`06 12 34 56
    /// 78`), with spaces, dots, dashes or parentheses — into E.164.
    pub fn parse(&self, raw: &str) -> Result<Phone, PhoneError> {
        let plan = &self.plan;
        let example = format!(
            "use the international format +{} followed by the national number",
            plan.calling_code
        );
        let bad = |why: &str| {
            PhoneError::Invalid(Invalid::new("phone", format!("`{raw}` {why}; {example}")))
        };
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(bad("is empty"));
        }
        if raw.chars().count() > PHONE_MAX_CHARS {
            return Err(bad("is too long for a phone number"));
        }
        let mut digits = String::with_capacity(trimmed.len());
        for (i, c) in trimmed.char_indices() {
            match c {
                '0'..='9' => digits.push(c),
                '+' if i == 0 => {}
                c if PHONE_SEPARATORS.contains(&c) => {}
                _ => return Err(bad("holds characters a phone number cannot have")),
            }
        }
        let international = trimmed.starts_with('+') || digits.starts_with("00");
        let national = if international {
            let digits = if trimmed.starts_with('+') {
                digits.as_str()
            } else {
                &digits[2..]
            };
            match digits.strip_prefix(plan.calling_code) {
                Some(rest) => rest.to_owned(),
                None => {
                    return Err(match calling_code_of(digits) {
                        Some(code) => PhoneError::OtherCountry {
                            country: plan.country.to_owned(),
                            expected: plan.calling_code,
                            calling_code: code.to_owned(),
                        },
                        None => bad("does not start with a known country calling code"),
                    });
                }
            }
        } else {
            digits
        };
        // A trunk prefix written out (`0612…`, or `+33 (0)6 12…`) is not part of the number:
        // where there is one, no national significant number starts with it.
        let fits = |n: usize| (plan.min_digits..=plan.max_digits).contains(&n);
        let national = match plan.trunk_prefix {
            Some(trunk) if national.starts_with(trunk) => national[trunk.len()..].to_owned(),
            _ => national,
        };
        if !fits(national.len()) {
            let expected = if plan.min_digits == plan.max_digits {
                plan.min_digits.to_string()
            } else {
                format!("{} to {}", plan.min_digits, plan.max_digits)
            };
            return Err(bad(&format!(
                "is not a {} number: after +{} it must have {expected} digits",
                plan.country, plan.calling_code
            )));
        }
        if national.starts_with('0') && !plan.leading_zero {
            return Err(bad(&format!(
                "is not a {} number: after +{} no digit 0 may follow",
                plan.country, plan.calling_code
            )));
        }
        Ok(Phone(format!("+{}{national}", plan.calling_code)))
    }
}

/// The pattern of the codes [`parse_code`] accepts.
pub fn code_pattern() -> String {
    trimmed_pattern("[0-9]{6}")
}

/// A code as typed: exactly six digits (white space around it ignored).
pub fn parse_code(field: &'static str, raw: &str) -> Result<String, Invalid> {
    let code = raw.trim();
    if code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()) {
        Ok(code.to_owned())
    } else {
        Err(Invalid::new(field, "the code is the 6 digits we sent you"))
    }
}

/// Characters a name may have as sent.
pub const NAME_MAX_CHARS: usize = 100;

/// A person's name: the kit's free-text rule ([`pulse_kit::text::checked`]) with
/// [`NAME_MAX_CHARS`]; spaces around are dropped.
pub fn parse_name(raw: &str) -> Result<String, Invalid> {
    if let Some(name) = pulse_kit::text::checked(raw, NAME_MAX_CHARS) {
        return Ok(name.to_owned());
    }
    let message = if pulse_kit::text::has_control(raw) {
        "the name holds control characters (line breaks, tabs)".to_owned()
    } else if raw.trim().is_empty() {
        "the name is empty: send at least one letter, or null to remove it".to_owned()
    } else {
        format!(
            "the name has {} characters; at most {NAME_MAX_CHARS} are kept",
            raw.chars().count()
        )
    };
    Err(Invalid::new("name", message))
}

fn all(subtag: &str, check: fn(&u8) -> bool) -> bool {
    subtag.as_bytes().iter().all(check)
}

/// Characters a language tag may have as sent.
pub const LANGUAGE_MAX_CHARS: usize = 35;

/// The pattern of the tags [`parse_language`] accepts (with [`LANGUAGE_MAX_CHARS`]): language
/// (2–3 letters and up to three extensions of 3, or 5–8 letters), script, region, variants,
/// then extensions and private use, separated by `-` or `_`, in any case.
pub fn language_pattern() -> String {
    let (sep, letter, alnum) = ("[-_]", "[A-Za-z]", "[A-Za-z0-9]");
    trimmed_pattern(&format!(
        "(?:{letter}{{2,3}}(?:{sep}{letter}{{3}}){{0,3}}|{letter}{{5,8}})\
         (?:{sep}{letter}{{4}})?\
         (?:{sep}(?:{letter}{{2}}|[0-9]{{3}}))?\
         (?:{sep}(?:{alnum}{{5,8}}|[0-9]{alnum}{{3}}))*\
         (?:{sep}{alnum}(?:{sep}{alnum}{{1,8}})*{sep}{alnum}{{2,8}})?"
    ))
}

/// A BCP 47 language tag (`fr`, `fr-FR`, `zh-Hant-TW`, `de-CH-1996`), in its canonical case.
pub fn parse_language(raw: &str) -> Result<String, Invalid> {
    let bad = || {
        Invalid::new(
            "language",
            format!("`{raw}` is not a BCP 47 language tag, like `fr`, `fr-FR` or `en-GB`"),
        )
    };
    let tag = raw.trim();
    if tag.is_empty() || raw.chars().count() > LANGUAGE_MAX_CHARS {
        return Err(bad());
    }
    let mut subtags = tag.split(['-', '_']).peekable();
    let mut out: Vec<String> = Vec::new();
    let language = subtags.next().ok_or_else(bad)?;
    if !(matches!(language.len(), 2 | 3 | 5..=8) && all(language, u8::is_ascii_alphabetic)) {
        return Err(bad());
    }
    out.push(language.to_ascii_lowercase());
    // Extended language subtags (`zh-yue`): up to three of 3 letters after a short language.
    if language.len() <= 3 {
        for _ in 0..3 {
            match subtags.peek().copied() {
                Some(ext) if ext.len() == 3 && all(ext, u8::is_ascii_alphabetic) => {
                    subtags.next();
                    out.push(ext.to_ascii_lowercase());
                }
                _ => break,
            }
        }
    }
    // Script (4 letters).
    if let Some(script) = subtags.peek().copied()
        && script.len() == 4
        && all(script, u8::is_ascii_alphabetic)
    {
        subtags.next();
        let mut chars = script.chars();
        let first = chars.next().map(|c| c.to_ascii_uppercase());
        out.push(
            first
                .into_iter()
                .chain(chars.map(|c| c.to_ascii_lowercase()))
                .collect(),
        );
    }
    // Region (2 letters or 3 digits).
    if let Some(region) = subtags.peek().copied()
        && ((region.len() == 2 && all(region, u8::is_ascii_alphabetic))
            || (region.len() == 3 && all(region, u8::is_ascii_digit)))
    {
        subtags.next();
        out.push(region.to_ascii_uppercase());
    }
    // Variants, extensions, private use.
    let mut singleton: Option<char> = None;
    for subtag in subtags {
        let alnum = all(subtag, u8::is_ascii_alphanumeric);
        if !alnum || subtag.is_empty() || subtag.len() > 8 {
            return Err(bad());
        }
        if subtag.len() == 1 {
            singleton = subtag.chars().next().map(|c| c.to_ascii_lowercase());
        } else if singleton.is_none() {
            let variant =
                subtag.len() >= 5 || (subtag.len() == 4 && subtag.as_bytes()[0].is_ascii_digit());
            if !variant {
                return Err(bad());
            }
        } else if singleton != Some('x') && subtag.len() < 2 {
            return Err(bad());
        }
        out.push(subtag.to_ascii_lowercase());
    }
    if out.last().is_some_and(|s| s.len() == 1) {
        return Err(bad());
    }
    Ok(out.join("-"))
}

/// Characters an e-mail address may have as sent.
pub const EMAIL_MAX_CHARS: usize = 254;

/// Characters of the part before `@`, besides letters and digits.
const EMAIL_LOCAL_SPECIALS: &str = "!#$%&'*+/=?^_`{|}~-";

/// The pattern of the addresses [`parse_email`] accepts (with [`EMAIL_MAX_CHARS`]): dot-atoms
/// before `@`, then labels of 1–63 letters, digits and inner `-`, and a top-level domain of
/// 2–63 letters.
pub fn email_pattern() -> String {
    let atom = format!("[A-Za-z0-9{EMAIL_LOCAL_SPECIALS}]+");
    let label = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?";
    trimmed_pattern(&format!(
        "{atom}(?:\\.{atom})*@(?:{label}\\.)+[A-Za-z]{{2,63}}"
    ))
}

/// An e-mail address (`local@domain.tld`): the domain lower-cased, the local part kept.
pub fn parse_email(raw: &str) -> Result<String, Invalid> {
    let bad = |why: &str| {
        Invalid::new(
            "email",
            format!("`{raw}` is not an e-mail address like name@example.org: {why}"),
        )
    };
    let email = raw.trim();
    if raw.chars().count() > EMAIL_MAX_CHARS {
        return Err(bad("it is longer than 254 characters"));
    }
    let (local, domain) = email.rsplit_once('@').ok_or_else(|| bad("no `@`"))?;
    if local.is_empty()
        || local.starts_with('.')
        || local.ends_with('.')
        || local.contains("..")
        || !local.bytes().all(|b| {
            b.is_ascii_alphanumeric() || b == b'.' || EMAIL_LOCAL_SPECIALS.as_bytes().contains(&b)
        })
    {
        return Err(bad("the part before `@` is not usable"));
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let tld_ok = labels
        .last()
        .is_some_and(|tld| tld.len() >= 2 && all(tld, u8::is_ascii_alphabetic));
    if labels.len() < 2 || !labels.iter().all(label_ok) || !tld_ok {
        return Err(bad("the domain after `@` is not usable"));
    }
    Ok(format!("{local}@{}", domain.to_ascii_lowercase()))
}

/// A date of birth `YYYY-MM-DD` (RFC 3339's full-date, the schema's `format: date`): not
/// after `today` (in the country's time zone) and at most 130 years before it.
pub fn parse_date_of_birth(raw: &str, today: NaiveDate) -> Result<NaiveDate, Invalid> {
    let bad = || {
        Invalid::new(
            "dateOfBirth",
            format!("`{raw}` is not a date YYYY-MM-DD, like 1984-03-21"),
        )
    };
    // chrono alone also takes `1984-3-21` or `+1984-03-21`; the full-date has fixed widths.
    let shaped = raw.len() == 10
        && raw.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            _ => b.is_ascii_digit(),
        });
    if !shaped {
        return Err(bad());
    }
    let date = NaiveDate::parse_from_str(raw, "%Y-%m-%d").map_err(|_| bad())?;
    if date > today {
        return Err(Invalid::against_today(
            "dateOfBirth",
            format!("{date} is in the future"),
        ));
    }
    let oldest = today
        .with_year(today.year() - 130)
        .unwrap_or(NaiveDate::MIN);
    if date < oldest {
        return Err(Invalid::against_today(
            "dateOfBirth",
            format!("{date} is more than 130 years ago"),
        ));
    }
    Ok(date)
}

/// A set of roles: each one of [`ROLES`], at least one, sorted and without duplicates.
pub fn parse_roles(raw: &[String]) -> Result<Vec<String>, Invalid> {
    let mut roles: Vec<String> = Vec::with_capacity(raw.len());
    for role in raw {
        let role = role.as_str();
        if !ROLES.contains(&role) {
            return Err(Invalid::new(
                "roles",
                format!("`{role}` is not a role: use {}", ROLES.join(", ")),
            ));
        }
        roles.push(role.to_owned());
    }
    roles.sort();
    roles.dedup();
    if roles.is_empty() {
        return Err(Invalid::new(
            "roles",
            "at least one role is needed (patient, practitioner or admin)",
        ));
    }
    Ok(roles)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fr() -> Numbering {
        Numbering::of("FR").expect("France")
    }

    #[test]
    fn french_numbers_normalise_to_e164() {
        for raw in [
            "+33612345678",
            "+33 6 12 34 56 78",
            "06 12 34 56 78",
            "06.12.34.56.78",
            "0612345678",
            "0033 6 12 34 56 78",
            "+33 (0)6 12 34 56 78",
            " +33-6-12-34-56-78 ",
        ] {
            assert_eq!(
                fr().parse(raw).map(|p| p.to_string()),
                Ok("+33612345678".to_owned()),
                "{raw}"
            );
        }
    }

    #[test]
    fn other_countries_numbers_are_refused_by_name() {
        let err = fr().parse("+49 151 23456789").expect_err("German number");
        assert!(
            matches!(&err, PhoneError::OtherCountry { calling_code, .. } if calling_code == "49"),
            "{err:?}"
        );
        assert!(err.to_string().contains("FR"), "{err}");
        let err = fr().parse("+352 621 123 456").expect_err("Luxembourg");
        assert!(
            matches!(&err, PhoneError::OtherCountry { calling_code, .. } if calling_code == "352"),
            "{err:?}"
        );
        let de = Numbering::of("de").expect("Germany");
        assert_eq!(
            de.parse("0151 23456789").map(|p| p.to_string()),
            Ok("+4915123456789".into())
        );
        assert!(matches!(
            de.parse("+33612345678"),
            Err(PhoneError::OtherCountry { .. })
        ));
        let it = Numbering::of("IT").expect("Italy");
        assert_eq!(
            it.parse("06 1234 5678").map(|p| p.to_string()),
            Ok("+390612345678".into())
        );
        let us = Numbering::of("US").expect("US");
        assert_eq!(
            us.parse("1 (212) 555-1234").map(|p| p.to_string()),
            Ok("+12125551234".into())
        );
        assert_eq!(Numbering::of("GB").map(|n| n.calling_code()), Some("44"));
        assert_eq!(Numbering::of("ES").map(|n| n.calling_code()), Some("34"));
        assert!(Numbering::of("ZZ").is_none());
    }

    #[test]
    fn malformed_numbers_name_the_field() {
        for raw in [
            "",
            "hello",
            "+33 6 12",
            "06 12 34 56 78 90",
            "+33 0 12 34 56 78",
            "612345678; DROP",
            "+999 123456789",
            "++33612345678",
        ] {
            match fr().parse(raw) {
                Err(PhoneError::Invalid(invalid)) => assert_eq!(invalid.field, "phone", "{raw}"),
                other => panic!("{raw}: {other:?}"),
            }
        }
    }

    #[test]
    fn codes_are_six_digits() {
        assert_eq!(parse_code("code", " 012345 "), Ok("012345".into()));
        for bad in ["12345", "1234567", "12345a", "", "１２３４５６"] {
            assert_eq!(parse_code("code", bad).map_err(|e| e.field), Err("code"));
        }
    }

    #[test]
    fn language_tags_are_checked_and_canonical() {
        for (raw, canonical) in [
            ("fr", "fr"),
            ("FR-fr", "fr-FR"),
            ("en_gb", "en-GB"),
            ("zh-hant-tw", "zh-Hant-TW"),
            ("es-419", "es-419"),
            ("de-CH-1996", "de-CH-1996"),
            ("sl-rozaj-biske", "sl-rozaj-biske"),
            ("en-US-u-ca-gregory", "en-US-u-ca-gregory"),
            ("en-x-pulse", "en-x-pulse"),
            ("zh-yue-HK", "zh-yue-HK"),
        ] {
            assert_eq!(parse_language(raw), Ok(canonical.to_owned()), "{raw}");
        }
        for bad in [
            "", "f", "french!", "fr-", "fr--FR", "en-US-u", "12", "en-a1b", "fr-FR-x",
        ] {
            assert_eq!(
                parse_language(bad).map_err(|e| e.field),
                Err("language"),
                "{bad}"
            );
        }
    }

    #[test]
    fn email_addresses_are_checked() {
        assert_eq!(
            parse_email(" Jane.Doe+pulse@Example.ORG "),
            Ok("Jane.Doe+pulse@example.org".into())
        );
        for bad in [
            "jane",
            "@example.org",
            "jane@",
            "jane@example",
            "jane@@example.org",
            "ja ne@example.org",
            "jane@exa mple.org",
            ".jane@example.org",
            "jane@-example.org",
            "jane@example.c0m",
        ] {
            assert_eq!(parse_email(bad).map_err(|e| e.field), Err("email"), "{bad}");
        }
    }

    #[test]
    fn dates_of_birth_are_in_a_sane_range() {
        let today = NaiveDate::from_ymd_opt(2026, 12, 10).expect("date");
        assert_eq!(
            parse_date_of_birth("1984-03-21", today),
            Ok(NaiveDate::from_ymd_opt(1984, 3, 21).expect("date"))
        );
        assert!(parse_date_of_birth("2026-12-10", today).is_ok());
        for bad in ["2026-12-11", "1890-01-01", "21/03/1984", "1984-02-30", ""] {
            assert_eq!(
                parse_date_of_birth(bad, today).map_err(|e| e.field),
                Err("dateOfBirth"),
                "{bad}"
            );
        }
    }

    #[test]
    fn roles_are_known_sorted_and_unique() {
        let roles =
            |r: &[&str]| parse_roles(&r.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        assert_eq!(
            roles(&["practitioner", "patient", "practitioner"]),
            Ok(vec!["patient".into(), "practitioner".into()])
        );
        assert_eq!(roles(&["superuser"]).map_err(|e| e.field), Err("roles"));
        assert_eq!(roles(&[]).map_err(|e| e.field), Err("roles"));
    }

    /// Whether `pattern` (as the OpenAPI document states it, with `max` characters) takes
    /// `value`, read by a JSON Schema validator as a client's would.
    struct Stated(jsonschema::Validator);

    impl Stated {
        fn new(pattern: &str, max: usize) -> Self {
            let schema =
                serde_json::json!({"type": "string", "pattern": pattern, "maxLength": max});
            Self(jsonschema::validator_for(&schema).expect("a valid schema"))
        }

        fn takes(&self, value: &str) -> bool {
            self.0
                .is_valid(&serde_json::Value::String(value.to_owned()))
        }
    }

    /// Random texts over `alphabet`, up to `max` characters, from a fixed seed.
    fn texts(alphabet: &[&str], max: usize, count: usize) -> Vec<String> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        (0..count)
            .map(|_| {
                let len = rng.random_range(0..=max);
                (0..len)
                    .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                    .collect()
            })
            .collect()
    }

    #[test]
    fn the_phone_pattern_takes_exactly_the_numbers_each_plan_parses() {
        for plan in PLANS {
            let numbering = Numbering { plan: *plan };
            let stated = Stated::new(&numbering.pattern(), PHONE_MAX_CHARS);
            // Numbers built the ways people write them, around the plan's lengths, and noise.
            let code = plan.calling_code;
            let trunk = plan.trunk_prefix.unwrap_or("");
            let mut values: Vec<String> = Vec::new();
            for digits in texts(&["0", "1", "2", "5", "9"], plan.max_digits + 2, 400) {
                for prefix in [
                    String::new(),
                    format!("+{code}"),
                    format!("+{code} "),
                    format!("00{code}"),
                    format!("+{code}({trunk})"),
                    trunk.to_owned(),
                    "0".into(),
                    "00".into(),
                    "+".into(),
                    " ".into(),
                ] {
                    let spaced: String = digits
                        .chars()
                        .enumerate()
                        .map(|(i, d)| {
                            if i % 3 == 2 {
                                format!("{d}.")
                            } else {
                                d.to_string()
                            }
                        })
                        .collect();
                    values.push(format!("{prefix}{digits}"));
                    values.push(format!(" {prefix}-{spaced}\u{3000}"));
                }
            }
            values.extend(texts(
                &[
                    "+", "0", "3", "4", "9", " ", "(", ")", ".", "-", "/", "a", "\t", "\u{a0}",
                    "\u{feff}",
                ],
                36,
                3000,
            ));
            let mut accepted = 0;
            for value in &values {
                let parsed = numbering.parse(value).is_ok();
                accepted += usize::from(parsed);
                assert_eq!(stated.takes(value), parsed, "{} {value:?}", plan.country);
            }
            assert!(
                accepted >= 100,
                "{}: only {accepted} accepted numbers were tried",
                plan.country
            );
        }
    }

    #[test]
    fn the_code_pattern_takes_exactly_the_codes_that_parse() {
        let stated = Stated::new(&code_pattern(), usize::MAX >> 1);
        let mut values = texts(
            &["0", "7", "9", " ", "\t", "a", "\u{2003}", "\u{feff}"],
            9,
            5000,
        );
        values.extend(["123456", " 012345\n", "１２３４５６"].map(String::from));
        for value in values {
            assert_eq!(
                stated.takes(&value),
                parse_code("code", &value).is_ok(),
                "{value:?}"
            );
        }
    }

    #[test]
    fn the_language_pattern_takes_exactly_the_tags_that_parse() {
        let stated = Stated::new(&language_pattern(), LANGUAGE_MAX_CHARS);
        let subtags = [
            "fr",
            "DE",
            "zh",
            "yue",
            "cmn",
            "Hant",
            "latn",
            "TW",
            "419",
            "1996",
            "rozaj",
            "u",
            "x",
            "a",
            "ca",
            "gregory",
            "abcdefghi",
            "12",
            "-",
            "_",
            " ",
            "\u{a0}",
            "é",
        ];
        let mut values: Vec<String> = Vec::new();
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..20_000 {
            let parts = rng.random_range(1..=5);
            let tag: Vec<&str> = (0..parts)
                .map(|_| subtags[rng.random_range(0..subtags.len())])
                .collect();
            let sep = if rng.random_bool(0.8) { "-" } else { "_" };
            values.push(tag.join(sep));
        }
        values.extend(texts(&["a", "Z", "1", "-", "_", " "], 40, 5000));
        for value in &values {
            assert_eq!(
                stated.takes(value),
                parse_language(value).is_ok(),
                "{value:?}"
            );
        }
        let accepted = values.iter().filter(|v| parse_language(v).is_ok()).count();
        assert!(accepted >= 1000, "only {accepted} tags were accepted");
    }

    #[test]
    fn the_email_pattern_takes_exactly_the_addresses_that_parse() {
        let stated = Stated::new(&email_pattern(), EMAIL_MAX_CHARS);
        let pieces = [
            "jane",
            "J",
            ".",
            "..",
            "@",
            "example",
            "org",
            "c0m",
            "-",
            "x-y",
            "+tag",
            "!#$%&'*/=?^_`{|}~",
            " ",
            "\u{2028}",
            "é",
            "a1",
            &"l".repeat(63),
            &"m".repeat(64),
        ];
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let mut values: Vec<String> = Vec::new();
        for _ in 0..20_000 {
            let local: String = (0..rng.random_range(0..3))
                .map(|_| pieces[rng.random_range(0..pieces.len())])
                .collect();
            let domain: Vec<&str> = (0..rng.random_range(1..4))
                .map(|_| pieces[rng.random_range(0..pieces.len())])
                .collect();
            values.push(format!("{local}@{}", domain.join(".")));
        }
        values.extend(["jane@example.org", " Jane.Doe+pulse@Example.ORG "].map(String::from));
        for value in &values {
            assert_eq!(stated.takes(value), parse_email(value).is_ok(), "{value:?}");
        }
        let accepted = values.iter().filter(|v| parse_email(v).is_ok()).count();
        assert!(accepted >= 200, "only {accepted} addresses were accepted");
    }

    #[test]
    fn a_date_of_birth_out_of_range_is_refused_against_today_only() {
        let today = NaiveDate::from_ymd_opt(2026, 12, 10).expect("date");
        assert!(parse_date_of_birth("2026-12-11", today).is_err_and(|e| e.against_today));
        assert!(parse_date_of_birth("1890-01-01", today).is_err_and(|e| e.against_today));
        for malformed in ["1984-3-21", "+1984-03-21", " 1984-03-21", "1984-02-30"] {
            assert!(
                parse_date_of_birth(malformed, today).is_err_and(|e| !e.against_today),
                "{malformed}"
            );
        }
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(parse_name("  Jeanne Dupont "), Ok("Jeanne Dupont".into()));
        assert!(parse_name("   ").is_err());
        assert!(parse_name(&"a".repeat(101)).is_err());
        assert!(parse_name("a\nb").is_err());
    }
}
