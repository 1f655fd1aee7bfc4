//! Invalidation patterns: globs matched exactly as Redis matches them (`KEYS`, `SCAN MATCH`:
//! `stringmatchlen` in its `util.c`), so one pattern removes the same keys from L1 as from L2.
//! Byte by byte: `?` is one byte (not one UTF-8 character), `*` any bytes, `[abc]`, `[a-z]`
//! (either order, bytes compared as Redis' signed `char`s), `[^a]` (not `[!a]`, which is `!` or
//! `a`), and `\` escapes the next byte, inside a class too. A general-purpose glob (the `glob`
//! crate's, made for paths) differs in each of these, and an L1 kept by one and an L2 emptied by
//! the other serves what was invalidated.

use crate::error::{Error, Result, Shown};

/// Longest pattern accepted (a key is at most 512 bytes, its strategy 64).
pub const MAX_PATTERN_LEN: usize = 1024;

/// A checked invalidation pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct Glob(String);

impl Glob {
    /// Refuses what is surely a mistake, although Redis would read it somehow: an empty
    /// pattern, one over [`MAX_PATTERN_LEN`] bytes, control characters (no key has them) and a
    /// `[` never closed.
    pub fn new(pattern: &str) -> Result<Glob> {
        let bad = |why: &str| Err(Error::invalid(format!("invalid pattern {}: {why}", Shown(pattern))));
        if pattern.is_empty() || pattern.len() > MAX_PATTERN_LEN {
            return bad(&format!("must be 1 to {MAX_PATTERN_LEN} bytes"));
        }
        if pattern.chars().any(char::is_control) {
            return bad("control characters never match a key");
        }
        if !classes_closed(pattern.as_bytes()) {
            return bad("a [ is not closed by ]");
        }
        Ok(Glob(pattern.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn matches(&self, key: &str) -> bool {
        matches(self.0.as_bytes(), key.as_bytes())
    }
}

/// Whether every `[` outside a class is closed, read as the matcher reads it.
fn classes_closed(mut p: &[u8]) -> bool {
    while let Some((&c, rest)) = p.split_first() {
        p = rest;
        match c {
            b'\\' if !p.is_empty() => p = &p[1..],
            b'[' => {
                p = p.strip_prefix(b"^").unwrap_or(p);
                loop {
                    match p {
                        [] => return false,
                        [b'\\', _, rest @ ..] => p = rest,
                        [b']', rest @ ..] => {
                            p = rest;
                            break;
                        }
                        [_, b'-', _, rest @ ..] => p = rest,
                        [_, rest @ ..] => p = rest,
                    }
                }
            }
            _ => {}
        }
    }
    true
}

/// Whether `text` matches `pattern` as Redis' `stringmatchlen` (case-sensitive) decides.
pub fn matches(pattern: &[u8], text: &[u8]) -> bool {
    let mut hopeless = false;
    match_at(pattern, text, &mut hopeless)
}

/// `hopeless`: the rest after a `*` matched nowhere in what was left of the text, so no earlier
/// `*` can match either by taking more (what keeps `*a*a*a*…b` from taking exponential time).
fn match_at(mut p: &[u8], mut s: &[u8], hopeless: &mut bool) -> bool {
    while let (Some(&pc), Some(&sc)) = (p.first(), s.first()) {
        match pc {
            b'*' => {
                while p.get(1) == Some(&b'*') {
                    p = &p[1..];
                }
                if p.len() == 1 {
                    return true;
                }
                while !s.is_empty() {
                    if match_at(&p[1..], s, hopeless) {
                        return true;
                    }
                    if *hopeless {
                        return false;
                    }
                    s = &s[1..];
                }
                *hopeless = true;
                return false;
            }
            b'?' => {}
            b'[' => {
                let (matched, rest) = class(&p[1..], sc);
                if !matched {
                    return false;
                }
                p = rest;
                s = &s[1..];
                if s.is_empty() {
                    return only_stars(p);
                }
                continue;
            }
            b'\\' if p.len() >= 2 => {
                p = &p[1..];
                if p[0] != sc {
                    return false;
                }
            }
            _ if pc != sc => return false,
            _ => {}
        }
        p = &p[1..];
        s = &s[1..];
        if s.is_empty() {
            return only_stars(p);
        }
    }
    // Only here when one of them was empty from the start (Redis: `*` does not match "").
    p.is_empty() && s.is_empty()
}

/// What is left of a pattern once the text is used up matches only if it is all `*`.
fn only_stars(p: &[u8]) -> bool {
    p.iter().all(|&c| c == b'*')
}

/// Whether byte `c` is in the class that starts at `p` (just after its `[`), and the pattern
/// after the class (after its `]`; empty when it is never closed).
fn class(mut p: &[u8], c: u8) -> (bool, &[u8]) {
    let negated = p.first() == Some(&b'^');
    if negated {
        p = &p[1..];
    }
    let mut found = false;
    loop {
        match p {
            [] => return (found != negated, p),
            [b'\\', escaped, rest @ ..] => {
                found |= *escaped == c;
                p = rest;
            }
            [b']', rest @ ..] => return (found != negated, rest),
            [a, b'-', b, rest @ ..] => {
                // Redis compares C `char`s, signed here: a byte from 0x80 up sorts below 0.
                let (a, b, c) = (*a as i8, *b as i8, c as i8);
                found |= (a.min(b)..=a.max(b)).contains(&c);
                p = rest;
            }
            [x, rest @ ..] => {
                found |= *x == c;
                p = rest;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each checked with `KEYS` on a Redis 7.0 holding the key.
    const CASES: &[(&str, &str, bool)] = &[
        ("a*", "abc", true),
        ("*c", "abc", true),
        ("a?c", "abc", true),
        ("a?c", "ac", false),
        ("?", "\u{e9}", false), // two bytes
        ("??", "\u{e9}", true),
        ("[ab]x", "bx", true),
        ("[^a]x", "bx", true),
        ("[^a]x", "ax", false),
        ("[!a]x", "!x", true), // `!` is no negation in Redis
        ("[!a]x", "bx", false),
        ("[a-c]", "b", true),
        ("[c-a]", "b", true), // either order
        ("[a-]", "]", true),  // the range `]`..`a`, and the class is never closed
        ("[a-]", "-", false),
        ("[]]", "]", false),       // an empty class, then `]`
        ("[--\u{e9}]", "!", true), // a range to byte 0xc3, signed as in Redis: -61..=45
        ("\\*", "*", true),
        ("\\*", "a", false),
        ("[\\]]", "]", true),
        ("a\\", "a\\", true), // a trailing backslash is itself
        (
            "*a*a*a*a*a*a*a*a*a*a*b",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            false,
        ),
        ("a**", "a", true),
        ("", "", true),
        ("*", "", false),
    ];

    #[test]
    fn matches_as_redis_does() {
        for &(pattern, text, want) in CASES {
            assert_eq!(matches(pattern.as_bytes(), text.as_bytes()), want, "{pattern:?} on {text:?}");
        }
    }

    #[test]
    fn refuses_empty_unclosed_and_control_characters() {
        for bad in
            ["", "crew_config:[ab", "crew_config:[\\]", "[a-]", "a\u{1}b", &"x".repeat(MAX_PATTERN_LEN + 1)]
        {
            assert!(Glob::new(bad).is_err(), "{bad:?}");
        }
        for good in ["crew_config:*", "crew_config:[]]", "a\\[", "[a-c]", "**a", "x\\"] {
            assert!(Glob::new(good).is_ok(), "{good:?}");
        }
    }
}
