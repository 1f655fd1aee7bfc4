//! Series selectors, as Prometheus writes them: `name`, `name{label="value",...}` or
//! `{__name__=~"perfd_cache_.*",...}`, with the matchers `=`, `!=`, `=~` and `!~`.

pub use super::pattern::Pattern;
use crate::error::{Error, Result, Shown};
use crate::model::SeriesKey;
use std::iter::Peekable;
use std::str::Chars;

/// The label that stands for a series' name in a matcher.
pub const NAME_LABEL: &str = "__name__";

/// Most matchers in one selector: twice the labels a series may have, room for `!=` ones.
pub const MAX_MATCHERS: usize = 2 * crate::model::MAX_LABELS;

/// Labels not named match anything; a label a series lacks reads as the empty value.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    /// The metric name, from before the `{` or from a `__name__="…"` matcher; `None` when only
    /// other `__name__` matchers (or none) say which names, and then every series is a candidate.
    pub name: Option<String>,
    pub matchers: Vec<Matcher>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Matcher {
    /// A label name, or [`NAME_LABEL`].
    pub label: String,
    pub op: Op,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Equal(String),
    NotEqual(String),
    /// `=~`: the whole value matches (anchored at both ends, `.` matches a line break too).
    Regex(Pattern),
    /// `!~`
    NotRegex(Pattern),
}

impl Op {
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Op::Equal(v) => value == v,
            Op::NotEqual(v) => value != v,
            Op::Regex(p) => p.is_match(value),
            Op::NotRegex(p) => !p.is_match(value),
        }
    }
}

impl Matcher {
    pub fn matches(&self, key: &SeriesKey) -> bool {
        let value = if self.label == NAME_LABEL {
            key.name.as_str()
        } else {
            key.labels.iter().find(|(k, _)| *k == self.label).map_or("", |(_, v)| v.as_str())
        };
        self.op.matches(value)
    }
}

impl Selector {
    /// A selector has at most [`MAX_MATCHERS`] matchers: a series has at most 30 labels, and
    /// a threshold's selector is matched against every series each sampler tick (one with
    /// 5,000 matchers was accepted). One without a name needs a matcher the empty value does not
    /// pass (as in Prometheus), so `{}` or `{env!="prod"}` cannot select every series there is.
    pub fn parse(text: &str) -> Result<Selector> {
        let bad = |why: &str| Error::invalid(format!("invalid selector {}: {why}", Shown(text)));
        let text_t = text.trim();
        let (name, rest) = match text_t.find('{') {
            Some(i) => (text_t[..i].trim(), Some(&text_t[i + 1..])),
            None => (text_t, None),
        };
        let mut name = if name.is_empty() && rest.is_some() {
            None
        } else {
            crate::model::validate_name(name).map_err(|e| bad(&e.to_string()))?;
            Some(name.to_owned())
        };
        let named_before_brace = name.is_some();
        let mut matchers = Vec::new();
        if let Some(rest) = rest {
            let body = rest.strip_suffix('}').ok_or_else(|| bad("missing closing }"))?;
            let mut chars = body.chars().peekable();
            loop {
                while chars.next_if(|c| c.is_whitespace() || *c == ',').is_some() {}
                if chars.peek().is_none() {
                    break;
                }
                let m = matcher(&mut chars).map_err(|e| bad(&e))?;
                if m.label == NAME_LABEL && named_before_brace {
                    return Err(bad("the metric name is given twice (before { and as __name__)"));
                }
                if matchers.len() == MAX_MATCHERS {
                    return Err(bad(&format!("more than {MAX_MATCHERS} matchers")));
                }
                match m.op {
                    // `{__name__="cpu"}` is `cpu`: looked up by name, not by a scan.
                    Op::Equal(ref v) if m.label == NAME_LABEL && name.is_none() => {
                        crate::model::validate_name(v).map_err(|e| bad(&e.to_string()))?;
                        name = Some(v.clone());
                    }
                    _ => matchers.push(m),
                }
                while chars.next_if(|c| c.is_whitespace()).is_some() {}
                match chars.next() {
                    None => break,
                    Some(',') => {}
                    Some(_) => return Err(bad("expected , between matchers")),
                }
            }
        }
        if name.is_none() && matchers.iter().all(|m| m.op.matches("")) {
            return Err(bad(
                "without a metric name, at least one matcher must not match the empty value (such as {__name__=~\"cpu_.*\"} or {host=\"a\"})",
            ));
        }
        Ok(Selector { name, matchers })
    }

