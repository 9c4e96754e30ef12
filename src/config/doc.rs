//! Reading one parsed TOML file with every mistake reported at its line.
//!
//! The files are parsed into `toml`'s spanned document tree rather than
//! deserialised straight into structs, so that a file with several mistakes
//! gets all of them reported at once, each with its line, the value as the
//! admin wrote it, and what would be accepted instead.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::units;
use super::{Diagnostic, FilterAction, FilterRule};

/// One config file being read: its text and the problems found so far.
pub(super) struct Doc<'s> {
    /// The file, as reported in diagnostics.
    pub file: PathBuf,
    src: &'s str,
    diags: Vec<Diagnostic>,
}

impl<'s> Doc<'s> {
    /// Starts reading `src`, the contents of `file`.
    pub fn new(file: &Path, src: &'s str) -> Doc<'s> {
        Doc {
            file: file.to_path_buf(),
            src,
            diags: Vec::new(),
        }
    }

    /// Parses the text as a TOML document; a syntax error is recorded with
    /// its line and `None` returned.
    pub fn parse(&mut self) -> Option<DeTable<'s>> {
        match DeTable::parse(self.src) {
            Ok(t) => Some(t.into_inner()),
            Err(e) => {
                let msg = format!("TOML syntax error: {}", e.message());
                self.error(e.span(), msg);
                None
            }
        }
    }

    /// Records a problem at the line containing the start of `span`.
    pub fn error(&mut self, span: Option<Range<usize>>, message: String) {
        let line = span.map(|s| self.line_of(s.start));
        self.diags.push(Diagnostic {
            file: self.file.clone(),
            line,
            column: None,
            message,
        });
    }

    /// Records a problem at byte `offset` of the text, with its line and
    /// column.
    pub fn error_at(&mut self, offset: usize, message: String) {
        let offset = offset.min(self.src.len());
        let before = self.src.get(..offset).unwrap_or(self.src);
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        self.diags.push(Diagnostic {
            file: self.file.clone(),
            line: Some(self.line_of(offset)),
            column: Some(before[line_start..].chars().count() + 1),
            message,
        });
    }

    /// Records a problem inside the string value spanning `span`: at byte
    /// `at` of its value, with its line and column in the file.
    pub fn error_in_string(&mut self, span: Range<usize>, at: usize, message: String) {
        let (line, column) = self.place_in_string(span, at);
        self.diags.push(Diagnostic {
            file: self.file.clone(),
            line: Some(line),
            column: Some(column),
            message,
        });
    }

    /// The line and column (in characters, from 1) in the file of byte
    /// `at` of the value of the string spanning `span`.
    pub fn place_in_string(&self, span: Range<usize>, at: usize) -> (usize, usize) {
        let raw = self.src.get(span.clone()).unwrap_or("");
        let offset = span.start + super::string_span::raw_offset(raw, at);
        let before = self.src.get(..offset).unwrap_or(self.src);
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        (
            self.line_of(offset),
            before[line_start..].chars().count() + 1,
        )
    }

    /// The problems found, ordered by line (file-wide ones first).
    pub fn finish(self) -> Vec<Diagnostic> {
        let mut diags = self.diags;
        diags.sort_by_key(|d| d.line);
        diags
    }

    /// Whether nothing is wrong so far.
    pub fn is_clean(&self) -> bool {
        self.diags.is_empty()
    }

    /// The file's text.
    pub fn source(&self) -> &'s str {
        self.src
    }

    /// The 1-based line holding byte `offset` of the text.
    pub fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.src.len());
        let before = self.src.get(..end).unwrap_or(self.src);
        before.bytes().filter(|&b| b == b'\n').count() + 1
    }

    /// The text of a value as written in the file, shortened if long.
    fn text(&self, span: &Range<usize>) -> String {
        let t = self.src.get(span.clone()).unwrap_or("").trim();
        let one_line: String = t.split_whitespace().collect::<Vec<_>>().join(" ");
        if one_line.chars().count() > 60 {
            let cut: String = one_line.chars().take(57).collect();
            format!("{cut}...")
        } else {
            one_line
        }
    }
}

/// A spanned value in the document.
pub(super) type Value<'s> = Spanned<DeValue<'s>>;

/// One table of the file (the top level or a `[section]`) and how to name
/// it in messages.
pub(super) struct Section<'t, 's> {
    table: &'t DeTable<'s>,
    /// `""` for the top level, else the dotted table name (`journal`,
    /// `input.socket`, `actions.disk-full`).
    name: String,
}

