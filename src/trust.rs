//! Which files audisp trusts: the config files it reads, the programs it
//! runs (as root, typically) and the files named in their arguments.
//!
//! A file is only as safe as the directories that lead to it: a root-owned
//! program in a world-writable directory can be renamed over by anyone. So,
//! as sudo and systemd do for what they run, the whole path is checked, and
//! checked again right before each start, with the program then executed
//! from the very descriptor that was checked.
//!
//! # The rule
//!
//! *Trusted owners* are root and the user running the program (so that an
//! unprivileged test or demo instance works).
//!
//! * **Every directory** from `/` down to the file is owned by a trusted
//!   owner and not writable by group or others. A *sticky* directory (mode
//!   `+t`, like `/tmp`) may be writable by others: nobody can rename or
//!   delete an entry there that they do not own, so the entry the path takes
//!   next (directory, link or file) must itself be owned by a trusted owner.
//! * **Symbolic links** are followed (at most 40), component by component,
//!   as the kernel does: a link can only be changed by whoever may write its
//!   directory, which is checked like any other; the target is then walked
//!   by the same rule (from `/` when absolute). `..` is the physical parent.
//! * **The file** itself: a regular file owned by a trusted owner, not
//!   writable by group or others; a program must also be executable by its
//!   owner. A program starting with `#!` is a script: its interpreter (an
//!   absolute path) is checked by the same rule, recursively up to
//!   [`MAX_INTERPRETERS`] levels, and the script is passed to it as an
//!   argument, exactly as the kernel would.
//! * **Arguments** that are absolute paths of existing files are checked
//!   too (the program may run or read them: `["/bin/sh", "/path/script"]`):
//!   the path by the directory rule, and a regular file or directory must be
//!   owned by a trusted owner and not writable by group or others (sticky or
//!   not: a writable directory argument could receive new files). Device
//!   nodes, sockets and FIFOs are only path-checked: they hold no code.
//!   Relative arguments are not files audisp can judge (they depend on the
//!   working directory) and are not checked.
//!
//! [`prepare_exec`] applies the rule and returns the program (or, for a
//! script, its interpreter) open read-only; the caller executes that
//! descriptor with `execveat(AT_EMPTY_PATH)`, so a file swapped in between
//! check and start is never run. A script is re-opened by its interpreter
//! by name; only a trusted owner can change anything along that name.
//! Argument files are likewise re-opened by name by the program.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};

use nix::unistd::{geteuid, Uid, User};

/// Most symbolic links followed while walking one path (the kernel's limit).
const MAX_SYMLINKS: u32 = 40;

/// Most `#!` interpreters in a chain (a script whose interpreter is a
/// script…), as the kernel allows.
pub const MAX_INTERPRETERS: usize = 4;

/// Bytes the kernel reads to find a `#!` line (`BINPRM_BUF_SIZE`).
const SHEBANG_MAX: usize = 256;

/// What a checked file is for, which decides what is demanded of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRole {
    /// A configuration file the program reads.
    Config,
    /// A program it runs.
    Program,
    /// A file named in the arguments of a program it runs.
    Argument,
}

/// Whether `uid` is a trusted owner: root or the user running this process.
fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == geteuid().as_raw()
}

/// The owners trusted, for messages: `root`, or `root (or uid 1000, which
/// runs audispd)`.
fn owner_rule(program: &str) -> String {
    let euid = geteuid().as_raw();
    if euid == 0 {
        "root".to_string()
    } else {
        format!("root (or uid {euid}, which runs {program})")
    }
}

/// The metadata the rule looks at.
#[derive(Debug, Clone, Copy)]
pub struct Facts {
    /// Owner.
    pub uid: u32,
    /// Mode, including the file type bits.
    pub mode: u32,
}

impl Facts {
    fn of(st: &libc::stat) -> Facts {
        Facts {
            uid: st.st_uid,
            mode: st.st_mode,
        }
    }

    /// From std metadata.
    pub fn from_metadata(m: &std::fs::Metadata) -> Facts {
        use std::os::unix::fs::MetadataExt;
        Facts {
            uid: m.uid(),
            mode: m.mode(),
        }
    }

    fn kind(self) -> u32 {
        self.mode & libc::S_IFMT
    }

    fn perms(self) -> u32 {
        self.mode & 0o7777
    }

