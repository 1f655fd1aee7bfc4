//! Influx line protocol: `measurement[,tag=v...] field=value[,field=value...] [timestamp]`.
//!
//! Series name is `{measurement}_{field}` and tags become labels, as VictoriaMetrics maps them.
//! String fields that hold a number are that number (as VictoriaMetrics reads them); other string
//! fields are skipped and counted; booleans are 1/0; `i`/`u` integers become floats.

use super::{BatchBuilder, at, sort_labels};
use crate::error::{Error, Result, Shown};
use std::borrow::Cow;

/// Timestamp unit of a body, from `?precision=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Ns,
    Us,
    Ms,
    S,
}

impl Precision {
    pub fn parse(s: &str) -> Result<Precision> {
        match s {
            "ns" | "n" => Ok(Precision::Ns),
            "us" | "u" | "µ" => Ok(Precision::Us),
            "ms" => Ok(Precision::Ms),
            "s" => Ok(Precision::S),
            _ => Err(Error::invalid(format!("invalid precision {s:?}: use ns, us, ms or s"))),
        }
    }

    fn to_ms(self, t: i64) -> Option<i64> {
        match self {
            Precision::Ns => Some(t.div_euclid(1_000_000)),
            Precision::Us => Some(t.div_euclid(1_000)),
            Precision::Ms => Some(t),
            Precision::S => t.checked_mul(1000),
        }
    }
}

/// What parsing a body found besides the points.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ParseReport {
    pub lines: usize,
    pub skipped_string_fields: usize,
}

/// Parses a whole body into `out`; `now_ms` stands in for missing timestamps.
pub fn parse(body: &[u8], precision: Precision, now_ms: i64, out: &mut BatchBuilder) -> Result<ParseReport> {
    let text = std::str::from_utf8(body).map_err(|e| Error::invalid(format!("body is not UTF-8: {e}")))?;
    let mut report = ParseReport::default();
    let mut scratch = Scratch::default();
    for (i, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line).trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        report.lines += 1;
        parse_line(line, precision, now_ms, out, &mut scratch, &mut report)
            .map_err(|e| at(format_args!("line {}", i + 1), e))?;
    }
    Ok(report)
}

/// Buffers reused from line to line.
#[derive(Default)]
struct Scratch {
    name: String,
}

fn parse_line(
    line: &str,
    precision: Precision,
    now_ms: i64,
    out: &mut BatchBuilder,
    scratch: &mut Scratch,
    report: &mut ParseReport,
) -> Result<()> {
    let (measurement, tags, pos) = series_key(line)?;
    let (fields, mut pos) = field_set(line, pos, report)?;
    while line.as_bytes().get(pos) == Some(&b' ') {
        pos += 1;
    }
    let ts = match line[pos..].trim_end() {
        "" => now_ms,
        t => {
            let raw: i64 =
                t.parse().map_err(|_| Error::invalid(format!("invalid timestamp {}", Shown(t))))?;
            precision.to_ms(raw).ok_or_else(|| Error::invalid(format!("timestamp {t} out of range")))?
        }
    };
    let mut labels: Vec<(&str, &str)> = tags.iter().map(|(k, v)| (k.as_ref(), v.as_ref())).collect();
    sort_labels(&mut labels);
    let name = &mut scratch.name;
    for (field, value) in &fields {
        name.clear();
        name.push_str(&measurement);
        name.push('_');
        name.push_str(field);
        out.push(name, &labels, (ts, *value))?;
    }
    Ok(())
}

type Tags<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;
type Fields<'a> = Vec<(Cow<'a, str>, f64)>;

/// `measurement[,tag=value…]`: the measurement, the tags, and the position after them.
fn series_key(line: &str) -> Result<(Cow<'_, str>, Tags<'_>, usize)> {
    let b = line.as_bytes();
    let (measurement, mut pos) = token(line, 0, b",  ");
    if measurement.is_empty() {
        return Err(Error::invalid("missing measurement"));
    }
    let mut tags = Vec::new();
    while b.get(pos) == Some(&b',') {
        let (k, p) = token(line, pos + 1, b"=");
        if b.get(p) != Some(&b'=') || k.is_empty() {
            return Err(Error::invalid("tag without key=value"));
        }
        let (v, p) = token(line, p + 1, b", ");
        if v.is_empty() {
            return Err(Error::invalid(format!("tag {} has an empty value", Shown(&k))));
        }
        tags.push((k, v));
        pos = p;
    }
    Ok((measurement, tags, pos))
}