    pub fn matches(&self, key: &SeriesKey) -> bool {
        self.name_matches(&key.name) && self.labels_match(key)
    }

    /// The name and every `__name__` matcher.
    pub fn name_matches(&self, name: &str) -> bool {
        self.name.as_deref().is_none_or(|n| n == name)
            && self.matchers.iter().filter(|m| m.label == NAME_LABEL).all(|m| m.op.matches(name))
    }

    /// Every matcher but the `__name__` ones.
    pub fn labels_match(&self, key: &SeriesKey) -> bool {
        self.matchers.iter().filter(|m| m.label != NAME_LABEL).all(|m| m.matches(key))
    }

    /// How the selector is named in query statistics: its name, or `{…}` for a scan.
    pub fn name_or_scan(&self) -> &str {
        self.name.as_deref().unwrap_or("{…}")
    }
}

/// `label op "value"`, spaces allowed around `op`.
fn matcher(chars: &mut Peekable<Chars<'_>>) -> std::result::Result<Matcher, String> {
    let label: String =
        std::iter::from_fn(|| chars.next_if(|c| c.is_alphanumeric() || "_.-".contains(*c))).collect();
    while chars.next_if(|c| c.is_whitespace()).is_some() {}
    type MakeOp = fn(String) -> std::result::Result<Op, String>;
    let (op, two_chars): (MakeOp, bool) = match (chars.next(), chars.peek()) {
        (Some('='), Some('~')) => (|v| Pattern::new(v).map(Op::Regex), true),
        (Some('='), _) => (|v| Ok(Op::Equal(v)), false),
        (Some('!'), Some('=')) => (|v| Ok(Op::NotEqual(v)), true),
        (Some('!'), Some('~')) => (|v| Pattern::new(v).map(Op::NotRegex), true),
        _ => {
            return Err(
                "expected label=\"value\", label!=\"value\", label=~\"regex\" or label!~\"regex\"".into()
            );
        }
    };
    if two_chars {
        chars.next();
    }
    while chars.next_if(|c| c.is_whitespace()).is_some() {}
    let value = quoted(chars)?;
    if label != NAME_LABEL {
        // An empty value is allowed here (it matches a series without the label).
        crate::model::validate_label(&label, if value.is_empty() { "x" } else { &value })
            .map_err(|e| e.to_string())?;
    } else if value.chars().any(char::is_control) || value.len() > crate::model::MAX_LABEL_VALUE_LEN {
        return Err(format!("invalid value for {NAME_LABEL}: too long or with control characters"));
    }
    Ok(Matcher { label, op: op(value)? })
}

