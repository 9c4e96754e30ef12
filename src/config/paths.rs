//! Where audisp keeps its files: the config, runtime and state directories,
//! picked from flags, audisp's and systemd's environment variables, or the
//! defaults.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// Where audisp keeps its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// `audispd.toml` and `plugins.d/` (default `/etc/audisp`).
    pub config_dir: PathBuf,
    /// Sockets and the state file (default `/run/audisp`).
    pub runtime_dir: PathBuf,
    /// The journal and plugin cursors (default `/var/lib/audisp`).
    pub state_dir: PathBuf,
}

impl Paths {
    /// Picks each directory from, in order: the command-line flag,
    /// `AUDISP_CONFIG_DIR` / `AUDISP_RUNTIME_DIR` / `AUDISP_STATE_DIR`,
    /// systemd's `CONFIGURATION_DIRECTORY` / `RUNTIME_DIRECTORY` /
    /// `STATE_DIRECTORY` (the first path if it lists several), and the
    /// defaults `/etc/audisp`, `/run/audisp`, `/var/lib/audisp`. Empty
    /// variables count as unset. `env` looks up an environment variable
    /// (`&|k| std::env::var_os(k)` in the daemon).
    pub fn resolve(
        config_dir: Option<PathBuf>,
        runtime_dir: Option<PathBuf>,
        state_dir: Option<PathBuf>,
        env: &dyn Fn(&str) -> Option<OsString>,
    ) -> Paths {
        let pick = |flag: Option<PathBuf>, ours: &str, systemd: &str, default: &str| -> PathBuf {
            if let Some(p) = flag {
                return p;
            }
            if let Some(v) = env(ours).filter(|v| !v.is_empty()) {
                return PathBuf::from(v);
            }
            if let Some(v) = env(systemd) {
                let first = v.as_bytes().split(|&b| b == b':').find(|p| !p.is_empty());
                if let Some(p) = first {
                    return PathBuf::from(std::ffi::OsStr::from_bytes(p));
                }
            }
            PathBuf::from(default)
        };
        Paths {
            config_dir: pick(
                config_dir,
                "AUDISP_CONFIG_DIR",
                "CONFIGURATION_DIRECTORY",
                "/etc/audisp",
            ),
            runtime_dir: pick(
                runtime_dir,
                "AUDISP_RUNTIME_DIR",
                "RUNTIME_DIRECTORY",
                "/run/audisp",
            ),
            state_dir: pick(
                state_dir,
                "AUDISP_STATE_DIR",
                "STATE_DIRECTORY",
                "/var/lib/audisp",
            ),
        }
    }

    /// The main config file, `CONFIG_DIR/audispd.toml`.
    pub fn main_file(&self) -> PathBuf {
        self.config_dir.join("audispd.toml")
    }

    /// The plugin directory, `CONFIG_DIR/plugins.d`.
    pub fn plugins_dir(&self) -> PathBuf {
        self.config_dir.join("plugins.d")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<OsString> {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn paths_default() {
        let p = Paths::resolve(None, None, None, &env_of(&[]));
        assert_eq!(p.config_dir, PathBuf::from("/etc/audisp"));
        assert_eq!(p.runtime_dir, PathBuf::from("/run/audisp"));
        assert_eq!(p.state_dir, PathBuf::from("/var/lib/audisp"));
        assert_eq!(p.main_file(), PathBuf::from("/etc/audisp/audispd.toml"));
        assert_eq!(p.plugins_dir(), PathBuf::from("/etc/audisp/plugins.d"));
    }

    #[test]
    fn paths_precedence() {
        let env = env_of(&[
            ("AUDISP_CONFIG_DIR", "/a/config"),
            ("CONFIGURATION_DIRECTORY", "/sd/config"),
            ("RUNTIME_DIRECTORY", "/sd/run1:/sd/run2"),
            ("AUDISP_STATE_DIR", ""),
            ("STATE_DIRECTORY", ":/sd/state"),
        ]);
        let p = Paths::resolve(None, None, None, &env);
        assert_eq!(
            p.config_dir,
            PathBuf::from("/a/config"),
            "ours beats systemd's"
        );
        assert_eq!(
            p.runtime_dir,
            PathBuf::from("/sd/run1"),
            "systemd's first path"
        );
        assert_eq!(
            p.state_dir,
            PathBuf::from("/sd/state"),
            "empty counts as unset"
        );
        let p = Paths::resolve(
            Some("/f/c".into()),
            Some("/f/r".into()),
            Some("/f/s".into()),
            &env,
        );
        assert_eq!(
            p,
            Paths {
                config_dir: "/f/c".into(),
                runtime_dir: "/f/r".into(),
                state_dir: "/f/s".into()
            },
            "flags beat everything"
        );
    }
}