/// ` field=value[,field=value…]` from `pos`: the numeric fields (string fields that hold no
/// number are skipped and counted) and the position after them.
fn field_set<'a>(line: &'a str, mut pos: usize, report: &mut ParseReport) -> Result<(Fields<'a>, usize)> {
    let b = line.as_bytes();
    if b.get(pos) != Some(&b' ') {
        return Err(Error::invalid("expected a space before the fields"));
    }
    while b.get(pos) == Some(&b' ') {
        pos += 1;
    }
    let mut fields = Vec::with_capacity(4);
    loop {
        let (k, p) = token(line, pos, b"=");
        if b.get(p) != Some(&b'=') || k.is_empty() {
            return Err(Error::invalid("field without key=value"));
        }
        pos = p + 1;
        if b.get(pos) == Some(&b'"') {
            let end = skip_string(b, pos + 1)
                .ok_or_else(|| Error::invalid(format!("field {}: unterminated string", Shown(&k))))?;
            // A number sent as a string (some agents do) is that number, as VictoriaMetrics reads
            // it; text is skipped (VictoriaMetrics would store 0 for it).
            match numeric_string(&line[pos + 1..end - 1]) {
                Some(v) => fields.push((k, v)),
                None => report.skipped_string_fields += 1,
            }
            pos = end;
        } else {
            let end = pos + b[pos..].iter().position(|&c| c == b',' || c == b' ').unwrap_or(b.len() - pos);
            let value =
                field_value(&line[pos..end]).map_err(|e| at(format_args!("field {}", Shown(&k)), e))?;
            fields.push((k, value));
            pos = end;
        }
        if b.get(pos) != Some(&b',') {
            return Ok((fields, pos));
        }
        pos += 1;
    }
}

/// Reads up to the first unescaped byte in `stops`. A backslash escapes a following `,`, `=`,
/// space, backslash (so `\\` is one backslash) or byte in `stops`; before anything else it is a
/// backslash. As VictoriaMetrics reads it (and InfluxDB, which escapes `=` in tags only). Returns
/// the unescaped text and the position of the stop byte (or the end).
fn token<'a>(line: &'a str, start: usize, stops: &[u8]) -> (Cow<'a, str>, usize) {
    let b = line.as_bytes();
    let escapes = |c: u8| matches!(c, b',' | b'=' | b' ' | b'\\') || stops.contains(&c);
    let mut i = start;
    let mut escaped = false;
    while i < b.len() {
        let c = b[i];
        if c == b'\\' && i + 1 < b.len() && escapes(b[i + 1]) {
            escaped = true;
            i += 2;
            continue;
        }
        if stops.contains(&c) {
            break;
        }
        i += 1;
    }
    let raw = &line[start..i];
    if !escaped {
        return (Cow::Borrowed(raw), i);
    }
    let mut s = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        // The escaped character is taken as it is (an escaped backslash escapes nothing more).
        if let Some(next) = chars.next_if(|&n| c == '\\' && n.is_ascii() && escapes(n as u8)) {
            s.push(next);
            continue;
        }
        s.push(c);
    }
    (Cow::Owned(s), i)
}

/// The finite number a string field's content (between its quotes) spells, if it is one: plain
/// decimal or exponent notation, nothing around it; no `i`/`u` suffix, `inf` or `nan`.
fn numeric_string(s: &str) -> Option<f64> {
    let plain = !s.is_empty()
        && s.bytes().all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'-' | b'+' | b'e' | b'E'));
    s.parse::<f64>().ok().filter(|v| plain && v.is_finite())
}

/// Position just after the closing quote of a string field whose content starts at `pos`.
fn skip_string(b: &[u8], mut pos: usize) -> Option<usize> {
    while pos < b.len() {
        match b[pos] {
            b'\\' => pos += 2,
            b'"' => return Some(pos + 1),
            _ => pos += 1,
        }
    }
    None
}

