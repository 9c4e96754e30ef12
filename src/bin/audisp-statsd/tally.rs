//! What auditd's `audisp-statsd` counts per event, counted from the events
//! audispd hands this plugin: every event, the failed ones, AVC denials,
//! fanotify decisions, successful and failed logins, anomalies and
//! responses to anomalies.
//!
//! An event's outcome is that of its first record with a `success=` field
//! (the kernel's `SYSCALL`) or a `res=` field (user-space messages, also
//! inside their `msg='…'`): `no`, `failed` and `0` are failures. Values end
//! at a space, a quote or the 0x1d before auditd's enriched fields. A kind is
//! counted once per event that holds a record of it.

use audisp::record_types::AVC;

/// `AUDIT_USER_LOGIN`.
const USER_LOGIN: u32 = 1112;
/// `AUDIT_FANOTIFY`.
const FANOTIFY: u32 = 1331;
/// `AUDIT_FIRST_ANOM_MSG` ..= `AUDIT_LAST_ANOM_MSG`.
const ANOM_FIRST: u32 = 1700;
const ANOM_LAST: u32 = 1799;
/// `AUDIT_FIRST_ANOM_RESP` ..= `AUDIT_LAST_ANOM_RESP`.
const RESP_FIRST: u32 = 1800;
const RESP_LAST: u32 = 1899;

/// Counts since the last report.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EventCounts {
    /// Events.
    pub total: u64,
    /// Events whose outcome is a failure.
    pub failed: u64,
    /// Events with an AVC record.
    pub avc: u64,
    /// Events with a FANOTIFY record.
    pub fanotify: u64,
    /// USER_LOGIN events that succeeded.
    pub logins_success: u64,
    /// USER_LOGIN events that failed.
    pub logins_failed: u64,
    /// Events with an anomaly record (ANOM_*, 1700–1799).
    pub anomaly: u64,
    /// Events with a response-to-anomaly record (RESP_*, 1800–1899).
    pub response: u64,
}

/// The value of the field `key=` in a record's text, where it starts a
/// field (after a space or the quote that opens `msg='…'`).
fn field<'t>(text: &'t [u8], key: &[u8]) -> Option<&'t [u8]> {
    let mut from = 0;
    while let Some(i) = memchr::memmem::find(&text[from..], key) {
        let at = from + i;
        let after = at + key.len();
        let starts_field = at == 0 || matches!(text[at - 1], b' ' | b'\'');
        if starts_field && text.get(after) == Some(&b'=') {
            let value = &text[after + 1..];
            let end = value
                .iter()
                .position(|&b| matches!(b, b' ' | b'\'' | b'"' | 0x1d))
                .unwrap_or(value.len());
            return Some(&value[..end]);
        }
        from = after;
    }
    None
}

/// The outcome a record states, if it states one: `Some(true)` success.
fn outcome(text: &[u8]) -> Option<bool> {
    let v = field(text, b"success").or_else(|| field(text, b"res"))?;
    Some(!matches!(v, b"no" | b"failed" | b"0"))
}

impl EventCounts {
    /// Counts one event, given its records as (type, text).
    pub fn count<'t>(&mut self, records: impl IntoIterator<Item = (u32, &'t [u8])>) {
        let mut ok = None;
        let (mut avc, mut fanotify, mut anomaly, mut response, mut login) =
            (false, false, false, false, false);
        for (rtype, text) in records {
            if ok.is_none() {
                ok = outcome(text);
            }
            match rtype {
                AVC => avc = true,
                FANOTIFY => fanotify = true,
                USER_LOGIN => login = true,
                ANOM_FIRST..=ANOM_LAST => anomaly = true,
                RESP_FIRST..=RESP_LAST => response = true,
                _ => {}
            }
        }
        self.total += 1;
        self.failed += u64::from(ok == Some(false));
        self.avc += u64::from(avc);
        self.fanotify += u64::from(fanotify);
        self.anomaly += u64::from(anomaly);
        self.response += u64::from(response);
        if login {
            match ok {
                Some(true) => self.logins_success += 1,
                Some(false) => self.logins_failed += 1,
                None => {}
            }
        }
    }

    /// The counts as statsd counters, named as auditd's `audisp-statsd`
    /// names them.
    pub fn named(&self) -> [(&'static str, u64); 8] {
        [
            ("events.total_count", self.total),
            ("events.total_failed", self.failed),
            ("events.avc_count", self.avc),
            ("events.fanotify_count", self.fanotify),
            ("events.logins_success", self.logins_success),
            ("events.logins_failed", self.logins_failed),
            ("events.anomaly_count", self.anomaly),
            ("events.response_count", self.response),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counted(events: &[&[(u32, &str)]]) -> EventCounts {
        let mut c = EventCounts::default();
        for ev in events {
            c.count(ev.iter().map(|(t, s)| (*t, s.as_bytes())));
        }
        c
    }

    #[test]
    fn fields_start_after_a_space_or_the_msg_quote() {
        let t = b"type=USER_LOGIN msg=audit(1.0:2): pid=1 uid=0 msg='op=login acct=\"res=no\" exe=\"/usr/sbin/sshd\" res=failed'";
        assert_eq!(field(t, b"res"), Some(&b"failed"[..]));
        assert_eq!(field(b"msg='res=success'", b"res"), Some(&b"success"[..]));
        assert_eq!(field(b"xres=1 ares=2", b"res"), None);
        assert_eq!(
            field(b"a=1 success=no exit=-13", b"success"),
            Some(&b"no"[..])
        );
        // auditd's enriched format: the interpreted fields follow a 0x1d.
        assert_eq!(
            field(b"sig=11 res=0\x1dAUID=\"root\"", b"res"),
            Some(&b"0"[..])
        );
    }

    #[test]
    fn events_are_counted_by_kind_and_outcome() {
        let c = counted(&[
            // A denied syscall: AVC first, then SYSCALL with success=no.
            &[
                (
                    AVC,
                    "type=AVC msg=audit(1.0:1): avc:  denied  { read } permissive=0",
                ),
                (
                    1300,
                    "type=SYSCALL msg=audit(1.0:1): arch=c000003e syscall=2 success=no exit=-13",
                ),
                (1327, "type=PROCTITLE msg=audit(1.0:1): proctitle=636174"),
            ],
            &[(
                USER_LOGIN,
                "type=USER_LOGIN msg=audit(1.0:2): pid=1 msg='op=login id=0 res=success'",
            )],
            &[(
                USER_LOGIN,
                "type=USER_LOGIN msg=audit(1.0:3): pid=1 msg='op=login acct=\"x\" res=failed'",
            )],
            &[(
                1701,
                "type=ANOM_ABEND msg=audit(1.0:4): auid=0 pid=5 sig=11 res=1",
            )],
            &[(1800, "type=RESP_ANOMALY msg=audit(1.0:5): op=x res=1")],
            &[
                (FANOTIFY, "type=FANOTIFY msg=audit(1.0:6): resp=2"),
                (1300, "type=SYSCALL msg=audit(1.0:6): success=yes"),
            ],
            &[(
                1305,
                "type=CONFIG_CHANGE msg=audit(1.0:7): op=add_rule res=0",
            )],
            &[(1112 + 1000, "type=UNKNOWN msg=audit(1.0:8): nothing")],
        ]);
        assert_eq!(
            c,
            EventCounts {
                total: 8,
                failed: 3,
                avc: 1,
                fanotify: 1,
                logins_success: 1,
                logins_failed: 1,
                anomaly: 1,
                response: 1,
            }
        );
        assert_eq!(c.named()[0], ("events.total_count", 8));
    }
}
