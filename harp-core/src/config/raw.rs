//! The YAML text as a tree of nodes that remember their line, built from yaml-rust2's event
//! parser. Nodes live in one flat arena and refer to each other by index, so an alias is just
//! a second reference to its anchor's node (no copy, no alias bomb) and dropping the tree never
//! recurses, however deep the input nests.

use std::collections::HashMap;

use yaml_rust2::Yaml;
use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Index of a node in [`Doc::nodes`].
pub(super) type NodeId = usize;

#[derive(Debug)]
pub(super) struct Node {
    /// 1-based line where the node starts.
    pub line: usize,
    pub kind: Kind,
}

/// A scalar resolved like YAML 1.2's core schema (quoted scalars are always strings).
#[derive(Debug)]
pub(super) enum Kind {
    Null,
    Bool(bool),
    Int(i64),
    Float(String),
    Str(String),
    Seq(Vec<NodeId>),
    /// `(key, value)` pairs in file order, duplicates kept.
    Map(Vec<(NodeId, NodeId)>),
}

/// Every document of the file; `roots` holds one node per document.
#[derive(Debug, Default)]
pub(super) struct Doc {
    pub nodes: Vec<Node>,
    pub roots: Vec<NodeId>,
}

impl Doc {
    /// The node `id`; a null node if `id` is out of range (it never is for ids from this doc).
    pub fn node(&self, id: NodeId) -> &Node {
        const MISSING: Node = Node {
            line: 0,
            kind: Kind::Null,
        };
        self.nodes.get(id).unwrap_or(&MISSING)
    }
}

/// A YAML syntax error: 1-based line and the parser's message.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct SyntaxError {
    pub line: usize,
    pub message: String,
}

/// Parses every document of `text`. Events are pulled one at a time (`Parser::load` recurses
/// once per nesting level and overflows the stack on deeply nested input).
pub(super) fn parse(text: &str) -> Result<Doc, SyntaxError> {
    let mut parser = Parser::new_from_str(text);
    let mut builder = Builder::default();
    loop {
        let (event, mark) = parser.next_token().map_err(|e| SyntaxError {
            line: e.marker().line(),
            message: e.info().to_owned(),
        })?;
        if event == Event::StreamEnd {
            return Ok(builder.doc);
        }
        builder.on_event(event, mark);
    }
}

/// A sequence or mapping whose end event has not arrived yet.
#[derive(Debug)]
struct Open {
    id: NodeId,
    anchor: usize,
    children: Vec<NodeId>,
}

#[derive(Debug, Default)]
struct Builder {
    doc: Doc,
    open: Vec<Open>,
    anchors: HashMap<usize, NodeId>,
}

impl Builder {
    fn add(&mut self, line: usize, kind: Kind) -> NodeId {
        self.doc.nodes.push(Node { line, kind });
        self.doc.nodes.len() - 1
    }

    /// Hangs a finished node under the innermost open collection (or makes it a root).
    fn attach(&mut self, id: NodeId, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, id);
        }
        match self.open.last_mut() {
            Some(parent) => parent.children.push(id),
            None => self.doc.roots.push(id),
        }
    }

    fn start(&mut self, line: usize, anchor: usize) {
        let id = self.add(line, Kind::Null);
        self.open.push(Open {
            id,
            anchor,
            children: Vec::new(),
        });
    }

    fn end(&mut self, make: fn(Vec<NodeId>) -> Kind) {
        if let Some(open) = self.open.pop() {
            if let Some(node) = self.doc.nodes.get_mut(open.id) {
                node.kind = make(open.children);
            }
            self.attach(open.id, open.anchor);
        }
    }
}

fn scalar(text: String, style: TScalarStyle, tagged_str: bool) -> Kind {
    if style != TScalarStyle::Plain || tagged_str {
        return Kind::Str(text);
    }
    match Yaml::from_str(&text) {
        Yaml::Null => Kind::Null,
        Yaml::Boolean(b) => Kind::Bool(b),
        Yaml::Integer(i) => Kind::Int(i),
        Yaml::Real(r) => Kind::Float(r),
        _ => Kind::Str(text),
    }
}

impl Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        let line = mark.line();
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                let tagged_str = tag.is_some_and(|t| t.suffix == "str");
                let id = self.add(line, scalar(text, style, tagged_str));
                self.attach(id, anchor);
            }
            Event::Alias(anchor) => {
                let id = match self.anchors.get(&anchor) {
                    Some(&id) => id,
                    None => self.add(line, Kind::Null),
                };
                self.attach(id, 0);
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                self.start(line, anchor);
            }
            Event::SequenceEnd => self.end(Kind::Seq),
            Event::MappingEnd => self.end(|children| {
                Kind::Map(
                    children
                        .as_chunks::<2>()
                        .0
                        .iter()
                        .map(|&[k, v]| (k, v))
                        .collect(),
                )
            }),
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(doc: &Doc, ids: &[NodeId]) -> Vec<String> {
        ids.iter()
            .map(|&id| format!("{}:{:?}", doc.node(id).line, doc.node(id).kind))
            .collect()
    }

    #[test]
    fn scalars_resolve_and_remember_their_line() {
        let doc = parse("a: 1\nb: '1'\nc: true\nd: ~\ne: 1.5\nf: !!str 7\ng: x\n").unwrap();
        let Kind::Map(pairs) = &doc.node(doc.roots[0]).kind else {
            panic!("root is not a map")
        };
        let values: Vec<NodeId> = pairs.iter().map(|&(_, v)| v).collect();
        assert_eq!(
            kinds(&doc, &values),
            [
                "1:Int(1)",
                "2:Str(\"1\")",
                "3:Bool(true)",
                "4:Null",
                "5:Float(\"1.5\")",
                "6:Str(\"7\")",
                "7:Str(\"x\")"
            ]
        );
    }

    #[test]
    fn aliases_share_their_anchor_node() {
        let doc = parse("a: &x [1, 2]\nb: *x\n").unwrap();
        let Kind::Map(pairs) = &doc.node(doc.roots[0]).kind else {
            panic!("root is not a map")
        };
        assert_eq!(pairs[0].1, pairs[1].1);
    }

    #[test]
    fn syntax_errors_carry_their_line() {
        let err = parse("a: 1\n\nb: c: d\n").unwrap_err();
        assert_eq!(err.line, 3);
        assert_eq!(
            err.message,
            "mapping values are not allowed in this context"
        );
    }

    #[test]
    fn deep_nesting_does_not_overflow() {
        let depth = 100_000;
        let flow = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(parse(&flow).is_err(), "the scanner caps flow nesting");
        let block = format!("{}x", "- ".repeat(depth));
        assert_eq!(parse(&block).unwrap().nodes.len(), depth + 1);
    }
}
