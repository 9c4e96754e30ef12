//! The JSON format on real records: golden files for the hard cases
//! (`tests/golden/NAME/input.log` → `expected.jsonl`, one event per line;
//! `AUDISP_BLESS=1` rewrites the expected files after a deliberate format
//! change, see tests/golden/README.md), checks of what each golden case must contain independently of
//! the blessed text, and a sweep over the whole real corpus: every event
//! becomes valid UTF-8 JSON, every record is accounted for, and every split
//! `EXECVE` argument is rejoined to its announced length.

mod support;

use audisp::format::escape::unescape;
use audisp::format::fields::decode_hex;
use audisp::format::JsonWriter;
use audisp::record;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use support::dispatcher::{corpus, lines};
use support::events::events;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn convert(w: &mut JsonWriter, ev: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    w.write_event(ev, &mut out);
    out
}

/// Converts one golden case, compares (or blesses) it and returns the
/// parsed events.
fn golden(name: &str) -> Vec<Value> {
    let dir = golden_dir().join(name);
    let input = std::fs::read(dir.join("input.log")).expect("input.log");
    let recs = lines(&input);
    let mut w = JsonWriter::new();
    let mut got = Vec::new();
    for ev in events(&recs) {
        got.extend(convert(&mut w, &ev));
        got.push(b'\n');
    }
    let expected = support::expected_output(&dir.join("expected.jsonl"), &got);
    if got != expected {
        let g = String::from_utf8_lossy(&got);
        let e = String::from_utf8_lossy(&expected);
        for (i, (a, b)) in g.lines().zip(e.lines()).enumerate() {
            assert_eq!(a, b, "{name}: event {i} differs from the golden file");
        }
        panic!("{name}: output differs from the golden file in its number of events");
    }
    let text = std::str::from_utf8(&got).expect("output is UTF-8");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("valid JSON"))
        .collect()
}

fn bytes(v: &Value) -> Vec<u8> {
    unescape(v.as_str().expect("a string"))
}

#[test]
fn hex_encoded_paths() {
    let evs = golden("hex-paths");
    assert_eq!(evs.len(), 2);
    assert_eq!(evs[0]["PATH"][1]["name"], "with space.txt");
    let rename = &evs[1];
    assert_eq!(rename["ID"], "1795422202.306:400067");
    let names: Vec<&str> = rename["PATH"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"with space.txt"), "{names:?}");
    assert!(names.contains(&"with space.txt.renamed"), "{names:?}");
    // Numbers exact, octal modes and hex syscall arguments kept as written.
    assert_eq!(rename["PATH"][0]["inode"].as_u64().map(|_| ()), Some(()));
    assert_eq!(evs[0]["PATH"][1]["mode"], "0100644");
    assert!(rename["SYSCALL"]["a0"].is_string());
    assert_eq!(rename["SYSCALL"]["items"], 4);
}

#[test]
fn long_execve_split_over_records() {
    let evs = golden("execve-long");
    assert_eq!(evs.len(), 1);
    let argv = evs[0]["EXECVE"]["ARGV"].as_array().unwrap();
    assert_eq!(evs[0]["EXECVE"]["argc"], 2);
    assert_eq!(argv.len(), 2);
    assert_eq!(argv[0], "/bin/echo");
    // The argument as the kernel split it, decoded piece by piece.
    let input = std::fs::read(golden_dir().join("execve-long/input.log")).unwrap();
    let mut want = Vec::new();
    for l in lines(&input) {
        for f in l.split(|&b| b == b' ') {
            if let Some(hex) = f
                .strip_prefix(b"a1[")
                .and_then(|r| r.splitn(2, |&b| b == b'=').nth(1))
            {
                decode_hex(hex, &mut want);
            }
        }
    }
    assert_eq!(2 * want.len(), 24786, "a1_len counts hex digits");
    assert_eq!(bytes(&argv[1]), want);
    assert!(argv[1].as_str().unwrap().starts_with("word1 word2 "));
}

#[test]
fn execve_with_3001_arguments() {
    let evs = golden("execve-argc3001");
    let e = &evs[0]["EXECVE"];
    assert_eq!(e["argc"], 3001);
    let argv = e["ARGV"].as_array().unwrap();
    assert_eq!(argv.len(), 3001);
    assert_eq!(argv[0], "/bin/true");
    for (i, a) in argv.iter().enumerate().skip(1) {
        assert_eq!(a.as_str(), Some(i.to_string().as_str()));
    }
}

#[test]
fn user_messages_with_nested_quotes() {
    let evs = golden("user-nested-quotes");
    assert_eq!(evs.len(), 3);
    let m = &evs[0]["USER"]["msg"];
    assert_eq!(
        m["text"],
        "round 1: it's a \"quoted\" message with 'nested' quotes"
    );
    assert_eq!(m["exe"], "/usr/sbin/auditctl");
    assert_eq!(m["res"], "success");
    assert_eq!(evs[0]["USER"]["AUID"], "nobody");
    let m = &evs[1]["USER"]["msg"];
    assert_eq!(
        m["text"],
        "msg='inner' and \"double\" quotes, ending in a lone quote'"
    );
    assert_eq!(m["res"], "success");
    // Free text without key=value stays one string, tab and UTF-8 included.
    assert_eq!(
        evs[2]["USER"]["msg"],
        "round 1: free text with 'single' and \"double\" quotes, ünïcødé, tab\tend"
    );
}

