//! Option files of the suite's other programs (audisp-remote,
//! audisp-receive): one TOML file per program whose keys mirror its
//! command-line flags.
//!
//! They are read like audispd's own files: trusted only when nobody but root
//! (or the running user) could have written them, and with every mistake
//! reported at once as `file:line`, the value as written and what would be
//! accepted. The program says which keys exist and what each holds through
//! [`Reader`]; this module knows nothing about any one program.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::DeValue;

use super::doc::{show, Doc, Section};
use super::files::{self, ReadError};
use super::Diagnostic;

/// Where a program's option file is, and whether it was named explicitly
/// (then it must exist; the default file may be absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionFile {
    /// The file.
    pub path: PathBuf,
    /// How it was named (`--config`, `$AUDISP_REMOTE_CONFIG`), or `None`
    /// for the default path.
    pub named_by: Option<String>,
}

impl OptionFile {
    /// Picks the file from, in order: the `--config` flag, the environment
    /// variable `env_var` (empty counts as unset) and `default`. `env`
    /// looks up a variable (`&|k| std::env::var_os(k)` in a program).
    pub fn locate(
        flag: Option<PathBuf>,
        env_var: &str,
        default: &str,
        env: &dyn Fn(&str) -> Option<OsString>,
    ) -> OptionFile {
        if let Some(path) = flag {
            return OptionFile {
                path,
                named_by: Some("--config".into()),
            };
        }
        if let Some(v) = env(env_var).filter(|v| !v.is_empty()) {
            return OptionFile {
                path: v.into(),
                named_by: Some(format!("${env_var}")),
            };
        }
        OptionFile {
            path: default.into(),
            named_by: None,
        }
    }

    /// Reads the file as `program` and hands its top-level table to `f`,
    /// which takes the values it knows. `Ok(None)` when the default file
    /// does not exist; otherwise every problem (untrusted or unreadable
    /// file, syntax error, unknown key, wrong type, bad value) is returned,
    /// ordered by line, and `f`'s result is dropped.
    pub fn load<T>(
        &self,
        program: &str,
        f: impl for<'s> FnOnce(&mut Reader<'s>, &Table<'_, 's>) -> T,
    ) -> Result<Option<T>, Vec<Diagnostic>> {
        let problem = |message: String| {
            vec![Diagnostic {
                file: self.path.clone(),
                line: None,
                column: None,
                message,
            }]
        };
        let text = match files::read_config_for(&self.path, program) {
            Ok(t) => t,
            Err(ReadError::Missing) => {
                return match &self.named_by {
                    None => Ok(None),
                    Some(how) => Err(problem(format!(
                        "does not exist; create it or correct the path given with {how}"
                    ))),
                }
            }
            Err(ReadError::Refused(m)) => return Err(problem(m)),
        };
        parse(&self.path, &text, f).map(Some)
    }
}

/// What a program's command line says about its option file.
#[derive(Debug, Default)]
pub struct FileFlags {
    /// `--config FILE`.
    pub config: Option<PathBuf>,
    /// `--no-config`: read no file at all.
    pub none: bool,
}

/// Why a program cannot start; both end in exit status 2.
#[derive(Debug)]
pub enum StartError {
    /// A command-line mistake (shown with the usage).
    Usage(String),
    /// Mistakes in the option file, each at its line.
    File(Vec<Diagnostic>),
}

impl StartError {
    /// Reports the mistake(s) on standard error as `program` and exits with
    /// status 2.
    pub fn exit(self, program: &str, usage: &str) -> ! {
        match self {
            StartError::Usage(e) => eprintln!("{program}: {e}\n{usage}"),
            StartError::File(diags) => {
                for d in &diags {
                    eprintln!("{program}: {d}");
                }
                eprintln!("{program}: not started: correct the option file");
            }
        }
        std::process::exit(2)
    }
}

/// The start every option-file program shares, once its settings are read
/// (`parsed`): a mistake is reported and the program exits with status 2
/// ([`StartError::exit`]); with `--check-config` (`check_config` says
/// whether it was given) it says `PROGRAM: configuration ok` and exits 0;
/// otherwise the settings are returned to run with.
pub fn settings_to_run<O>(
    program: &str,
    usage: &str,
    parsed: Result<O, StartError>,
    check_config: impl FnOnce(&O) -> bool,
) -> O {
    let o = parsed.unwrap_or_else(|e| e.exit(program, usage));
    if check_config(&o) {
        println!("{program}: configuration ok");
        std::process::exit(0);
    }
    o
}

