//! What waits for the next digest, and when the last mail went, kept in a
//! file (`STATE_DIR/pending.json`) that is written and synced before the
//! batch that changed it is acknowledged: an event that went into a digest
//! is in that file or in a sent mail, whatever stops the plugin, and a
//! plugin that restarts in a loop does not mail more often than allowed.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

/// The digest in waiting and the rate limit's memory.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pending {
    /// When the last mail was sent (seconds since the epoch).
    pub last_mail: Option<u64>,
    /// When the first event now waiting was taken.
    pub first: Option<u64>,
    /// One line per waiting event, up to the listing limit.
    pub lines: Vec<String>,
    /// Waiting events beyond the limit (counted, not listed).
    pub more: u64,
    /// Waiting events by the type of their first record.
    pub by_type: BTreeMap<String, u64>,
    /// Time of the first and of the last waiting event.
    pub span: Option<(String, String)>,
}

/// What one digest mail covered, to take off [`Pending`] once it is sent
/// (events that arrived meanwhile stay).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Covered {
    lines: usize,
    more: u64,
    by_type: BTreeMap<String, u64>,
}

impl Pending {
    /// Events waiting.
    pub fn count(&self) -> u64 {
        self.lines.len() as u64 + self.more
    }

    /// Adds an event: its digest `line` (listed while fewer than `max` are),
    /// the type of its first record, its time; taken at `now`.
    pub fn add(&mut self, line: String, kind: &str, time: String, now: u64, max: usize) {
        if self.count() == 0 {
            self.first = Some(now);
        }
        if self.lines.len() < max {
            self.lines.push(line);
        } else {
            self.more += 1;
        }
        *self.by_type.entry(kind.to_string()).or_default() += 1;
        match &mut self.span {
            Some((_, last)) => *last = time,
            None => self.span = Some((time.clone(), time)),
        }
    }

    /// What a digest sent now covers.
    pub fn covered(&self) -> Covered {
        Covered {
            lines: self.lines.len(),
            more: self.more,
            by_type: self.by_type.clone(),
        }
    }

    /// Takes what a sent (or dropped) digest covered off, at `now`.
    pub fn settle(&mut self, c: &Covered, now: u64) {
        self.lines.drain(..c.lines.min(self.lines.len()));
        self.more -= c.more.min(self.more);
        for (k, n) in &c.by_type {
            if let Some(v) = self.by_type.get_mut(k) {
                *v -= (*n).min(*v);
                if *v == 0 {
                    self.by_type.remove(k);
                }
            }
        }
        self.last_mail = Some(now);
        if self.count() == 0 {
            self.first = None;
            self.span = None;
        } else {
            self.first = Some(now);
            if let Some((first, last)) = &mut self.span {
                first.clone_from(last);
            }
        }
    }

    /// `AVC 3, USER_LOGIN 2`.
    pub fn types(&self) -> String {
        let parts: Vec<String> = self
            .by_type
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        parts.join(", ")
    }

    fn to_json(&self) -> Value {
        json!({
            "last_mail": self.last_mail,
            "first": self.first,
            "lines": self.lines,
            "more": self.more,
            "by_type": self.by_type,
            "span": self.span.as_ref().map(|(a, b)| vec![a, b]),
        })
    }

    fn from_json(v: &Value) -> Option<Pending> {
        let span = match &v["span"] {
            Value::Null => None,
            Value::Array(a) if a.len() == 2 => {
                Some((a[0].as_str()?.to_string(), a[1].as_str()?.to_string()))
            }
            _ => return None,
        };
        let mut by_type = BTreeMap::new();
        for (k, n) in v["by_type"].as_object()? {
            by_type.insert(k.clone(), n.as_u64()?);
        }
        Some(Pending {
            last_mail: v["last_mail"].as_u64(),
            first: v["first"].as_u64(),
            lines: v["lines"]
                .as_array()?
                .iter()
                .map(|l| l.as_str().map(str::to_string))
                .collect::<Option<_>>()?,
            more: v["more"].as_u64()?,
            by_type,
            span,
        })
    }
}

/// [`Pending`] in its file.
pub struct Store {
    path: PathBuf,
}

impl Store {
    /// The file in `dir` (created if need be, owner-only).
    pub fn open(dir: &Path) -> Result<Store, String> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("state directory {}: {e}", dir.display()))?;
        Ok(Store {
            path: dir.join("pending.json"),
        })
    }

    /// What the file holds (nothing waits if there is no file). A damaged
    /// file is an error, not a silent loss.
    pub fn load(&self) -> Result<Pending, String> {
        let text = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Pending::default()),
            Err(e) => return Err(format!("{}: {e}", self.path.display())),
        };
        serde_json::from_slice::<Value>(&text)
            .ok()
            .as_ref()
            .and_then(Pending::from_json)
            .ok_or_else(|| {
                format!(
                    "{} is damaged; move it away to start without the digest it held",
                    self.path.display()
                )
            })
    }

    /// Replaces the file with `p`, durably (write, fsync, rename, fsync
    /// the directory).
    pub fn save(&self, p: &Pending) -> Result<(), String> {
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = self.path.with_extension("json.tmp");
        let err = |e: std::io::Error| format!("{}: {e}", self.path.display());
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err)?;
        f.write_all(p.to_json().to_string().as_bytes())
            .map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &self.path).map_err(err)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(err)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_listed_up_to_the_limit_then_counted() {
        let mut p = Pending::default();
        for i in 0..5 {
            p.add(
                format!("e{i}"),
                if i < 3 { "AVC" } else { "USER_LOGIN" },
                format!("t{i}"),
                100 + i,
                3,
            );
        }
        assert_eq!(p.count(), 5);
        assert_eq!(p.lines, ["e0", "e1", "e2"]);
        assert_eq!(p.more, 2);
        assert_eq!(p.types(), "AVC 3, USER_LOGIN 2");
        assert_eq!(p.first, Some(100));
        assert_eq!(p.span, Some(("t0".into(), "t4".into())));
    }

    #[test]
    fn a_sent_digest_keeps_what_arrived_meanwhile() {
        let mut p = Pending::default();
        p.add("a".into(), "AVC", "t1".into(), 10, 10);
        let c = p.covered();
        p.add("b".into(), "AVC", "t2".into(), 11, 10);
        p.settle(&c, 20);
        assert_eq!(p.lines, ["b"]);
        assert_eq!(p.types(), "AVC 1");
        assert_eq!(p.last_mail, Some(20));
        let c = p.covered();
        p.settle(&c, 30);
        assert_eq!(p.count(), 0);
        assert_eq!((p.first, p.span.clone()), (None, None));
    }

    #[test]
    fn the_file_round_trips_and_damage_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("state")).unwrap();
        assert_eq!(s.load().unwrap(), Pending::default());
        let mut p = Pending {
            last_mail: Some(7),
            ..Pending::default()
        };
        p.add("x \"quoted\"".into(), "AVC", "t".into(), 9, 10);
        s.save(&p).unwrap();
        assert_eq!(s.load().unwrap(), p);
        std::fs::write(dir.path().join("state/pending.json"), "{").unwrap();
        assert!(s.load().unwrap_err().contains("is damaged"));
    }
}
