//! The cost of filter expressions per record, without dispatcher or
//! plugins: reads a file of records in auditd's string format, repeats it
//! to `--records` records (timestamps and serials moved on each repeat so
//! that every event id stays unique, as `dispatch.sh` does), and times, on
//! the same records in the same run:
//!
//! * a baseline loop that reads each record's header (`record::parse`, what
//!   the dispatcher does for every record anyway);
//! * the same loop plus `Filter::matches` for each expression;
//! * grouping into events with whole-event decisions (`Grouper` +
//!   `WholeEvents`), with no filter and with the first expression.
//!
//! Each case runs `--runs` times (interleaved); the median of the thread's
//! CPU time is reported as ns per record, and the filter cost as the
//! difference to the baseline. A counting allocator checks that evaluation
//! does not allocate once its buffers are warm.
//!
//! Usage: cargo bench --bench filter -- RECORDS_FILE [--records N] [--runs N]
//! [--write PATH] (`--write` also saves the repeated records, for
//! `benches/filter.sh`'s end-to-end runs).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use audisp::engine::events::Grouper;
use audisp::filter::{Action, Filter, Scratch, WholeEvents};
use audisp::record;

/// Counts allocations, to show that evaluation does not allocate.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is passed to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The expressions measured: three-clause ones as the performance target
/// names them, and a lone regexp.
const EXPRESSIONS: &[(&str, &str)] = &[
    (
        "header first (audisp-filter(8) example)",
        r#"type r= SYSCALL && syscall i= openat && success r= no"#,
    ),
    (
        "fields of every record",
        r#"auid >= 1000 && auid !== 4294967295 && exe i= "/usr/bin/sudo""#,
    ),
    (
        "type range, hex name, regexp",
        r#"\record_type == PATH && name i= "/etc/shadow" || \regexp /exe="\/usr\/bin\/sudo"/"#,
    ),
    ("one regexp", r#"\regexp /comm="(cat|chmod|chown)"/"#),
];

struct Options {
    input: String,
    records: usize,
    runs: usize,
    write: Option<String>,
}

fn options() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mut o = Options {
        input: String::new(),
        records: 1_000_000,
        runs: 5,
        write: None,
    };
    while let Some(a) = args.next() {
        let mut number = |name: &str| -> Result<usize, String> {
            args.next()
                .and_then(|v| v.parse().ok())
                .filter(|&n| n > 0)
                .ok_or(format!("{name} needs a positive number"))
        };
        match a.as_str() {
            "--records" => o.records = number("--records")?,
            "--runs" => o.runs = number("--runs")?,
            "--write" => o.write = Some(args.next().ok_or("--write needs a path")?),
            "--bench" => {}
            _ if a.starts_with("--") => return Err(format!("unknown option {a}")),
            _ => o.input = a,
        }
    }
    if o.input.is_empty() {
        return Err("usage: filter RECORDS_FILE [--records N] [--runs N] [--write PATH]".into());
    }
    Ok(o)
}

/// `lines` repeated to `n` records; copy k > 0 moved k × (time span + 1)
/// seconds and k × (highest serial + 1) serials on.
fn repeat(lines: &[&[u8]], n: usize) -> Vec<Vec<u8>> {
    let stamps: Vec<_> = lines.iter().map(|l| record::parse(l)).collect();
    let secs = stamps.iter().flatten().map(|i| i.time.sec);
    let (lo, hi) = secs.fold((u64::MAX, 0), |(lo, hi), s| (lo.min(s), hi.max(s)));
    let sec_step = hi.saturating_sub(lo) + 1;
    let serial_step = stamps.iter().flatten().map(|i| i.serial).max().unwrap_or(0) + 1;
    let mut out = Vec::with_capacity(n);
    let mut copy = 0u64;
    while out.len() < n {
        for (line, info) in lines.iter().zip(&stamps) {
            if out.len() == n {
                break;
            }
            let (Some(info), true) = (info, copy > 0) else {
                out.push(line.to_vec());
                continue;
            };
            let old = format!(
                "audit({}.{:03}:{})",
                info.time.sec, info.time.msec, info.serial
            );
            let new = format!(
                "audit({}.{:03}:{})",
                info.time.sec + copy * sec_step,
                info.time.msec,
                info.serial + copy * serial_step
            );
            let at = line
                .windows(old.len())
                .position(|w| w == old.as_bytes())
                .unwrap_or(0);
            let mut l = line[..at].to_vec();
            l.extend_from_slice(new.as_bytes());
            l.extend_from_slice(&line[at + old.len()..]);
            out.push(l);
        }
        copy += 1;
    }
    out
}

/// CPU time this thread has used so far.
fn thread_cpu() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

