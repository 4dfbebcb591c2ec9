//! Reads the YAML tree section by section. Every problem becomes a [`ConfigIssue`] and reading
//! goes on, so one run reports every mistake in the file. Each getter takes a converter that
//! turns a node into the value or into the message of an issue.

use std::collections::HashMap;
use std::fmt::Display;

use super::load::ConfigIssue;
use super::raw::{Doc, Kind, Node, NodeId};

/// One mapping of the file: the root or a section such as `manager`.
pub(super) struct Section<'d> {
    /// Dotted path of the section; empty for the root.
    path: &'static str,
    /// Line of the section's key (`None` for the root or an absent section).
    line: Option<usize>,
    pairs: &'d [(NodeId, NodeId)],
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Absent,
    Present,
    /// Not a mapping (already reported): its keys are neither read nor reported missing.
    Broken,
}

impl Section<'_> {
    pub fn is_present(&self) -> bool {
        self.state != State::Absent
    }

    pub fn line(&self) -> Option<usize> {
        self.line
    }

    fn broken(mut self) -> Self {
        self.state = State::Broken;
        self
    }

    fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }
}

pub(super) struct Reader<'d> {
    doc: &'d Doc,
    issues: Vec<ConfigIssue>,
    /// Keys refused with their own message instead of "unknown key" (dotted path, message).
    refused: &'static [(&'static str, &'static str)],
}

impl<'d> Reader<'d> {
    pub fn new(doc: &'d Doc) -> Self {
        Self {
            doc,
            issues: Vec::new(),
            refused: &[],
        }
    }

    /// Keys that are refused with a message of their own, such as a password written into
    /// the file: `(dotted path, message)`.
    pub fn refusing(mut self, refused: &'static [(&'static str, &'static str)]) -> Self {
        self.refused = refused;
        self
    }

    pub fn into_issues(self) -> Vec<ConfigIssue> {
        self.issues
    }

    pub fn push(
        &mut self,
        line: Option<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.issues.push(ConfigIssue {
            line,
            key: key.into(),
            message: message.into(),
        });
    }

    /// The file's single document, which must be a mapping with `valid` keys.
    pub fn root(&mut self, valid: &[&str]) -> Section<'d> {
        let doc = self.doc;
        if let Some(&second) = doc.roots.get(1) {
            let line = doc.node(second).line;
            self.push(
                Some(line),
                "",
                "expected a single YAML document, found a second one",
            );
        }
        match doc.roots.first().map(|&id| doc.node(id)) {
            Some(root) if !matches!(root.kind, Kind::Null) => {
                self.open("", None, Some(root), valid)
            }
            _ => {
                let message = format!(
                    "the file is empty; expected a mapping with the keys {}",
                    valid.join(", ")
                );
                self.push(None, "", message);
                self.open("", None, None, valid).broken()
            }
        }
    }

    /// The mapping under `key` of `parent`, its keys checked against `valid`. An empty value
    /// counts as an empty section that is present.
    pub fn section(
        &mut self,
        parent: &Section<'d>,
        key: &'static str,
        valid: &[&str],
    ) -> Section<'d> {
        let (line, node) = self.lookup(parent, key).unzip();
        let section = self.open(key, line, node, valid);
        if parent.state == State::Broken {
            section.broken()
        } else {
            section
        }
    }

    /// Like [`Reader::section`] for a mapping inside a section: looks up `key` in `parent`,
    /// names it `path` (such as `http.probes`) in messages.
    pub fn nested_section(
        &mut self,
        parent: &Section<'d>,
        key: &'static str,
        path: &'static str,
        valid: &[&str],
    ) -> Section<'d> {
        let (line, node) = self.lookup(parent, key).unzip();
        let section = self.open(path, line, node, valid);
        if parent.state == State::Broken {
            section.broken()
        } else {
            section
        }
    }

    /// The value of a key that must be set.
    pub fn required<T>(
        &mut self,
        section: &Section<'d>,
        key: &str,
        convert: impl FnOnce(&Node) -> Result<T, String>,
    ) -> Option<T> {
        let (line, node) = self.value(section, key, true)?;
        self.convert(line, section.key_path(key), node, convert)
    }

    /// The value of a key, `default` when unset; `None` only when the value is invalid.
    pub fn optional<T>(
        &mut self,
        section: &Section<'d>,
        key: &str,
        default: T,
        convert: impl FnOnce(&Node) -> Result<T, String>,
    ) -> Option<T> {
        match self.value(section, key, false) {
            Some((line, node)) => self.convert(line, section.key_path(key), node, convert),
            None => Some(default),
        }
    }

    /// A required non-empty list of `what`; each item is converted and reported on its own.
    pub fn required_list<T>(
        &mut self,
        section: &Section<'d>,
        key: &str,
        what: &str,
        convert: impl Fn(&Node) -> Result<T, String>,
    ) -> Option<Vec<T>> {
        let (line, node) = self.value(section, key, true)?;
        let path = section.key_path(key);
        let items = match &node.kind {
            Kind::Seq(items) if !items.is_empty() => items,
            _ => {
                let message = expected(format_args!("a non-empty list of {what}"), node);
                self.push(Some(line), path, message);
                return None;
            }
        };
        let doc = self.doc;
        let converted: Vec<Option<T>> = items
            .iter()
            .enumerate()
            .map(|(i, &id)| {
                let item = doc.node(id);
                self.convert(item.line, format!("{path}[{i}]"), item, &convert)
            })
            .collect();
        converted.into_iter().collect()
    }

    /// The line of `key` in `section`, if the key is written there.
    pub fn line_of(&self, section: &Section<'d>, key: &str) -> Option<usize> {
        self.lookup(section, key).map(|(line, _)| line)
    }

    fn convert<T>(
        &mut self,
        line: usize,
        path: String,
        node: &Node,
        convert: impl FnOnce(&Node) -> Result<T, String>,
    ) -> Option<T> {
        convert(node)
            .map_err(|message| self.push(Some(line), path, message))
            .ok()
    }

    /// The key's line and non-empty value; reports a missing value when `required`.
    fn value(
        &mut self,
        section: &Section<'d>,
        key: &str,
        required: bool,
    ) -> Option<(usize, &'d Node)> {
        let found = self.lookup(section, key);
        match found {
            Some((_, node)) if !matches!(node.kind, Kind::Null) => found,
            _ => {
                if required && section.state != State::Broken {
                    let line = found.map(|(line, _)| line).or(section.line);
                    self.push(line, section.key_path(key), "missing required value");
                }
                None
            }
        }
    }

    /// The first `key` of `section`: its line and value.
    fn lookup(&self, section: &Section<'d>, key: &str) -> Option<(usize, &'d Node)> {
        let doc = self.doc;
        section.pairs.iter().find_map(|&(k, v)| {
            let k = doc.node(k);
            matches!(&k.kind, Kind::Str(s) if s == key).then(|| (k.line, doc.node(v)))
        })
    }

    fn open(
        &mut self,
        path: &'static str,
        line: Option<usize>,
        node: Option<&'d Node>,
        valid: &[&str],
    ) -> Section<'d> {
        let (pairs, state) = match node.map(|n| (n, &n.kind)) {
            None => (&[][..], State::Absent),
            Some((_, Kind::Null)) => (&[][..], State::Present),
            Some((_, Kind::Map(pairs))) => (pairs.as_slice(), State::Present),
            Some((node, _)) => {
                self.push(
                    Some(line.unwrap_or(node.line)),
                    path,
                    expected("a mapping", node),
                );
                (&[][..], State::Broken)
            }
        };
        let section = Section {
            path,
            line,
            pairs,
            state,
        };
        self.check_keys(&section, valid);
        section
    }

    /// Reports unknown and repeated keys.
    fn check_keys(&mut self, section: &Section<'d>, valid: &[&str]) {
        let doc = self.doc;
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for &(key, _) in section.pairs {
            let key = doc.node(key);
            let line = Some(key.line);
            match &key.kind {
                Kind::Str(name) if valid.contains(&name.as_str()) => {
                    if let Some(&first) = seen.get(name.as_str()) {
                        let message = format!("duplicate key; first set on line {first}");
                        self.push(line, section.key_path(name), message);
                    } else {
                        seen.insert(name, key.line);
                    }
                }
                _ => {
                    let name = key_name(key);
                    let path = section.key_path(&name);
                    let message = match self.refused.iter().find(|(p, _)| *p == path) {
                        Some((_, message)) => (*message).to_owned(),
                        None => unknown_key(&name, valid),
                    };
                    self.push(line, path, message);
                }
            }
        }
    }
}

