//! The template language of `baas.email_templates`: text with `{{ name }}` placeholders
//! (`name` = `[a-z][a-z0-9_]*`, spaces inside the braces optional). A placeholder is
//! replaced by the variable's value (strings as they are, numbers and booleans as JSON
//! writes them, null or missing as nothing); for an HTML body the value is escaped
//! (`& < > " '`). Anything else between `{{` and `}}`, or a `{{` without its `}}`, is
//! an error, found when a template is stored (`_check_template`), never while mail is
//! being rendered. A lone `{` or `}` is text.

use serde_json::Value;

/// Why a template is refused, with the byte offset of the fault.
#[derive(Debug, PartialEq, Eq)]
pub struct TemplateError(pub String);

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

enum Piece<'a> {
    Text(&'a str),
    Var(&'a str),
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z')) && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_')) && name.len() <= 63
}

fn parse(template: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let mut out = Vec::new();
    let mut rest = template;
    let mut offset = 0;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            out.push(Piece::Text(&rest[..open]));
        }
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            return Err(TemplateError(format!("a {{{{ at byte {} has no closing }}}}", offset + open)));
        };
        let inner = &after[..close];
        let name = inner.trim_matches(|c: char| c == ' ' || c == '\t');
        if !valid_name(name) {
            let shown: String = inner.chars().take(40).collect();
            return Err(TemplateError(format!(
                "the placeholder at byte {} is not {{{{ name }}}} with a name of a-z, 0-9 and _ (got {{{{{shown}}}}})",
                offset + open
            )));
        }
        out.push(Piece::Var(name));
        let consumed = open + 2 + close + 2;
        offset += consumed;
        rest = &rest[consumed..];
    }
    if let Some(close) = rest.find("}}") {
        return Err(TemplateError(format!("a }}}} at byte {} has no opening {{{{", offset + close)));
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Ok(out)
}

/// Refuse a template `render` could not fill.
pub fn check(template: &str) -> Result<(), TemplateError> {
    parse(template).map(|_| ())
}

/// The names a template uses, in order of first use.
pub fn placeholders(template: &str) -> Result<Vec<String>, TemplateError> {
    let mut names: Vec<String> = Vec::new();
    for p in parse(template)? {
        if let Piece::Var(n) = p {
            if !names.iter().any(|m| m == n) {
                names.push(n.to_string());
            }
        }
    }
    Ok(names)
}

fn value_text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// HTML-escape the five characters that matter in text and attribute values.
pub fn escape_html(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// The largest rendered text (a template repeating a large variable could otherwise ask
/// for gigabytes, and fail as an internal error).
pub const MAX_RENDERED: usize = 4 << 20;

/// Fill `template` from `vars` (a JSON object; anything else counts as no variables).
/// Refused when the result would exceed MAX_RENDERED bytes.
pub fn render(template: &str, vars: &Value, html: bool) -> Result<String, TemplateError> {
    let pieces = parse(template)?;
    let mut out = String::with_capacity(template.len() + 64);
    for p in pieces {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Var(name) => {
                let v = value_text(vars.get(name));
                if html {
                    escape_html(&v, &mut out);
                } else {
                    out.push_str(&v);
                }
            }
        }
        if out.len() > MAX_RENDERED {
            return Err(TemplateError(format!("the rendered message would exceed {} MB", MAX_RENDERED >> 20)));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fills_placeholders_with_or_without_spaces() {
        let v = json!({"link": "https://x/y?a=1&b=2", "code": "123456", "n": 60, "ok": true});
        assert_eq!(render("Go to {{ link }} or type {{code}}.", &v, false).unwrap(), "Go to https://x/y?a=1&b=2 or type 123456.");
        assert_eq!(render("{{n}} minutes, {{ ok }}", &v, false).unwrap(), "60 minutes, true");
    }

    #[test]
    fn missing_and_null_are_empty() {
        assert_eq!(render("[{{ a }}][{{ b }}]", &json!({"b": null}), false).unwrap(), "[][]");
        assert_eq!(render("[{{ a }}]", &json!([1, 2]), false).unwrap(), "[]");
    }

    #[test]
    fn html_escapes_values_but_not_the_template() {
        let v = json!({"name": "<script>alert('x')</script> & \"q\""});
        assert_eq!(
            render("<p>{{ name }}</p>", &v, true).unwrap(),
            "<p>&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;</p>"
        );
        assert_eq!(render("{{ name }}", &v, false).unwrap(), "<script>alert('x')</script> & \"q\"");
    }

    #[test]
    fn a_value_is_never_read_as_a_template() {
        let v = json!({"a": "{{ b }}", "b": "secret"});
        assert_eq!(render("{{a}}", &v, false).unwrap(), "{{ b }}");
    }

    #[test]
    fn lone_braces_are_text() {
        assert_eq!(render("a { b } c", &json!({}), false).unwrap(), "a { b } c");
        assert_eq!(render("css { color: red }", &json!({}), true).unwrap(), "css { color: red }");
    }

    #[test]
    fn unbalanced_or_bad_placeholders_are_refused() {
        for bad in ["Hi {{ name", "Hi name }}", "{{ Name }}", "{{ 1x }}", "{{ a b }}", "{{}}", "{{ a-b }}", "{{ a }} }}"] {
            assert!(check(bad).is_err(), "{bad}");
        }
        let e = check("abc {{ x").unwrap_err();
        assert!(e.0.contains("byte 4"), "{e}");
        assert!(check("{{ a_1 }} and {{b}}").is_ok());
    }

    #[test]
    fn lists_placeholders_once() {
        assert_eq!(placeholders("{{ a }} {{b}} {{ a }}").unwrap(), vec!["a", "b"]);
    }

    #[test]
    fn a_huge_result_is_refused_not_built() {
        let big = serde_json::json!({"v": "x".repeat(60_000)});
        let t = "{{ v }}".repeat(100);
        assert!(render(&t, &big, false).is_err(), "6 MB refused");
        assert!(render(&"{{ v }}".repeat(10), &big, false).is_ok());
    }

    #[test]
    fn keeps_unicode_text() {
        assert_eq!(render("Grüße, {{ n }} ✓", &json!({"n": "Jörg"}), true).unwrap(), "Grüße, Jörg ✓");
    }
}
