//! Which inputs' records a plugin gets: routing by origin.
//!
//! Every journal entry names the input it arrived on. An input that relays
//! records from other hosts (audisp-receive) says so when it connects, and
//! the ingest stage remembers it with the input's name. A plugin gets:
//!
//! * when the admin chose its inputs (`inputs`, `exclude_inputs`): the
//!   records of the inputs named in `inputs` (all when empty) and not in
//!   `exclude_inputs`;
//! * else, when the plugin asked for local records only (a forwarder such
//!   as audisp-remote): the records of every input that does not relay, so
//!   that received records are never sent out again and a host that both
//!   sends and receives cannot loop;
//! * else every record.
//!
//! Standard input is the input named `auditd` here. The decision is made
//! once per input and kept by input index, so the check per record is an
//! index lookup.

use std::sync::Arc;

use super::ingest::{SourceId, STDIN};
use super::settings::InputSelection;

/// The name the admin gives the standard-input source (auditd's records).
pub const AUDITD: &str = "auditd";

/// Looks an input up by index: its name and whether it relays records
/// from other hosts (`Ingest::input_origin`).
pub type Lookup = Arc<dyn Fn(SourceId) -> Option<(String, bool)> + Send + Sync>;

/// How a plugin's inputs are chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    /// Every input.
    All,
    /// Inputs that do not relay records from other hosts.
    LocalOnly,
    /// The admin's choice.
    Chosen(InputSelection),
}

/// A plugin's routing by origin, with its decisions per input.
pub struct Routes {
    rule: Rule,
    /// Decision by input index (`None`: not made yet).
    decided: Vec<Option<bool>>,
    /// Input names by index, as plugins are told them (looked up once).
    names: Vec<Option<String>>,
    lookup: Lookup,
}

impl Routes {
    /// The routing of a plugin whose admin chose `admin` (`None`: not
    /// chosen) and which asked for local records only (`local_only`).
    pub fn new(admin: Option<&InputSelection>, local_only: bool, lookup: Lookup) -> Routes {
        let rule = match admin {
            Some(sel) if sel.include.is_empty() && sel.exclude.is_empty() => Rule::All,
            Some(sel) => Rule::Chosen(sel.clone()),
            None if local_only => Rule::LocalOnly,
            None => Rule::All,
        };
        Routes {
            rule,
            decided: Vec::new(),
            names: Vec::new(),
            lookup,
        }
    }

    /// The name plugins are told for input `source` (`auditd` for
    /// standard input; empty for an index no input has).
    pub fn name(&mut self, source: SourceId) -> &str {
        let i = source as usize;
        if self.names.len() <= i {
            self.names.resize(i + 1, None);
        }
        if self.names[i].is_none() {
            let Some((name, _)) = (self.lookup)(source) else {
                return "";
            };
            self.names[i] = Some(if name == STDIN {
                AUDITD.to_string()
            } else {
                name
            });
        }
        self.names[i].as_deref().unwrap_or("")
    }

    /// Whether the plugin gets the records of input `source`.
    #[inline]
    pub fn wants(&mut self, source: SourceId) -> bool {
        if self.rule == Rule::All {
            return true;
        }
        match self.decided.get(source as usize) {
            Some(Some(wanted)) => *wanted,
            _ => self.decide(source),
        }
    }

    fn decide(&mut self, source: SourceId) -> bool {
        // An index no input has (not expected for a record): not wanted,
        // and asked again next time.
        let Some((name, relayed)) = (self.lookup)(source) else {
            return false;
        };
        let wanted = match &self.rule {
            Rule::All => true,
            Rule::LocalOnly => !relayed,
            Rule::Chosen(sel) => chosen(sel, &name),
        };
        let i = source as usize;
        if self.decided.len() <= i {
            self.decided.resize(i + 1, None);
        }
        self.decided[i] = Some(wanted);
        wanted
    }
}

/// Whether the admin's selection `sel` lets the records of the input
/// called `input` through.
pub fn chosen(sel: &InputSelection, input: &str) -> bool {
    let named = |list: &[String]| list.iter().any(|n| names(n, input));
    (sel.include.is_empty() || named(&sel.include)) && !named(&sel.exclude)
}

/// Whether the admin's name `chosen` names the input called `input`.
fn names(chosen: &str, input: &str) -> bool {
    chosen == input || (chosen == AUDITD && input == STDIN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ingest::Ingest;
    use crate::journal::{Journal, Limits};
    use std::time::Duration;

    #[test]
    fn admin_choice_else_the_plugins_default() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            segment_size: 1 << 20,
            max_size: 1 << 30,
            memory: 1 << 20,
        };
        let journal = Journal::open(&dir.path().join("journal"), limits).unwrap();
        let ingest = Arc::new(
            Ingest::open(journal, dir.path(), Duration::from_secs(600), 1, 1 << 20).unwrap(),
        );
        let (stdin, _) = ingest.connect(STDIN, [0; 16], false).unwrap();
        let (kernel, _) = ingest.connect("kernel", [1; 16], false).unwrap();
        let (remote, _) = ingest.connect("remote", [2; 16], true).unwrap();
        let lookup: Lookup = {
            let i = ingest.clone();
            Arc::new(move |s| i.input_origin(s))
        };
        let got = |admin: Option<InputSelection>, local_only: bool| {
            let mut r = Routes::new(admin.as_ref(), local_only, lookup.clone());
            // Twice: the second answer comes from the kept decision.
            let once: Vec<bool> = [stdin, kernel, remote].map(|s| r.wants(s)).to_vec();
            let again: Vec<bool> = [stdin, kernel, remote].map(|s| r.wants(s)).to_vec();
            assert_eq!(once, again);
            once
        };
        let sel = |include: &[&str], exclude: &[&str]| {
            Some(InputSelection {
                include: include.iter().map(|s| s.to_string()).collect(),
                exclude: exclude.iter().map(|s| s.to_string()).collect(),
            })
        };
        assert_eq!(got(None, false), [true, true, true]);
        assert_eq!(got(None, true), [true, true, false], "local only");
        // The admin's choice wins over the plugin's default, both ways.
        assert_eq!(got(sel(&[], &[]), true), [true, true, true], "relay chosen");
        assert_eq!(got(sel(&["auditd"], &[]), false), [true, false, false]);
        assert_eq!(got(sel(&[], &["remote"]), false), [true, true, false]);
        assert_eq!(
            got(sel(&["auditd", "remote"], &["auditd"]), true),
            [false, false, true]
        );
        // An index no input has is not delivered.
        assert!(!Routes::new(None, true, lookup.clone()).wants(999));
    }
}