/// A program's settings in the order every program of the suite takes
/// them: defaults, then the option file, then the command line. `flags`
/// applies the command line `args` to the settings it is given and says
/// which file to read; it runs twice, first on throw-away defaults to find
/// the file (so command-line mistakes are reported before the file's),
/// then over the file's values. `file` takes the file's values. Returns
/// the settings and the file read (`None` with `--no-config`).
pub fn settings<O: Default>(
    program: &str,
    env_var: &str,
    default_path: &str,
    args: Vec<OsString>,
    flags: impl Fn(&mut O, Vec<OsString>) -> Result<FileFlags, String>,
    file: impl for<'s> FnOnce(&mut Reader<'s>, &Table<'_, 's>, &mut O),
) -> Result<(O, Option<OptionFile>), StartError> {
    let chosen = flags(&mut O::default(), args.clone()).map_err(StartError::Usage)?;
    if chosen.none && chosen.config.is_some() {
        return Err(StartError::Usage(
            "--config and --no-config exclude each other".into(),
        ));
    }
    let mut o = O::default();
    let source = (!chosen.none).then(|| {
        OptionFile::locate(chosen.config, env_var, default_path, &|k| {
            std::env::var_os(k)
        })
    });
    if let Some(src) = &source {
        src.load(program, |r, top| file(r, top, &mut o))
            .map_err(StartError::File)?;
    }
    flags(&mut o, args).map_err(StartError::Usage)?;
    Ok((o, source))
}

/// The value of the flag `--NAME` that `p` has just read, converted by
/// `f`; an error names the flag and the value as given.
pub fn flag_value<T>(
    p: &mut lexopt::Parser,
    name: &str,
    f: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, String> {
    use lexopt::ValueExt;
    let v = p
        .value()
        .and_then(|v| v.string())
        .map_err(|e| e.to_string())?;
    f(&v).map_err(|m| format!("--{name} {v:?} {m}"))
}

/// Overwrites `slot` with a value the file gave, if it gave one.
pub fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

/// A value converter for [`flag_value`]: any text.
pub fn text(v: &str) -> Result<String, String> {
    Ok(v.to_string())
}

/// A value converter for [`flag_value`]: one of a fixed set of words (the
/// flag's counterpart of [`Reader::choice`]).
pub fn word<T: Copy>(choices: &[(&str, T)], v: &str) -> Result<T, String> {
    match choices.iter().find(|(n, _)| *n == v) {
        Some((_, t)) => Ok(*t),
        None => {
            let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
            Err(format!("is not one of {}", names.join(", ")))
        }
    }
}

/// A value converter for [`flag_value`]: a duration where 0 means none.
pub fn off_if_zero(v: &str) -> Result<Option<Duration>, String> {
    super::parse_duration(v).map(|d| (!d.is_zero()).then_some(d))
}

/// Parses `text`, the contents of `file`, handing its top-level table to
/// `f`; every problem found, by line, or what `f` returned.
pub fn parse<'s, T>(
    file: &Path,
    text: &'s str,
    f: impl FnOnce(&mut Reader<'s>, &Table<'_, 's>) -> T,
) -> Result<T, Vec<Diagnostic>> {
    let mut doc = Doc::new(file, text);
    let Some(top) = doc.parse() else {
        return Err(doc.finish());
    };
    let mut reader = Reader { doc };
    let out = f(&mut reader, &Table(Section::top(&top)));
    if reader.doc.is_clean() {
        Ok(out)
    } else {
        Err(reader.doc.finish())
    }
}

/// One table of an option file: the top level or a `[section]`.
pub struct Table<'t, 's>(Section<'t, 's>);

/// Takes typed values out of an option file, recording every mistake at its
/// line. Each getter returns `None` when the key is absent or its value is
/// wrong (the mistake is then recorded), so a program applies only good
/// values and learns about the rest from [`OptionFile::load`]'s result.
pub struct Reader<'s> {
    doc: Doc<'s>,
}

