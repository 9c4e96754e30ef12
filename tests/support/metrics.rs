//! A metrics exposition read by a real parser: prometheus_client's (Debian
//! `python3-prometheus-client`), through `metrics-parse.py`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// The Python that has prometheus_client (the distribution's).
pub const PYTHON: &str = "/usr/bin/python3";

/// Why the parser cannot run here, if it cannot.
pub fn missing_parser() -> Option<String> {
    let ok = Command::new(PYTHON)
        .args(["-c", "import prometheus_client.openmetrics.parser"])
        .status()
        .is_ok_and(|s| s.success());
    (!ok).then(|| "prometheus_client missing (apt-get install python3-prometheus-client)".into())
}

/// One metric sample: its name and labels.
pub type Key = (String, BTreeMap<String, String>);

/// What the parser made of an exposition: every sample's value, and the
/// families (name, type, help).
pub struct Parsed {
    /// Every sample: (name, labels) to value.
    pub samples: BTreeMap<Key, f64>,
    /// Every family: (name, type, help).
    pub families: Vec<(String, String, String)>,
}

impl Parsed {
    /// The value of sample `name` with exactly `labels`; panics if absent.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let key = (
            name.to_string(),
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        *self
            .samples
            .get(&key)
            .unwrap_or_else(|| panic!("no sample {key:?}"))
    }
}

/// Parses `text` with prometheus_client (`format`: "text" or
/// "openmetrics"); a parse error fails the test.
pub fn parse(text: &str, format: &str) -> Parsed {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/metrics-parse.py");
    let mut child = Command::new(PYTHON)
        .arg(script)
        .arg(format)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the {format} parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let families: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut samples = BTreeMap::new();
    let mut names = Vec::new();
    for f in &families {
        names.push((
            f["name"].as_str().unwrap().to_string(),
            f["type"].as_str().unwrap().to_string(),
            f["help"].as_str().unwrap().to_string(),
        ));
        for s in f["samples"].as_array().unwrap() {
            let labels = s["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            let key = (s["name"].as_str().unwrap().to_string(), labels);
            assert!(
                samples
                    .insert(key.clone(), s["value"].as_f64().unwrap())
                    .is_none(),
                "sample {key:?} twice"
            );
        }
    }
    Parsed {
        samples,
        families: names,
    }
}
