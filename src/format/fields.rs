//! The fields of an audit record: `key=value` text cut into fields, and each
//! value classified the way libauparse reads it.
//!
//! A record body is mostly `key=value` pairs separated by spaces, where a
//! value is written bare, in double quotes, in single quotes (the `msg='…'`
//! of user-space records, which holds `key=value` text of its own), or in
//! braces (the `SADDR={ … }` of auditd's enrichment). Some bodies start with
//! words that are not pairs: SELinux's `avc:  denied  { read } for  …`, or the
//! free text of an `auditctl -m` message. [`Fields::parse`] turns a body into
//! a list of [`Field`]s without copying: keys and values are byte ranges of
//! the body.
//!
//! Values are classified, never rewritten here:
//! * `(null)` is [`Value::Null`];
//! * a bare value of a field the kernel hex-encodes when it holds spaces,
//!   quotes or bytes outside printable ASCII (`name`, `exe`, `cwd`,
//!   `proctitle`, `EXECVE`'s arguments, … — libauparse's "escaped" fields)
//!   is [`Value::Hex`] when it is hex;
//! * a bare decimal integer is [`Value::Number`] when a JSON reader can hold
//!   it exactly (at most 2^53 in magnitude) and the field is not one that is
//!   written in hex (`a0`…`a3`, `arch`, capability sets, `saddr`…);
//! * anything else is [`Value::Str`], the bytes as written (quotes removed).

use crate::format::escape::hex_value;
use crate::record_types;

/// A range of bytes of the text being parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    /// The bytes of `text` this span covers.
    pub fn of<'a>(&self, text: &'a [u8]) -> &'a [u8] {
        &text[self.start..self.end]
    }
}

/// A field's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// A name as written in the record.
    Text(Span),
    /// A name audisp gives to text that had none: `TEXT` (free text before
    /// the pairs), `seresult` and `seperms` (the words of an SELinux `avc:`
    /// prefix, named as libauparse names them).
    Named(&'static str),
}

impl Key {
    /// The name's bytes.
    pub fn bytes<'a>(&self, text: &'a [u8]) -> &'a [u8] {
        match self {
            Key::Text(s) => s.of(text),
            Key::Named(n) => n.as_bytes(),
        }
    }
}

/// A field's value, classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value {
    /// `(null)`: the kernel had no value.
    Null,
    /// Bytes as written, quotes removed.
    Str(Span),
    /// Hex digits that encode the real value (see [`decode_hex`]).
    Hex(Span),
    /// A decimal integer that is exact as a JSON number.
    Number(Span),
    /// Words separated by spaces (the permissions of an `avc:` record).
    Words(Span),
    /// The `key=value` text inside `msg='…'`, to be parsed as
    /// [`Part::Message`].
    Nested(Span),
}

/// One field of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// Its name.
    pub key: Key,
    /// Its value.
    pub value: Value,
}

/// Which part of a record is being parsed: the rules differ slightly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The body as the kernel or the sending program wrote it.
    Raw,
    /// The inside of a `msg='…'` value.
    Message,
    /// auditd's ENRICHED section after the 0x1D separator: interpretations,
    /// always strings.
    Enrichment,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quote {
    Bare,
    Double,
    Single,
    Brace,
}

/// A raw token: a `key=value` pair, or a word without `=`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Token {
    /// Whole token.
    pub(crate) all: Span,
    /// Key (empty for a word).
    pub(crate) key: Span,
    /// Value, quotes removed (braces kept).
    pub(crate) value: Span,
    quote: Quote,
    /// A word without `=`, not a pair.
    pub(crate) word: bool,
}

/// Reusable buffers for parsing record bodies (no allocation per record once
/// warm).
#[derive(Debug, Default)]
pub struct Fields {
    tokens: Vec<Token>,
    fields: Vec<Field>,
}

impl Fields {
    /// Empty buffers.
    pub fn new() -> Fields {
        Fields::default()
    }

