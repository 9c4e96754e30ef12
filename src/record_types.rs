//! Audit record type numbers and names.
//!
//! auditd's string format names every record type (`type=SYSCALL`), its binary
//! format and protocol V0 carry only the number. This table maps between the two
//! for every type auditd's own table knows; any other number is written
//! `UNKNOWN[n]`, exactly as auditd writes it.

use std::borrow::Cow;

/// `AUDIT_USER`: a free-form user-space message, a single-record event.
pub const USER: u32 = 1005;
/// `AUDIT_LOGIN`: a login uid change, a single-record event.
pub const LOGIN: u32 = 1006;
/// `AUDIT_USER_AVC`: a user-space object manager's SELinux decision.
pub const USER_AVC: u32 = 1107;
/// `AUDIT_SYSCALL`: the record that opens a kernel syscall event.
pub const SYSCALL: u32 = 1300;
/// `AUDIT_EXECVE`: the arguments of an `execve`, possibly split over records.
pub const EXECVE: u32 = 1309;
/// `AUDIT_EOE`: the kernel's end-of-event marker (dispatched, never logged).
pub const EOE: u32 = 1320;
/// `AUDIT_PROCTITLE`: the process title, always the last record before EOE.
pub const PROCTITLE: u32 = 1327;
/// `AUDIT_AVC`: a kernel SELinux access decision (the denials setroubleshootd wants).
pub const AVC: u32 = 1400;
/// `AUDIT_KERNEL`: an asynchronous kernel record, a single-record event.
pub const KERNEL: u32 = 2000;

/// First type number of kernel-generated multi-record events (`AUDIT_FIRST_EVENT`).
const FIRST_EVENT: u32 = 1300;
/// First anomaly type (`AUDIT_FIRST_ANOM_MSG`); everything from here up is single-record.
const FIRST_ANOM_MSG: u32 = 2100;
/// NetLabel configuration records (`AUDIT_MAC_UNLBL_ALLOW` ..= `AUDIT_MAC_CALIPSO_DEL`).
const NETLABEL: std::ops::RangeInclusive<u32> = 1406..=1419;

