//! The regexes of `=~` and `!~` matchers, read as Prometheus reads them: RE2 syntax, anchored at
//! both ends, `.` matching a line break too, and `\d`, `\w`, `\s` and `\b` ASCII-only (the Rust
//! regex crate's are Unicode-aware: its `\w` matches `é`, RE2's and so Prometheus' do not).

use crate::error::Shown;
use regex::{Regex, RegexBuilder};
use regex_syntax::ast::{self, AssertionKind, Ast, ClassPerlKind, ClassSetItem, Span};

/// Most memory one compiled regex may take; a pattern of [`crate::model::MAX_LABEL_VALUE_LEN`]
/// bytes that needs more (`(a{1,100}){1,100}`) is refused.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A compiled `=~`/`!~` pattern with the text it was written as.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub text: String,
    regex: Regex,
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.text == other.text
    }
}

impl Pattern {
    pub fn new(text: String) -> Result<Pattern, String> {
        let invalid = |e: &dyn std::fmt::Display| {
            // The syntax error's own text spans lines, pointing at the fault; its last line says what.
            let why = e.to_string();
            format!("invalid regex {}: {}", Shown(&text), why.lines().last().unwrap_or(""))
        };
        let ast = ast::parse::Parser::new().parse(&text).map_err(|e| invalid(&e))?;
        let re2 = ascii_classes(&text, &ast);
        let regex = RegexBuilder::new(&format!("^(?s:{re2})$"))
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| match e {
                regex::Error::CompiledTooBig(_) => format!("regex {} is too large", Shown(&text)),
                e => invalid(&e),
            })?;
        Ok(Pattern { text, regex })
    }

    pub fn is_match(&self, value: &str) -> bool {
        self.regex.is_match(value)
    }
}

/// `text` with each Perl class and word boundary replaced by its ASCII form, as RE2 has them.
fn ascii_classes(text: &str, ast: &Ast) -> String {
    let Ok(mut edits) = ast::visit(ast, Edits(Vec::new()));
    edits.sort_by_key(|(span, _)| std::cmp::Reverse(span.start.offset));
    let mut out = text.to_owned();
    for (span, with) in edits {
        out.replace_range(span.start.offset..span.end.offset, &with);
    }
    out
}

/// Collects (where, replacement) for every Perl class and word boundary.
struct Edits(Vec<(Span, String)>);

impl Edits {
    fn perl(&mut self, class: &ast::ClassPerl, in_brackets: bool) {
        let set = match class.kind {
            ClassPerlKind::Digit => "0-9",
            ClassPerlKind::Word => "0-9A-Za-z_",
            // RE2's \s has no \v.
            ClassPerlKind::Space => r"\t\n\f\r ",
        };
        let with = match (class.negated, in_brackets) {
            (false, true) => set.to_owned(),
            (false, false) => format!("[{set}]"),
            // A nested class, which makes a union inside brackets.
            (true, _) => format!("[^{set}]"),
        };
        self.0.push((class.span, with));
    }
}

impl ast::Visitor for Edits {
    type Output = Vec<(Span, String)>;
    type Err = std::convert::Infallible;

    fn finish(self) -> Result<Self::Output, Self::Err> {
        Ok(self.0)
    }

    fn visit_pre(&mut self, ast: &Ast) -> Result<(), Self::Err> {
        match ast {
            Ast::ClassPerl(class) => self.perl(class, false),
            Ast::Assertion(a) if a.kind == AssertionKind::WordBoundary => {
                self.0.push((a.span, r"(?-u:\b)".into()));
            }
            Ast::Assertion(a) if a.kind == AssertionKind::NotWordBoundary => {
                self.0.push((a.span, r"(?-u:\B)".into()));
            }
            _ => {}
        }
        Ok(())
    }

    fn visit_class_set_item_pre(&mut self, item: &ClassSetItem) -> Result<(), Self::Err> {
        if let ClassSetItem::Perl(class) = item {
            self.perl(class, true);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(re: &str, value: &str) -> bool {
        Pattern::new(re.to_owned()).unwrap().is_match(value)
    }

    #[test]
    fn whole_values_and_line_breaks() {
        assert!(matches("a.b", "a\nb"), "`.` matches a line break, as in Prometheus");
        assert!(!matches("b", "abc"));
        assert!(matches(".*b.*", "abc"));
        assert!(matches("a|bc", "bc") && !matches("a|bc", "ab"));
    }

    #[test]
    fn perl_classes_and_word_boundaries_are_ascii_as_in_re2() {
        for (re, value, want) in [
            (r"\w+", "abc_09", true),
            (r"\w+", "é", false),
            (r"\W+", "é-", true),
            (r"\d+", "0123456789", true),
            (r"\d", "\u{661}", false), // ARABIC-INDIC DIGIT ONE
            (r"\D", "\u{661}", true),
            (r"\s", " ", true),
            (r"\s", "\u{a0}", false),
            (r"\S", "\u{a0}", true),
            (r"\s", "\u{b}", false),
            (r"[\w.]+", "a.b", true),
            (r"[\w.]+", "é", false),
            (r"[\W]+", "é", true),
            (r"[^\d]+", "a", true),
            (r"[^\d]+", "1", false),
            (r"[^\W]+", "é", false),
            (r".*\bb", "é b", true),
            (r"é\bb", "éb", true),
            (r"a\Bb", "ab", true),
            (r"\pL+", "é", true),
            (r"(?i)É", "é", true),
            (r"\\w", "\\w", true),
            (r"[\\d]", "d", true),
        ] {
            assert_eq!(matches(re, value), want, "{re} on {value:?}");
        }
    }

    #[test]
    fn bad_regexes_are_named_in_one_line() {
        for re in ["a(b", "[a", "a{2,1}", r"\q", "(?<n>a)(?<n>b)"] {
            let e = Pattern::new(re.into()).unwrap_err();
            assert!(e.starts_with(&format!("invalid regex {}: ", Shown(re))) && !e.contains('\n'), "{e}");
        }
        let e = Pattern::new("(a{1,100}){1,100}(b{1,100}){1,100}".into()).unwrap_err();
        assert!(e.contains("too large"), "{e}");
    }
}
