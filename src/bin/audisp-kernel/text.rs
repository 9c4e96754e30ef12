//! A kernel audit message as the line auditd writes for it, so that plugins
//! fed by `audisp-kernel` see byte for byte what auditd's `log_format = RAW`
//! (and the part of an ENRICHED line before its 0x1D) would have given them.
//!
//! auditd 3.0.9 and 4.x build that line the same way (`format_raw`): `type=`
//! the type's name (`UNKNOWN[n]` when it has none), ` msg=` and the message
//! text as the kernel sent it, up to its length or a NUL; then every newline
//! becomes a space, one trailing space is cut (the kernel's EOE text ends in
//! one), and the whole is cut at 8937 bytes. With a node name configured the
//! line starts `node=NAME `.

use audisp::record_types;

/// Longest line auditd formats (`MAX_AUDIT_MESSAGE_LENGTH - 32`, less the
/// terminating NUL of its `snprintf`).
const MAX_LINE: usize = 8970 - 32 - 1;

/// Which kernel messages are records. Below 1100 are requests and replies
/// (`AUDIT_GET`, rules…) and netlink's own control messages, except the two
/// oldest record types, `USER` (1005) and `LOGIN` (1006); 1200–1299 are
/// auditd's own records, which the kernel never emits; `AUDIT_REPLACE` is the
/// kernel asking the registered daemon whether it still lives. auditd skips
/// the same ones.
pub fn is_record(rtype: u16) -> bool {
    const USER: u16 = 1005;
    const LOGIN: u16 = 1006;
    const REPLACE: u16 = 1329;
    rtype == USER
        || rtype == LOGIN
        || (rtype >= 1100 && !(1200..1300).contains(&rtype) && rtype != REPLACE)
}

/// Appends the line for a kernel message of type `rtype` whose payload (the
/// bytes after the netlink header) is `payload` to `out`.
pub fn format(out: &mut Vec<u8>, node: Option<&str>, rtype: u16, payload: &[u8]) {
    let start = out.len();
    if let Some(node) = node {
        out.extend_from_slice(b"node=");
        out.extend_from_slice(node.as_bytes());
        out.push(b' ');
    }
    out.extend_from_slice(b"type=");
    out.extend_from_slice(record_types::display(u32::from(rtype)).as_bytes());
    out.extend_from_slice(b" msg=");
    let text = match memchr::memchr(0, payload) {
        Some(nul) => &payload[..nul],
        None => payload,
    };
    let body = out.len();
    out.extend_from_slice(text);
    out.truncate(start + MAX_LINE.min(out.len() - start));
    for b in &mut out[body..] {
        if *b == b'\n' {
            *b = b' ';
        }
    }
    if out.len() > start && out.last() == Some(&b' ') {
        out.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(node: Option<&str>, rtype: u16, payload: &[u8]) -> String {
        let mut out = Vec::new();
        format(&mut out, node, rtype, payload);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_record_reads_as_auditd_writes_it() {
        assert_eq!(
            line(
                None,
                1300,
                b"audit(1796590324.277:3): arch=c000003e syscall=1"
            ),
            "type=SYSCALL msg=audit(1796590324.277:3): arch=c000003e syscall=1"
        );
        assert_eq!(
            line(Some("web1"), 1327, b"audit(1.002:3): proctitle=6C73"),
            "node=web1 type=PROCTITLE msg=audit(1.002:3): proctitle=6C73"
        );
    }

    #[test]
    fn eoe_loses_its_trailing_space_and_unknown_types_are_numbered() {
        assert_eq!(
            line(None, 1320, b"audit(1796590324.265:2): "),
            "type=EOE msg=audit(1796590324.265:2):"
        );
        assert_eq!(
            line(None, 1999, b"audit(1.000:1): x=1"),
            "type=UNKNOWN[1999] msg=audit(1.000:1): x=1"
        );
    }

    #[test]
    fn newlines_become_spaces_and_a_nul_ends_the_text() {
        assert_eq!(
            line(None, 1107, b"audit(1.000:9): msg='a\nb'\0garbage"),
            "type=USER_AVC msg=audit(1.000:9): msg='a b'"
        );
    }

    #[test]
    fn long_text_is_cut_where_auditd_cuts_it() {
        let payload = vec![b'a'; 9000];
        let l = line(None, 1309, &payload);
        assert_eq!(l.len(), MAX_LINE);
        assert!(l.starts_with("type=EXECVE msg=aaa"));
    }

    #[test]
    fn only_records_are_records() {
        for t in [
            2u16, 3, 1000, 1001, 1004, 1007, 1011, 1099, 1200, 1299, 1329,
        ] {
            assert!(!is_record(t), "{t}");
        }
        for t in [
            1005u16, 1006, 1100, 1112, 1300, 1320, 1324, 1335, 1400, 1700, 2100,
        ] {
            assert!(is_record(t), "{t}");
        }
    }
}
