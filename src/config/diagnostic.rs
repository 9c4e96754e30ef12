//! One problem found in a configuration or option file, shown as
//! `FILE:LINE: message` (`FILE:LINE:COLUMN: message` inside a filter
//! expression).

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem found in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file the problem is in.
    pub file: PathBuf,
    /// The line, when the problem is at one.
    pub line: Option<usize>,
    /// The column (in characters, from 1) when the problem is at a precise
    /// place on its line: inside a filter expression.
    pub column: Option<usize>,
    /// What is wrong and what to do about it.
    pub message: String,
}

impl Diagnostic {
    /// `FILE:LINE: message` with FILE shown relative to `base` when it is
    /// inside it (as `audispd --check-config` shows it).
    pub fn display_relative(&self, base: &Path) -> String {
        let file = self.file.strip_prefix(base).unwrap_or(&self.file);
        format!("{}{}", file.display(), self.place_and_message())
    }

    /// `:LINE[:COLUMN]: message`, or `: message`.
    fn place_and_message(&self) -> String {
        match (self.line, self.column) {
            (Some(l), Some(c)) => format!(":{l}:{c}: {}", self.message),
            (Some(l), None) => format!(":{l}: {}", self.message),
            (None, _) => format!(": {}", self.message),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.file.display(), self.place_and_message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnostics_display() {
        let d = Diagnostic {
            file: "/etc/audisp/plugins.d/a.toml".into(),
            line: Some(4),
            column: None,
            message: "bad".into(),
        };
        assert_eq!(d.to_string(), "/etc/audisp/plugins.d/a.toml:4: bad");
        assert_eq!(
            d.display_relative(Path::new("/etc/audisp")),
            "plugins.d/a.toml:4: bad"
        );
        let d = Diagnostic { line: None, ..d };
        assert_eq!(d.to_string(), "/etc/audisp/plugins.d/a.toml: bad");
        assert_eq!(
            d.display_relative(Path::new("/elsewhere")),
            "/etc/audisp/plugins.d/a.toml: bad"
        );
        let d = Diagnostic {
            line: Some(2),
            column: Some(7),
            ..d
        };
        assert_eq!(d.to_string(), "/etc/audisp/plugins.d/a.toml:2:7: bad");
    }
}