    fn is_dir(self) -> bool {
        self.kind() == libc::S_IFDIR
    }

    fn is_file(self) -> bool {
        self.kind() == libc::S_IFREG
    }

    fn is_symlink(self) -> bool {
        self.kind() == libc::S_IFLNK
    }

    fn writable_by_others(self) -> bool {
        self.mode & 0o022 != 0
    }

    fn sticky(self) -> bool {
        self.mode & libc::S_ISVTX != 0
    }

    /// `a directory`, `a FIFO`… for messages.
    fn kind_name(self) -> &'static str {
        match self.kind() {
            libc::S_IFDIR => "a directory",
            libc::S_IFIFO => "a FIFO",
            libc::S_IFSOCK => "a socket",
            libc::S_IFBLK | libc::S_IFCHR => "a device",
            libc::S_IFLNK => "a symbolic link",
            libc::S_IFREG => "a regular file",
            _ => "not a regular file",
        }
    }

    /// `is group-writable (mode 0775)`, or None.
    fn writable_problem(self) -> Option<String> {
        let mode = self.perms();
        match self.mode & 0o022 {
            0 => None,
            0o020 => Some(format!("is group-writable (mode {mode:04o})")),
            0o002 => Some(format!("is world-writable (mode {mode:04o})")),
            _ => Some(format!("is group- and world-writable (mode {mode:04o})")),
        }
    }
}

/// `uid 1000 (alice)`, or just `uid 1000` when the user has no name.
pub fn describe_uid(uid: u32) -> String {
    match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(u)) => format!("uid {uid} ({})", u.name),
        _ => format!("uid {uid}"),
    }
}

/// Why a file (with `facts`, at `path`) cannot be trusted by `program` in
/// `role`, with the fix, or `None`. Looks at the file only; [`walk`]
/// checks the directories leading to it.
pub fn file_problem(path: &Path, facts: Facts, role: FileRole, program: &str) -> Option<String> {
    let kind = match role {
        FileRole::Config => "config files",
        FileRole::Program => "programs",
        FileRole::Argument => "files in program arguments",
    };
    let checked = facts.is_file() || (role == FileRole::Argument && facts.is_dir());
    if !checked {
        if role == FileRole::Argument {
            // Devices, sockets and FIFOs hold no code.
            return None;
        }
        return Some(format!(
            "is {}, not a regular file; {program} only uses regular files as {kind}",
            facts.kind_name()
        ));
    }
    let wrong_owner = !trusted_owner(facts.uid);
    let writable = facts.writable_problem();
    let not_executable = role == FileRole::Program && facts.perms() & 0o100 == 0;
    if !wrong_owner && writable.is_none() && !not_executable {
        return None;
    }
    let mut problems = Vec::new();
    if wrong_owner {
        problems.push(format!("is owned by {}", describe_uid(facts.uid)));
    }
    problems.extend(writable.clone());
    if not_executable {
        problems.push(format!(
            "is not executable by its owner (mode {:04o})",
            facts.perms()
        ));
    }
    let owners = format!("owned by {}", owner_rule(program));
    let rule = match role {
        FileRole::Config => format!(
            "{program} only reads config files {owners} that group and others cannot write"
        ),
        FileRole::Program => format!(
            "{program} only runs programs {owners} that group and others cannot write and the owner can execute"
        ),
        FileRole::Argument => format!(
            "{program} only passes existing files and directories to a program (which may run them) when they are {owners} and group and others cannot write them"
        ),
    };
    let shown = path.display();
    let mut fix = Vec::new();
    if wrong_owner {
        fix.push(format!("chown root:root {shown}"));
    }
    if writable.is_some() || not_executable {
        let good = if role == FileRole::Program || facts.is_dir() {
            "0755"
        } else {
            "0644"
        };
        fix.push(format!("chmod {good} {shown}"));
    }
    Some(format!(
        "{}; {rule}; fix: {}",
        problems.join(" and "),
        fix.join(" && ")
    ))
}

/// Why a path cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Nothing exists there.
    Missing,
    /// It exists but cannot be trusted (or checked); says why, with the fix.
    Untrusted(String),
}