impl<'s> Reader<'s> {
    /// Reports every key of `t` not in `allowed` (sub-tables included),
    /// with `hint` giving advice for some keys (a key that belongs in
    /// another section, a flag's spelling) and otherwise the closest
    /// allowed key.
    pub fn reject_unknown(
        &mut self,
        t: &Table<'_, 's>,
        allowed: &[&str],
        hint: impl Fn(&str) -> Option<String>,
    ) {
        t.0.reject_unknown_with(&mut self.doc, allowed, hint);
    }

    /// The `[key]` sub-table of `t`, if present; another kind of value is
    /// reported.
    pub fn table<'t>(&mut self, t: &Table<'t, 's>, key: &str) -> Option<Table<'t, 's>> {
        t.0.table(&mut self.doc, key).map(Table)
    }

    /// A non-empty string.
    pub fn string(&mut self, t: &Table<'_, 's>, key: &str) -> Option<String> {
        t.0.string(&mut self.doc, key).map(str::to_string)
    }

    /// A string checked and converted by `f`, whose error follows
    /// `key = value` in the message.
    pub fn parsed<T>(
        &mut self,
        t: &Table<'_, 's>,
        key: &str,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        t.0.value(&mut self.doc, key, |v| match v {
            DeValue::String(s) => f(s),
            _ => Err("must be a string in quotes".to_string()),
        })
    }

    /// An absolute path (services run from `/`, so a relative path would
    /// not mean what the admin meant).
    pub fn path(&mut self, t: &Table<'_, 's>, key: &str) -> Option<PathBuf> {
        self.parsed(t, key, absolute)
    }

    /// An absolute path, or `false` for none.
    pub fn path_or_off(&mut self, t: &Table<'_, 's>, key: &str) -> Option<Option<PathBuf>> {
        t.0.value(&mut self.doc, key, |v| match v {
            DeValue::String(s) => absolute(s).map(Some),
            DeValue::Boolean(false) => Ok(None),
            _ => Err(
                "must be an absolute path in quotes, or false (without quotes) for none"
                    .to_string(),
            ),
        })
    }

    /// A boolean.
    pub fn bool(&mut self, t: &Table<'_, 's>, key: &str) -> Option<bool> {
        t.0.bool(&mut self.doc, key)
    }

    /// A whole number, 0 or more, that fits `N`.
    pub fn count<N: TryFrom<u64>>(&mut self, t: &Table<'_, 's>, key: &str) -> Option<N> {
        let n = t.0.count(&mut self.doc, key)?;
        self.fit(t, key, n)
    }

    /// A size in bytes (`4096`, `"64M"`) that fits `N`.
    pub fn size<N: TryFrom<u64>>(&mut self, t: &Table<'_, 's>, key: &str) -> Option<N> {
        let n = t.0.size(&mut self.doc, key)?;
        self.fit(t, key, n)
    }

    /// A duration (`30` seconds, `"500ms"`, `"5m"`).
    pub fn duration(&mut self, t: &Table<'_, 's>, key: &str) -> Option<Duration> {
        t.0.duration(&mut self.doc, key)
    }

    /// A list of strings, each checked and converted by `f`; every bad
    /// element is reported at its own line.
    pub fn list<T>(
        &mut self,
        t: &Table<'_, 's>,
        key: &str,
        mut f: impl FnMut(&str) -> Result<T, String>,
    ) -> Option<Vec<T>> {
        t.0.list(&mut self.doc, key, "strings", |v| match v {
            DeValue::String(s) => f(s).map_err(|m| format!("{s:?} {m}")),
            other => Err(format!("{} must be a string in quotes", show(other))),
        })
    }

    /// One of a fixed set of words; `what` names the kind in the message.
    pub fn choice<T: Copy>(
        &mut self,
        t: &Table<'_, 's>,
        key: &str,
        what: &str,
        choices: &[(&str, T)],
    ) -> Option<T> {
        t.0.choice(&mut self.doc, key, what, choices)
    }

    /// `value` (what a getter returned for `key`) if `check` accepts it;
    /// otherwise `None`, with `check`'s reason recorded at the key's line
    /// (`port = 0 is not a port…`): for limits a type alone cannot say.
    pub fn checked<T>(
        &mut self,
        t: &Table<'_, 's>,
        key: &str,
        value: Option<T>,
        check: impl FnOnce(&T) -> Result<(), String>,
    ) -> Option<T> {
        let v = value?;
        match check(&v) {
            Ok(()) => Some(v),
            Err(why) => {
                t.0.bad(&mut self.doc, key, &why);
                None
            }
        }
    }

    /// `n` converted to `N`, or the mistake recorded.
    fn fit<N: TryFrom<u64>>(&mut self, t: &Table<'_, 's>, key: &str, n: u64) -> Option<N> {
        match N::try_from(n) {
            Ok(v) => Some(v),
            Err(_) => {
                t.0.bad(&mut self.doc, key, "is too large");
                None
            }
        }
    }
}