fn field_value(s: &str) -> Result<f64> {
    let bad = || Error::invalid(format!("invalid field value {}", Shown(s)));
    let v = match s {
        "t" | "T" | "true" | "True" | "TRUE" => 1.0,
        "f" | "F" | "false" | "False" | "FALSE" => 0.0,
        _ if s.ends_with('i') => s[..s.len() - 1].parse::<i64>().map_err(|_| bad())? as f64,
        _ if s.ends_with('u') => s[..s.len() - 1].parse::<u64>().map_err(|_| bad())? as f64,
        // Only digits, signs, dots and exponents reach `parse`, so "inf"/"NaN" never do; an
        // overflow such as 1e999 becomes inf and the bounds check rejects it.
        _ if s.bytes().all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'-' | b'+' | b'e' | b'E')) => {
            s.parse::<f64>().map_err(|_| bad())?
        }
        _ => return Err(bad()),
    };
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TimeBounds;
    use proptest::prelude::*;

    const NOW: i64 = 1_700_000_000_000;

    type Parsed = Vec<(String, Vec<(i64, f64)>)>;

    fn run(body: &str, p: Precision) -> Result<Parsed> {
        let mut b = BatchBuilder::new(TimeBounds::new(NOW, 86_400_000 * 30));
        parse(body.as_bytes(), p, NOW, &mut b)?;
        Ok(b.finish().series.into_iter().map(|s| (s.canonical.to_string(), s.points)).collect())
    }

    #[test]
    fn full_grammar() {
        let body = "# comment\n\
            cpu,host=a,region=eu-1 usage_idle=99.5,usage_user=0.5 1700000000000000000\n\
            cpu,region=eu-1,host=a usage_idle=98 1700000001000000000\r\n\
            mem,host=b\\=c\\ d\\,e used=12i,total=30u,ok=true,bad=F,msg=\"hi, \\\"there\\\" x=1\" 1700000000000000000\n\
            \n\
            disk free=1.5e3\n";
        let got = run(body, Precision::Ns).unwrap();
        assert_eq!(
            got[0],
            (r#"cpu_usage_idle{host="a",region="eu-1"}"#.into(), vec![(NOW, 99.5), (NOW + 1000, 98.0)])
        );
        assert_eq!(got[1].0, r#"cpu_usage_user{host="a",region="eu-1"}"#);
        assert!(got.iter().any(|s| s.0 == r#"mem_used{host="b=c d,e"}"#));
        assert!(!got.iter().any(|s| s.0.starts_with("mem_msg")), "string fields are skipped");
        assert_eq!(got.last().unwrap(), &("disk_free".to_string(), vec![(NOW, 1500.0)]));
    }

    #[test]
    fn typed_fields_and_precision() {
        let got = run(
            "m,h=a i=-12i,u=30u,b=true,f=FALSE,s=\"x\",n=\"4.5e1\",t=\"12i\",p=\" 1\" 1700000000\n",
            Precision::S,
        )
        .unwrap();
        let vals: Vec<(String, f64)> = got.iter().map(|(k, p)| (k.clone(), p[0].1)).collect();
        assert_eq!(
            vals,
            vec![
                (r#"m_i{h="a"}"#.into(), -12.0),
                (r#"m_u{h="a"}"#.into(), 30.0),
                (r#"m_b{h="a"}"#.into(), 1.0),
                (r#"m_f{h="a"}"#.into(), 0.0),
                // A number in a string is that number; `"x"`, `"12i"` and `" 1"` are skipped.
                (r#"m_n{h="a"}"#.into(), 45.0),
            ]
        );
        assert_eq!(got[0].1[0].0, NOW);
        assert_eq!(run("m v=1 1700000000000000", Precision::Us).unwrap()[0].1[0].0, NOW);
        assert_eq!(run("m v=1 1700000000000", Precision::Ms).unwrap()[0].1[0].0, NOW);
    }

    #[test]
    fn rejects_bad_lines_naming_the_line() {
        for (body, needle) in [
            ("m v=1\nm v=NaN", "line 2"),
            ("m v=inf", "invalid field value"),
            ("m v=1e999", "not a finite"),
            ("m v=1 12x", "timestamp"),
            ("m", "space"),
            ("m v=", "field value"),
            ("m,t= v=1", "empty value"),
            ("m v=\"open", "unterminated"),
            ("m v=1 1", "older than"),
            ("9m v=1", "metric name"),
            ("m,__name__=x v=1", "label name"),
            ("m\\,x v=1", "metric name"),
        ] {
            let e = run(body, Precision::Ns).unwrap_err().to_string();
            assert!(e.contains(needle), "{body:?}: {e}");
        }
        // A long bad field name is quoted cut, not whole.
        let e = run(&format!("m {}=x", "f".repeat(10_000)), Precision::Ns).unwrap_err().to_string();
        assert!(e.contains("field \"ffff") && e.len() < 300, "{} bytes: {}", e.len(), &e[..100]);
    }

    #[test]
    fn backslashes_read_as_victoriametrics_reads_them() {
        // Two backslashes are one; one before anything it does not escape is itself.
        for (written, read) in [
            (r"a\b", r"a\b"),
            (r"a\\b", r"a\b"),
            (r"a\\\b", r"a\\b"),
            (r"end\\", r"end\"),
            (r#"q\""#, r#"q\""#),
            (r"x\,y", "x,y"),
        ] {
            let got = run(&format!("m,t={written} v=1 {}", NOW * 1_000_000), Precision::Ns).unwrap();
            let key = crate::model::SeriesKey::parse(&got[0].0).unwrap();
            assert_eq!(key.labels, vec![("t".to_owned(), read.to_owned())], "{written}");
        }
        // An escaped backslash does not escape the comma after it: the comma starts the next tag.
        let got = run(&format!(r"m,t=a\\,u=b v=1 {}", NOW * 1_000_000), Precision::Ns).unwrap();
        let key = crate::model::SeriesKey::parse(&got[0].0).unwrap();
        assert_eq!(key.labels, vec![("t".to_owned(), r"a\".to_owned()), ("u".to_owned(), "b".to_owned())]);
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,200}") {
            let _ = run(&s, Precision::Ns);
        }

        #[test]
        fn escaped_tag_values_round_trip(v in r#"[a-z ,=\\"}é]{1,20}"#, x in -1e12f64..1e12) {
            let esc: String = v.chars().flat_map(|c| if r" ,=\".contains(c) { vec!['\\', c] } else { vec![c] }).collect();
            let got = run(&format!("m,t={esc} v={x:?} {}", NOW * 1_000_000), Precision::Ns).unwrap();
            prop_assert_eq!(&got[0].1, &vec![(NOW, x)]);
            let key = crate::model::SeriesKey::parse(&got[0].0).unwrap();
            prop_assert_eq!(&key.labels[0].1, &v);
        }
    }
}
