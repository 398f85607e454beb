//! A small, conservative YAML writer for Kubernetes objects.
//!
//! Every YAML parser must read what the operator prints (`kubectl`, Helm, and YAML 1.1 parsers
//! such as PyYAML, which reads an unquoted `19:00` as the integer 1140). So strings are written
//! plain only when they cannot mean anything else, and double-quoted (JSON escaping, which is
//! valid YAML) otherwise; multi-line strings become literal blocks.

use serde_json::Value;

/// `value` as one YAML document (without the `---` separator), ending with a newline.
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_map(map, 0, &mut out),
        Value::Array(items) if !items.is_empty() => write_list(items, 0, &mut out),
        scalar => {
            out.push_str(&scalar_text(scalar, 0));
            out.push('\n');
        }
    }
    out
}

/// Several documents, each preceded by `---`.
pub fn to_yaml_stream<'a>(values: impl IntoIterator<Item = &'a Value>) -> String {
    let mut out = String::new();
    for value in values {
        out.push_str("---\n");
        out.push_str(&to_yaml(value));
    }
    out
}

fn write_map(map: &serde_json::Map<String, Value>, indent: usize, out: &mut String) {
    for (key, value) in map {
        out.push_str(&" ".repeat(indent));
        out.push_str(&string_text(key, indent, true));
        out.push(':');
        match value {
            Value::Object(child) if !child.is_empty() => {
                out.push('\n');
                write_map(child, indent + 2, out);
            }
            Value::Array(items) if !items.is_empty() => {
                out.push('\n');
                write_list(items, indent, out);
            }
            scalar => {
                out.push(' ');
                out.push_str(&scalar_text(scalar, indent + 2));
                out.push('\n');
            }
        }
    }
}

fn write_list(items: &[Value], indent: usize, out: &mut String) {
    for item in items {
        let mut body = String::new();
        match item {
            Value::Object(child) if !child.is_empty() => write_map(child, indent + 2, &mut body),
            Value::Array(inner) if !inner.is_empty() => write_list(inner, indent + 2, &mut body),
            scalar => {
                body.push_str(&" ".repeat(indent + 2));
                body.push_str(&scalar_text(scalar, indent + 2));
                body.push('\n');
            }
        }
        // The item's first line starts at indent + 2; put the dash in its indentation.
        out.push_str(&" ".repeat(indent));
        out.push_str("- ");
        out.push_str(&body[indent + 2..]);
    }
}

fn scalar_text(value: &Value, indent: usize) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string_text(s, indent, false),
        Value::Array(_) => "[]".to_owned(),
        Value::Object(_) => "{}".to_owned(),
    }
}

fn string_text(s: &str, indent: usize, is_key: bool) -> String {
    if is_plain_safe(s) {
        return s.to_owned();
    }
    if !is_key && is_literal_safe(s) {
        let body = s.strip_suffix('\n').unwrap_or(s);
        let chomp = if s.ends_with('\n') { "|" } else { "|-" };
        let pad = " ".repeat(indent);
        let mut out = chomp.to_owned();
        for line in body.split('\n') {
            out.push('\n');
            if !line.is_empty() {
                out.push_str(&pad);
                out.push_str(line);
            }
        }
        return out;
    }
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// Words that some YAML version reads as something other than a string.
fn is_reserved(s: &str) -> bool {
    const RESERVED: &[&str] = &[
        "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~",
    ];
    RESERVED.iter().any(|r| r.eq_ignore_ascii_case(s))
}

fn is_plain_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    if !(first.is_ascii_alphabetic() || first == '/' || first == '_') {
        return false;
    }
    if is_reserved(s) || s.ends_with(' ') || s.ends_with(':') {
        return false;
    }
    if s.contains(": ") || s.contains(" #") {
        return false;
    }
    s.chars().all(|c| {
        !c.is_control()
            && !matches!(
                c,
                '#' | '"' | '\\' | '\'' | '[' | ']' | '{' | '}' | ',' | '`' | '|' | '>'
            )
    })
}

fn is_literal_safe(s: &str) -> bool {
    let body = s.strip_suffix('\n').unwrap_or(s);
    body.contains('\n')
        && !body.starts_with(' ')
        && !body.ends_with('\n')
        && body
            .split('\n')
            .all(|line| !line.ends_with(' ') && !line.chars().any(|c| c.is_control()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_through_a_yaml_parser() {
        let value = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "pulse-country", "labels": {"app.kubernetes.io/name": "pulse"}},
            "data": {
                "PULSE_COUNTRY__WORKING_HOURS__CLOSES_AT": "19:00",
                "PULSE_COUNTRY__WORKING_HOURS__OPENS_AT": "08:00",
                "PULSE_COUNTRY__WORKING_DAYS": "[\"Mon\",\"Tue\"]",
                "PULSE_COUNTRY__BOOKING__HORIZON_DAYS": "60",
                "yes": "no",
                "empty": "",
                "text": "line one\nline two: with colon\n",
                "odd": " leading space\nx",
                "unicode": "Österreich …",
            },
            "list": [1, "two", {"a": [], "b": {}}, [true, null], {"x": {"y": 1.5}, "z": ["q"]}],
            "nested": [{"name": "http", "port": 8080}, {"name": "grpc", "port": 50051}],
        });
        let text = to_yaml(&value);
        let back: Value = serde_yaml::from_str(&text).expect("parses");
        assert_eq!(back, value, "{text}");
    }

    #[test]
    fn ambiguous_strings_are_quoted() {
        let text = to_yaml(&json!({"a": "19:00", "b": "on", "c": "1e3", "d": "pulse:0.1.0"}));
        assert!(text.contains("a: \"19:00\""), "{text}");
        assert!(text.contains("b: \"on\""), "{text}");
        assert!(text.contains("c: \"1e3\""), "{text}");
        // A colon not followed by a space is part of a plain string in every YAML version.
        assert!(text.contains("d: pulse:0.1.0\n"), "{text}");
        let plain = to_yaml(&json!({"kind": "Deployment", "path": "/v1/auth"}));
        assert_eq!(plain, "kind: Deployment\npath: /v1/auth\n");
    }

    #[test]
    fn lists_of_maps_use_the_dash_indentation() {
        let text = to_yaml(&json!({"ports": [{"name": "http", "port": 8080}]}));
        assert_eq!(text, "ports:\n- name: http\n  port: 8080\n");
    }
}