    /// Parses `body` (a part of a record of type `rtype`) and returns its
    /// fields in order. The second value is whether any `key=value` pair was
    /// found: a [`Part::Message`] without one is free text, best kept whole.
    pub fn parse(&mut self, rtype: u32, body: &[u8], part: Part) -> (&[Field], bool) {
        self.tokens.clear();
        self.fields.clear();
        tokenize(body, part == Part::Raw, &mut self.tokens);
        let tokens = &self.tokens;
        let last_word = tokens.iter().rposition(|t| t.word);
        let first_pair = last_word.map_or(0, |w| w + 1);
        if let Some(w) = last_word {
            let prefix = Span {
                start: tokens[0].all.start,
                end: tokens[w].all.end,
            };
            if !avc_prefix(body, &tokens[..=w], &mut self.fields) {
                let first = &tokens[0];
                if !first.word && first.quote == Quote::Bare {
                    // `text=free text with spaces exe=…`: the first key owns
                    // everything up to the pairs.
                    self.fields.push(Field {
                        key: Key::Text(first.key),
                        value: Value::Str(Span {
                            start: first.value.start,
                            end: prefix.end,
                        }),
                    });
                } else {
                    self.fields.push(Field {
                        key: Key::Named("TEXT"),
                        value: Value::Str(prefix),
                    });
                }
            }
        }
        for t in &tokens[first_pair..] {
            let value = classify(rtype, body, t, part);
            self.fields.push(Field {
                key: Key::Text(t.key),
                value,
            });
        }
        (&self.fields, first_pair < tokens.len())
    }
}

/// Cuts a body into tokens. `msg_to_last_quote`: a `msg='` value runs to the
/// last `'` of the body (user text may itself hold quotes).
pub(crate) fn tokenize(body: &[u8], msg_to_last_quote: bool, out: &mut Vec<Token>) {
    let n = body.len();
    let mut i = 0;
    loop {
        while i < n && body[i] == b' ' {
            i += 1;
        }
        if i >= n {
            return;
        }
        let start = i;
        let mut j = i;
        while j < n && body[j] != b'=' && body[j] != b' ' {
            j += 1;
        }
        if j == n || body[j] == b' ' || j == i {
            let end = memchr::memchr(b' ', &body[i..]).map_or(n, |p| i + p);
            out.push(Token {
                all: Span { start, end },
                key: Span { start, end: start },
                value: Span { start, end },
                quote: Quote::Bare,
                word: true,
            });
            i = end;
            continue;
        }
        let key = Span { start: i, end: j };
        let v = j + 1;
        let (value, quote, end) = match body.get(v) {
            Some(b'"') => match memchr::memchr(b'"', &body[v + 1..]) {
                Some(p) => (span(v + 1, v + 1 + p), Quote::Double, v + 2 + p),
                None => (span(v + 1, n), Quote::Double, n),
            },
            Some(b'\'') => {
                let rest = &body[v + 1..];
                let close = if msg_to_last_quote && key.of(body) == b"msg" {
                    memchr::memrchr(b'\'', rest)
                } else {
                    memchr::memchr(b'\'', rest)
                };
                match close {
                    Some(p) => (span(v + 1, v + 1 + p), Quote::Single, v + 2 + p),
                    None => (span(v + 1, n), Quote::Single, n),
                }
            }
            Some(b'{') => match memchr::memchr(b'}', &body[v..]) {
                Some(p) => (span(v, v + p + 1), Quote::Brace, v + p + 1),
                None => (span(v, n), Quote::Brace, n),
            },
            _ => {
                let e = memchr::memchr(b' ', &body[v..]).map_or(n, |p| v + p);
                (span(v, e), Quote::Bare, e)
            }
        };
        out.push(Token {
            all: Span { start, end },
            key,
            value,
            quote,
            word: false,
        });
        i = end;
    }
}

fn span(start: usize, end: usize) -> Span {
    Span { start, end }
}

