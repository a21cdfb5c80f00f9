//! `$regex` / `$iregex`: regular expressions that Postgres (SQL's `~`, an ARE) and the
//! proxy's live-feed evaluator (the `regex` crate) answer identically.
//!
//! The two engines differ at the edges: `.` and newlines, what `\d`, `\w`, `\s` and case
//! folding mean outside ASCII (Postgres asks the locale), `\b` (a backspace in an ARE, a
//! word boundary in Rust and JavaScript), back-references and look-around (one engine
//! only). So a pattern is parsed (regex-syntax, the `regex` crate's own parser: the
//! syntax apps write, JavaScript's, is its subset for everything accepted here), checked
//! against the constructs both engines share, and printed again in a canonical form that
//! leaves neither engine any choice: every character other than an ASCII letter or digit
//! as a `\uXXXX` escape, `\d \w \s` as explicit ASCII sets, case-insensitivity as both
//! cases spelled out (`[aA]`), groups non-capturing, repetitions greedy. Both engines
//! then run that one text (Rust with `(?s)`, so `.` matches a newline as in an ARE).
//! No crate prints the intersection of the two syntaxes, hence this module;
//! extension/src/query/pg_tests.rs compares the engines on it.

use crate::QueryError;
use regex_syntax::ast::{self, Ast, ClassPerlKind, ClassSet, ClassSetItem, GroupKind, RepetitionKind, RepetitionRange};

/// Longest pattern, in characters, as written.
pub const MAX_PATTERN_CHARS: usize = 512;
/// Longest text a pattern is tried on, in characters: a longer string never matches, in
/// SQL (`regex_cond`) as in the live feeds. A pattern's cost grows with the text (up to
/// ~1.5 s for a 1 MB text and the worst pattern MAX_EXPANSION allows, measured with the
/// regex crate here), and the feeds decide under one lock: at this length it is ~25 ms.
pub const MAX_TEXT_CHARS: usize = 16_384;
/// Postgres refuses repetition counts above 255 (its DUPMAX).
const MAX_COUNT: u32 = 255;
/// Bound on the copies counted repetitions make, nested ones multiplied (`(a{100}){100}`
/// is 10,000) and all of them added: keeps both engines' compiled forms small. The live
/// feeds' matcher runs in time about proportional to text length times copies (a
/// repetition of a set of characters is the worst case: `a[ab]{250}c` takes ~1.5 s on
/// a 1 MB text, `a[ab]{50}c` ~0.3 s, measured with the regex crate here).
const MAX_EXPANSION: u64 = 250;

/// A checked pattern: its canonical text (what Postgres runs) and the compiled matcher.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub canonical: String,
    re: regex::Regex,
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.canonical == other.canonical
    }
}

impl Pattern {
    /// Checks `source` (for the operator `op`, named in errors) and folds ASCII letters
    /// when `fold`.
    pub fn new(field: &str, op: &str, source: &str, fold: bool) -> Result<Pattern, QueryError> {
        Pattern::with_lines(field, op, source, fold, false)
    }

    /// As `new`; with `lines` (`$options: "m"`), `^` and `$` also match just after and
    /// before each newline (`\n` only, in both engines): Postgres's `(?w)` option opens
    /// the canonical text, Rust's `(?m)` flag runs the same pattern.
    pub fn with_lines(field: &str, op: &str, source: &str, fold: bool, lines: bool) -> Result<Pattern, QueryError> {
        let bad = |m: String| QueryError::invalid(format!("{field}.{op}: {m}"));
        if source.chars().count() > MAX_PATTERN_CHARS {
            return Err(bad(format!("the pattern is longer than {MAX_PATTERN_CHARS} characters")));
        }
        if source.contains('\0') {
            return Err(bad("the pattern holds a NUL character".into()));
        }
        let tree = ast::parse::ParserBuilder::new()
            .nest_limit(32)
            .build()
            .parse(source)
            .map_err(|e| bad(format!("{} (at character {})", e.kind(), source[..e.span().start.offset].chars().count() + 1)))?;
        let mut out = String::with_capacity(source.len() * 2);
        Printer { fold, out: &mut out, copies: 0 }.node(&tree, 1, false).map_err(bad)?;
        let re = regex::RegexBuilder::new(&format!("(?{}:{out})", if lines { "sm" } else { "s" }))
            .size_limit(1 << 20)
            .build()
            .map_err(|e| QueryError::too_complex(format!("{field}.{op}: the pattern is too complex ({e})")))?;
        Ok(Pattern { canonical: if lines { format!("(?w){out}") } else { out }, re })
    }