/// What a trusted path leads to.
#[derive(Debug)]
pub struct Found {
    /// The object, open with `O_PATH` (not followed if a link).
    pub fd: OwnedFd,
    /// Its owner and mode.
    pub facts: Facts,
    /// The directory holding it, open with `O_PATH`.
    parent: OwnedFd,
    /// Its name in `parent`.
    name: OsString,
    /// The path as resolved (links followed), for messages.
    pub resolved: PathBuf,
}

impl Found {
    /// Opens the (regular) file read-only, making sure it is the object
    /// that was checked.
    fn open_readable(&self) -> io::Result<File> {
        let fd = openat(
            self.parent.as_fd(),
            &self.name,
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK,
        )?;
        let (a, b) = (fstat(self.fd.as_fd())?, fstat(fd.as_fd())?);
        if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino) {
            return Err(io::Error::other("was replaced while it was being checked"));
        }
        Ok(File::from(fd))
    }
}

fn cstring(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "contains a NUL byte"))
}

fn openat(dir: BorrowedFd<'_>, name: &OsStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = cstring(name)?;
    // SAFETY: `c` is a valid C string; the result is a new descriptor or -1.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat fills `st` on success.
    if unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstat succeeded, so `st` is initialised.
    Ok(unsafe { st.assume_init() })
}

/// The target of the symbolic link open (`O_PATH`) at `fd`.
fn readlink(fd: BorrowedFd<'_>) -> io::Result<OsString> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: readlinkat writes at most `buf.len()` bytes into `buf`; an
    // empty path reads the link `fd` itself refers to.
    let n = unsafe {
        libc::readlinkat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(OsString::from_vec(buf))
}

/// The names to walk for `path`, in reverse order (a stack), and whether
/// it starts at `/`.
fn push_components(todo: &mut Vec<OsString>, path: &Path) -> bool {
    let mut absolute = false;
    let mut names = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir => absolute = true,
            Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => names.push(OsString::from("..")),
            Component::Normal(n) => names.push(n.to_os_string()),
        }
    }
    todo.extend(names.into_iter().rev());
    absolute
}

/// A directory the walk is in.
struct Dir {
    fd: OwnedFd,
    path: PathBuf,
    /// Writable by others but sticky: what is taken from it next must
    /// belong to a trusted owner.
    sticky_open: bool,
}