impl<'t, 's> Section<'t, 's> {
    /// The top level of a document.
    pub fn top(table: &'t DeTable<'s>) -> Section<'t, 's> {
        Section {
            table,
            name: String::new(),
        }
    }

    /// How the table is named in messages: ` in [journal]`, or nothing for
    /// the top level.
    fn where_(&self) -> String {
        if self.name.is_empty() {
            String::new()
        } else {
            format!(" in [{}]", self.name)
        }
    }

    /// The keys of this table with their spans, in file order.
    pub fn keys(&self) -> Vec<(&'t str, Range<usize>)> {
        let mut keys: Vec<(&str, Range<usize>)> = self
            .table
            .iter()
            .map(|(k, _)| (k.get_ref().as_ref(), k.span()))
            .collect();
        keys.sort_by_key(|(_, s)| s.start);
        keys
    }

    /// Reports every key not in `allowed`, suggesting the closest allowed
    /// one, and lists what is allowed.
    pub fn reject_unknown(&self, doc: &mut Doc, allowed: &[&str]) {
        self.reject_unknown_with(doc, allowed, |_| None);
    }

    /// Like [`Section::reject_unknown`], with `hint` giving a better hint
    /// than the closest allowed key for some keys (a key that belongs in
    /// another section, say).
    pub fn reject_unknown_with(
        &self,
        doc: &mut Doc,
        allowed: &[&str],
        hint: impl Fn(&str) -> Option<String>,
    ) {
        for (key, span) in self.keys() {
            if allowed.contains(&key) {
                continue;
            }
            let hint = match (hint(key), units::closest(key, allowed.iter().copied())) {
                (Some(h), _) => format!(" ({h})"),
                (None, Some(s)) => format!(" (did you mean {s:?}?)"),
                (None, None) => String::new(),
            };
            let msg = format!(
                "unknown key {key:?}{}{hint}; allowed keys are {}",
                self.where_(),
                allowed.join(", ")
            );
            doc.error(Some(span), msg);
        }
    }

