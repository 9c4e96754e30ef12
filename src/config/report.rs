//! `audispd --check-config`: a load rendered as one line per problem and
//! a summary of what audispd would run.

use super::load::{load, Loaded};
use super::Paths;

/// Renders a load the way `audispd --check-config` prints it: every
/// diagnostic as `path:line: message` (paths relative to the config
/// directory), then a summary line. Returns the text (ending in a newline)
/// and whether the configuration is free of problems.
pub fn report(paths: &Paths, loaded: &Loaded) -> (String, bool) {
    let mut out = String::new();
    for d in &loaded.diagnostics {
        out.push_str(&d.display_relative(&paths.config_dir));
        out.push('\n');
    }
    let errors = loaded.diagnostics.len();
    let ok = errors == 0;
    let summary = match &loaded.config {
        None => format!("{}: audispd would not start", count(errors, "error")),
        Some(c) => {
            let running: Vec<&str> = c
                .plugins
                .iter()
                .filter(|p| p.active)
                .map(|p| p.name.as_str())
                .collect();
            let inactive: Vec<&str> = c
                .plugins
                .iter()
                .filter(|p| !p.active)
                .map(|p| p.name.as_str())
                .collect();
            let mut s = if ok {
                format!("ok: {}", named("plugin", &running))
            } else {
                format!(
                    "{}: audispd would run {}",
                    count(errors, "error"),
                    named("plugin", &running)
                )
            };
            if !inactive.is_empty() {
                s.push_str(&format!(
                    ", {} inactive ({})",
                    inactive.len(),
                    inactive.join(", ")
                ));
            }
            if !loaded.skipped.is_empty() {
                let names: Vec<&str> = loaded.skipped.iter().map(String::as_str).collect();
                s.push_str(&format!(", skipping {}", names.join(", ")));
            }
            s
        }
    };
    out.push_str(&summary);
    out.push('\n');
    (out, ok)
}

/// [`load`] then [`report`]: the whole of `audispd --check-config`.
pub fn check(paths: &Paths) -> (String, bool) {
    report(paths, &load(paths))
}

/// `1 error`, `2 errors`.
fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// `2 plugins (a, b)`, `0 plugins`.
fn named(what: &str, names: &[&str]) -> String {
    if names.is_empty() {
        count(0, what)
    } else {
        format!("{} ({})", count(names.len(), what), names.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::Duration;

    use super::*;
    use crate::config::{
        Backoff, Config, DeliveryMode, Diagnostic, MainConfig, Overflow, PluginConfig,
        PluginFormat, Transport,
    };

    #[test]
    fn summaries() {
        let paths = Paths::resolve(
            Some("/c".into()),
            Some("/r".into()),
            Some("/s".into()),
            &|_| None,
        );
        let plugin = |name: &str, active: bool| PluginConfig {
            name: name.into(),
            file: format!("/c/plugins.d/{name}.toml").into(),
            active,
            transport: Transport::Socket(format!("/r/plugins/{name}").into()),
            format: PluginFormat::Native,
            mode: DeliveryMode::Records,
            include: vec![],
            exclude: vec![],
            inputs: None,
            drop_fields: vec![],
            filter: None,
            queue_size: 1,
            overflow: Overflow::Spool,
            spool_max: 1 << 30,
            restart: Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(1),
            },
            actions: BTreeMap::new(),
        };
        let mut loaded = Loaded {
            config: Some(Config {
                main: MainConfig::defaults(&paths),
                plugins: vec![plugin("a", true), plugin("b", false), plugin("c", true)],
            }),
            diagnostics: vec![],
            skipped: BTreeSet::new(),
        };
        assert_eq!(
            report(&paths, &loaded),
            ("ok: 2 plugins (a, c), 1 inactive (b)\n".to_string(), true)
        );
        loaded.diagnostics.push(Diagnostic {
            file: "/c/plugins.d/d.toml".into(),
            line: Some(2),
            column: None,
            message: "bad".into(),
        });
        loaded.skipped.insert("d".into());
        assert_eq!(
            report(&paths, &loaded),
            (
                "plugins.d/d.toml:2: bad\n1 error: audispd would run 2 plugins (a, c), 1 inactive (b), skipping d\n".to_string(),
                false
            )
        );
        loaded.config = None;
        loaded.diagnostics.push(loaded.diagnostics[0].clone());
        assert_eq!(
            report(&paths, &loaded).0.lines().last(),
            Some("2 errors: audispd would not start")
        );
        let empty = Loaded {
            config: Some(Config {
                main: MainConfig::defaults(&paths),
                plugins: vec![],
            }),
            diagnostics: vec![],
            skipped: BTreeSet::new(),
        };
        assert_eq!(report(&paths, &empty).0, "ok: 0 plugins\n");
    }
}
