//! JSON conversion alone, without dispatcher or plugin protocol: reads a file
//! of records in auditd's string format, groups them into events with the
//! dispatcher's own grouping rules, converts each event with
//! `audisp::format::JsonWriter` and writes JSON lines. Reports records/s,
//! events/s and the time single events take, as wall time and as the
//! thread's CPU time (what `benches/json.sh` quotes).
//!
//! Usage: cargo bench --bench json_convert -- RECORDS_FILE [OUT_FILE]
//! (OUT_FILE defaults to /dev/null).

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use audisp::engine::events::Grouper;
use audisp::format::JsonWriter;
use audisp::record;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let Some(input) = args.first() else {
        eprintln!("usage: json_convert RECORDS_FILE [OUT_FILE]");
        return Ok(());
    };
    let out_path = args.get(1).map_or("/dev/null", String::as_str);
    let data = std::fs::read(input)?;
    let lines: Vec<&[u8]> = data
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();

    // Group first (the dispatcher does this, not the plugin), so that only
    // the conversion is timed.
    let mut grouper = Grouper::new(Duration::from_secs(2), 64 * 1024);
    let now = Instant::now();
    let mut open: HashMap<u64, Vec<usize>> = HashMap::new();
    let mut events: Vec<Vec<usize>> = Vec::new();
    let mut closes = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let info = record::parse(l);
        closes.clear();
        let p = grouper.place(info.as_ref(), now, &mut closes);
        for c in &closes {
            if let Some(ev) = open.remove(c) {
                events.push(ev);
            }
        }
        open.entry(p.event).or_default().push(i);
        if p.ends {
            if let Some(ev) = open.remove(&p.event) {
                events.push(ev);
            }
        }
    }
    let mut rest: Vec<(u64, Vec<usize>)> = open.into_iter().collect();
    rest.sort_by_key(|(id, _)| *id);
    events.extend(rest.into_iter().map(|(_, ev)| ev));
    // The dispatcher drops events made of EOE records only.
    events.retain(|ev| {
        ev.iter()
            .any(|&i| record::parse(lines[i]).is_none_or(|r| r.rtype != 1320))
    });

    let mut writer = JsonWriter::new();
    let mut out = Vec::with_capacity(1 << 20);
    let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(out_path)?);
    let mut recs: Vec<&[u8]> = Vec::new();
    let mut times: Vec<(Duration, usize)> = Vec::with_capacity(events.len());
    let mut cpu_times: Vec<(Duration, usize)> = Vec::with_capacity(events.len());
    let cpu0 = cpu_time();
    let start = Instant::now();
    for (k, ev) in events.iter().enumerate() {
        recs.clear();
        recs.extend(ev.iter().map(|&i| lines[i]));
        let c = thread_cpu();
        let t = Instant::now();
        writer.write_event(&recs, &mut out);
        out.push(b'\n');
        times.push((t.elapsed(), k));
        cpu_times.push((thread_cpu().saturating_sub(c), k));
        if out.len() > 1 << 20 {
            file.write_all(&out)?;
            out.clear();
        }
    }
    file.write_all(&out)?;
    file.flush()?;
    let wall = start.elapsed();
    let cpu = cpu_time() - cpu0;
    times.sort();
    cpu_times.sort();
    let n = lines.len() as f64;
    println!(
        "json_convert: {} records, {} events in {:.3} s wall, {:.3} s CPU: {:.0} records/s, {:.0} events/s",
        lines.len(),
        events.len(),
        wall.as_secs_f64(),
        cpu,
        n / wall.as_secs_f64(),
        events.len() as f64 / wall.as_secs_f64()
    );
    for (what, t) in [("wall", &times), ("CPU", &cpu_times)] {
        let pct = |p: f64| t[((t.len() as f64 - 1.0) * p) as usize].0;
        println!(
            "per event ({what}): median {:?}, p99 {:?}, p99.99 {:?}, max {:?}",
            pct(0.5),
            pct(0.99),
            pct(0.9999),
            t.last().map(|t| t.0).unwrap_or_default()
        );
    }
    // What each event costs by itself: the fastest of three conversions,
    // so that interruptions (another process, the hypervisor) that land in
    // one conversion do not count.
    let mut intrinsic: Vec<(Duration, usize)> = Vec::with_capacity(events.len());
    let mut scratch = Vec::with_capacity(1 << 20);
    for (k, ev) in events.iter().enumerate() {
        recs.clear();
        recs.extend(ev.iter().map(|&i| lines[i]));
        let mut best = Duration::MAX;
        for _ in 0..3 {
            scratch.clear();
            let t = Instant::now();
            writer.write_event(&recs, &mut scratch);
            best = best.min(t.elapsed());
        }
        intrinsic.push((best, k));
    }
    intrinsic.sort();
    let pct = |p: f64| intrinsic[((intrinsic.len() as f64 - 1.0) * p) as usize].0;
    println!(
        "per event (fastest of 3): median {:?}, p99 {:?}, p99.99 {:?}, max {:?}",
        pct(0.5),
        pct(0.99),
        pct(0.9999),
        intrinsic.last().map(|t| t.0).unwrap_or_default()
    );
    for &(d, k) in intrinsic.iter().rev().take(3) {
        let ev = &events[k];
        let first = lines[ev[0]];
        let bytes: usize = ev.iter().map(|&i| lines[i].len()).sum();
        let shown = &first[..first.len().min(60)];
        println!(
            "  costliest event: {d:?}, {} records, {bytes} bytes: {}",
            ev.len(),
            String::from_utf8_lossy(shown)
        );
    }
    Ok(())
}

/// CPU time this thread has used so far.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU time of this process (user + system), in seconds.
fn cpu_time() -> f64 {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    let ru = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr());
        ru.assume_init()
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}
