//! Free text a person types (a name, a title, an address): the one rule the domains check and
//! the OpenAPI schema that states it, built from the same numbers so the two cannot drift.
//!
//! The rule: at most `max` characters as sent, no control character (U+0000–U+001F,
//! U+007F–U+009F, [`char::is_control`]: a line break has no place in a name, and PostgreSQL
//! cannot store U+0000), and not blank (at least one character that is not white space in
//! Unicode's sense, [`char::is_whitespace`]); what is kept is the text trimmed. The schema says
//! the same: `minLength: 1`, `maxLength: max`, and a `pattern` built from the same sets
//! ([`WHITESPACE`] spells out what `char::is_whitespace` accepts, because a pattern's `\s` is
//! another set).

use utoipa::openapi::schema::{Object, ObjectBuilder, SchemaType, Type};

/// Every character [`char::is_whitespace`] accepts (Unicode `White_Space`).
pub const WHITESPACE: [char; 25] = [
    '\u{9}', '\u{a}', '\u{b}', '\u{c}', '\u{d}', ' ', '\u{85}', '\u{a0}', '\u{1680}', '\u{2000}',
    '\u{2001}', '\u{2002}', '\u{2003}', '\u{2004}', '\u{2005}', '\u{2006}', '\u{2007}', '\u{2008}',
    '\u{2009}', '\u{200a}', '\u{2028}', '\u{2029}', '\u{202f}', '\u{205f}', '\u{3000}',
];

/// `value` trimmed, if it is at most `max` characters long, has no control character and is
/// not blank.
pub fn checked(value: &str, max: usize) -> Option<&str> {
    let trimmed = value.trim();
    (!trimmed.is_empty() && value.chars().count() <= max && !has_control(value)).then_some(trimmed)
}

/// The control characters ([`char::is_control`]) as a pattern class body.
const CONTROLS: &str = "\\x00-\\x1f\\x7f-\\x9f";

/// The pattern of a text without control characters (empty allowed): what an optional
/// filter or free-text parameter takes.
pub fn without_controls_pattern() -> String {
    format!("^[^{CONTROLS}]*$")
}

/// Whether `value` holds a control character ([`char::is_control`]).
pub fn has_control(value: &str) -> bool {
    value.chars().any(char::is_control)
}

/// A pattern class of the characters [`str::trim`] drops (every one of [`WHITESPACE`]), for
/// patterns of values the domains trim: `^{class}*…{class}*$`.
pub fn whitespace_class() -> String {
    let escaped: String = WHITESPACE
        .iter()
        .map(|c| format!("\\u{:04x}", u32::from(*c)))
        .collect();
    format!("[{escaped}]")
}

/// The pattern of [`checked`]'s characters: no control character, and one that is not white
/// space. Escapes only (`\xHH`, `\uHHHH`), which ECMA-262, Rust and Python regexes all read.
pub fn not_blank_pattern() -> String {
    let blanks: String = WHITESPACE
        .iter()
        .filter(|c| !c.is_control())
        .map(|c| format!("\\u{:04x}", u32::from(*c)))
        .collect();
    format!("^[^{CONTROLS}]*[^{CONTROLS}{blanks}][^{CONTROLS}]*$")
}

/// The schema of a text [`checked`] accepts with `max`.
pub fn schema(max: usize, description: &str) -> Object {
    text_schema(SchemaType::Type(Type::String), max, description)
}

/// [`schema`] for an optional text: `null` or a text [`checked`] accepts.
pub fn nullable_schema(max: usize, description: &str) -> Object {
    text_schema(
        SchemaType::from_iter([Type::String, Type::Null]),
        max,
        description,
    )
}

fn text_schema(schema_type: SchemaType, max: usize, description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(schema_type)
        .min_length(Some(1))
        .max_length(Some(max))
        .pattern(Some(not_blank_pattern()))
        .description(Some(description))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_exactly_what_rust_calls_white_space() {
        let listed: Vec<char> = (0..=u32::from(char::MAX))
            .filter_map(char::from_u32)
            .filter(|c| c.is_whitespace())
            .collect();
        assert_eq!(listed, WHITESPACE);
    }

    #[test]
    fn the_schema_accepts_exactly_what_the_rule_accepts() {
        let schema = serde_json::to_value(schema(5, "a name")).expect("schema JSON");
        let validator = jsonschema::validator_for(&schema).expect("a valid schema");
        for value in [
            "a", "Zoé", "  a  ", "a    ", "     ", "", "\u{3000}", "\u{85}x", "\u{feff}", "abcdef",
            " abcd ", "\n\tab",
        ] {
            assert_eq!(
                validator.is_valid(&serde_json::Value::String(value.to_owned())),
                checked(value, 5).is_some(),
                "{value:?}"
            );
        }
        assert_eq!(checked("  Zoé ", 6), Some("Zoé"));
    }
}
