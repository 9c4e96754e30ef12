//! The packages `packaging/build.sh deb rpm` makes in `target/packages/`,
//! for the tests that check them. A package is only used if it is newer
//! than every source it is made from: a stale one would test old code, so
//! the test says to rebuild it instead.

// Each test binary compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Which package.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// audisp_VERSION-1_ARCH.deb
    Deb,
    /// audisp-dbgsym_VERSION-1_ARCH.deb
    DebDebug,
    /// audisp-VERSION-1.ARCH.rpm
    Rpm,
    /// audisp-debuginfo-VERSION-1.ARCH.rpm
    RpmDebug,
}

/// Where build.sh puts the packages.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/packages")
}

/// The newest file under `path` (itself if a file), with its time.
fn newest(path: &Path) -> Option<(SystemTime, PathBuf)> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_dir() {
        return Some((meta.modified().ok()?, path.to_path_buf()));
    }
    std::fs::read_dir(path)
        .ok()?
        .filter_map(|e| newest(&e.ok()?.path()))
        .max()
}

/// The package of `kind`, or why there is none to test.
pub fn find(kind: Kind) -> Result<PathBuf, String> {
    let v = env!("CARGO_PKG_VERSION");
    let (prefix, suffix) = match kind {
        Kind::Deb => (format!("audisp_{v}-"), ".deb"),
        Kind::DebDebug => (format!("audisp-dbgsym_{v}-"), ".deb"),
        Kind::Rpm => (format!("audisp-{v}-"), ".rpm"),
        Kind::RpmDebug => (format!("audisp-debuginfo-{v}-"), ".rpm"),
    };
    let build = match kind {
        Kind::Deb | Kind::DebDebug => "packaging/build.sh deb",
        Kind::Rpm | Kind::RpmDebug => "packaging/build.sh rpm",
    };
    let found = std::fs::read_dir(dir())
        .map_err(|_| format!("no {} yet: run {build}", dir().display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(suffix))
        })
        .ok_or_else(|| format!("no {prefix}*{suffix} in {}: run {build}", dir().display()))?;
    let made = std::fs::metadata(&found)
        .and_then(|m| m.modified())
        .map_err(|e| format!("{}: {e}", found.display()))?;
    let src = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sources = [
        "Cargo.toml",
        "Cargo.lock",
        "README.md",
        "src",
        "units",
        "docs",
        "packaging",
        "plugins.d",
        "dbus",
    ];
    if let Some((changed, file)) = sources.iter().filter_map(|s| newest(&src.join(s))).max() {
        if changed > made {
            return Err(format!(
                "{} is older than {}: run {build}",
                found.display(),
                file.display()
            ));
        }
    }
    Ok(found)
}
