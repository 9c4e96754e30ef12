//! The process's own figures, as every Prometheus client library exports
//! them (`process_cpu_seconds_total`, `process_resident_memory_bytes`, …),
//! read from `/proc/self` (and the process CPU-time clock).
//!
//! Only `/proc/self` is read: `audisp.service` runs with `ProcSubset=pid`,
//! which hides `/proc/stat` and so the boot time other libraries take from
//! there. The start time is computed from the process's start in
//! `CLOCK_BOOTTIME` ticks (what `/proc/self/stat` holds) and the current
//! difference between the real-time and boot-time clocks instead.

use std::io;

use nix::time::{clock_gettime, ClockId};
use nix::unistd::{sysconf, SysconfVar};

/// The process's figures at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessStats {
    /// User and system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident memory, in bytes.
    pub resident_bytes: u64,
    /// Virtual memory, in bytes.
    pub virtual_bytes: u64,
    /// Open file descriptors (not counting the one used to count them).
    pub open_fds: u64,
    /// The soft limit on open file descriptors.
    pub max_fds: u64,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

/// The fields of `/proc/self/stat` used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    starttime: u64,
    vsize: u64,
    rss_pages: u64,
}

/// Takes `/proc/PID/stat` apart. The command name (field 2) is in
/// parentheses and may itself hold spaces and parentheses, so fields are
/// counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    // Fields 3 (state) onwards; field N is at index N - 3.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        starttime: num(22)?,
        vsize: num(23)?,
        rss_pages: num(24)?,
    })
}

fn seconds(clock: ClockId) -> io::Result<f64> {
    let t = clock_gettime(clock)?;
    Ok(t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
}

fn conf(var: SysconfVar, what: &str) -> io::Result<u64> {
    sysconf(var)?
        .and_then(|v| u64::try_from(v).ok())
        .filter(|&v| v > 0)
        .ok_or_else(|| io::Error::other(format!("sysconf: no {what}")))
}

/// Reads this process's figures now.
pub fn read() -> io::Result<ProcessStats> {
    let text = std::fs::read_to_string("/proc/self/stat")?;
    let stat = parse_stat(&text)
        .ok_or_else(|| io::Error::other("/proc/self/stat has an unexpected layout"))?;
    let ticks = conf(SysconfVar::CLK_TCK, "clock tick rate")? as f64;
    let page = conf(SysconfVar::PAGE_SIZE, "page size")?;
    let open_fds = std::fs::read_dir("/proc/self/fd")?
        .count()
        .saturating_sub(1) as u64;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let soft = limit.rlim_cur;
    let booted_at = seconds(ClockId::CLOCK_REALTIME)? - seconds(ClockId::CLOCK_BOOTTIME)?;
    Ok(ProcessStats {
        // The kernel's exact figure: /proc/self/stat's utime and stime are
        // in clock ticks (10 ms), too coarse for a process that works little.
        cpu_seconds: seconds(ClockId::CLOCK_PROCESS_CPUTIME_ID)?,
        resident_bytes: stat.rss_pages * page,
        virtual_bytes: stat.vsize,
        open_fds,
        max_fds: soft,
        start_time_seconds: booted_at + stat.starttime as f64 / ticks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_counted_from_the_last_parenthesis() {
        let line = "4242 (a) b (c) d) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 125 0 0 20 0 7 0 98765 123456789 321 18446744073709551615 \
                    1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                starttime: 98765,
                vsize: 123456789,
                rss_pages: 321,
            })
        );
        assert_eq!(parse_stat("4242 (x) S 1 2"), None);
    }

    #[test]
    fn this_process_figures_are_plausible() {
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        // Many, so that what other test threads open meanwhile cannot hide
        // the difference.
        let files: Vec<std::fs::File> = (0..200)
            .map(|_| std::fs::File::open("/proc/self/stat").unwrap())
            .collect();
        let p = read().unwrap();
        assert!(p.open_fds >= 200, "{p:?}");
        drop(files);
        let after = read().unwrap();
        assert!(after.open_fds + 100 <= p.open_fds, "{p:?} then {after:?}");
        assert!(p.resident_bytes > 0 && p.virtual_bytes >= p.resident_bytes);
        assert!(p.max_fds >= p.open_fds);
        assert!(
            p.start_time_seconds <= before + 1.0 && p.start_time_seconds > before - 3600.0,
            "started {} (now {before})",
            p.start_time_seconds
        );
        assert!(after.cpu_seconds >= p.cpu_seconds);
    }
}
