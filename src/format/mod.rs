//! Audit records as structured data: decoded fields and JSON.
//!
//! auditd's text records are hard to consume directly: values may be
//! hex-encoded, long `execve` arguments are split over several records, user
//! messages nest `key=value` text inside `msg='…'`, and bytes need not be
//! UTF-8. This module reads records the way libauparse does ([`fields`]) and
//! writes them as JSON ([`json`]); the journald output maps the same fields to
//! journal fields.
//!
//! # The JSON format
//!
//! One object per event (or per record, in records mode), on one line:
//!
//! ```json
//! {"ID":"1795422202.066:399895","SYSCALL":{"arch":"c000003e","syscall":44,"success":"yes",
//!  "exit":60,"a0":"3",…,"comm":"auditd","key":null,"ARCH":"x86_64","SYSCALL":"sendto",
//!  "AUID":"unset"},"CWD":{"cwd":"/tmp"},"PATH":[{"item":0,"name":"/etc",…}],
//!  "PROCTITLE":{"ARGV":["auditd","-n"]}}
//! ```
//!
//! * `ID` is the event's `SECONDS.MILLISECONDS:SERIAL` exactly as auditd wrote
//!   it; `NODE` the `node=` name, when there is one; `ORIGIN` the name of
//!   the dispatcher input the event arrived on (`auditd` for auditd on
//!   standard input, `remote` for audisp-receive…), when the writer is told
//!   it (audisp-logfile always is).
//! * Every other key is a record type name as auditd writes it (`SYSCALL`,
//!   `UNKNOWN[1234]`), in the order the types first appear. Types that occur
//!   at most once per event (`SYSCALL`, `EXECVE`, `CWD`, `PROCTITLE`,
//!   `SOCKADDR`, …, and every single-record user-space, daemon or anomaly
//!   type) are an object; all other types (`PATH`, `OBJ_PID`, `AVC`,
//!   `CONFIG_CHANGE`, unknown types, …) are always an array of objects, even
//!   with one element, so each key has one JSON type. `EOE` records are left
//!   out. Records whose header cannot be read are kept, verbatim, as strings
//!   in the array `UNPARSED`.
//! * Inside a record, lower-case keys are the record's fields as written,
//!   upper-case keys are interpretations: auditd's ENRICHED fields (`AUID`,
//!   `SYSCALL`, `SADDR` …, always strings) and audisp's own (`ARGV`, `TEXT`).
//!   A key that occurs twice in one object (auditd does not do this) is
//!   written `key#2`, `key#3`… so no value is lost and the JSON stays valid.
//! * Values: a hex-encoded value (`name`, `exe`, `cwd`, `cmd`, `acct`, `key`,
//!   `proctitle`, `EXECVE` arguments… — libauparse's escaped fields) is
//!   decoded; `(null)` is `null`; a canonical decimal integer with magnitude
//!   at most 2^53 is a JSON number, written with the digits auditd wrote, so
//!   it is exact in every JSON reader; every other value is a string of the
//!   bytes as written (quotes removed), including fields that are hex or
//!   octal numbers (`a0`, `arch`, `mode`, capability sets, `saddr`) and
//!   integers too large for a double. Nothing is rounded.
//! * `msg='…'` of user-space records becomes an object of its own
//!   `key=value` fields; free text in front of them goes to the first key
//!   (`text=free words … exe=…`) or to `TEXT`, and a message with no
//!   `key=value` field at all stays a string.
//! * SELinux's `avc:  denied  { read write } for` becomes `"seresult":"denied",
//!   "seperms":["read","write"]` (libauparse's names).
//! * `EXECVE` (events mode) is `{"argc":N,"ARGV":[…]}`: the arguments of all
//!   the event's `EXECVE` records in order, split arguments (`aN_len=`,
//!   `aN[0]=`, `aN[1]=`…) joined and decoded; an argument no record carried
//!   is `null`. `PROCTITLE`'s `proctitle` becomes `ARGV`, split at the NUL
//!   bytes that separate the arguments.
//!
//! # Strings and bytes that are not UTF-8
//!
//! The output is always valid UTF-8. A byte that is not part of a valid
//! UTF-8 sequence is written `%XX` (upper-case hex), and a `%` that is
//! followed by two hex digits is written `%25`; every other character is
//! written as itself (JSON escapes aside). To get the original bytes back,
//! JSON-decode the string and replace each `%` + two hex digits with that
//! byte ([`escape::unescape`]). Text without such sequences — nearly all of
//! it — reads the same before and after.

pub mod drop_fields;
pub mod escape;
pub mod fields;
pub mod json;

pub use json::JsonWriter;