/// `avc:  denied  { read write } for` → `seresult=denied`,
/// `seperms=read write`. False if the words are not of that shape.
fn avc_prefix(body: &[u8], words: &[Token], out: &mut Vec<Field>) -> bool {
    let w = |i: usize| words.get(i).map(|t| t.all.of(body));
    if w(0) != Some(b"avc:") || w(2) != Some(b"{") || words.iter().any(|t| !t.word) {
        return false;
    }
    let Some(close) = words.iter().position(|t| t.all.of(body) == b"}") else {
        return false;
    };
    let tail_ok =
        close + 1 == words.len() || (close + 2 == words.len() && w(close + 1) == Some(b"for"));
    if close < 4 || !tail_ok {
        return false;
    }
    out.push(Field {
        key: Key::Named("seresult"),
        value: Value::Str(words[1].all),
    });
    out.push(Field {
        key: Key::Named("seperms"),
        value: Value::Words(Span {
            start: words[3].all.start,
            end: words[close - 1].all.end,
        }),
    });
    true
}

fn classify(rtype: u32, body: &[u8], t: &Token, part: Part) -> Value {
    let v = t.value.of(body);
    match (part, t.quote) {
        (Part::Enrichment, _) => Value::Str(t.value),
        (_, Quote::Double) | (_, Quote::Brace) => Value::Str(t.value),
        (Part::Raw, Quote::Single) if t.key.of(body) == b"msg" => Value::Nested(t.value),
        (_, Quote::Single) => Value::Str(t.value),
        (_, Quote::Bare) => {
            let key = t.key.of(body);
            if v == b"(null)" {
                Value::Null
            } else if is_escaped(rtype, key) && is_hex(v) {
                Value::Hex(t.value)
            } else if !written_in_hex(rtype, key) && is_exact_decimal(v) {
                Value::Number(t.value)
            } else {
                Value::Str(t.value)
            }
        }
    }
}

/// Fields whose text the kernel or libaudit hex-encodes when it holds
/// anything but plain printable ASCII (libauparse's "escaped" types).
pub fn is_escaped(rtype: u32, key: &[u8]) -> bool {
    if rtype == record_types::EXECVE {
        return key.first() == Some(&b'a') && key != b"argc" && !key.ends_with(b"_len");
    }
    matches!(
        key,
        b"path"
            | b"comm"
            | b"exe"
            | b"file"
            | b"name"
            | b"watch"
            | b"cwd"
            | b"cmd"
            | b"acct"
            | b"dir"
            | b"key"
            | b"vm"
            | b"old-chardev"
            | b"new-chardev"
            | b"old-disk"
            | b"new-disk"
            | b"old-fs"
            | b"new-fs"
            | b"old-net"
            | b"new-net"
            | b"device"
            | b"cgroup"
            | b"apparmor"
            | b"operation"
            | b"denied_mask"
            | b"info"
            | b"profile"
            | b"requested_mask"
            | b"old-rng"
            | b"new-rng"
            | b"ocomm"
            | b"grp"
            | b"new_group"
            | b"invalid_context"
            | b"sw"
            | b"root_dir"
            | b"proctitle"
            | b"data"
    ) || (rtype == USER_TTY && key == b"msg")
}

const USER_TTY: u32 = 1124;

/// Fields written in hex (or another base) even when they look decimal.
fn written_in_hex(rtype: u32, key: &[u8]) -> bool {
    if key.starts_with(b"cap_") {
        return true;
    }
    match key {
        b"a0" | b"a1" | b"a2" | b"a3" => rtype != record_types::EXECVE,
        b"arch" | b"saddr" | b"per" | b"fver" | b"fp" | b"fi" | b"fe" | b"pp" | b"pi" | b"pe"
        | b"pa" | b"old_pp" | b"old_pi" | b"old_pe" | b"old_pa" | b"new_pp" | b"new_pi"
        | b"new_pe" | b"frootid" | b"code" | b"ioctlcmd" | b"resolve" => true,
        _ => false,
    }
}