fn open_root(program: &str) -> Result<Dir, Refusal> {
    // SAFETY: a constant C string; the result is a new descriptor or -1.
    let fd = unsafe {
        libc::open(
            c"/".as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(Refusal::Untrusted(format!("cannot open /: {e}")));
    }
    // SAFETY: the kernel just returned this descriptor to us.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    enter_dir(fd, PathBuf::from("/"), program)
}

/// Checks a directory on the path and makes it the current one.
fn enter_dir(fd: OwnedFd, path: PathBuf, program: &str) -> Result<Dir, Refusal> {
    let facts = Facts::of(
        &fstat(fd.as_fd())
            .map_err(|e| Refusal::Untrusted(format!("cannot check {}: {e}", path.display())))?,
    );
    let mut problems = Vec::new();
    if !trusted_owner(facts.uid) {
        problems.push(format!("is owned by {}", describe_uid(facts.uid)));
    }
    let open_to_others = facts.writable_by_others();
    if open_to_others && !facts.sticky() {
        problems.extend(facts.writable_problem());
    }
    if !problems.is_empty() {
        let mut fix = Vec::new();
        if !trusted_owner(facts.uid) {
            fix.push(format!("chown root {}", path.display()));
        }
        if open_to_others && !facts.sticky() {
            fix.push(format!("chmod go-w {}", path.display()));
        }
        return Err(Refusal::Untrusted(format!(
            "lies in directory {}, which {}, so others could replace it; {program} only trusts paths whose every directory is owned by {} and not writable by group or others (or sticky, like /tmp); fix: {}",
            path.display(),
            problems.join(" and "),
            owner_rule(program),
            fix.join(" && ")
        )));
    }
    Ok(Dir {
        fd,
        path,
        sticky_open: open_to_others,
    })
}

/// Walks `path` from `/` by [the rule](self), checking every directory on
/// the way, and returns what it leads to (not yet judged itself: see
/// [`file_problem`]). A relative path is refused.
pub fn walk(path: &Path, program: &str) -> Result<Found, Refusal> {
    if !path.is_absolute() {
        return Err(Refusal::Untrusted("is not an absolute path".into()));
    }
    let mut todo = Vec::new();
    push_components(&mut todo, path);
    let mut dir = open_root(program)?;
    let mut links = 0u32;
    let io_err = |what: &Path, e: io::Error| match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => Refusal::Missing,
        _ => Refusal::Untrusted(format!("cannot check {}: {e}", what.display())),
    };
    while let Some(name) = todo.pop() {
        if name == ".." {
            let fd = openat(dir.fd.as_fd(), &name, libc::O_PATH | libc::O_DIRECTORY)
                .map_err(|e| io_err(&dir.path, e))?;
            let mut up = dir.path.clone();
            up.pop();
            dir = enter_dir(fd, up, program)?;
            continue;
        }
        let here = dir.path.join(&name);
        let fd = openat(dir.fd.as_fd(), &name, libc::O_PATH | libc::O_NOFOLLOW)
            .map_err(|e| io_err(&here, e))?;
        let facts = Facts::of(&fstat(fd.as_fd()).map_err(|e| io_err(&here, e))?);
        if dir.sticky_open && !trusted_owner(facts.uid) {
            return Err(Refusal::Untrusted(format!(
                "passes through {}, owned by {} in {}, a directory others can write to (it is sticky, so only entries owned by {} are safe there); fix: chown root {}",
                here.display(),
                describe_uid(facts.uid),
                dir.path.display(),
                owner_rule(program),
                here.display()
            )));
        }
        if facts.is_symlink() {
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(Refusal::Untrusted(format!(
                    "goes through more than {MAX_SYMLINKS} symbolic links"
                )));
            }
            let target = readlink(fd.as_fd()).map_err(|e| io_err(&here, e))?;
            if push_components(&mut todo, Path::new(&target)) {
                dir = open_root(program)?;
            }
            continue;
        }
        if todo.is_empty() {
            return Ok(Found {
                fd,
                facts,
                parent: dir.fd,
                name,
                resolved: here,
            });
        }
        if !facts.is_dir() {
            return Err(Refusal::Missing);
        }
        dir = enter_dir(fd, here, program)?;
    }
    // The path was `/` or ended in `..`: it leads to the directory itself.
    let fd =
        openat(dir.fd.as_fd(), OsStr::new("."), libc::O_PATH).map_err(|e| io_err(&dir.path, e))?;
    let facts = Facts::of(&fstat(fd.as_fd()).map_err(|e| io_err(&dir.path, e))?);
    Ok(Found {
        fd,
        facts,
        parent: dir.fd,
        name: ".".into(),
        resolved: dir.path,
    })
}

/// A program ready to be executed: the file to execute, open read-only and
/// checked, and the full argument vector (for a script: the interpreter,
/// its `#!` argument, the script, then the arguments).
#[derive(Debug)]
pub struct ExecPlan {
    /// What to pass to `execveat(fd, "", …, AT_EMPTY_PATH)`.
    pub file: File,
    /// `argv`, `argv[0]` included.
    pub argv: Vec<CString>,
}

/// Checks `argv` (`argv[0]`: the program's absolute path) by [the
/// rule](self) and opens what is to be executed. `program` names the
/// checking program in messages (`audispd`). The error is a full sentence
/// naming the offending path, with the fix.
pub fn prepare_exec(argv: &[OsString], program: &str) -> Result<ExecPlan, String> {
    prepare(argv.to_vec(), program, 0)
}