/// Every named type, sorted by number.
static BY_NUMBER: &[(u32, &str)] = &[
    (1005, "USER"),
    (1006, "LOGIN"),
    (1100, "USER_AUTH"),
    (1101, "USER_ACCT"),
    (1102, "USER_MGMT"),
    (1103, "CRED_ACQ"),
    (1104, "CRED_DISP"),
    (1105, "USER_START"),
    (1106, "USER_END"),
    (1107, "USER_AVC"),
    (1108, "USER_CHAUTHTOK"),
    (1109, "USER_ERR"),
    (1110, "CRED_REFR"),
    (1111, "USYS_CONFIG"),
    (1112, "USER_LOGIN"),
    (1113, "USER_LOGOUT"),
    (1114, "ADD_USER"),
    (1115, "DEL_USER"),
    (1116, "ADD_GROUP"),
    (1117, "DEL_GROUP"),
    (1118, "DAC_CHECK"),
    (1119, "CHGRP_ID"),
    (1120, "TEST"),
    (1121, "TRUSTED_APP"),
    (1122, "USER_SELINUX_ERR"),
    (1123, "USER_CMD"),
    (1124, "USER_TTY"),
    (1125, "CHUSER_ID"),
    (1126, "GRP_AUTH"),
    (1127, "SYSTEM_BOOT"),
    (1128, "SYSTEM_SHUTDOWN"),
    (1129, "SYSTEM_RUNLEVEL"),
    (1130, "SERVICE_START"),
    (1131, "SERVICE_STOP"),
    (1132, "GRP_MGMT"),
    (1133, "GRP_CHAUTHTOK"),
    (1134, "MAC_CHECK"),
    (1135, "ACCT_LOCK"),
    (1136, "ACCT_UNLOCK"),
    (1137, "USER_DEVICE"),
    (1138, "SOFTWARE_UPDATE"),
    (1200, "DAEMON_START"),
    (1201, "DAEMON_END"),
    (1202, "DAEMON_ABORT"),
    (1203, "DAEMON_CONFIG"),
    (1205, "DAEMON_ROTATE"),
    (1206, "DAEMON_RESUME"),
    (1207, "DAEMON_ACCEPT"),
    (1208, "DAEMON_CLOSE"),
    (1209, "DAEMON_ERR"),
    (1300, "SYSCALL"),
    (1302, "PATH"),
    (1303, "IPC"),
    (1304, "SOCKETCALL"),
    (1305, "CONFIG_CHANGE"),
    (1306, "SOCKADDR"),
    (1307, "CWD"),
    (1309, "EXECVE"),
    (1311, "IPC_SET_PERM"),
    (1312, "MQ_OPEN"),
    (1313, "MQ_SENDRECV"),
    (1314, "MQ_NOTIFY"),
    (1315, "MQ_GETSETATTR"),
    (1316, "KERNEL_OTHER"),
    (1317, "FD_PAIR"),
    (1318, "OBJ_PID"),
    (1319, "TTY"),
    (1320, "EOE"),
    (1321, "BPRM_FCAPS"),
    (1322, "CAPSET"),
    (1323, "MMAP"),
    (1324, "NETFILTER_PKT"),
    (1325, "NETFILTER_CFG"),
    (1326, "SECCOMP"),
    (1327, "PROCTITLE"),
    (1328, "FEATURE_CHANGE"),
    (1330, "KERN_MODULE"),
    (1331, "FANOTIFY"),
    (1332, "TIME_INJOFFSET"),
    (1333, "TIME_ADJNTPVAL"),
    (1334, "BPF"),
    (1335, "EVENT_LISTENER"),
    (1336, "URINGOP"),
    (1337, "OPENAT2"),
    (1338, "DM_CTRL"),
    (1339, "DM_EVENT"),
    (1400, "AVC"),
    (1401, "SELINUX_ERR"),
    (1402, "AVC_PATH"),
    (1403, "MAC_POLICY_LOAD"),
    (1404, "MAC_STATUS"),
    (1405, "MAC_CONFIG_CHANGE"),
    (1406, "MAC_UNLBL_ALLOW"),
    (1407, "MAC_CIPSOV4_ADD"),
    (1408, "MAC_CIPSOV4_DEL"),
    (1409, "MAC_MAP_ADD"),
    (1410, "MAC_MAP_DEL"),
    (1411, "MAC_IPSEC_ADDSA"),
    (1412, "MAC_IPSEC_DELSA"),
    (1413, "MAC_IPSEC_ADDSPD"),
    (1414, "MAC_IPSEC_DELSPD"),
    (1415, "MAC_IPSEC_EVENT"),
    (1416, "MAC_UNLBL_STCADD"),
    (1417, "MAC_UNLBL_STCDEL"),
    (1418, "MAC_CALIPSO_ADD"),
    (1419, "MAC_CALIPSO_DEL"),
    (1423, "LANDLOCK_ACCESS"),
    (1424, "LANDLOCK_DOMAIN"),
    (1500, "APPARMOR"),
    (1501, "APPARMOR_AUDIT"),
    (1502, "APPARMOR_ALLOWED"),
    (1503, "APPARMOR_DENIED"),
    (1504, "APPARMOR_HINT"),
    (1505, "APPARMOR_STATUS"),
    (1506, "APPARMOR_ERROR"),
    (1507, "APPARMOR_KILL"),
    (1700, "ANOM_PROMISCUOUS"),
    (1701, "ANOM_ABEND"),
    (1702, "ANOM_LINK"),
    (1703, "ANOM_CREAT"),
    (1800, "INTEGRITY_DATA"),
    (1801, "INTEGRITY_METADATA"),
    (1802, "INTEGRITY_STATUS"),
    (1803, "INTEGRITY_HASH"),
    (1804, "INTEGRITY_PCR"),
    (1805, "INTEGRITY_RULE"),
    (1806, "INTEGRITY_EVM_XATTR"),
    (1807, "INTEGRITY_POLICY_RULE"),
    (2000, "KERNEL"),
    (2100, "ANOM_LOGIN_FAILURES"),
    (2101, "ANOM_LOGIN_TIME"),
    (2102, "ANOM_LOGIN_SESSIONS"),
    (2103, "ANOM_LOGIN_ACCT"),
    (2104, "ANOM_LOGIN_LOCATION"),
    (2105, "ANOM_MAX_DAC"),
    (2106, "ANOM_MAX_MAC"),
    (2107, "ANOM_AMTU_FAIL"),
    (2108, "ANOM_RBAC_FAIL"),
    (2109, "ANOM_RBAC_INTEGRITY_FAIL"),
    (2110, "ANOM_CRYPTO_FAIL"),
    (2111, "ANOM_ACCESS_FS"),
    (2112, "ANOM_EXEC"),
    (2113, "ANOM_MK_EXEC"),
    (2114, "ANOM_ADD_ACCT"),
    (2115, "ANOM_DEL_ACCT"),
    (2116, "ANOM_MOD_ACCT"),
    (2117, "ANOM_ROOT_TRANS"),
    (2118, "ANOM_LOGIN_SERVICE"),
    (2119, "ANOM_LOGIN_ROOT"),
    (2120, "ANOM_ORIGIN_FAILURES"),
    (2121, "ANOM_SESSION"),
    (2200, "RESP_ANOMALY"),
    (2201, "RESP_ALERT"),
    (2202, "RESP_KILL_PROC"),
    (2203, "RESP_TERM_ACCESS"),
    (2204, "RESP_ACCT_REMOTE"),
    (2205, "RESP_ACCT_LOCK_TIMED"),
    (2206, "RESP_ACCT_UNLOCK_TIMED"),
    (2207, "RESP_ACCT_LOCK"),
    (2208, "RESP_TERM_LOCK"),
    (2209, "RESP_SEBOOL"),
    (2210, "RESP_EXEC"),
    (2211, "RESP_SINGLE"),
    (2212, "RESP_HALT"),
    (2213, "RESP_ORIGIN_BLOCK"),
    (2214, "RESP_ORIGIN_BLOCK_TIMED"),
    (2215, "RESP_ORIGIN_UNBLOCK_TIMED"),
    (2300, "USER_ROLE_CHANGE"),
    (2301, "ROLE_ASSIGN"),
    (2302, "ROLE_REMOVE"),
    (2303, "LABEL_OVERRIDE"),
    (2304, "LABEL_LEVEL_CHANGE"),
    (2305, "USER_LABELED_EXPORT"),
    (2306, "USER_UNLABELED_EXPORT"),
    (2307, "DEV_ALLOC"),
    (2308, "DEV_DEALLOC"),
    (2309, "FS_RELABEL"),
    (2310, "USER_MAC_POLICY_LOAD"),
    (2311, "ROLE_MODIFY"),
    (2312, "USER_MAC_CONFIG_CHANGE"),
    (2313, "USER_MAC_STATUS"),
    (2400, "CRYPTO_TEST_USER"),
    (2401, "CRYPTO_PARAM_CHANGE_USER"),
    (2402, "CRYPTO_LOGIN"),
    (2403, "CRYPTO_LOGOUT"),
    (2404, "CRYPTO_KEY_USER"),
    (2405, "CRYPTO_FAILURE_USER"),
    (2406, "CRYPTO_REPLAY_USER"),
    (2407, "CRYPTO_SESSION"),
    (2408, "CRYPTO_IKE_SA"),
    (2409, "CRYPTO_IPSEC_SA"),
    (2500, "VIRT_CONTROL"),
    (2501, "VIRT_RESOURCE"),
    (2502, "VIRT_MACHINE_ID"),
    (2503, "VIRT_INTEGRITY_CHECK"),
    (2504, "VIRT_CREATE"),
    (2505, "VIRT_DESTROY"),
    (2506, "VIRT_MIGRATE_IN"),
    (2507, "VIRT_MIGRATE_OUT"),
];

