//! The smallest useful audisp plugin: counts events by the type of their
//! first record and prints a summary when the dispatcher lets it go.
//!
//! Run it from a plugins.d file (`exec = ["/path/to/count"]`), from a
//! socket unit, or by hand: `AUDISP_PLUGIN_SOCKET=/run/audisp/plugins/count.sock count`.

use std::collections::BTreeMap;

fn main() -> Result<(), audisp::sdk::Error> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let result = audisp::sdk::Plugin::new("count")
        .events()
        .run(|batch, _ctx| {
            for event in batch.events() {
                if let Some(first) = event.records().next() {
                    *counts.entry(first.type_name().into_owned()).or_default() += 1;
                }
            }
            Ok(())
        });
    for (kind, n) in &counts {
        println!("{n:>8} {kind}");
    }
    result
}