    pub fn is_match(&self, s: &str) -> bool {
        s.len() <= 4 * MAX_TEXT_CHARS && s.chars().count() <= MAX_TEXT_CHARS && self.re.is_match(s)
    }
}

/// Perl's and Java's quoting, `\Q…\E` (to the end without `\E`), as escaped text: the
/// Parse SDKs quote `startsWith`/`contains` texts so, and Parse Server expands it too.
pub fn expand_quotes(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    let mut rest = p;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(quoted) = tail.strip_prefix("\\Q") {
            let (text, after) = match quoted.find("\\E") {
                Some(end) => (&quoted[..end], &quoted[end + 2..]),
                None => (quoted, ""),
            };
            out.push_str(&regex_syntax::escape(text));
            rest = after;
        } else {
            // An escape: the backslash and the character after it, as they are.
            let n = tail[1..].chars().next().map_or(0, char::len_utf8);
            out.push_str(&tail[..1 + n]);
            rest = &tail[1 + n..];
        }
    }
    out.push_str(rest);
    out
}

/// Whether the canonical text anchors at the start or the end (`^` not opening a set).
pub fn has_anchor(canonical: &str) -> bool {
    let canonical = canonical.strip_prefix("(?w)").unwrap_or(canonical);
    canonical.contains('$') || canonical.char_indices().any(|(i, c)| c == '^' && !canonical[..i].ends_with('['))
}

struct Printer<'a> {
    fold: bool,
    out: &'a mut String,
    /// Copies made by counted repetitions so far (MAX_EXPANSION).
    copies: u64,
}

/// Whether `a` can match the empty text. Postgres compiles a repetition of such a part,
/// or of `^`/`$`, into an automaton that grows exponentially with the repetitions
/// (`((^|$)a?){20}`: 27 s and 180 MB, then "too complex"; `((a?){250}){4}`: 25 s),
/// where the regex crate takes under a millisecond: both are refused.
fn nullable(a: &Ast) -> bool {
    match a {
        Ast::Empty(_) | Ast::Assertion(_) | Ast::Flags(_) => true,
        Ast::Literal(_) | Ast::Dot(_) | Ast::ClassUnicode(_) | Ast::ClassPerl(_) | Ast::ClassBracketed(_) => false,
        Ast::Repetition(r) => {
            matches!(r.op.kind, RepetitionKind::ZeroOrOne | RepetitionKind::ZeroOrMore)
                || matches!(r.op.kind, RepetitionKind::Range(RepetitionRange::Exactly(0) | RepetitionRange::AtLeast(0) | RepetitionRange::Bounded(0, _)))
                || nullable(&r.ast)
        }
        Ast::Group(g) => nullable(&g.ast),
        Ast::Alternation(x) => x.asts.iter().any(nullable),
        Ast::Concat(c) => c.asts.iter().all(nullable),
    }
}

/// One character as both engines read it literally, inside or outside brackets.
fn push_char(out: &mut String, c: char) {
    if c.is_ascii_alphanumeric() {
        out.push(c);
    } else if (c as u32) <= 0xFFFF {
        out.push_str(&format!("\\u{:04X}", c as u32));
    } else {
        out.push_str(&format!("\\U{:08X}", c as u32));
    }
}

fn has_case(c: char) -> bool {
    c.to_lowercase().ne(c.to_uppercase()) || c.is_lowercase() || c.is_uppercase()
}

/// A bracket expression's members, as inclusive ranges of characters.
type Set = Vec<(char, char)>;

fn perl_set(kind: &ClassPerlKind) -> Set {
    match kind {
        ClassPerlKind::Digit => vec![('0', '9')],
        ClassPerlKind::Word => vec![('0', '9'), ('A', 'Z'), ('_', '_'), ('a', 'z')],
        // JavaScript's \s is also Unicode's spaces; here, as \d and \w, ASCII only.
        ClassPerlKind::Space => vec![('\t', '\r'), (' ', ' ')],
    }
}

