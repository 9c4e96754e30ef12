//! Filter expressions: auparse's `ausearch-expression(5)` syntax, which
//! auditd 4.x's `audisp-filter` uses, evaluated on audisp's records.
//!
//! An expression such as
//!
//! ```text
//! type r= SYSCALL && syscall i= openat && success r= no
//! (\record_type >= USER_AUTH && \record_type <= USER_END) || \regexp /comm="sshd"/
//! ```
//!
//! is parsed once into a [`Filter`] and then tested against each record with
//! [`Filter::matches`]. The language (documented for users in
//! `docs/filter.md`):
//!
//! * `FIELD r= "text"`, `r!=`: the first field of that name, as written in
//!   the record (quotes included, as auparse keeps them);
//! * `FIELD i= "text"`, `i!=`: its interpreted value — auditd's enrichment
//!   (`AUID="alice"`, `SYSCALL=openat`) or a local decoding (module
//!   `interpret`);
//! * `==` `!==` `<` `<=` `>` `>=` on uid and gid fields (`auid >= 1000`),
//!   on `\record_type` (a name or number), on `\timestamp`
//!   (`ts:SECONDS.MILLI`) and `\timestamp_ex` (`ts:SECONDS.MILLI:SERIAL`);
//! * `\regexp /re/` or `\regexp "re"`: the regular expression is found in
//!   the record's text (before the enrichment);
//! * `!`, `&&`, `||` with C's precedence, and parentheses.
//!
//! A comparison with a field the record does not have is false, whatever
//! the operator. A filter that parses never fails at evaluation time:
//! values are checked against their field when parsed.
//!
//! # Modules
//!
//! `lexer` (tokens with positions) → `parser` (grammar, value checks) →
//! [`ast`] (the tree, printable) → [`eval`] (the compiled [`Filter`], run
//! on a `view` of one record, with `interpret` for `i=`); [`event`] decides
//! for whole events; [`rules`] reads audisp-filter's rule files; [`error`]
//! says where an expression is wrong.
//!
//! # Using it in the dispatcher
//!
//! * Parse at configuration time: [`Filter::parse`] for a plugins.d
//!   `filter = '…'` value, [`rules::parse_rules`] for a file of lines.
//!   A [`ParseError`] has a line and column within the parsed text and a
//!   byte `offset`, from which the caller computes the position in its own
//!   file (`FILE:LINE:COLUMN: message`).
//! * [`Filter`] is `Send + Sync` and clones by reference count: hand one to
//!   every thread that needs it. Give each thread its own [`Scratch`]
//!   (buffers reused from record to record: evaluation does not allocate
//!   once they have grown). A caller that already knows a record's type
//!   number from its header (the journal keeps it) calls
//!   [`Filter::matches_typed`]: records of a type the expression excludes
//!   are decided without reading them.
//! * Decide per event with [`WholeEvents`]: for each record, in journal
//!   order, `push(event id, filter.matches(..), ends event, item, release)`,
//!   and `close(event id, release)` at a close marker; `release` receives
//!   the records of events that pass, in order, when their event ends. The
//!   item type is the caller's (a journal sequence number, a copy of the
//!   record). [`Action::Keep`] passes matching events, [`Action::Drop`]
//!   passes the others (`filter_action = "keep" | "drop"`).
//! * An input chain that drops records before they are journaled can use
//!   [`Filter::matches`] alone, per record, or hold records in a
//!   [`WholeEvents`] until the grouper ends their event.
//!
//! # Speed
//!
//! Nothing is parsed that a comparison does not need: `type`, `node`,
//! `\record_type` and the timestamps come from the header, read once; a
//! field is found by searching the record for `name=` where a field can
//! start (libauparse's own model of a record is space-separated text, see
//! `view`), not by cutting the whole record into fields; the enrichment is
//! searched only for `i=`. A three-clause expression adds 40–110 ns per
//! record (`benches/filter.sh`). Put the cheap, selective test first: in
//! `type r= SYSCALL && exe i= "/usr/bin/sudo"` most records are decided by
//! their header.

pub mod ast;
pub mod error;
pub mod eval;
pub mod event;
mod interpret;
mod lexer;
mod parser;
pub mod rules;
mod view;

pub use error::ParseError;
pub use eval::{Filter, Scratch};
pub use event::{Action, Counts, WholeEvents};