/// Whether `v` is hex text the kernel would have produced: an even number
/// (at least two) of hex digits.
pub fn is_hex(v: &[u8]) -> bool {
    v.len() >= 2 && v.len() % 2 == 0 && v.iter().all(u8::is_ascii_hexdigit)
}

/// The largest integer every JSON reader holds exactly (2^53).
const EXACT_MAX: u64 = 1 << 53;

/// Whether `v` is a canonical decimal integer (`-?(0|[1-9][0-9]*)`) whose
/// magnitude is at most 2^53, so that it survives any JSON reader.
pub fn is_exact_decimal(v: &[u8]) -> bool {
    let digits = v.strip_prefix(b"-").unwrap_or(v);
    if digits.is_empty() || digits.len() > 16 || !digits.iter().all(u8::is_ascii_digit) {
        return false;
    }
    if digits[0] == b'0' && digits.len() > 1 {
        return false;
    }
    if digits.len() < 16 {
        return true;
    }
    digits
        .iter()
        .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0'))
        <= EXACT_MAX
}

/// Appends the bytes hex text `hex` encodes (see [`is_hex`]) to `out`.
pub fn decode_hex(hex: &[u8], out: &mut Vec<u8>) {
    out.reserve(hex.len() / 2);
    for pair in hex.chunks_exact(2) {
        if let (Some(h), Some(l)) = (hex_value(pair[0]), hex_value(pair[1])) {
            out.push(h << 4 | l);
        }
    }
}

/// Where an `EXECVE` field puts its text: `aN` is argument N, `aN[i]` is
/// piece i of argument N (arguments the kernel split over several records).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgSlot {
    /// `aN`.
    Whole(usize),
    /// `aN[i]`.
    Piece(usize, usize),
}

/// Reads `aN` / `aN[i]`; `None` for `argc`, `aN_len` and anything else.
pub fn arg_slot(key: &[u8]) -> Option<ArgSlot> {
    let rest = key.strip_prefix(b"a")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 9 {
        return None;
    }
    let n = parse_usize(&rest[..digits])?;
    let tail = &rest[digits..];
    if tail.is_empty() {
        return Some(ArgSlot::Whole(n));
    }
    let inner = tail.strip_prefix(b"[")?.strip_suffix(b"]")?;
    if inner.is_empty() || inner.len() > 9 || !inner.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(ArgSlot::Piece(n, parse_usize(inner)?))
}

fn parse_usize(d: &[u8]) -> Option<usize> {
    std::str::from_utf8(d).ok()?.parse().ok()
}

/// An `EXECVE` command line put back together from one or more records.
#[derive(Debug, Default)]
pub struct Argv {
    args: Vec<Vec<u8>>,
    present: Vec<bool>,
    len: usize,
    argc: Option<Span>,
    argc_record: usize,
}

impl Argv {
    /// Empty (keeps its buffers).
    pub fn clear(&mut self) {
        for a in &mut self.args[..self.len] {
            a.clear();
        }
        for p in &mut self.present[..self.len] {
            *p = false;
        }
        self.len = 0;
        self.argc = None;
    }

    fn slot(&mut self, n: usize) -> &mut Vec<u8> {
        if n >= self.args.len() {
            self.args.resize_with(n + 1, Vec::new);
            self.present.resize(n + 1, false);
        }
        if n >= self.len {
            self.len = n + 1;
        }
        self.present[n] = true;
        &mut self.args[n]
    }