/// Every named type, sorted by name (for binary search).
static BY_NAME: &[(&str, u32)] = &[
    ("ACCT_LOCK", 1135),
    ("ACCT_UNLOCK", 1136),
    ("ADD_GROUP", 1116),
    ("ADD_USER", 1114),
    ("ANOM_ABEND", 1701),
    ("ANOM_ACCESS_FS", 2111),
    ("ANOM_ADD_ACCT", 2114),
    ("ANOM_AMTU_FAIL", 2107),
    ("ANOM_CREAT", 1703),
    ("ANOM_CRYPTO_FAIL", 2110),
    ("ANOM_DEL_ACCT", 2115),
    ("ANOM_EXEC", 2112),
    ("ANOM_LINK", 1702),
    ("ANOM_LOGIN_ACCT", 2103),
    ("ANOM_LOGIN_FAILURES", 2100),
    ("ANOM_LOGIN_LOCATION", 2104),
    ("ANOM_LOGIN_ROOT", 2119),
    ("ANOM_LOGIN_SERVICE", 2118),
    ("ANOM_LOGIN_SESSIONS", 2102),
    ("ANOM_LOGIN_TIME", 2101),
    ("ANOM_MAX_DAC", 2105),
    ("ANOM_MAX_MAC", 2106),
    ("ANOM_MK_EXEC", 2113),
    ("ANOM_MOD_ACCT", 2116),
    ("ANOM_ORIGIN_FAILURES", 2120),
    ("ANOM_PROMISCUOUS", 1700),
    ("ANOM_RBAC_FAIL", 2108),
    ("ANOM_RBAC_INTEGRITY_FAIL", 2109),
    ("ANOM_ROOT_TRANS", 2117),
    ("ANOM_SESSION", 2121),
    ("APPARMOR", 1500),
    ("APPARMOR_ALLOWED", 1502),
    ("APPARMOR_AUDIT", 1501),
    ("APPARMOR_DENIED", 1503),
    ("APPARMOR_ERROR", 1506),
    ("APPARMOR_HINT", 1504),
    ("APPARMOR_KILL", 1507),
    ("APPARMOR_STATUS", 1505),
    ("AVC", 1400),
    ("AVC_PATH", 1402),
    ("BPF", 1334),
    ("BPRM_FCAPS", 1321),
    ("CAPSET", 1322),
    ("CHGRP_ID", 1119),
    ("CHUSER_ID", 1125),
    ("CONFIG_CHANGE", 1305),
    ("CRED_ACQ", 1103),
    ("CRED_DISP", 1104),
    ("CRED_REFR", 1110),
    ("CRYPTO_FAILURE_USER", 2405),
    ("CRYPTO_IKE_SA", 2408),
    ("CRYPTO_IPSEC_SA", 2409),
    ("CRYPTO_KEY_USER", 2404),
    ("CRYPTO_LOGIN", 2402),
    ("CRYPTO_LOGOUT", 2403),
    ("CRYPTO_PARAM_CHANGE_USER", 2401),
    ("CRYPTO_REPLAY_USER", 2406),
    ("CRYPTO_SESSION", 2407),
    ("CRYPTO_TEST_USER", 2400),
    ("CWD", 1307),
    ("DAC_CHECK", 1118),
    ("DAEMON_ABORT", 1202),
    ("DAEMON_ACCEPT", 1207),
    ("DAEMON_CLOSE", 1208),
    ("DAEMON_CONFIG", 1203),
    ("DAEMON_END", 1201),
    ("DAEMON_ERR", 1209),
    ("DAEMON_RESUME", 1206),
    ("DAEMON_ROTATE", 1205),
    ("DAEMON_START", 1200),
    ("DEL_GROUP", 1117),
    ("DEL_USER", 1115),
    ("DEV_ALLOC", 2307),
    ("DEV_DEALLOC", 2308),
    ("DM_CTRL", 1338),
    ("DM_EVENT", 1339),
    ("EOE", 1320),
    ("EVENT_LISTENER", 1335),
    ("EXECVE", 1309),
    ("FANOTIFY", 1331),
    ("FD_PAIR", 1317),
    ("FEATURE_CHANGE", 1328),
    ("FS_RELABEL", 2309),
    ("GRP_AUTH", 1126),
    ("GRP_CHAUTHTOK", 1133),
    ("GRP_MGMT", 1132),
    ("INTEGRITY_DATA", 1800),
    ("INTEGRITY_EVM_XATTR", 1806),
    ("INTEGRITY_HASH", 1803),
    ("INTEGRITY_METADATA", 1801),
    ("INTEGRITY_PCR", 1804),
    ("INTEGRITY_POLICY_RULE", 1807),
    ("INTEGRITY_RULE", 1805),
    ("INTEGRITY_STATUS", 1802),
    ("IPC", 1303),
    ("IPC_SET_PERM", 1311),
    ("KERNEL", 2000),
    ("KERNEL_OTHER", 1316),
    ("KERN_MODULE", 1330),
    ("LABEL_LEVEL_CHANGE", 2304),
    ("LABEL_OVERRIDE", 2303),
    ("LANDLOCK_ACCESS", 1423),
    ("LANDLOCK_DOMAIN", 1424),
    ("LOGIN", 1006),
    ("MAC_CALIPSO_ADD", 1418),
    ("MAC_CALIPSO_DEL", 1419),
    ("MAC_CHECK", 1134),
    ("MAC_CIPSOV4_ADD", 1407),
    ("MAC_CIPSOV4_DEL", 1408),
    ("MAC_CONFIG_CHANGE", 1405),
    ("MAC_IPSEC_ADDSA", 1411),
    ("MAC_IPSEC_ADDSPD", 1413),
    ("MAC_IPSEC_DELSA", 1412),
    ("MAC_IPSEC_DELSPD", 1414),
    ("MAC_IPSEC_EVENT", 1415),
    ("MAC_MAP_ADD", 1409),
    ("MAC_MAP_DEL", 1410),
    ("MAC_POLICY_LOAD", 1403),
    ("MAC_STATUS", 1404),
    ("MAC_UNLBL_ALLOW", 1406),
    ("MAC_UNLBL_STCADD", 1416),
    ("MAC_UNLBL_STCDEL", 1417),
    ("MMAP", 1323),
    ("MQ_GETSETATTR", 1315),
    ("MQ_NOTIFY", 1314),
    ("MQ_OPEN", 1312),
    ("MQ_SENDRECV", 1313),
    ("NETFILTER_CFG", 1325),
    ("NETFILTER_PKT", 1324),
    ("OBJ_PID", 1318),
    ("OPENAT2", 1337),
    ("PATH", 1302),
    ("PROCTITLE", 1327),
    ("RESP_ACCT_LOCK", 2207),
    ("RESP_ACCT_LOCK_TIMED", 2205),
    ("RESP_ACCT_REMOTE", 2204),
    ("RESP_ACCT_UNLOCK_TIMED", 2206),
    ("RESP_ALERT", 2201),
    ("RESP_ANOMALY", 2200),
    ("RESP_EXEC", 2210),
    ("RESP_HALT", 2212),
    ("RESP_KILL_PROC", 2202),
    ("RESP_ORIGIN_BLOCK", 2213),
    ("RESP_ORIGIN_BLOCK_TIMED", 2214),
    ("RESP_ORIGIN_UNBLOCK_TIMED", 2215),
    ("RESP_SEBOOL", 2209),
    ("RESP_SINGLE", 2211),
    ("RESP_TERM_ACCESS", 2203),
    ("RESP_TERM_LOCK", 2208),
    ("ROLE_ASSIGN", 2301),
    ("ROLE_MODIFY", 2311),
    ("ROLE_REMOVE", 2302),
    ("SECCOMP", 1326),
    ("SELINUX_ERR", 1401),
    ("SERVICE_START", 1130),
    ("SERVICE_STOP", 1131),
    ("SOCKADDR", 1306),
    ("SOCKETCALL", 1304),
    ("SOFTWARE_UPDATE", 1138),
    ("SYSCALL", 1300),
    ("SYSTEM_BOOT", 1127),
    ("SYSTEM_RUNLEVEL", 1129),
    ("SYSTEM_SHUTDOWN", 1128),
    ("TEST", 1120),
    ("TIME_ADJNTPVAL", 1333),
    ("TIME_INJOFFSET", 1332),
    ("TRUSTED_APP", 1121),
    ("TTY", 1319),
    ("URINGOP", 1336),
    ("USER", 1005),
    ("USER_ACCT", 1101),
    ("USER_AUTH", 1100),
    ("USER_AVC", 1107),
    ("USER_CHAUTHTOK", 1108),
    ("USER_CMD", 1123),
    ("USER_DEVICE", 1137),
    ("USER_END", 1106),
    ("USER_ERR", 1109),
    ("USER_LABELED_EXPORT", 2305),
    ("USER_LOGIN", 1112),
    ("USER_LOGOUT", 1113),
    ("USER_MAC_CONFIG_CHANGE", 2312),
    ("USER_MAC_POLICY_LOAD", 2310),
    ("USER_MAC_STATUS", 2313),
    ("USER_MGMT", 1102),
    ("USER_ROLE_CHANGE", 2300),
    ("USER_SELINUX_ERR", 1122),
    ("USER_START", 1105),
    ("USER_TTY", 1124),
    ("USER_UNLABELED_EXPORT", 2306),
    ("USYS_CONFIG", 1111),
    ("VIRT_CONTROL", 2500),
    ("VIRT_CREATE", 2504),
    ("VIRT_DESTROY", 2505),
    ("VIRT_INTEGRITY_CHECK", 2503),
    ("VIRT_MACHINE_ID", 2502),
    ("VIRT_MIGRATE_IN", 2506),
    ("VIRT_MIGRATE_OUT", 2507),
    ("VIRT_RESOURCE", 2501),
];

