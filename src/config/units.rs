//! The small value languages of the config files: sizes, durations, socket
//! modes, plugin and action names, record type lists, and the "did you mean"
//! suggestions that make mistakes in them easy to fix.
//!
//! Everything here is a pure function from text to a value or to the tail of
//! an error message (what is wrong and what is allowed); the caller prefixes
//! the offending key and value.

use std::path::Path;
use std::time::Duration;

use crate::record_types;

/// Longest plugin or action name.
const MAX_NAME: usize = 64;

/// How a size is written, for error messages.
pub(super) const SIZE_HELP: &str =
    "write a byte count as an integer or a string such as \"512K\", \"64M\" or \"1G\" (binary multiples; KiB, MiB, GiB also accepted)";

/// How a duration is written, for error messages.
pub(super) const DURATION_HELP: &str =
    "write whole seconds as an integer or a string such as \"500ms\", \"2s\", \"5m\" or \"1h\"";

/// Parses a size written as a string: digits and an optional binary unit.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(digits_end);
    if digits.is_empty() {
        return Err(format!("is not a size; {SIZE_HELP}"));
    }
    let shift = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "t" | "tib" => 40,
        _ => return Err(format!("is not a size; {SIZE_HELP}")),
    };
    let n: u64 = digits.parse().map_err(|_| "is too large".to_string())?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| "is too large".to_string())
}

/// Parses a duration written as a string: digits and a unit (`ms`, `s`,
/// `m`, `h`); bare digits are seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(digits_end);
    if digits.is_empty() {
        return Err(format!("is not a duration; {DURATION_HELP}"));
    }
    let n: u64 = digits.parse().map_err(|_| "is too large".to_string())?;
    let too_large = || "is too large".to_string();
    match unit.trim_start() {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" | "min" => n
            .checked_mul(60)
            .map(Duration::from_secs)
            .ok_or_else(too_large),
        "h" => n
            .checked_mul(3600)
            .map(Duration::from_secs)
            .ok_or_else(too_large),
        _ => Err(format!("is not a duration; {DURATION_HELP}")),
    }
}

/// Renders a byte count the way an admin would write it ("64M", "1G", "1500").
pub(super) fn show_size(bytes: u64) -> String {
    for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if bytes != 0 && bytes % (1 << shift) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// Renders a duration the way an admin would write it ("500ms", "2s", "5m").
pub(super) fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 != 0 {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    if s != 0 && s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s != 0 && s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// Parses a socket mode written as an octal string ("0660", "660").
pub(super) fn parse_mode(text: &str) -> Result<u32, String> {
    let help = "is not a file mode; write permission bits as an octal string such as \"0660\"";
    if text.is_empty() || text.len() > 4 || !text.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(help.to_string());
    }
    let mode = u32::from_str_radix(text, 8).map_err(|_| help.to_string())?;
    check_mode(mode)
}

/// Rejects modes with bits beyond the permission bits, or without owner
/// read and write (audispd itself could not use the socket).
pub(super) fn check_mode(mode: u32) -> Result<u32, String> {
    if mode > 0o777 {
        return Err("has setuid, setgid or sticky bits, which mean nothing on a socket; use permission bits only, such as \"0660\"".to_string());
    }
    if mode & 0o600 != 0o600 {
        return Err(
            "leaves the owner without read and write permission; use a mode such as \"0660\""
                .to_string(),
        );
    }
    Ok(mode)
}

/// Longest socket path the kernel accepts (`sun_path` is 108 bytes with
/// the terminating NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Checks that a socket path fits in a socket address.
pub(super) fn check_socket_path(path: &Path) -> Result<(), String> {
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(format!(
            "is {len} bytes long once resolved to {}; socket paths may be at most {MAX_SOCKET_PATH} bytes, so use a shorter path",
            path.display()
        ));
    }
    Ok(())
}

/// Checks a plugin name (the file name without `.toml`): it shows up in
/// logs, state files and unit names, so it is kept to a safe alphabet.
pub(super) fn check_plugin_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok && name.len() <= MAX_NAME {
        Ok(())
    } else {
        Err(format!(
            "plugin name {name:?} (the file name without .toml) is not allowed; use 1 to {MAX_NAME} letters, digits, '_', '.' or '-', starting with a letter or digit"
        ))
    }
}

/// Checks an action name: plugins send it, so it is kept to a safe alphabet.
pub(super) fn check_action_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'));
    if first_ok && rest_ok && name.len() <= MAX_NAME {
        Ok(())
    } else {
        Err(format!(
            "action name {name:?} is not allowed; use 1 to {MAX_NAME} lower-case letters, digits, '_' or '-', starting with a letter or digit"
        ))
    }
}

/// Parses one record type as an admin writes it, or says why not (with the
/// closest known name when there is one).
pub(super) fn parse_type(text: &str) -> Result<u32, String> {
    if let Some(n) = record_types::parse_admin(text) {
        return Ok(n);
    }
    let known = known_type_names();
    match closest(text, known.iter().copied()) {
        Some(s) => Err(format!("{text:?} is not a known record type; did you mean {s:?}?")),
        None => Err(format!(
            "{text:?} is not a known record type; use a name as auditd writes it after type= (such as \"AVC\" or \"USER_LOGIN\"), \"UNKNOWN[n]\" or a type number"
        )),
    }
}

/// Every record type name the type table knows.
fn known_type_names() -> Vec<&'static str> {
    (0..=u32::from(u16::MAX))
        .filter_map(record_types::name)
        .collect()
}