/// Runs `f` and returns the CPU time it took and its result.
fn timed<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let t = thread_cpu();
    let r = f();
    (thread_cpu() - t, r)
}

/// The header of every record: the baseline.
fn baseline(records: &[Vec<u8>]) -> usize {
    records
        .iter()
        .filter(|r| black_box(record::parse(r)).is_some())
        .count()
}

/// The header and the filter for every record; returns the matches.
fn filtered(records: &[Vec<u8>], f: &Filter, s: &mut Scratch) -> usize {
    records
        .iter()
        .filter(|r| {
            black_box(record::parse(r));
            f.matches(r, s)
        })
        .count()
}

/// Grouping and whole-event decisions (everything passes without a
/// filter); returns the records released.
fn whole_events(records: &[Vec<u8>], f: Option<&Filter>, s: &mut Scratch) -> usize {
    let mut grouper = Grouper::new(Duration::from_secs(2), 4096);
    let mut gate = WholeEvents::new(if f.is_some() {
        Action::Keep
    } else {
        Action::Drop
    });
    let mut closes = Vec::new();
    let mut released = 0;
    let now = Instant::now();
    for (i, r) in records.iter().enumerate() {
        let info = record::parse(r);
        closes.clear();
        let p = grouper.place(info.as_ref(), now, &mut closes);
        for &c in &closes {
            gate.close(c, &mut |_| released += 1);
        }
        let matched = f.is_some_and(|f| f.matches(r, s));
        gate.push(p.event, matched, p.ends, i, &mut |_| released += 1);
    }
    closes.clear();
    grouper.close_all(&mut closes);
    for &c in &closes {
        gate.close(c, &mut |_| released += 1);
    }
    gate.close_all(&mut |_| released += 1);
    released
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let o = options()?;
    let data = std::fs::read(&o.input)?;
    let lines: Vec<&[u8]> = data
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let records = repeat(&lines, o.records);
    if let Some(path) = &o.write {
        let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
        for r in &records {
            f.write_all(r)?;
            f.write_all(b"\n")?;
        }
        f.flush()?;
    }
    let n = records.len();
    let filters: Vec<Filter> = EXPRESSIONS
        .iter()
        .map(|(_, e)| Filter::parse(e))
        .collect::<Result<_, _>>()?;
    let mut scratch = Scratch::new();
    // Warm the buffers, then count what evaluation allocates.
    for f in &filters {
        filtered(&records[..n.min(10_000)], f, &mut scratch);
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for f in &filters {
        filtered(&records, f, &mut scratch);
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;

    let mut base = Vec::new();
    let mut per_expr: Vec<Vec<Duration>> = vec![Vec::new(); filters.len()];
    let mut matches = vec![0; filters.len()];
    let mut group_plain = Vec::new();
    let mut group_filtered = Vec::new();
    let mut released = (0, 0);
    for _ in 0..o.runs {
        base.push(timed(|| baseline(&records)).0);
        for (i, f) in filters.iter().enumerate() {
            let (t, m) = timed(|| filtered(&records, f, &mut scratch));
            per_expr[i].push(t);
            matches[i] = m;
        }
        let (t, r) = timed(|| whole_events(&records, None, &mut scratch));
        group_plain.push(t);
        released.0 = r;
        let (t, r) = timed(|| whole_events(&records, Some(&filters[0]), &mut scratch));
        group_filtered.push(t);
        released.1 = r;
    }
    let ns = |d: Duration| d.as_nanos() as f64 / n as f64;
    let base = median(base);
    println!(
        "{n} records ({} distinct, repeated), {} runs, median thread CPU time",
        lines.len(),
        o.runs
    );
    println!(
        "{:<44} {:>10} {:>14} {:>10}",
        "case", "ns/record", "added ns/rec", "matches"
    );
    println!(
        "{:<44} {:>10.1} {:>14} {:>10}",
        "baseline: read the header",
        ns(base),
        "-",
        "-"
    );
    for (i, (what, expr)) in EXPRESSIONS.iter().enumerate() {
        let t = median(per_expr[i].clone());
        println!(
            "{:<44} {:>10.1} {:>14.1} {:>10}",
            what,
            ns(t),
            ns(t) - ns(base),
            matches[i]
        );
        println!("    {expr}");
    }
    let gp = median(group_plain);
    let gf = median(group_filtered);
    println!(
        "{:<44} {:>10.1} {:>14} {:>10}",
        "grouping + whole events, no filter",
        ns(gp),
        "-",
        released.0
    );
    println!(
        "{:<44} {:>10.1} {:>14.1} {:>10}",
        "grouping + whole events, first expression",
        ns(gf),
        ns(gf) - ns(gp),
        released.1
    );
    println!(
        "allocations while evaluating {} expressions on {n} records (warm buffers): {allocations}",
        filters.len()
    );
    Ok(())
}
