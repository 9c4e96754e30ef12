//! Golden cases of filter expressions on real records: every
//! `tests/filter/*.toml` file is read and checked, so a new case file runs
//! without new code. A file holds:
//!
//! ```toml
//! [[event]]                      # the records of one audit event
//! what = "a failed openat"       # what the case shows
//! from = "sample.log"            # a file of tests/data …
//! id = "1795422202.106:399908"   # … and the event (msg=audit(ID)) taken from it
//! # or: records = ["type=… msg=audit(…): …"]  (inline; "\u001d" for 0x1D)
//! expect = [
//!   # one digit per record, in order: 1 if the expression is true for it
//!   ["10000", 'type r= SYSCALL'],
//! ]
//!
//! [[error]]                      # an expression that must not parse
//! expr = '(a r= b'
//! message = "1:8: expected ')' …"   # the whole message
//!
//! [[rules]]                      # a rule file (lines ORed, audisp-filter)
//! text = '''…'''
//! expect = "…"                   # the filter it gives, printed, or:
//! errors = ["2:9: …"]            # every error, in order
//! ```
//!
//! Every `expect` row is also checked as a whole-event decision: with
//! `keep`, the event's records are all released iff some record matched;
//! with `drop`, iff none did. And every expression must print as text that
//! parses back to the same expression.

use std::path::{Path, PathBuf};

use audisp::filter::rules::parse_rules;
use audisp::filter::{Action, Filter, Scratch, WholeEvents};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    #[serde(default)]
    event: Vec<EventCase>,
    #[serde(default)]
    error: Vec<ErrorCase>,
    #[serde(default)]
    rules: Vec<RulesCase>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventCase {
    what: String,
    from: Option<String>,
    id: Option<String>,
    records: Option<Vec<String>>,
    expect: Vec<(String, String)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorCase {
    expr: String,
    message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesCase {
    text: String,
    expect: Option<String>,
    #[serde(default)]
    errors: Vec<String>,
}

fn tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

/// The records of event `id` in `tests/data/FILE`, in file order.
fn event_records(file: &str, id: &str) -> Vec<Vec<u8>> {
    let data = std::fs::read(tests_dir().join("data").join(file))
        .unwrap_or_else(|e| panic!("tests/data/{file}: {e}"));
    let stamp = format!("msg=audit({id}):");
    data.split(|&b| b == b'\n')
        .filter(|l| {
            l.windows(stamp.len())
                .take(200)
                .any(|w| w == stamp.as_bytes())
        })
        .map(<[u8]>::to_vec)
        .collect()
}

/// Checks one event case; a row whose digits differ is added to `failures`
/// (so that one run shows them all).
fn check_event(
    file: &str,
    case: &EventCase,
    scratch: &mut Scratch,
    failures: &mut Vec<String>,
) -> usize {
    let records = match (&case.records, &case.from, &case.id) {
        (Some(r), None, None) => r.iter().map(|r| r.as_bytes().to_vec()).collect(),
        (None, Some(from), Some(id)) => event_records(from, id),
        _ => panic!("{file}: {}: give either records or from and id", case.what),
    };
    assert!(!records.is_empty(), "{file}: {}: no records", case.what);
    for (bits, expr) in &case.expect {
        let place = format!("{file}: {}: {expr:?}", case.what);
        let filter = Filter::parse(expr).unwrap_or_else(|e| panic!("{place}: {e}"));
        let printed = filter.to_string();
        let again = Filter::parse(&printed).unwrap_or_else(|e| panic!("{place}: {printed}: {e}"));
        assert_eq!(again.to_string(), printed, "{place}");
        let got: String = records
            .iter()
            .map(|r| if filter.matches(r, scratch) { '1' } else { '0' })
            .collect();
        if &got != bits {
            failures.push(format!("{place}: expected {bits}, got {got}"));
            continue;
        }
        // The event's fate, both ways.
        let any = bits.contains('1');
        for action in [Action::Keep, Action::Drop] {
            let mut gate = WholeEvents::new(action);
            let mut out = Vec::new();
            let last = records.len() - 1;
            for (i, r) in records.iter().enumerate() {
                let matched = filter.matches(r, scratch);
                gate.push(7, matched, i == last, i, &mut |i| out.push(i));
            }
            let want: Vec<usize> = if action.passes(any) {
                (0..records.len()).collect()
            } else {
                Vec::new()
            };
            assert_eq!(out, want, "{place}: {}", action.as_str());
            assert_eq!(gate.held(), 0, "{place}");
        }
    }
    case.expect.len()
}

#[test]
fn golden_cases() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(tests_dir().join("filter"))
        .expect("tests/filter")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    let mut scratch = Scratch::new();
    let mut checked = 0;
    let mut failures = Vec::new();
    for path in &files {
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let text = std::fs::read_to_string(path).expect("case file");
        let cases: CaseFile = toml::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        for case in &cases.event {
            checked += check_event(&name, case, &mut scratch, &mut failures);
        }
        for case in &cases.error {
            let got = Filter::parse(&case.expr)
                .map(|f| f.to_string())
                .map_err(|e| e.to_string());
            assert_eq!(got, Err(case.message.clone()), "{name}: {:?}", case.expr);
            checked += 1;
        }
        for case in &cases.rules {
            let got = parse_rules(&case.text)
                .map(|f| f.to_string())
                .map_err(|errs| errs.iter().map(ToString::to_string).collect::<Vec<_>>());
            match &case.expect {
                Some(want) => assert_eq!(got, Ok(want.clone()), "{name}: {:?}", case.text),
                None => assert_eq!(got, Err(case.errors.clone()), "{name}: {:?}", case.text),
            }
            checked += 1;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    eprintln!("{checked} golden cases in {} files", files.len());
}