/// The candidate closest to `word` (case-insensitively), if it is close
/// enough to be a plausible typo.
pub(super) fn closest<'a>(
    word: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let w = word.to_ascii_lowercase();
    let limit = match w.chars().count() {
        0..=2 => 0,
        3..=5 => 1,
        6..=9 => 2,
        _ => 3,
    };
    candidates
        .map(|c| (edit_distance(&w, &c.to_ascii_lowercase()), c))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// Levenshtein distance (insertions, deletions, substitutions), plus
/// adjacent transpositions counted as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev2: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                cur[j] = cur[j].min(prev2[j - 2] + 1);
            }
        }
        prev2 = std::mem::replace(&mut prev, cur);
    }
    prev[b.len()]
}

/// Joins choices for a message: `"a", "b" or "c"`.
pub(super) fn one_of(choices: &[&str]) -> String {
    let quoted: Vec<String> = choices.iter().map(|c| format!("{c:?}")).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1500"), Ok(1500));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        assert!(parse_size("G").unwrap_err().contains("not a size"));
        assert!(parse_size("1.5G").unwrap_err().contains("not a size"));
        assert!(parse_size("1GB2").unwrap_err().contains("not a size"));
        assert!(parse_size("-1").unwrap_err().contains("not a size"));
        assert!(parse_size("").unwrap_err().contains("not a size"));
        assert_eq!(parse_size("99999999999T"), Err("is too large".to_string()));
        assert_eq!(
            parse_size("99999999999999999999999"),
            Err("is too large".to_string())
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("1.5s")
            .unwrap_err()
            .contains("not a duration"));
        assert!(parse_duration("5 days")
            .unwrap_err()
            .contains("not a duration"));
        assert!(parse_duration("s").unwrap_err().contains("not a duration"));
        assert_eq!(
            parse_duration("18446744073709551615h"),
            Err("is too large".to_string())
        );
    }

    #[test]
    fn showing_values_round_trips() {
        for s in ["64M", "1G", "512K", "1500", "3T"] {
            assert_eq!(show_size(parse_size(s).unwrap()), s);
        }
        for s in ["500ms", "2s", "5m", "1h", "0s", "90s"] {
            assert_eq!(show_duration(parse_duration(s).unwrap()), s);
        }
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0660"), Ok(0o660));
        assert_eq!(parse_mode("600"), Ok(0o600));
        assert!(parse_mode("0689").unwrap_err().contains("octal"));
        assert!(parse_mode("").unwrap_err().contains("octal"));
        assert!(parse_mode("04660").unwrap_err().contains("octal"));
        assert!(parse_mode("4660").unwrap_err().contains("setuid"));
        assert!(parse_mode("0440").unwrap_err().contains("owner"));
    }

    #[test]
    fn socket_paths() {
        assert_eq!(
            check_socket_path(Path::new("/run/audisp/input.sock")),
            Ok(())
        );
        let long = format!("/{}", "x".repeat(106));
        assert_eq!(check_socket_path(Path::new(&long)), Ok(()));
        let too_long = format!("/{}", "x".repeat(107));
        assert!(check_socket_path(Path::new(&too_long))
            .unwrap_err()
            .starts_with("is 108 bytes long"));
    }

    #[test]
    fn plugin_names() {
        for ok in ["a", "remote", "avc-alert", "x_1.2", "9", &"a".repeat(64)] {
            assert_eq!(check_plugin_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            ".hidden",
            "-x",
            "_x",
            "a b",
            "é",
            "a/b",
            &"a".repeat(65),
        ] {
            assert!(check_plugin_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn action_names() {
        for ok in ["disk-full", "block_address", "9", &"a".repeat(64)] {
            assert_eq!(check_action_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "Disk-full", "-x", "a.b", "a b", &"a".repeat(65)] {
            assert!(check_action_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn record_types_with_suggestions() {
        assert_eq!(parse_type("AVC"), Ok(1400));
        assert_eq!(parse_type("user_login"), Ok(1112));
        assert_eq!(parse_type("1400"), Ok(1400));
        assert_eq!(parse_type("UNKNOWN[3000]"), Ok(3000));
        assert_eq!(
            parse_type("AVCC"),
            Err("\"AVCC\" is not a known record type; did you mean \"AVC\"?".to_string())
        );
        assert_eq!(
            parse_type("user_logni"),
            Err(
                "\"user_logni\" is not a known record type; did you mean \"USER_LOGIN\"?"
                    .to_string()
            )
        );
        let far = parse_type("BANANAS").unwrap_err();
        assert!(far.contains("not a known record type; use a name"), "{far}");
    }

    #[test]
    fn closest_candidates() {
        let keys = [
            "segment_size",
            "max_size",
            "memory",
            "sync",
            "sync_interval",
        ];
        assert_eq!(
            closest("segement_size", keys.into_iter()),
            Some("segment_size")
        );
        assert_eq!(closest("MAX_SIZE", keys.into_iter()), Some("max_size"));
        assert_eq!(closest("snyc", keys.into_iter()), Some("sync"));
        assert_eq!(closest("colour", keys.into_iter()), None);
        assert_eq!(closest("ab", ["ac"].into_iter()), None);
    }

    #[test]
    fn choice_lists() {
        assert_eq!(one_of(&["spool"]), "\"spool\"");
        assert_eq!(
            one_of(&["spool", "drop", "suspend"]),
            "\"spool\", \"drop\" or \"suspend\""
        );
    }
}
