//! audisp's filter expressions against the real libauparse: every
//! expression of `tests/filter/auparse-expressions.txt` is evaluated on
//! every record of `tests/data/sample.log` and `tests/data/avc-samples.log`
//! by `audisp::filter` and by libauparse (through
//! `tests/filter/auparse_eval.py`, ctypes on `libauparse.so.0`, which
//! Debian's auditd package brings), and the results must be identical —
//! record by record, so the comparison does not depend on event grouping.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use audisp::filter::{Filter, Scratch};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

/// Why libauparse cannot be run here, if it cannot.
fn unavailable() -> Option<String> {
    let probe = Command::new("python3")
        .args([
            "-c",
            "import ctypes, ctypes.util; ctypes.CDLL(ctypes.util.find_library('auparse') or 'libauparse.so.0')",
        ])
        .output();
    match probe {
        Err(e) => Some(format!("python3 cannot be run: {e}")),
        Ok(o) if !o.status.success() => Some(format!(
            "libauparse cannot be loaded (apt-get install libauparse0): {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Ok(_) => None,
    }
}

#[test]
fn expressions_agree_with_libauparse_on_real_records() {
    if let Some(why) = unavailable() {
        support::skip(&why);
        return;
    }
    let exprs_file = dir().join("filter/auparse-expressions.txt");
    let text = std::fs::read_to_string(&exprs_file).expect("expressions file");
    let exprs: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .collect();
    assert!(exprs.len() > 100, "{} expressions", exprs.len());
    let filters: Vec<Filter> = exprs
        .iter()
        .map(|e| Filter::parse(e).unwrap_or_else(|err| panic!("{e}: {err}")))
        .collect();
    let mut scratch = Scratch::new();
    let mut compared = 0;
    let mut mismatches = Vec::new();
    let mut matched = vec![0usize; exprs.len()];
    for data in ["data/sample.log", "data/avc-samples.log"] {
        let records_file = dir().join(data);
        let out = Command::new("python3")
            .arg(dir().join("filter/auparse_eval.py"))
            .arg(&exprs_file)
            .arg(&records_file)
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "auparse_eval.py: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bytes = std::fs::read(&records_file).expect("records");
        let records: Vec<&[u8]> = bytes
            .split(|&b| b == b'\n')
            .filter(|r| !r.is_empty())
            .collect();
        let theirs: Vec<&str> = std::str::from_utf8(&out.stdout)
            .expect("ASCII")
            .lines()
            .collect();
        assert_eq!(theirs.len(), records.len(), "one line per record");
        for (record, line) in records.iter().zip(&theirs) {
            assert_eq!(line.len(), exprs.len());
            for (i, (f, want)) in filters.iter().zip(line.bytes()).enumerate() {
                assert_ne!(want, b'E', "libauparse refuses {:?}", exprs[i]);
                let got = f.matches(record, &mut scratch);
                compared += 1;
                matched[i] += usize::from(got);
                if got != (want == b'1') {
                    mismatches.push(format!(
                        "{:?}: libauparse {}, audisp {} on {}",
                        exprs[i],
                        want == b'1',
                        got,
                        String::from_utf8_lossy(&record[..record.len().min(200)])
                    ));
                }
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {compared} evaluations differ; the first:\n{}",
        mismatches.len(),
        mismatches[..mismatches.len().min(25)].join("\n")
    );
    // Nearly every expression is true for some record (the rest test what
    // no record has), so the agreement is not just on "false".
    let never: Vec<&str> = exprs
        .iter()
        .zip(&matched)
        .filter(|(_, &n)| n == 0)
        .map(|(e, _)| *e)
        .collect();
    assert!(
        never.len() * 5 <= exprs.len(),
        "true for no record: {never:?}"
    );
    eprintln!("{compared} evaluations agree with libauparse");
}