impl Printer<'_> {
    /// `expansion`: copies the enclosing counted repetitions make of this part;
    /// `repeated`: inside any repetition.
    fn node(&mut self, a: &Ast, expansion: u64, repeated: bool) -> Result<(), String> {
        match a {
            Ast::Empty(_) => Ok(()),
            Ast::Flags(_) => Err("inline flags such as (?i) are not supported: use $iregex".into()),
            Ast::Literal(l) => self.literal(l.c),
            Ast::Dot(_) => {
                self.out.push('.');
                Ok(())
            }
            Ast::Assertion(_) if repeated => Err("^ and $ inside a repeated part are not supported".into()),
            Ast::Assertion(x) => match x.kind {
                ast::AssertionKind::StartLine => {
                    self.out.push('^');
                    Ok(())
                }
                ast::AssertionKind::EndLine => {
                    self.out.push('$');
                    Ok(())
                }
                _ => Err("word boundaries and \\A, \\z are not supported".into()),
            },
            Ast::ClassUnicode(_) => Err("Unicode classes (\\p{…}) are not supported".into()),
            Ast::ClassPerl(p) => {
                self.set(&perl_set(&p.kind), p.negated)
            }
            Ast::ClassBracketed(b) => {
                let mut set = Set::new();
                Self::collect(&b.kind, &mut set)?;
                self.set(&set, b.negated)
            }
            Ast::Repetition(r) => {
                if matches!(*r.ast, Ast::Assertion(_) | Ast::Empty(_)) {
                    return Err("a repetition needs something to repeat".into());
                }
                if nullable(&r.ast) {
                    return Err("a repetition of a part that can match nothing (such as (a?)* or (a|)+) is not supported: make the part match at least one character".into());
                }
                let (suffix, count) = match &r.op.kind {
                    RepetitionKind::ZeroOrOne => ("?".to_string(), 1),
                    RepetitionKind::ZeroOrMore => ("*".to_string(), 1),
                    RepetitionKind::OneOrMore => ("+".to_string(), 1),
                    RepetitionKind::Range(RepetitionRange::Exactly(n)) => (format!("{{{n}}}"), *n),
                    RepetitionKind::Range(RepetitionRange::AtLeast(n)) => (format!("{{{n},}}"), *n),
                    RepetitionKind::Range(RepetitionRange::Bounded(n, m)) => (format!("{{{n},{m}}}"), *m),
                };
                if count > MAX_COUNT {
                    return Err(format!("a repetition count is above {MAX_COUNT}"));
                }
                let expansion = expansion.saturating_mul(count.max(1) as u64);
                if count > 1 {
                    self.copies = self.copies.saturating_add(expansion);
                }
                if expansion > MAX_EXPANSION || self.copies > MAX_EXPANSION {
                    return Err(format!("counted repetitions copy their parts more than {MAX_EXPANSION} times in all"));
                }
                // Laziness changes which text a match spans, never whether there is one.
                self.out.push_str("(?:");
                self.node(&r.ast, expansion, true)?;
                self.out.push(')');
                self.out.push_str(&suffix);
                Ok(())
            }
            Ast::Group(g) => {
                if let GroupKind::NonCapturing(flags) = &g.kind {
                    if !flags.items.is_empty() {
                        return Err("inline flags such as (?i:…) are not supported: use $iregex".into());
                    }
                }
                if matches!(*g.ast, Ast::Empty(_)) {
                    return Err("an empty group () matches nothing; remove it".into());
                }
                self.out.push_str("(?:");
                self.node(&g.ast, expansion, repeated)?;
                self.out.push(')');
                Ok(())
            }
            Ast::Alternation(x) => {
                self.out.push_str("(?:");
                for (i, b) in x.asts.iter().enumerate() {
                    if i > 0 {
                        self.out.push('|');
                    }
                    if matches!(b, Ast::Empty(_)) {
                        return Err("an alternative of | is empty; use ? for an optional part".into());
                    }
                    self.node(b, expansion, repeated)?;
                }
                self.out.push(')');
                Ok(())
            }
            Ast::Concat(c) => {
                for x in &c.asts {
                    self.node(x, expansion, repeated)?;
                }
                Ok(())
            }
        }
    }

    fn literal(&mut self, c: char) -> Result<(), String> {
        if self.fold && c.is_ascii_alphabetic() {
            self.out.push('[');
            self.out.push(c.to_ascii_lowercase());
            self.out.push(c.to_ascii_uppercase());
            self.out.push(']');
            return Ok(());
        }
        if self.fold && has_case(c) {
            return Err(format!("case-insensitive matching folds ASCII letters only, and {c:?} is another letter"));
        }
        push_char(self.out, c);
        Ok(())
    }

    fn collect(s: &ClassSet, set: &mut Set) -> Result<(), String> {
        match s {
            ClassSet::BinaryOp(_) => Err("class operations (&&, --, ~~) are not supported".into()),
            ClassSet::Item(i) => Self::item(i, set),
        }
    }

    fn item(i: &ClassSetItem, set: &mut Set) -> Result<(), String> {
        match i {
            ClassSetItem::Empty(_) => Ok(()),
            ClassSetItem::Literal(l) => {
                set.push((l.c, l.c));
                Ok(())
            }
            ClassSetItem::Range(r) => {
                set.push((r.start.c, r.end.c));
                Ok(())
            }
            ClassSetItem::Perl(p) if !p.negated => {
                set.extend(perl_set(&p.kind));
                Ok(())
            }
            ClassSetItem::Perl(_) => Err("\\D, \\W and \\S inside [ ] are not supported".into()),
            ClassSetItem::Ascii(_) => Err("[[:name:]] classes are not supported: write the characters".into()),
            ClassSetItem::Unicode(_) => Err("Unicode classes (\\p{…}) are not supported".into()),
            ClassSetItem::Bracketed(_) => Err("nested [ ] are not supported".into()),
            ClassSetItem::Union(u) => {
                for x in &u.items {
                    Self::item(x, set)?;
                }
                Ok(())
            }
        }
    }

    /// A set as one bracket expression, both cases of its ASCII letters when folding.
    fn set(&mut self, set: &Set, negated: bool) -> Result<(), String> {
        let mut all = set.clone();
        if self.fold {
            for &(lo, hi) in set {
                // (A range is not walked character by character: that cost seconds for
                // a few ranges over the astral planes.)
                if lo != hi && (hi as u32) > 0x7F {
                    return Err(format!("case-insensitive matching takes ranges of ASCII characters only, not [{lo}-{hi}]"));
                }
                if lo == hi && !lo.is_ascii() && has_case(lo) {
                    return Err(format!("case-insensitive matching folds ASCII letters only, and {lo:?} is another letter"));
                }
                for c in ('A'..='Z').chain('a'..='z') {
                    if lo <= c && c <= hi {
                        let o = if c.is_ascii_uppercase() { c.to_ascii_lowercase() } else { c.to_ascii_uppercase() };
                        all.push((o, o));
                    }
                }
            }
        }
        if all.is_empty() {
            return Err("an empty [ ] matches nothing".into());
        }
        self.out.push('[');
        if negated {
            self.out.push('^');
        }
        for (lo, hi) in all {
            push_char(self.out, lo);
            if hi != lo {
                self.out.push('-');
                push_char(self.out, hi);
            }
        }
        self.out.push(']');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<String, String> {
        Pattern::new("f", "$regex", s, false).map(|p| p.canonical).map_err(|e| e.message)
    }
    fn i(s: &str) -> Result<String, String> {
        Pattern::new("f", "$iregex", s, true).map(|p| p.canonical).map_err(|e| e.message)
    }
    fn m(s: &str, fold: bool, text: &str) -> bool {
        Pattern::new("f", "$regex", s, fold).unwrap().is_match(text)
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(p("ab1").unwrap(), "ab1");
        assert_eq!(p("a.c").unwrap(), "a.c");
        assert_eq!(p("a\\.c").unwrap(), "a\\u002Ec");
        assert_eq!(p("^a|b$").unwrap(), "(?:^a|b$)");
        assert_eq!(p("(ab)+?").unwrap(), "(?:(?:ab))+");
        assert_eq!(p("\\d{2,3}").unwrap(), "(?:[0-9]){2,3}");
        assert_eq!(p("[^\\w-]").unwrap(), "[^0-9A-Z\\u005Fa-z\\u002D]");
        assert_eq!(p("é😀").unwrap(), "\\u00E9\\U0001F600");
        assert_eq!(i("a[b-c]").unwrap(), "[aA][b-cBC]");
        assert_eq!(p("").unwrap(), "");
    }

    #[test]
    fn quotes_and_anchors() {
        assert_eq!(expand_quotes("^\\Qa.b\\E"), "^a\\.b");
        assert_eq!(expand_quotes("\\Qx\\E\\\\E\\Qy\\E$"), "x\\\\Ey$");
        assert_eq!(expand_quotes("\\Q(open"), "\\(open");
        assert_eq!(expand_quotes("a\\\\Qb"), "a\\\\Qb", "an escaped backslash does not open a quote");
        assert_eq!(expand_quotes("é\\é"), "é\\é");
        assert!(has_anchor(&p("^a").unwrap()) && has_anchor(&p("a$").unwrap()));
        assert!(!has_anchor(&p("[^a]\\^\\$").unwrap()));
        assert_eq!(p("a\\/b").unwrap(), "a\\u002Fb", "JavaScript's escaped slash");
    }

    #[test]
    fn line_anchors_with_the_m_option() {
        let l = |s: &str, text: &str| Pattern::with_lines("f", "$regex", s, false, true).unwrap().is_match(text);
        assert!(l("^b", "a\nb") && !m("^b", false, "a\nb"));
        assert!(l("a$", "a\nb") && !m("a$", false, "a\nb"));
        assert!(!l("^b", "a\rb") && !l("^b", "a\u{2028}b"), "only \\n ends a line, in both engines");
        assert!(l("^a.b$", "a\nb"), "dot still matches a newline");
        let p = Pattern::with_lines("f", "$regex", "^x", false, true).unwrap();
        assert_eq!(p.canonical, "(?w)^x");
        assert!(has_anchor(&p.canonical) && !has_anchor(&Pattern::with_lines("f", "$regex", "x", false, true).unwrap().canonical));
        let e = crate::eval::matches;
        let f = crate::parse::parse(&serde_json::json!({"t": {"$regex": "^b", "$options": "m"}})).unwrap();
        assert!(e(&f, &serde_json::json!({"t": "a\nb"})));
        for bad in [serde_json::json!({"t": {"$options": "m"}}), serde_json::json!({"t": {"$regex": "a", "$options": "x"}})] {
            assert!(crate::parse::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn matching_follows_postgres() {
        assert!(m("a.c", false, "a\nc"), "dot matches a newline, as in an ARE");
        assert!(m("^ab$", false, "ab"));
        assert!(!m("^ab$", false, "ab\n"), "$ is the end of the text only");
        assert!(!m("^b", false, "a\nb"), "^ is the start of the text only");
        assert!(m("colou?r", true, "COLOR"));
        assert!(!m("\\d", false, "٣"), "\\d is ASCII digits");
        assert!(m("[^a]", false, "\n"));
        assert!(m("x{2}", false, "axxb"));
        assert!(m("^a+$", false, &"a".repeat(MAX_TEXT_CHARS)));
        assert!(!m("a", false, &"a".repeat(MAX_TEXT_CHARS + 1)), "a longer text never matches");
        assert!(m("é", false, &"é".repeat(MAX_TEXT_CHARS)), "characters, not bytes");
        assert!(!m("x{3}", false, "axxb"));
    }

    #[test]
    fn refusals_name_the_construct() {
        for (pat, says) in [
            ("\\bword", "word boundaries"),
            ("(a)\\1", "backreferences"),
            ("(?=a)", "look-around"),
            ("(?i)a", "inline flags"),
            ("\\p{L}", "Unicode classes"),
            ("[[:alpha:]]", "[[:name:]]"),
            ("a{256}", "above 255"),
            ("(a{20}){20}", "more than 250"),
            ("a{200}b{60}", "more than 250"),
            ("((^|$)a){20}", "inside a repeated part"),
            ("(^a)*", "inside a repeated part"),
            ("((a?){250}){4}", "can match nothing"),
            ("(a?)*", "can match nothing"),
            ("(a|b*)+", "can match nothing"),
            ("a(", "unclosed"),
            ("a|", "empty"),
            ("()", "empty group"),
            ("[a&&b]", "class operations"),
        ] {
            let e = p(pat).unwrap_err();
            assert!(e.to_lowercase().contains(&says.to_lowercase()), "{pat}: {e}");
        }
        assert!(i("é").unwrap_err().contains("ASCII letters only"));
        assert!(i("[é]").unwrap_err().contains("ASCII letters only"));
        assert!(i("[à-ÿ]").unwrap_err().contains("ranges of ASCII characters only"));
        let astral = "[\u{1F18A}-\u{10FFFF}]".repeat(20);
        let t = std::time::Instant::now();
        assert!(i(&astral).unwrap_err().contains("ranges of ASCII"));
        assert!(t.elapsed() < std::time::Duration::from_secs(1), "a range is not walked");
        assert!(p("(ab)+c*(d|e)?x{3}").is_ok() && p("^(a|b)+$").is_ok(), "anchors outside repetitions, parts that match something");
        assert!(i("1-2_").is_ok(), "characters without case fold to themselves");
        assert!(p(&"a".repeat(513)).unwrap_err().contains("longer than 512"));
    }
}