#[test]
fn bytes_that_are_not_utf8() {
    let evs = golden("non-utf8");
    assert_eq!(evs.len(), 4);
    let names: Vec<Vec<u8>> = evs[0]["PATH"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str().map(unescape))
        .collect();
    assert!(names.iter().any(|n| n == b"\xff\xfe-not-utf8"), "{names:?}");
    let text = serde_json::to_string(&evs[0]).unwrap();
    assert!(text.contains("%FF%FE-not-utf8"), "{text}");
    // An argument and a command line holding the bytes.
    let argv = evs[1]["EXECVE"]["ARGV"].as_array().unwrap();
    assert_eq!(bytes(&argv[1]), b"\xff\xfe-not-utf8");
    let title = evs[2]["PROCTITLE"]["ARGV"].as_array().unwrap();
    assert_eq!(bytes(&title[2]), b"\xff\xfe-not-utf8.renamed");
    // The kernel cut this command line mid-character: the torn bytes are
    // escaped, the whole characters before them kept.
    let title = evs[3]["PROCTITLE"]["ARGV"].as_array().unwrap();
    let last = title.last().unwrap().as_str().unwrap();
    assert!(last.starts_with("üüü"), "{last}");
    assert!(last.ends_with("%C3"), "{last}");
}

/// The text between `msg=audit(` and `)` of a record: its event id.
fn audit_id(record: &[u8]) -> &str {
    let text = std::str::from_utf8(record).expect("record header is ASCII");
    let start = text.find("msg=audit(").expect("msg=audit(") + "msg=audit(".len();
    let len = text[start..].find(')').expect("closing ')'");
    &text[start..start + len]
}

/// Converts one record-type pair (`tests/golden/types/TYPE`): each line of
/// `input.log`, a record of type TYPE, becomes one line of JSON in records
/// mode; the result must equal `expected.jsonl` (`AUDISP_BLESS=1` rewrites
/// it). Whatever was blessed, each object must carry the record's id, its
/// node (if any) and its fields under the key TYPE.
fn record_type_pair(w: &mut JsonWriter, dir: &Path, rtype: &str) -> Result<(), String> {
    let input = std::fs::read(dir.join("input.log")).map_err(|e| format!("{rtype}: {e}"))?;
    let recs = lines(&input);
    if recs.is_empty() {
        return Err(format!("{rtype}: input.log holds no record"));
    }
    let mut got = Vec::new();
    for (i, r) in recs.iter().enumerate() {
        let parsed = record::parse(r).ok_or_else(|| format!("{rtype}:{}: no header", i + 1))?;
        let named = audisp::record_types::display(parsed.rtype);
        if named != rtype {
            return Err(format!("{rtype}:{}: a {named} record", i + 1));
        }
        let start = got.len();
        w.write_record(r, &mut got);
        let v: Value = serde_json::from_slice(&got[start..])
            .map_err(|e| format!("{rtype}:{}: not JSON ({e})", i + 1))?;
        let node = parsed.node.map(|n| String::from_utf8_lossy(n).into_owned());
        let checks = [
            ("ID", v["ID"].as_str() == Some(audit_id(r))),
            ("NODE", v["NODE"].as_str().map(str::to_owned) == node),
            (rtype, v[rtype].is_object() || v[rtype].is_array()),
        ];
        if let Some((key, _)) = checks.iter().find(|(_, ok)| !ok) {
            return Err(format!("{rtype}:{}: wrong or missing {key} in {v}", i + 1));
        }
        got.push(b'\n');
    }
    let expected = support::expected_output(&dir.join("expected.jsonl"), &got);
    let (got, expected) = (
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&expected),
    );
    match got.lines().zip(expected.lines()).position(|(g, e)| g != e) {
        Some(i) => Err(format!(
            "{rtype}:{}: differs from the golden file\n--- expected\n{}\n--- got\n{}",
            i + 1,
            expected.lines().nth(i).unwrap_or(""),
            got.lines().nth(i).unwrap_or("")
        )),
        None if got.lines().count() != expected.lines().count() => Err(format!(
            "{rtype}: {} lines, the golden file has {}",
            got.lines().count(),
            expected.lines().count()
        )),
        None => Ok(()),
    }
}

