//! `drop_fields` in a plugins.d entry: the fields it names are removed from
//! every record the plugin gets, native and stock alike, and every record
//! still arrives, once, in order.

mod support;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use audisp::format::drop_fields::DropFields;
use support::dispatcher::{
    lines, sample, sink_plugin, texts, wait_sink, Dispatcher, MAIN_NO_STATS,
};
use support::wait_until;

#[test]
fn named_fields_are_removed_from_native_and_stock_deliveries() {
    let names = ["proctitle", "auid", "exe"];
    let list = "drop_fields = [\"proctitle\", \"auid\", \"exe\"]";
    let mut d = Dispatcher::new(MAIN_NO_STATS);
    d.write_plugin("native", &sink_plugin("native", "", list));
    d.write_plugin(
        "stock",
        &format!(
            "exec = [\"/bin/sh\", \"-c\", \"exec /bin/cat > {{dir}}/out/stock\"]\nformat = \"string\"\n{list}\n"
        ),
    );
    d.start(Stdio::piped()).unwrap();
    let data = sample();
    let all = lines(&data);
    let mut fields = DropFields::new(names.iter().map(|n| n.as_bytes()));
    let want: Vec<Vec<u8>> = all.iter().map(|l| fields.apply(l).into_owned()).collect();
    assert!(
        want.iter().zip(&all).filter(|(w, l)| w != l).count() > all.len() / 4,
        "the sample has these fields in many records"
    );
    // Kept open until the plugins have everything: its end stops audispd.
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    stdin.write_all(&data).unwrap();
    let native = wait_sink(&d.out("native"), all.len(), Duration::from_secs(60));
    let same = |got: &[&[u8]], what: &str| {
        assert_eq!(got.len(), all.len(), "{what}: every record, once");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(
                String::from_utf8_lossy(g),
                String::from_utf8_lossy(w),
                "{what}"
            );
        }
    };
    same(&texts(&native), "native");
    let stock_lines = || -> Vec<Vec<u8>> {
        let data = std::fs::read(d.out("stock")).unwrap_or_default();
        data.split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    };
    wait_until(
        Duration::from_secs(60),
        "the stock plugin's records",
        || stock_lines().len() >= all.len(),
    );
    let got = stock_lines();
    same(&got.iter().map(Vec::as_slice).collect::<Vec<_>>(), "stock");
    for g in &got {
        let raw = audisp::record::split_enrichment(g).0;
        for n in names {
            let pat = format!(" {n}=");
            assert!(
                !raw.windows(pat.len()).any(|w| w == pat.as_bytes()),
                "{n} left in {}",
                String::from_utf8_lossy(g)
            );
        }
    }
    drop(stdin);
    let _ = d.stop();
}