/// The name auditd gives record type `number`, if it has one.
pub fn name(number: u32) -> Option<&'static str> {
    BY_NUMBER
        .binary_search_by_key(&number, |&(n, _)| n)
        .ok()
        .map(|i| BY_NUMBER[i].1)
}

/// The name of `number` as auditd writes it in string format: the table name,
/// or `UNKNOWN[n]` for numbers it has no name for.
pub fn display(number: u32) -> Cow<'static, str> {
    match name(number) {
        Some(n) => Cow::Borrowed(n),
        None => Cow::Owned(format!("UNKNOWN[{number}]")),
    }
}

/// The number of a type name as it appears after `type=`: a table name
/// (exact case, as auditd writes it) or `UNKNOWN[n]`.
pub fn number(name: &[u8]) -> Option<u32> {
    // The types that make up most of a real stream, without a search.
    match name {
        b"PATH" => return Some(1302),
        b"SYSCALL" => return Some(SYSCALL),
        b"EOE" => return Some(EOE),
        b"PROCTITLE" => return Some(PROCTITLE),
        b"CWD" => return Some(1307),
        b"EXECVE" => return Some(EXECVE),
        _ => {}
    }
    if let Ok(i) = BY_NAME.binary_search_by(|&(n, _)| n.as_bytes().cmp(name)) {
        return Some(BY_NAME[i].1);
    }
    let digits = name.strip_prefix(b"UNKNOWN[")?.strip_suffix(b"]")?;
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Parses a type as an administrator writes it in a config file: a name in any
/// case (`avc`, `USER_LOGIN`), `UNKNOWN[n]`, or a plain number.
pub fn parse_admin(text: &str) -> Option<u32> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok();
    }
    number(text.to_ascii_uppercase().as_bytes())
}