/// Every directory under `tests/golden/types/` is a record type's golden
/// pair (see tests/golden/README.md): a new one runs without new code. All
/// pairs run; the failures are listed together.
#[test]
fn every_record_type_pair_converts_to_its_golden_json() {
    let dir = golden_dir().join("types");
    let mut types: Vec<String> = std::fs::read_dir(&dir)
        .expect("tests/golden/types")
        .map(|e| e.expect("directory entry"))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().into_string().expect("a type name"))
        .collect();
    types.sort();
    // The 32 types there were when the pairs were made; fewer means the
    // walk lost some.
    assert!(types.len() >= 32, "only {} types: {types:?}", types.len());
    let mut w = JsonWriter::new();
    let failures: Vec<String> = types
        .iter()
        .filter_map(|t| record_type_pair(&mut w, &dir.join(t), t).err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} record types failed:\n\n{}",
        failures.len(),
        types.len(),
        failures.join("\n\n")
    );
}

/// The whole real corpus: one valid JSON object per event, every record
/// accounted for, every split argument rejoined to the length the kernel
/// announced.
#[test]
fn whole_corpus_converts_completely() {
    let data = corpus();
    let recs = lines(&data);
    let evs = events(&recs);
    let mut w = JsonWriter::new();
    let (mut records_in, mut records_out) = (0usize, 0usize);
    let mut split_args = 0;
    for ev in &evs {
        let out = convert(&mut w, ev);
        let text = std::str::from_utf8(&out).expect("UTF-8");
        let v: Value = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("{e}: {}", &text[..text.len().min(300)]));
        let obj = v.as_object().unwrap();
        let mut execve_records = 0;
        for l in ev {
            let t = record::parse(l).map(|r| r.rtype);
            if t == Some(1320) {
                continue;
            }
            records_in += 1;
            if t == Some(1309) {
                execve_records += 1;
            }
        }
        for (k, val) in obj {
            match (k.as_str(), val) {
                ("ID" | "NODE", _) => {}
                ("EXECVE", e) => {
                    records_out += execve_records;
                    let argv = e["ARGV"].as_array().expect("ARGV");
                    assert_eq!(Some(argv.len() as u64), e["argc"].as_u64(), "{text:.300}");
                    assert!(argv.iter().all(Value::is_string), "{text:.300}");
                    // Every split argument equals its pieces, decoded and
                    // joined independently here, and has the length aN_len=
                    // announced (counted in hex digits when hex-encoded).
                    for (n, (len, pieces, hex)) in split_pieces(ev) {
                        let arg = bytes(&argv[n]);
                        assert_eq!(arg, pieces, "argument {n} of {text:.200}");
                        assert_eq!(len, if hex { 2 * arg.len() } else { arg.len() });
                        split_args += 1;
                    }
                }
                (_, Value::Array(a)) => records_out += a.len(),
                (_, Value::Object(_)) => records_out += 1,
                (k, other) => panic!("{k}: unexpected {other}"),
            }
        }
    }
    assert_eq!(records_in, records_out, "records in == records out");
    assert!(split_args >= 40, "only {split_args} split arguments seen");
    assert!(evs.len() > 10_000);
}

/// Records mode: each record alone is one valid object keyed by its type.
#[test]
fn sample_records_convert_one_by_one() {
    let data = support::dispatcher::sample();
    let mut w = JsonWriter::new();
    for l in lines(&data) {
        let mut out = Vec::new();
        w.write_record(l, &mut out);
        let v: Value = serde_json::from_slice(&out).expect("valid JSON");
        let name = record::parse(l).map(|r| audisp::record_types::display(r.rtype));
        if let Some(name) = name {
            assert!(v.get(name.as_ref()).is_some(), "{v}");
        }
    }
}

/// The split arguments of an event's EXECVE records: argument index →
/// (aN_len, the pieces decoded and joined, whether they were hex).
fn split_pieces(ev: &[&[u8]]) -> BTreeMap<usize, (usize, Vec<u8>, bool)> {
    let mut out: BTreeMap<usize, (usize, Vec<u8>, bool)> = BTreeMap::new();
    for l in ev {
        if record::parse(l).map(|r| r.rtype) != Some(1309) {
            continue;
        }
        for f in l.split(|&b| b == b' ') {
            let Some(rest) = f.strip_prefix(b"a") else {
                continue;
            };
            let Some(eq) = rest.iter().position(|&b| b == b'=') else {
                continue;
            };
            let (k, v) = (&rest[..eq], &rest[eq + 1..]);
            if let Some(n) = k.strip_suffix(b"_len") {
                let n: usize = std::str::from_utf8(n).unwrap().parse().unwrap();
                out.entry(n).or_default().0 = std::str::from_utf8(v).unwrap().parse().unwrap();
            } else if let Some(open) = k.iter().position(|&b| b == b'[') {
                let n: usize = std::str::from_utf8(&k[..open]).unwrap().parse().unwrap();
                let e = out.entry(n).or_default();
                match v.strip_prefix(b"\"").and_then(|v| v.strip_suffix(b"\"")) {
                    Some(q) => e.1.extend_from_slice(q),
                    None => {
                        decode_hex(v, &mut e.1);
                        e.2 = true;
                    }
                }
            }
        }
    }
    out
}
