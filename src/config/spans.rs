//! Where each key and value of a YAML document starts, so that errors found on the
//! parsed value can point at `file:line:column`.
//!
//! serde's YAML readers stop at the first error and forget positions once a value
//! is built. This module walks the document's events once and records, for every
//! path (`mapping.skus.OLD-1`), the position of the key and of the value. It also
//! reports what the value-level readers silently accept or only report one at a
//! time: duplicate mapping keys and syntax errors.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, Span, SpannedEventReceiver};

/// One step of a path into the document.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Seg {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// A path into the document, from the root.
pub type Path = Vec<Seg>;

/// Renders a path the way a user writes it: `mapping.skus.OLD-1`, `events.sources[0].kind`.
pub fn display_path(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => {
                s.push_str(&format!("[{i}]"));
            }
        }
    }
    if s.is_empty() { "(document)".into() } else { s }
}

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

/// Positions of a node: its key (for mapping values) and the value itself.
#[derive(Debug, Clone, Copy)]
pub struct NodePos {
    pub key: Option<Pos>,
    pub value: Pos,
}

/// A duplicate mapping key found while indexing.
#[derive(Debug, Clone)]
pub struct DuplicateKey {
    pub path: Path,
    pub first: Pos,
    pub again: Pos,
}

/// The positions of every node of one YAML document.
#[derive(Debug, Default)]
pub struct SpanIndex {
    nodes: HashMap<Path, NodePos>,
    /// Keys that appear twice in one mapping.
    pub duplicates: Vec<DuplicateKey>,
}

impl SpanIndex {
    /// Indexes `text`. A syntax error is returned with its position and message.
    pub fn build(text: &str) -> Result<SpanIndex, (Pos, String)> {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(text);
        parser.load(&mut builder, false).map_err(|e| {
            let m = e.marker();
            (Pos { line: m.line(), col: m.col() + 1 }, e.info().to_owned())
        })?;
        Ok(builder.index)
    }

    /// The position of a node, or of its closest indexed ancestor.
    pub fn locate(&self, path: &[Seg]) -> Pos {
        let mut p = path.len();
        loop {
            if let Some(n) = self.nodes.get(&path[..p]) {
                return n.value;
            }
            if p == 0 {
                return Pos { line: 1, col: 1 };
            }
            p -= 1;
        }
    }

    /// The position of the key naming a node (falls back to the value).
    pub fn locate_key(&self, path: &[Seg]) -> Pos {
        match self.nodes.get(path) {
            Some(NodePos { key: Some(k), .. }) => *k,
            _ => self.locate(path),
        }
    }
}

enum Frame {
    Map { path: Path, keys: HashMap<String, Pos>, pending_key: Option<(String, Pos)> },
    Seq { path: Path, next: usize },
}

#[derive(Default)]
struct Builder {
    index: SpanIndex,
    stack: Vec<Frame>,
    anchors: HashMap<usize, ()>,
}

fn pos(span: &Span) -> Pos {
    Pos { line: span.start.line(), col: span.start.col() + 1 }
}

impl Builder {
    /// Where the next node lands: its path and the position of its key.
    fn next_slot(&mut self, span: &Span, scalar: Option<&str>) -> Option<(Path, Option<Pos>)> {
        match self.stack.last_mut() {
            None => Some((Vec::new(), None)),
            Some(Frame::Seq { path, next }) => {
                let mut p = path.clone();
                p.push(Seg::Index(*next));
                *next += 1;
                Some((p, None))
            }
            Some(Frame::Map { path, keys, pending_key }) => match pending_key.take() {
                Some((k, kpos)) => {
                    let mut p = path.clone();
                    p.push(Seg::Key(k));
                    Some((p, Some(kpos)))
                }
                None => {
                    // This node is a key. Only scalar keys are addressable.
                    let key = scalar.unwrap_or("").to_owned();
                    let here = pos(span);
                    if let Some(first) = keys.get(&key) {
                        let mut p = path.clone();
                        p.push(Seg::Key(key.clone()));
                        self.index.duplicates.push(DuplicateKey { path: p, first: *first, again: here });
                    } else {
                        keys.insert(key.clone(), here);
                    }
                    *pending_key = Some((key, here));
                    None
                }
            },
        }
    }
}

impl<'input> SpannedEventReceiver<'input> for Builder {
    fn on_event(&mut self, ev: Event<'input>, span: Span) {
        match ev {
            Event::Scalar(value, _, anchor, _) => {
                if anchor > 0 {
                    self.anchors.insert(anchor, ());
                }
                if let Some((path, key)) = self.next_slot(&span, Some(&value)) {
                    self.index.nodes.insert(path, NodePos { key, value: pos(&span) });
                }
            }
            Event::Alias(_) => {
                if let Some((path, key)) = self.next_slot(&span, Some("*alias")) {
                    self.index.nodes.insert(path, NodePos { key, value: pos(&span) });
                }
            }
            Event::MappingStart(..) => {
                let (path, key) = self.next_slot(&span, None).unwrap_or_else(|| (vec![Seg::Key("?".into())], None));
                self.index.nodes.insert(path.clone(), NodePos { key, value: pos(&span) });
                self.stack.push(Frame::Map { path, keys: HashMap::new(), pending_key: None });
            }
            Event::SequenceStart(..) => {
                let (path, key) = self.next_slot(&span, None).unwrap_or_else(|| (vec![Seg::Key("?".into())], None));
                self.index.nodes.insert(path.clone(), NodePos { key, value: pos(&span) });
                self.stack.push(Frame::Seq { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Seg {
        Seg::Key(s.into())
    }

    #[test]
    fn positions_of_nested_keys_and_values() {
        let text = "a: 1\nb:\n  c: x\n  d:\n    - 5\n    - { e: 7 }\n";
        let idx = SpanIndex::build(text).unwrap();
        assert_eq!(idx.locate(&[key("a")]), Pos { line: 1, col: 4 });
        assert_eq!(idx.locate_key(&[key("b"), key("c")]), Pos { line: 3, col: 3 });
        assert_eq!(idx.locate(&[key("b"), key("c")]), Pos { line: 3, col: 6 });
        assert_eq!(idx.locate(&[key("b"), key("d"), Seg::Index(1), key("e")]), Pos { line: 6, col: 12 });
        // Unknown paths fall back to the nearest ancestor.
        assert_eq!(idx.locate(&[key("b"), key("zz")]), idx.locate(&[key("b")]));
    }

    #[test]
    fn duplicate_keys_are_reported_with_both_positions() {
        let idx = SpanIndex::build("m:\n  A: 1\n  B: 2\n  A: 3\n").unwrap();
        assert_eq!(idx.duplicates.len(), 1);
        let d = &idx.duplicates[0];
        assert_eq!(d.path, vec![key("m"), key("A")]);
        assert_eq!(d.first, Pos { line: 2, col: 3 });
        assert_eq!(d.again, Pos { line: 4, col: 3 });
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let err = SpanIndex::build("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.0.line >= 1);
        assert!(!err.1.is_empty());
    }
}