/// `text` as an absolute path, or why not.
fn absolute(text: &str) -> Result<PathBuf, String> {
    if text.is_empty() || text.contains('\0') {
        return Err("must be an absolute path such as \"/var/lib/x\"".to_string());
    }
    let p = PathBuf::from(text);
    if p.is_absolute() {
        Ok(p)
    } else {
        Err("is not an absolute path; write it from the root, such as \"/var/lib/x\"".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// What a small program would read: `name`, `size`, `wait`, `[tls] ca`.
    #[derive(Debug, Default, PartialEq)]
    struct Got {
        name: Option<String>,
        size: Option<u64>,
        wait: Option<Duration>,
        ca: Option<PathBuf>,
        keep: Option<u32>,
        log: Option<Option<PathBuf>>,
        addrs: Option<Vec<String>>,
    }

    fn read<'s>(r: &mut Reader<'s>, top: &Table<'_, 's>) -> Got {
        let hint = |k: &str| (k == "ca").then(|| "write it in [tls]".to_string());
        r.reject_unknown(
            top,
            &["name", "size", "wait", "keep", "log", "addrs", "tls"],
            hint,
        );
        let mut g = Got {
            name: r.string(top, "name"),
            size: r.size(top, "size"),
            wait: r.duration(top, "wait"),
            keep: r.count(top, "keep"),
            log: r.path_or_off(top, "log"),
            addrs: r.list(top, "addrs", |a| {
                a.contains(':')
                    .then(|| a.to_string())
                    .ok_or_else(|| "has no port".to_string())
            }),
            ..Got::default()
        };
        if let Some(tls) = r.table(top, "tls") {
            r.reject_unknown(&tls, &["ca"], |_| None);
            g.ca = r.path(&tls, "ca");
        }
        g
    }

    fn messages(r: Result<Got, Vec<Diagnostic>>) -> Vec<String> {
        r.unwrap_err().iter().map(|d| d.to_string()).collect()
    }

    #[test]
    fn good_values_are_converted() {
        let text = "name = \"a\"\nsize = \"4G\"\nwait = \"500ms\"\nkeep = 3\nlog = false\naddrs = [\"a:1\", \"[::]:2\"]\n[tls]\nca = \"/etc/ca.pem\"\n";
        let got = parse(Path::new("p.toml"), text, read).unwrap();
        assert_eq!(
            got,
            Got {
                name: Some("a".into()),
                size: Some(4 << 30),
                wait: Some(Duration::from_millis(500)),
                ca: Some("/etc/ca.pem".into()),
                keep: Some(3),
                log: Some(None),
                addrs: Some(vec!["a:1".into(), "[::]:2".into()]),
            }
        );
        let got = parse(Path::new("p.toml"), "size = 1024\nlog = \"/l\"\n", read).unwrap();
        assert_eq!(got.size, Some(1024));
        assert_eq!(got.log, Some(Some("/l".into())));
    }

    #[test]
    fn a_checked_value_outside_its_limits_is_reported_at_its_line() {
        fn at_least_one(n: &u32) -> Result<(), String> {
            if *n == 0 {
                Err("must be at least 1".to_string())
            } else {
                Ok(())
            }
        }
        fn read<'s>(r: &mut Reader<'s>, top: &Table<'_, 's>) -> (Option<u32>, Option<u32>) {
            let a = r.count::<u32>(top, "a");
            let b = r.count::<u32>(top, "b");
            (
                r.checked(top, "a", a, at_least_one),
                r.checked(top, "b", b, at_least_one),
            )
        }
        assert_eq!(
            parse(Path::new("p.toml"), "a = 2\n", read).unwrap(),
            (Some(2), None)
        );
        let m: Vec<String> = parse(Path::new("p.toml"), "a = 1\nb = 0\n", read)
            .unwrap_err()
            .iter()
            .map(|d| d.to_string())
            .collect();
        assert_eq!(m, ["p.toml:2: b = 0 must be at least 1"]);
    }

    #[test]
    fn every_mistake_is_reported_at_its_line() {
        let text = "name = 5\nsize = \"4 apples\"\nwait = true\ncolour = 1\nca = \"/x\"\nkeep = 99999999999\nlog = \"rel/log\"\naddrs = [\"a:1\",\n  \"b\", 3]\n[tls]\nca = \"ca.pem\"\nkey = \"/k\"\n";
        let m = messages(parse(Path::new("p.toml"), text, read));
        assert_eq!(
            m,
            [
                "p.toml:1: name = 5 must be a string in quotes",
                "p.toml:2: size = \"4 apples\" is not a size; write a byte count as an integer or a string such as \"512K\", \"64M\" or \"1G\" (binary multiples; KiB, MiB, GiB also accepted)",
                "p.toml:3: wait = true is not a duration; write whole seconds as an integer or a string such as \"500ms\", \"2s\", \"5m\" or \"1h\"",
                "p.toml:4: unknown key \"colour\"; allowed keys are name, size, wait, keep, log, addrs, tls",
                "p.toml:5: unknown key \"ca\" (write it in [tls]); allowed keys are name, size, wait, keep, log, addrs, tls",
                "p.toml:6: keep = 99999999999 is too large",
                "p.toml:7: log = \"rel/log\" is not an absolute path; write it from the root, such as \"/var/lib/x\"",
                "p.toml:9: addrs: \"b\" has no port",
                "p.toml:9: addrs: 3 must be a string in quotes",
                "p.toml:11: ca = \"ca.pem\" is not an absolute path; write it from the root, such as \"/var/lib/x\"",
                "p.toml:12: unknown key \"key\" in [tls]; allowed keys are ca",
            ]
        );
        let m = messages(parse(Path::new("p.toml"), "\nname = \n", read));
        assert_eq!(m.len(), 1);
        assert!(m[0].starts_with("p.toml:2: TOML syntax error"), "{m:?}");
    }

    #[test]
    fn locating_the_file() {
        let env = |k: &str| (k == "X_CONFIG").then(|| OsString::from("/env/x.toml"));
        let none = |_: &str| None;
        let empty = |_: &str| Some(OsString::new());
        assert_eq!(
            OptionFile::locate(Some("/f.toml".into()), "X_CONFIG", "/etc/x.toml", &env),
            OptionFile {
                path: "/f.toml".into(),
                named_by: Some("--config".into())
            }
        );
        assert_eq!(
            OptionFile::locate(None, "X_CONFIG", "/etc/x.toml", &env),
            OptionFile {
                path: "/env/x.toml".into(),
                named_by: Some("$X_CONFIG".into())
            }
        );
        for env in [&none as &dyn Fn(&str) -> Option<OsString>, &empty] {
            assert_eq!(
                OptionFile::locate(None, "X_CONFIG", "/etc/x.toml", env),
                OptionFile {
                    path: "/etc/x.toml".into(),
                    named_by: None
                }
            );
        }
    }

    #[test]
    fn missing_and_untrusted_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.toml");
        let default = OptionFile {
            path: p.clone(),
            named_by: None,
        };
        assert_eq!(default.load("prog", read).unwrap(), None);
        let named = OptionFile {
            named_by: Some("--config".into()),
            ..default.clone()
        };
        let m = named.load("prog", read).unwrap_err();
        assert_eq!(
            m[0].to_string(),
            format!(
                "{}: does not exist; create it or correct the path given with --config",
                p.display()
            )
        );

        std::fs::write(&p, "name = \"n\"\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o664)).unwrap();
        let m = default.load("prog", read).unwrap_err()[0].to_string();
        assert!(
            m.contains("is group-writable (mode 0664); prog only reads config files owned by root"),
            "{m}"
        );
        assert!(
            m.ends_with(&format!("fix: chmod 0644 {}", p.display())),
            "{m}"
        );

        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let got = default.load("prog", read).unwrap().unwrap();
        assert_eq!(got.name.as_deref(), Some("n"));
    }
}