    /// The raw value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&'t Value<'s>> {
        self.table.get(key)
    }

    /// The sub-table `key` (`[name.key]`); a non-table value is reported.
    pub fn table(&self, doc: &mut Doc, key: &str) -> Option<Section<'t, 's>> {
        let v = self.get(key)?;
        let name = if self.name.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.name)
        };
        match v.get_ref() {
            DeValue::Table(t) => Some(Section { table: t, name }),
            _ => {
                let msg = format!(
                    "{key} = {} must be a table: write a [{name}] section",
                    doc.text(&v.span())
                );
                doc.error(Some(v.span()), msg);
                None
            }
        }
    }

    /// Reports `msg` about the value of `key`, prefixed with `key = value`.
    pub fn bad(&self, doc: &mut Doc, key: &str, msg: &str) {
        if let Some(v) = self.get(key) {
            let text = doc.text(&v.span());
            doc.error(Some(v.span()), format!("{key} = {text} {msg}"));
        }
    }

    /// Converts the value of `key` with `f`, reporting its error.
    pub fn value<T>(
        &self,
        doc: &mut Doc,
        key: &str,
        f: impl FnOnce(&DeValue<'s>) -> Result<T, String>,
    ) -> Option<T> {
        let v = self.get(key)?;
        match f(v.get_ref()) {
            Ok(x) => Some(x),
            Err(msg) => {
                self.bad(doc, key, &msg);
                None
            }
        }
    }

    /// A boolean.
    pub fn bool(&self, doc: &mut Doc, key: &str) -> Option<bool> {
        self.value(doc, key, |v| match v {
            DeValue::Boolean(b) => Ok(*b),
            _ => Err("must be true or false (without quotes)".to_string()),
        })
    }

    /// A string.
    pub fn string(&self, doc: &mut Doc, key: &str) -> Option<&'t str> {
        let v = self.get(key)?;
        match v.get_ref() {
            DeValue::String(s) if !s.is_empty() && !s.contains('\0') => Some(s.as_ref()),
            DeValue::String(_) => {
                self.bad(doc, key, "must not be empty");
                None
            }
            _ => {
                self.bad(doc, key, "must be a string in quotes");
                None
            }
        }
    }

    /// A filter expression (`ausearch-expression(5)`) and what to do with
    /// its matches: `key` holds the expression, `action_key` `"keep"` or
    /// `"drop"` (keep when absent). A mistake in the expression is reported
    /// at its line and column in the file.
    pub fn filter(&self, doc: &mut Doc, key: &str, action_key: &str) -> Option<FilterRule> {
        let action = self.choice(
            doc,
            action_key,
            "filter action",
            &[("keep", FilterAction::Keep), ("drop", FilterAction::Drop)],
        );
        let Some(v) = self.get(key) else {
            if self.get(action_key).is_some() {
                self.bad(
                    doc,
                    action_key,
                    &format!("has no {key} to act on; add {key} = '…' (an expression such as 'type r= AVC') or remove {action_key}"),
                );
            }
            return None;
        };
        let source = self.string(doc, key)?;
        match FilterRule::parse(source, action.unwrap_or(FilterAction::Keep)) {
            Ok(rule) => Some(rule),
            Err(e) => {
                let mut message = e.message.clone();
                if let Some(open) = e.opening {
                    // The message names the '(' by its place in the
                    // expression: name it by its place in the file.
                    let (l, c) = doc.place_in_string(v.span(), open);
                    let (el, _) = doc.place_in_string(v.span(), e.offset);
                    let in_file = if l == el {
                        format!("' at column {c}")
                    } else {
                        format!("' at line {l}, column {c}")
                    };
                    if let Some(i) = message.find("' at ") {
                        let end = message[i..].find(',').map_or(message.len(), |j| i + j);
                        message.replace_range(i..end, &in_file);
                    }
                }
                doc.error_in_string(v.span(), e.offset, format!("{key}: {message}"));
                None
            }
        }
    }

    /// A non-negative integer (a count).
    pub fn count(&self, doc: &mut Doc, key: &str) -> Option<u64> {
        self.value(doc, key, |v| match v {
            DeValue::Integer(i) => u64::from_str_radix(i.as_str(), i.radix())
                .map_err(|_| "must be a whole number, 0 or more".to_string()),
            _ => Err("must be a whole number without quotes, such as 4096".to_string()),
        })
    }

    /// A size in bytes: an integer or a string with a unit.
    pub fn size(&self, doc: &mut Doc, key: &str) -> Option<u64> {
        self.value(doc, key, |v| match v {
            DeValue::Integer(i) => u64::from_str_radix(i.as_str(), i.radix())
                .map_err(|_| format!("is not a size; {}", units::SIZE_HELP)),
            DeValue::String(s) => units::parse_size(s),
            _ => Err(format!("is not a size; {}", units::SIZE_HELP)),
        })
    }

    /// A duration: integer seconds or a string with a unit.
    pub fn duration(&self, doc: &mut Doc, key: &str) -> Option<Duration> {
        self.value(doc, key, |v| match v {
            DeValue::Integer(i) => u64::from_str_radix(i.as_str(), i.radix())
                .map(Duration::from_secs)
                .map_err(|_| format!("is not a duration; {}", units::DURATION_HELP)),
            DeValue::String(s) => units::parse_duration(s),
            _ => Err(format!("is not a duration; {}", units::DURATION_HELP)),
        })
    }

    /// One of a fixed set of words (compared ignoring ASCII case); `what`
    /// names the kind of thing in the message ("policy", "format").
    pub fn choice<T: Copy>(
        &self,
        doc: &mut Doc,
        key: &str,
        what: &str,
        choices: &[(&str, T)],
    ) -> Option<T> {
        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        self.value(doc, key, |v| {
            if let DeValue::String(s) = v {
                if let Some((_, t)) = choices.iter().find(|(n, _)| n.eq_ignore_ascii_case(s)) {
                    return Ok(*t);
                }
            }
            Err(format!(
                "is not a known {what}; use {}",
                units::one_of(&names)
            ))
        })
    }

    /// An array, each element converted with `f`; every bad element is
    /// reported at its own line.
    pub fn list<T>(
        &self,
        doc: &mut Doc,
        key: &str,
        what: &str,
        mut f: impl FnMut(&DeValue<'s>) -> Result<T, String>,
    ) -> Option<Vec<T>> {
        let v = self.get(key)?;
        let DeValue::Array(items) = v.get_ref() else {
            self.bad(
                doc,
                key,
                &format!("must be a list in square brackets of {what}"),
            );
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for item in items.iter() {
            match f(item.get_ref()) {
                Ok(x) => out.push(x),
                Err(msg) => {
                    ok = false;
                    doc.error(Some(item.span()), format!("{key}: {msg}"));
                }
            }
        }
        ok.then_some(out)
    }

    /// A list of strings.
    pub fn strings(&self, doc: &mut Doc, key: &str) -> Option<Vec<String>> {
        self.list(doc, key, "strings", |v| match v {
            DeValue::String(s) if !s.contains('\0') => Ok(s.to_string()),
            DeValue::String(_) => Err("strings must not contain NUL characters".to_string()),
            other => Err(format!("{} must be a string in quotes", show(other))),
        })
    }

    /// The sub-tables of this table, by key, in file order (for
    /// `[actions.NAME]`); non-table values are reported.
    pub fn sub_tables(&self, doc: &mut Doc) -> Vec<(&'t str, Range<usize>, Section<'t, 's>)> {
        let mut out = Vec::new();
        for (key, span) in self.keys() {
            if let Some(t) = self.table(doc, key) {
                out.push((key, span, t));
            }
        }
        out
    }
}

/// A short rendering of a scalar value for messages about list elements.
pub(super) fn show(v: &DeValue<'_>) -> String {
    match v {
        DeValue::String(s) => format!("{s:?}"),
        DeValue::Integer(i) => i.to_string(),
        DeValue::Float(f) => f.to_string(),
        DeValue::Boolean(b) => b.to_string(),
        DeValue::Datetime(d) => d.to_string(),
        DeValue::Array(_) => "a list".to_string(),
        DeValue::Table(_) => "a table".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(src: &str, f: impl FnOnce(&mut Doc, Section)) -> Vec<String> {
        let mut doc = Doc::new(Path::new("t.toml"), src);
        if let Some(t) = doc.parse() {
            f(&mut doc, Section::top(&t));
        }
        doc.finish().iter().map(|d| d.to_string()).collect()
    }

    #[test]
    fn syntax_errors_carry_their_line() {
        let e = errors("a = 1\n\nb = spill\n", |_, _| {});
        assert_eq!(e, ["t.toml:3: TOML syntax error: string values must be quoted, expected literal string"]);
    }

    #[test]
    fn unknown_keys_are_listed_with_a_suggestion() {
        let e = errors("sync = 1\nsnyc = 2\ncolour = 3\n", |d, s| {
            s.reject_unknown(d, &["sync", "memory"])
        });
        assert_eq!(
            e,
            [
                "t.toml:2: unknown key \"snyc\" (did you mean \"sync\"?); allowed keys are sync, memory",
                "t.toml:3: unknown key \"colour\"; allowed keys are sync, memory",
            ]
        );
    }

    #[test]
    fn choices_quote_the_value_and_list_the_options() {
        let e = errors("\n\n\noverflow = \"spill\"\n", |d, s| {
            assert_eq!(
                s.choice(
                    d,
                    "overflow",
                    "policy",
                    &[("spool", 1), ("drop", 2), ("suspend", 3)]
                ),
                None
            );
        });
        assert_eq!(e, ["t.toml:4: overflow = \"spill\" is not a known policy; use \"spool\", \"drop\" or \"suspend\""]);
        let e = errors("overflow = \"DROP\"\n", |d, s| {
            assert_eq!(
                s.choice(d, "overflow", "policy", &[("spool", 1), ("drop", 2)]),
                Some(2)
            );
        });
        assert!(e.is_empty());
    }

    #[test]
    fn typed_values() {
        let src = "a = true\nb = \"yes\"\nc = 4096\nd = -1\ne = \"64M\"\nf = 1024\ng = \"2s\"\nh = 3\ni = [\"x\", 2]\nj = \"\"\n";
        let e = errors(src, |d, s| {
            assert_eq!(s.bool(d, "a"), Some(true));
            assert_eq!(s.bool(d, "b"), None);
            assert_eq!(s.count(d, "c"), Some(4096));
            assert_eq!(s.count(d, "d"), None);
            assert_eq!(s.size(d, "e"), Some(64 << 20));
            assert_eq!(s.size(d, "f"), Some(1024));
            assert_eq!(s.duration(d, "g"), Some(Duration::from_secs(2)));
            assert_eq!(s.duration(d, "h"), Some(Duration::from_secs(3)));
            assert_eq!(s.strings(d, "i"), None);
            assert_eq!(s.string(d, "j"), None);
            assert_eq!(s.bool(d, "missing"), None);
        });
        assert_eq!(
            e,
            [
                "t.toml:2: b = \"yes\" must be true or false (without quotes)",
                "t.toml:4: d = -1 must be a whole number, 0 or more",
                "t.toml:9: i: 2 must be a string in quotes",
                "t.toml:10: j = \"\" must not be empty",
            ]
        );
    }

    #[test]
    fn sections_must_be_tables() {
        let e = errors("journal = 5\n", |d, s| {
            assert!(s.table(d, "journal").is_none())
        });
        assert_eq!(
            e,
            ["t.toml:1: journal = 5 must be a table: write a [journal] section"]
        );
    }
}