/// Whether a record of this type always ends its event, by the rule libauparse
/// uses: EOE and PROCTITLE end kernel events; user-space, daemon, anomaly,
/// NetLabel and asynchronous kernel records are events of one record.
pub fn ends_event(number: u32) -> bool {
    number == PROCTITLE
        || number == EOE
        || (number > LOGIN && number < FIRST_EVENT)
        || number == USER
        || number >= FIRST_ANOM_MSG
        || number == KERNEL
        || NETLABEL.contains(&number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_sorted_and_agree() {
        assert!(BY_NUMBER.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(BY_NAME.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(BY_NUMBER.len(), BY_NAME.len());
        for &(n, s) in BY_NUMBER {
            assert_eq!(number(s.as_bytes()), Some(n));
            assert_eq!(name(n), Some(s));
        }
    }

    #[test]
    fn unknown_types_round_trip() {
        assert_eq!(display(9999), "UNKNOWN[9999]");
        assert_eq!(number(b"UNKNOWN[9999]"), Some(9999));
        assert_eq!(number(b"UNKNOWN[]"), None);
        assert_eq!(number(b"UNKNOWN[12x]"), None);
        assert_eq!(number(b"UNKNOWN[99999999999]"), None);
        assert_eq!(number(b"syscall"), None);
    }

    #[test]
    fn admin_spellings() {
        assert_eq!(parse_admin("avc"), Some(AVC));
        assert_eq!(parse_admin("1400"), Some(AVC));
        assert_eq!(parse_admin("unknown[4242]"), Some(4242));
        assert_eq!(parse_admin("NOPE"), None);
    }

    #[test]
    fn event_ends_follow_libauparse() {
        for t in [
            EOE, PROCTITLE, USER, 1100, 1112, 1200, KERNEL, 2100, 2404, 1406,
        ] {
            assert!(ends_event(t), "{t}");
        }
        for t in [SYSCALL, 1302, 1307, EXECVE, AVC, LOGIN, 1325] {
            assert!(!ends_event(t), "{t}");
        }
    }
}