/// A double-quoted value, the opening quote included. `\"`, `\\` and `\n` are escapes; a
/// backslash before any other character is kept, so a regex's `\.` or `\d` may be written as is.
fn quoted(chars: &mut Peekable<Chars<'_>>) -> std::result::Result<String, String> {
    if chars.next() != Some('"') {
        return Err("values must be in double quotes".into());
    }
    let mut value = String::new();
    loop {
        match chars.next() {
            None => return Err("unterminated string".into()),
            Some('"') => return Ok(value),
            Some('\\') => match chars.next() {
                Some('n') => value.push('\n'),
                Some(c @ ('"' | '\\')) => value.push(c),
                Some(c) => {
                    value.push('\\');
                    value.push(c);
                }
                None => return Err("unterminated string".into()),
            },
            Some(c) => value.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, labels: &[(&str, &str)]) -> SeriesKey {
        SeriesKey::new(name, labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()).unwrap()
    }

    #[test]
    fn selector_parses() {
        let s = Selector::parse(r#"cpu{host="a\"b", env!="prod"}"#).unwrap();
        assert_eq!(s.name.as_deref(), Some("cpu"));
        assert_eq!(s.matchers.len(), 2);
        assert_eq!(s.matchers[0].op, Op::Equal("a\"b".into()));
        assert_eq!(s.matchers[1].op, Op::NotEqual("prod".into()));
        assert_eq!(Selector::parse("cpu{}").unwrap().matchers.len(), 0);
        let many = |n: usize| {
            format!("cpu{{{}}}", (0..n).map(|i| format!("l{i}!=\"x\"")).collect::<Vec<_>>().join(","))
        };
        assert_eq!(Selector::parse(&many(MAX_MATCHERS)).unwrap().matchers.len(), 60);
        let e = Selector::parse(&many(MAX_MATCHERS + 1)).unwrap_err();
        assert!(e.to_string().contains("more than 60 matchers"), "{e}");
        for bad in [
            "",
            "cpu{",
            "cpu{host=a}",
            "cpu{host=\"a\"",
            "1cpu",
            "cpu{host~\"a\"}",
            "cpu{__name__=\"x\"}",
            "cpu{__name__=~\"x\"}",
            "cpu{__other=\"x\"}",
            "{}",
            "{host!=\"a\"}",
            "{host=~\".*\"}",
            "{__name__=\"1x\"}",
            "cpu{host=~\"(\"}",
        ] {
            assert!(Selector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn selector_matches_missing_label_as_empty() {
        let k = key("cpu", &[("host", "a")]);
        assert!(Selector::parse("cpu").unwrap().matches(&k));
        assert!(Selector::parse(r#"cpu{host="a"}"#).unwrap().matches(&k));
        assert!(!Selector::parse(r#"cpu{host="b"}"#).unwrap().matches(&k));
        assert!(Selector::parse(r#"cpu{env!="prod"}"#).unwrap().matches(&k));
        assert!(Selector::parse(r#"cpu{env=~""}"#).unwrap().matches(&k));
        assert!(!Selector::parse(r#"cpu{env=~".+"}"#).unwrap().matches(&k));
    }

    #[test]
    fn regex_matchers_match_the_whole_value() {
        let k = key("perfd_cache_hits", &[("strategy", "llm_response"), ("ip", "10.0.0.1")]);
        for (text, want) in [
            (r#"perfd_cache_hits{strategy=~"llm_.*"}"#, true),
            (r#"perfd_cache_hits{strategy=~"llm"}"#, false),
            (r#"perfd_cache_hits{strategy=~"response"}"#, false),
            (r#"perfd_cache_hits{strategy=~"crew_config|llm_response"}"#, true),
            (r#"perfd_cache_hits{strategy!~"llm_.*"}"#, false),
            (r#"perfd_cache_hits{strategy!~"crew_.*"}"#, true),
            (r#"perfd_cache_hits{ip=~"10\.0\.0\.\d+"}"#, true),
            (r#"perfd_cache_hits{ip=~"10\.0\.0\.\d"}"#, true),
            (r#"perfd_cache_hits{ip=~"10\\.0\\.0\\.1"}"#, true),
            (r#"perfd_cache_hits{ip=~"10\.1.*"}"#, false),
            (r#"{__name__=~"perfd_cache_.*"}"#, true),
            (r#"{__name__=~"perfd_cache"}"#, false),
            (r#"{__name__!~"perfd_.*", strategy="llm_response"}"#, false),
            (r#"{__name__="perfd_cache_hits", strategy="llm_response"}"#, true),
            (r#"{strategy="llm_response"}"#, true),
            (r#"{__name__="perfd_cache_misses"}"#, false),
        ] {
            assert_eq!(Selector::parse(text).unwrap().matches(&k), want, "{text}");
        }
        let s = Selector::parse(r#"{__name__="cpu", host=~"a|b"}"#).unwrap();
        assert_eq!(s.name.as_deref(), Some("cpu"), "an equal __name__ is the name");
        assert_eq!(s.matchers.len(), 1);
    }
}
