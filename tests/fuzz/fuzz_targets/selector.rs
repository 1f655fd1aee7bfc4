//! Any text into the selector parser (matchers, quoting, regexes and their RE2 rewriting): never
//! panics, and a selector that parses can be matched against a series.
#![no_main]
use libfuzzer_sys::fuzz_target;
use perfd::model::SeriesKey;
use perfd::query::Selector;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(sel) = Selector::parse(text) {
        let key = SeriesKey::new("cpu_v", vec![("host".into(), "a\u{e9} 1".into())]).expect("a valid key");
        let _ = sel.matches(&key);
    }
});
