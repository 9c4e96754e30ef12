//! What a denial notifier needs from an event holding a kernel `AVC`
//! record: the contexts, class and permissions (which also identify a
//! denial for de-duplication), plus the process and object it concerned.

use crate::record;
use crate::record_types;

/// `AUDIT_AVC_PATH`: the path of an AVC's object, from older kernels.
const AVC_PATH: u32 = 1402;

/// One AVC decision, read from an event's first `AVC` record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Denial {
    /// `denied` or `granted`.
    pub result: String,
    /// The subject's context (`scontext=`).
    pub scontext: String,
    /// The object's context (`tcontext=`).
    pub tcontext: String,
    /// The object class (`tclass=`).
    pub tclass: String,
    /// The permissions between `{` and `}`.
    pub perms: Vec<String>,
    /// `comm=` of the AVC record.
    pub comm: String,
    /// `exe=` of the event's SYSCALL record, if any.
    pub exe: String,
    /// `path=` or `name=` of the AVC record (else of an `AVC_PATH`).
    pub path: String,
    /// `pid=` (0 if absent).
    pub pid: u32,
    /// The `node=` prefix, if any.
    pub node: String,
}

/// The key identical denials share: (scontext, tcontext, tclass, perms).
pub type Key = (String, String, String, Vec<String>);

impl Denial {
    /// The de-duplication key.
    pub fn key(&self) -> Key {
        (
            self.scontext.clone(),
            self.tcontext.clone(),
            self.tclass.clone(),
            self.perms.clone(),
        )
    }

    /// Whether the subject or object runs as (is labelled) `type_`.
    pub fn involves_type(&self, type_: &str) -> bool {
        context_type(&self.scontext) == Some(type_) || context_type(&self.tcontext) == Some(type_)
    }
}

/// The type of an SELinux context `user:role:type[:level]`.
pub fn context_type(context: &str) -> Option<&str> {
    context.split(':').nth(2)
}

/// `key=value` pairs of a record body (values unquoted; `{ … }` skipped).
fn pairs(body: &str) -> impl Iterator<Item = (&str, &str)> {
    body.split_ascii_whitespace().filter_map(|tok| {
        let (k, v) = tok.split_once('=')?;
        Some((k, v.trim_matches('"')))
    })
}

/// Reads the denial of an event given as `(type, text)` records; `None`
/// when no record is a kernel AVC.
pub fn parse<'a>(records: impl IntoIterator<Item = (u32, &'a [u8])>) -> Option<Denial> {
    let mut avc: Option<Denial> = None;
    let mut exe = String::new();
    let mut avc_path = String::new();
    for (rtype, text) in records {
        let text = String::from_utf8_lossy(text);
        let (raw, _) = record::split_enrichment(text.as_bytes());
        let raw = String::from_utf8_lossy(raw);
        let body = record::body(raw.as_bytes())
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        match rtype {
            record_types::AVC if avc.is_none() => {
                let mut d = Denial {
                    node: record::parse(raw.as_bytes())
                        .and_then(|i| i.node)
                        .map(|n| String::from_utf8_lossy(n).into_owned())
                        .unwrap_or_default(),
                    ..Denial::default()
                };
                let rest = body.trim_start().strip_prefix("avc:").unwrap_or(&body);
                let mut words = rest.split_ascii_whitespace();
                d.result = words.next().unwrap_or_default().to_string();
                if let (Some(open), Some(close)) = (rest.find('{'), rest.find('}')) {
                    if open < close {
                        d.perms = rest[open + 1..close]
                            .split_ascii_whitespace()
                            .map(str::to_string)
                            .collect();
                    }
                }
                for (k, v) in pairs(&body) {
                    match k {
                        "scontext" => d.scontext = v.to_string(),
                        "tcontext" => d.tcontext = v.to_string(),
                        "tclass" => d.tclass = v.to_string(),
                        "comm" => d.comm = v.to_string(),
                        "path" => d.path = v.to_string(),
                        "name" if d.path.is_empty() => d.path = v.to_string(),
                        "pid" => d.pid = v.parse().unwrap_or(0),
                        _ => {}
                    }
                }
                avc = Some(d);
            }
            record_types::SYSCALL => {
                if let Some((_, v)) = pairs(&body).find(|(k, _)| *k == "exe") {
                    exe = v.to_string();
                }
            }
            AVC_PATH => {
                if let Some((_, v)) = pairs(&body).find(|(k, _)| *k == "path") {
                    avc_path = v.to_string();
                }
            }
            _ => {}
        }
    }
    let mut d = avc?;
    d.exe = exe;
    if d.path.is_empty() {
        d.path = avc_path;
    }
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_real_denial() {
        let avc = b"node=bill.example.com type=AVC msg=audit(1166045975.667:1128): avc:  denied  { execmod } for  pid=15895 comm=\"soffice.bin\" name=\"libGL.so.1.2\" dev=dm-0 ino=13355653 scontext=unconfined_u:unconfined_r:unconfined_execmem_t:s0 tcontext=unconfined_u:object_r:lib_t:s0 tclass=file";
        let sys = b"node=bill.example.com type=SYSCALL msg=audit(1166045975.667:1128): arch=40000003 syscall=125 success=yes exit=0 comm=\"soffice.bin\" exe=\"/usr/lib/soffice.bin\" key=(null)";
        let d = parse([
            (record_types::SYSCALL, &sys[..]),
            (record_types::AVC, &avc[..]),
        ])
        .unwrap();
        assert_eq!(d.result, "denied");
        assert_eq!(d.perms, ["execmod"]);
        assert_eq!(
            d.scontext,
            "unconfined_u:unconfined_r:unconfined_execmem_t:s0"
        );
        assert_eq!(d.tcontext, "unconfined_u:object_r:lib_t:s0");
        assert_eq!(d.tclass, "file");
        assert_eq!(d.comm, "soffice.bin");
        assert_eq!(d.exe, "/usr/lib/soffice.bin");
        assert_eq!(d.path, "libGL.so.1.2");
        assert_eq!(d.pid, 15895);
        assert_eq!(d.node, "bill.example.com");
        assert!(d.involves_type("lib_t"));
        assert!(!d.involves_type("setroubleshootd_t"));
    }

    #[test]
    fn no_avc_no_denial() {
        let sys = b"type=SYSCALL msg=audit(1.000:1): exe=\"/bin/true\"";
        assert_eq!(parse([(record_types::SYSCALL, &sys[..])]), None);
    }
}