/// `expected <what>, got <the value>`.
pub(super) fn expected(what: impl Display, node: &Node) -> String {
    let got = match &node.kind {
        Kind::Null => "an empty value".to_owned(),
        Kind::Bool(b) => b.to_string(),
        Kind::Int(i) => i.to_string(),
        Kind::Float(f) => f.clone(),
        Kind::Str(s) => format!("{s:?}"),
        Kind::Seq(items) if items.is_empty() => "an empty list".to_owned(),
        Kind::Seq(_) => "a list".to_owned(),
        Kind::Map(_) => "a mapping".to_owned(),
    };
    format!("expected {what}, got {got}")
}

/// The text of a string or number scalar (`name: 1` is the name "1").
pub(super) fn scalar_text(node: &Node) -> Option<String> {
    match &node.kind {
        Kind::Str(s) | Kind::Float(s) => Some(s.clone()),
        Kind::Int(i) => Some(i.to_string()),
        Kind::Null | Kind::Bool(_) | Kind::Seq(_) | Kind::Map(_) => None,
    }
}

fn key_name(node: &Node) -> String {
    match &node.kind {
        Kind::Null => "~".to_owned(),
        Kind::Bool(b) => b.to_string(),
        Kind::Seq(_) => "[...]".to_owned(),
        Kind::Map(_) => "{...}".to_owned(),
        Kind::Int(_) | Kind::Float(_) | Kind::Str(_) => scalar_text(node).unwrap_or_default(),
    }
}

fn unknown_key(key: &str, valid: &[&str]) -> String {
    let mut message = format!("unknown key; valid keys here: {}", valid.join(", "));
    if let Some(closest) = closest(key, valid) {
        message.push_str(&format!(" (did you mean `{closest}`?)"));
    }
    message
}

/// The valid key within two edits of `key`, if any.
fn closest<'v>(key: &str, valid: &[&'v str]) -> Option<&'v str> {
    let key = key.to_lowercase();
    valid
        .iter()
        .map(|&v| (edit_distance(&key, v), v))
        .filter(|&(d, _)| d <= 2 && d < key.chars().count())
        .min_by_key(|&(d, _)| d)
        .map(|(_, v)| v)
}

/// Levenshtein distance, one row at a time.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = i;
        let mut left = i + 1;
        for (above, &cb) in row.iter_mut().skip(1).zip(&b) {
            let cell = (diagonal + usize::from(ca != cb))
                .min(left + 1)
                .min(*above + 1);
            diagonal = *above;
            *above = cell;
            left = cell;
        }
        if let Some(first) = row.first_mut() {
            *first = i + 1;
        }
    }
    row.last().copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("priorty", "priority"), 1);
        assert_eq!(edit_distance("manger", "manager"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(closest("Priorty", &["name", "priority"]), Some("priority"));
        assert_eq!(closest("x", &["name", "dsn"]), None);
    }
}