    /// Adds the fields of one `EXECVE` record (the `index`-th record of the
    /// event, whose body is `body`).
    pub fn add(&mut self, index: usize, body: &[u8], fields: &[Field]) {
        for f in fields {
            let Key::Text(k) = f.key else { continue };
            let key = k.of(body);
            if key == b"argc" {
                if let Value::Number(s) | Value::Str(s) = f.value {
                    self.argc = Some(s);
                    self.argc_record = index;
                }
                continue;
            }
            let Some(slot) = arg_slot(key) else { continue };
            let n = match slot {
                ArgSlot::Whole(n) | ArgSlot::Piece(n, _) => n,
            };
            // Bound what a malformed record can make us allocate.
            if n > 1 << 20 {
                continue;
            }
            let dst = self.slot(n);
            match f.value {
                Value::Hex(s) => decode_hex(s.of(body), dst),
                Value::Str(s) | Value::Number(s) | Value::Words(s) | Value::Nested(s) => {
                    dst.extend_from_slice(s.of(body))
                }
                Value::Null => {}
            }
        }
    }

    /// The `argc` field: which record held it and where.
    pub fn argc(&self) -> Option<(usize, Span)> {
        self.argc.map(|s| (self.argc_record, s))
    }

    /// The arguments in order; `None` for an index no record carried.
    pub fn args(&self) -> impl Iterator<Item = Option<&[u8]>> + '_ {
        self.args[..self.len]
            .iter()
            .zip(&self.present[..self.len])
            .map(|(a, &p)| p.then_some(&a[..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(rtype: u32, body: &str, part: Part) -> (Vec<(String, String)>, bool) {
        let mut f = Fields::new();
        let b = body.as_bytes();
        let (fields, pairs) = f.parse(rtype, b, part);
        let v = fields
            .iter()
            .map(|f| {
                let k = String::from_utf8_lossy(f.key.bytes(b)).into_owned();
                let v = match f.value {
                    Value::Null => "null".to_string(),
                    Value::Str(s) => format!("s:{}", String::from_utf8_lossy(s.of(b))),
                    Value::Hex(s) => {
                        let mut out = Vec::new();
                        decode_hex(s.of(b), &mut out);
                        format!("h:{}", String::from_utf8_lossy(&out))
                    }
                    Value::Number(s) => format!("n:{}", String::from_utf8_lossy(s.of(b))),
                    Value::Words(s) => format!("w:{}", String::from_utf8_lossy(s.of(b))),
                    Value::Nested(s) => format!("m:{}", String::from_utf8_lossy(s.of(b))),
                };
                (k, v)
            })
            .collect();
        (v, pairs)
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn syscall_fields() {
        let (f, any) = parsed(
            1300,
            "arch=c000003e syscall=44 success=yes exit=-2 a0=3 a1=7ffc items=0 ses=4294967295 \
             tty=(none) comm=\"auditd\" exe=2F746D702F612062 key=(null)",
            Part::Raw,
        );
        assert!(any);
        assert_eq!(
            f,
            pairs(&[
                ("arch", "s:c000003e"),
                ("syscall", "n:44"),
                ("success", "s:yes"),
                ("exit", "n:-2"),
                ("a0", "s:3"),
                ("a1", "s:7ffc"),
                ("items", "n:0"),
                ("ses", "n:4294967295"),
                ("tty", "s:(none)"),
                ("comm", "s:auditd"),
                ("exe", "h:/tmp/a b"),
                ("key", "null"),
            ])
        );
    }

    #[test]
    fn numbers_are_exact_or_strings() {
        assert!(is_exact_decimal(b"0"));
        assert!(is_exact_decimal(b"-17"));
        assert!(is_exact_decimal(b"9007199254740992"));
        assert!(!is_exact_decimal(b"9007199254740993"));
        assert!(!is_exact_decimal(b"18446744073709551615"));
        assert!(!is_exact_decimal(b"0100644"));
        assert!(!is_exact_decimal(b"-"));
        assert!(!is_exact_decimal(b"1e5"));
        assert!(!is_exact_decimal(b""));
    }

    #[test]
    fn user_message_with_nested_quotes() {
        let body = "pid=367 uid=0 auid=65534 ses=54 msg='text=round 1: it's a \"quoted\" message \
                    with 'nested' quotes exe=\"/usr/sbin/auditctl\" hostname=? addr=? terminal=? res=success'";
        let (f, _) = parsed(1005, body, Part::Raw);
        assert_eq!(f.len(), 5);
        let inner = f[4].1.strip_prefix("m:").unwrap().to_string();
        assert!(inner.ends_with("res=success"));
        let (g, any) = parsed(1005, &inner, Part::Message);
        assert!(any);
        assert_eq!(
            g,
            pairs(&[
                (
                    "text",
                    "s:round 1: it's a \"quoted\" message with 'nested' quotes"
                ),
                ("exe", "s:/usr/sbin/auditctl"),
                ("hostname", "s:?"),
                ("addr", "s:?"),
                ("terminal", "s:?"),
                ("res", "s:success"),
            ])
        );
        // Free text without any pair stays whole.
        let (g, any) = parsed(
            1005,
            "round 1: free text with 'single' quotes",
            Part::Message,
        );
        assert!(!any);
        assert_eq!(
            g,
            pairs(&[("TEXT", "s:round 1: free text with 'single' quotes")])
        );
    }

    #[test]
    fn avc_prefix_is_named_like_libauparse() {
        let (f, _) = parsed(
            1400,
            "avc:  denied  { read write } for  pid=1 comm=\"cat\" tclass=file permissive=0",
            Part::Raw,
        );
        assert_eq!(
            &f[..3],
            &pairs(&[
                ("seresult", "s:denied"),
                ("seperms", "w:read write"),
                ("pid", "n:1")
            ])[..]
        );
    }

    #[test]
    fn enrichment_values_are_strings() {
        let (f, _) = parsed(
            1300,
            "ARCH=x86_64 SYSCALL=connect AUID=\"nobody\" SADDR={ saddr_fam=inet laddr=127.0.0.1 lport=9 } UID=0",
            Part::Enrichment,
        );
        assert_eq!(
            f,
            pairs(&[
                ("ARCH", "s:x86_64"),
                ("SYSCALL", "s:connect"),
                ("AUID", "s:nobody"),
                ("SADDR", "s:{ saddr_fam=inet laddr=127.0.0.1 lport=9 }"),
                ("UID", "s:0"),
            ])
        );
    }

    #[test]
    fn execve_pieces_rejoin() {
        let mut f = Fields::new();
        let mut argv = Argv::default();
        let r1 = b"argc=3 a0=\"echo\" a1_len=8 a1[0]=61206220";
        let (fields, _) = f.parse(record_types::EXECVE, r1, Part::Raw);
        argv.add(0, r1, fields);
        let r2 = b"a1[1]=63206420 a2=\"x\"";
        let (fields, _) = f.parse(record_types::EXECVE, r2, Part::Raw);
        argv.add(1, r2, fields);
        let args: Vec<_> = argv.args().map(|a| a.map(|a| a.to_vec())).collect();
        assert_eq!(
            args,
            vec![
                Some(b"echo".to_vec()),
                Some(b"a b c d ".to_vec()),
                Some(b"x".to_vec())
            ]
        );
        assert_eq!(
            argv.argc().map(|(i, s)| (i, s.of(r1).to_vec())),
            Some((0, b"3".to_vec()))
        );
        argv.clear();
        assert_eq!(argv.args().count(), 0);
        assert_eq!(arg_slot(b"a12[3]"), Some(ArgSlot::Piece(12, 3)));
        assert_eq!(arg_slot(b"a12_len"), None);
        assert_eq!(arg_slot(b"argc"), None);
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        for body in [
            "",
            " ",
            "=",
            "==",
            "a=",
            "a=\"",
            "a='",
            "msg='",
            "a={",
            "x y z",
            "avc: denied {",
            "avc:  denied  { } for",
            "k=v trailing",
            "=v k=v",
            "a=\"b\"c d=e",
        ] {
            for part in [Part::Raw, Part::Message, Part::Enrichment] {
                let _ = parsed(1400, body, part);
            }
        }
    }
}
