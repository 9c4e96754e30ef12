//! The command-line options every plugin program built on the SDK shares
//! (`--name`, `--listen`, `--state`, `--include`, `--exclude`): one parser,
//! so every program spells and applies them the same way.

use std::path::PathBuf;

use super::Plugin;

/// Options common to SDK plugin programs.
#[derive(Debug, Clone)]
pub struct PluginOptions {
    /// The plugin's name (`--name`).
    pub name: String,
    /// Socket to listen on when not started by audispd or systemd (`--listen`).
    pub listen: Option<PathBuf>,
    /// Checkpoint file (`--state`).
    pub state: Option<PathBuf>,
    /// Record types to receive (`--include T,T`).
    pub include: Vec<String>,
    /// Record types not to receive (`--exclude T,T`).
    pub exclude: Vec<String>,
}

impl PluginOptions {
    /// Defaults for a plugin named `name`.
    pub fn new(name: &str) -> PluginOptions {
        PluginOptions {
            name: name.into(),
            listen: None,
            state: None,
            include: Vec::new(),
            exclude: Vec::new(),
        }
    }

    /// Takes `--flag value` if it is one of the common options; gives the
    /// value back when it is not, for the program's own options.
    pub fn take(&mut self, flag: &str, value: String) -> Option<String> {
        let list = |v: &str| v.split(',').map(str::to_string).collect();
        match flag {
            "name" => self.name = value,
            "listen" => self.listen = Some(value.into()),
            "state" => self.state = Some(value.into()),
            "include" => self.include = list(&value),
            "exclude" => self.exclude = list(&value),
            _ => return Some(value),
        }
        None
    }

    /// A plugin configured by these options.
    pub fn plugin(&self) -> Plugin {
        let inc: Vec<&str> = self.include.iter().map(String::as_str).collect();
        let exc: Vec<&str> = self.exclude.iter().map(String::as_str).collect();
        let mut plugin = Plugin::new(&self.name).include(&inc).exclude(&exc);
        if let Some(s) = &self.state {
            plugin = plugin.checkpoint_file(s);
        }
        if let Some(l) = &self.listen {
            plugin = plugin.listen(l);
        }
        plugin
    }
}