fn prepare(argv: Vec<OsString>, program: &str, depth: usize) -> Result<ExecPlan, String> {
    let Some(path) = argv.first().map(PathBuf::from) else {
        return Err("the command line is empty".into());
    };
    let shown = path.display();
    let found = match walk(&path, program) {
        Ok(f) => f,
        Err(Refusal::Missing) => {
            return Err(format!(
                "{shown} does not exist; install it or correct the path"
            ))
        }
        Err(Refusal::Untrusted(why)) => return Err(format!("{shown} {why}")),
    };
    if let Some(problem) = file_problem(&found.resolved, found.facts, FileRole::Program, program) {
        return Err(format!("{shown} {problem}"));
    }
    let file = found
        .open_readable()
        .map_err(|e| format!("{shown} cannot be opened to be run: {e}"))?;
    let mut head = [0u8; SHEBANG_MAX];
    let n = file
        .read_at(&mut head, 0)
        .map_err(|e| format!("{shown} cannot be read: {e}"))?;
    if let Some(line) = head[..n].strip_prefix(b"#!") {
        if depth + 1 >= MAX_INTERPRETERS {
            return Err(format!(
                "{shown} is a script run by a chain of more than {MAX_INTERPRETERS} interpreters"
            ));
        }
        let (interpreter, arg) = parse_shebang(line).map_err(|why| format!("{shown} {why}"))?;
        let mut next = vec![interpreter];
        next.extend(arg);
        next.push(path.clone().into_os_string());
        next.extend(argv.into_iter().skip(1));
        return prepare(next, program, depth + 1)
            .map_err(|why| format!("{shown} is a script whose interpreter {why}"));
    }
    for arg in &argv[1..] {
        check_argument(Path::new(arg), program).map_err(|why| format!("{shown}: its {why}"))?;
    }
    let argv = argv
        .into_iter()
        .map(|a| {
            CString::new(a.into_vec())
                .map_err(|_| format!("an argument of {shown} contains a NUL byte"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ExecPlan { file, argv })
}

/// The interpreter and its optional argument from a `#!` line (what
/// follows `#!`), read as Linux does: blanks around, the interpreter up to
/// the first blank, the rest (trimmed) as one argument.
fn parse_shebang(line: &[u8]) -> Result<(OsString, Option<OsString>), String> {
    let Some(end) = line.iter().position(|&b| b == b'\n') else {
        return Err(format!(
            "starts with a #! line longer than {} bytes",
            SHEBANG_MAX - 1
        ));
    };
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let line = &line[..end];
    let start = line.iter().position(|b| !blank(b)).unwrap_or(line.len());
    let stop = line
        .iter()
        .rposition(|b| !blank(b))
        .map_or(start, |i| i + 1);
    let line = &line[start..stop.max(start)];
    let cut = line.iter().position(blank).unwrap_or(line.len());
    let interpreter = &line[..cut];
    if interpreter.is_empty() {
        return Err("starts with #! but names no interpreter".into());
    }
    if interpreter.first() != Some(&b'/') {
        return Err(format!(
            "names interpreter {} in its #! line, which is not an absolute path",
            String::from_utf8_lossy(interpreter)
        ));
    }
    let rest = &line[cut..];
    let rest = &rest[rest.iter().position(|b| !blank(b)).unwrap_or(rest.len())..];
    let arg = (!rest.is_empty()).then(|| OsString::from_vec(rest.to_vec()));
    Ok((OsString::from_vec(interpreter.to_vec()), arg))
}

/// Checks one argument of a program to be run: an absolute path of an
/// existing file must be trusted (see [the rule](self)).
pub fn check_argument(arg: &Path, program: &str) -> Result<(), String> {
    if !arg.is_absolute() {
        return Ok(());
    }
    let shown = arg.display();
    match walk(arg, program) {
        Err(Refusal::Missing) => Ok(()),
        Err(Refusal::Untrusted(why)) => Err(format!("argument {shown} {why}")),
        Ok(found) => {
            match file_problem(&found.resolved, found.facts, FileRole::Argument, program) {
                None => Ok(()),
                Some(problem) => Err(format!("argument {shown} {problem}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn script(p: &Path, text: &str) {
        std::fs::write(p, text).unwrap();
        chmod(p, 0o755);
    }

    fn argv(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn shebang_lines_are_read_as_the_kernel_reads_them() {
        let p = |s: &[u8]| parse_shebang(s);
        assert_eq!(p(b"/bin/sh\n"), Ok(("/bin/sh".into(), None)));
        assert_eq!(
            p(b" \t/usr/bin/env  python3 -u \nrest"),
            Ok(("/usr/bin/env".into(), Some("python3 -u".into())))
        );
        assert!(p(b"/bin/sh").unwrap_err().contains("longer than 255 bytes"));
        assert!(p(b"  \n").unwrap_err().contains("names no interpreter"));
        assert!(p(b"sh\n").unwrap_err().contains("not an absolute path"));
    }

    #[test]
    fn a_program_in_a_writable_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ww = dir.path().join("ww");
        std::fs::create_dir(&ww).unwrap();
        let prog = ww.join("prog");
        script(&prog, "#!/bin/sh\n");
        chmod(&ww, 0o755);
        prepare_exec(&argv(&[prog.to_str().unwrap()]), "audispd").unwrap();
        chmod(&ww, 0o777);
        let m = prepare_exec(&argv(&[prog.to_str().unwrap()]), "audispd").unwrap_err();
        assert!(
            m.contains(&format!(
                "lies in directory {}, which is group- and world-writable (mode 0777)",
                ww.display()
            )),
            "{m}"
        );
        assert!(m.ends_with(&format!("chmod go-w {}", ww.display())), "{m}");
        // Sticky: safe for entries owned by root (or us).
        chmod(&ww, 0o1777);
        prepare_exec(&argv(&[prog.to_str().unwrap()]), "audispd").unwrap();
    }

    #[test]
    fn links_are_followed_and_their_targets_checked() {
        let dir = tempfile::tempdir().unwrap();
        let ww = dir.path().join("ww");
        std::fs::create_dir(&ww).unwrap();
        let real = ww.join("real");
        script(&real, "#!/bin/sh\n");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let rel = dir.path().join("rel");
        std::os::unix::fs::symlink("ww/../ww/real", &rel).unwrap();
        chmod(&ww, 0o755);
        for p in [&link, &rel] {
            prepare_exec(&argv(&[p.to_str().unwrap()]), "audispd").unwrap();
        }
        chmod(&ww, 0o757);
        for p in [&link, &rel] {
            let m = prepare_exec(&argv(&[p.to_str().unwrap()]), "audispd").unwrap_err();
            assert!(m.contains("which is world-writable (mode 0757)"), "{m}");
        }
        let looped = dir.path().join("loop");
        std::os::unix::fs::symlink(&looped, &looped).unwrap();
        let m = prepare_exec(&argv(&[looped.to_str().unwrap()]), "audispd").unwrap_err();
        assert!(m.contains("more than 40 symbolic links"), "{m}");
    }

    #[test]
    fn scripts_run_through_their_checked_interpreter() {
        let dir = tempfile::tempdir().unwrap();
        let s = dir.path().join("s");
        script(&s, "#!/bin/sh -e\necho hi\n");
        let plan = prepare_exec(&argv(&[s.to_str().unwrap(), "x"]), "audispd").unwrap();
        let got: Vec<&[u8]> = plan.argv.iter().map(|a| a.as_bytes()).collect();
        assert_eq!(
            got,
            [
                b"/bin/sh".as_slice(),
                b"-e",
                s.to_str().unwrap().as_bytes(),
                b"x"
            ]
        );
        let bad = dir.path().join("bad");
        script(&bad, "#!/nonexistent/interp\n");
        let m = prepare_exec(&argv(&[bad.to_str().unwrap()]), "audispd").unwrap_err();
        assert!(
            m.starts_with(&format!(
                "{} is a script whose interpreter /nonexistent/interp does not exist",
                bad.display()
            )),
            "{m}"
        );
    }

    #[test]
    fn world_writable_argument_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ww = dir.path().join("ww");
        std::fs::create_dir(&ww).unwrap();
        chmod(&ww, 0o777);
        let s = ww.join("script.sh");
        script(&s, "echo hi\n");
        let m = prepare_exec(&argv(&["/bin/sh", s.to_str().unwrap()]), "audispd").unwrap_err();
        assert!(
            m.starts_with(&format!(
                "/bin/sh: its argument {} lies in directory",
                s.display()
            )),
            "{m}"
        );
        chmod(&ww, 0o755);
        chmod(&s, 0o666);
        let m = prepare_exec(&argv(&["/bin/sh", s.to_str().unwrap()]), "audispd").unwrap_err();
        assert!(
            m.contains("is group- and world-writable (mode 0666)"),
            "{m}"
        );
        chmod(&s, 0o644);
        prepare_exec(&argv(&["/bin/sh", s.to_str().unwrap()]), "audispd").unwrap();
        // Not files: left alone.
        for fine in ["/dev/null", "relative/name", "/no/such/file", "-c"] {
            prepare_exec(&argv(&["/bin/sh", fine]), "audispd").unwrap();
        }
        // A writable directory argument could receive a new file.
        chmod(&ww, 0o1777);
        let m = prepare_exec(&argv(&["/bin/sh", ww.to_str().unwrap()]), "audispd").unwrap_err();
        assert!(
            m.contains("is group- and world-writable (mode 1777)"),
            "{m}"
        );
    }
}
