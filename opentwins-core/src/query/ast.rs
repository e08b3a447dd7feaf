//! The filter AST: [`Filter`], [`Node`], [`Path`], [`Literal`], and their canonical rendering.

use std::fmt::{self, Write as _};

use serde_json::Number;

use super::parse::{self, is_ws};
use super::{Document, MAX_DEPTH, MAX_PATH_SEGMENTS};
use crate::error::{Error, ErrorKind, Result};

/// A parsed RQL filter. Always valid: at most [`MAX_DEPTH`] levels deep, `and`/`or`/`in` with at
/// least one argument, `like`/`ilike` with a string pattern.
///
/// `Display` renders canonical RQL (no whitespace, double-quoted strings) that parses back to an
/// equal filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    root: Node,
}

/// One node of a filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// `and(q1,q2,...)`: all hold (one or more arguments).
    And(Vec<Node>),
    /// `or(q1,q2,...)`: at least one holds (one or more arguments).
    Or(Vec<Node>),
    /// `not(q)`: `q` does not hold.
    Not(Box<Node>),
    /// `eq`, `ne`, `gt`, `ge`, `lt`, `le`, `like`, `ilike`: a property compared with one value.
    Compare {
        /// The operator.
        op: CmpOp,
        /// The property.
        path: Path,
        /// The value (a string for `like`/`ilike`).
        value: Literal,
    },
    /// `in(path,v1,v2,...)`: the property equals one of the values (one or more).
    In {
        /// The property.
        path: Path,
        /// The candidate values.
        values: Vec<Literal>,
    },
    /// `exists(path)`: some value (JSON `null` included) is at the property.
    Exists(Path),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    /// `eq`: equal (numbers numerically).
    Eq,
    /// `ne`: the property exists and is not equal.
    Ne,
    /// `gt`: greater than (numbers with numbers, strings with strings).
    Gt,
    /// `ge`: greater than or equal.
    Ge,
    /// `lt`: less than.
    Lt,
    /// `le`: less than or equal.
    Le,
    /// `like`: a string matching a pattern with `*` and `?`, case sensitive.
    Like,
    /// `ilike`: like `like`, ignoring case.
    ILike,
}

impl CmpOp {
    /// The RQL name, e.g. `eq`.
    pub fn name(self) -> &'static str {
        match self {
            CmpOp::Eq => "eq",
            CmpOp::Ne => "ne",
            CmpOp::Gt => "gt",
            CmpOp::Ge => "ge",
            CmpOp::Lt => "lt",
            CmpOp::Le => "le",
            CmpOp::Like => "like",
            CmpOp::ILike => "ilike",
        }
    }

    /// The operator named `name`, if it is a comparison.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "eq" => CmpOp::Eq,
            "ne" => CmpOp::Ne,
            "gt" => CmpOp::Gt,
            "ge" => CmpOp::Ge,
            "lt" => CmpOp::Lt,
            "le" => CmpOp::Le,
            "like" => CmpOp::Like,
            "ilike" => CmpOp::ILike,
            _ => return None,
        })
    }
}

/// A value in a filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer or a decimal.
    Number(Number),
    /// A quoted string.
    String(String),
}

/// One segment of a [`Path`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// A key of an object (an index is also tried on arrays when the key is a number).
    Key(String),
    /// `*`: any key of an object or any element of an array.
    Any,
}

/// A property path such as `attributes/location/city` or `features/*/properties/speed`.
///
/// Keys are non-empty, contain no `/`, control characters, `,`, `(`, `)`, quotes or `\`, and the
/// path neither starts nor ends with whitespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Path {
    segments: Vec<Segment>,
}

impl Path {
    /// Parses `a/b/*/c` (a leading `/` is allowed). Errors are `rql.expression.invalid`.
    pub fn parse(s: &str) -> Result<Self> {
        Path::parse_reason(s).map_err(|(at, why)| {
            Error::new(
                ErrorKind::RqlInvalid,
                format!(
                    "The property path '{}' is invalid at position {at}: {why}.",
                    crate::error::excerpt(s)
                ),
            )
        })
    }

    /// Parses a path; on failure the character position (within `s`) and the reason.
    pub(super) fn parse_reason(s: &str) -> std::result::Result<Self, (usize, String)> {
        let body = s.strip_prefix('/').unwrap_or(s);
        let offset = s.len() - body.len();
        if body.is_empty() {
            return Err((0, "a property path must not be empty".into()));
        }
        if body.starts_with(is_ws) || body.ends_with(is_ws) {
            return Err((
                offset,
                "a property path must not start or end with whitespace".into(),
            ));
        }
        let mut segments = Vec::new();
        let mut start = 0usize;
        for seg in body.split('/') {
            let at = parse::char_pos(s, offset + start);
            if seg.is_empty() {
                return Err((
                    at,
                    "the path has an empty segment ('//' or a trailing '/')".into(),
                ));
            }
            if let Some((i, c)) = seg.char_indices().find(|&(_, c)| !valid_key_char(c)) {
                let at = parse::char_pos(s, offset + start + i);
                return Err((
                    at,
                    format!("the character {c:?} is not allowed in a property path"),
                ));
            }
            if segments.len() == MAX_PATH_SEGMENTS {
                return Err((
                    at,
                    format!("a path has at most {MAX_PATH_SEGMENTS} segments"),
                ));
            }
            segments.push(if seg == "*" {
                Segment::Any
            } else {
                Segment::Key(seg.to_owned())
            });
            start += seg.len() + 1;
        }
        Ok(Path { segments })
    }

    /// The segments.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Whether any segment is the wildcard `*`.
    pub fn has_wildcard(&self) -> bool {
        self.segments.contains(&Segment::Any)
    }

    /// Whether this is the single key `key` (e.g. `thingId`).
    pub fn is_key(&self, key: &str) -> bool {
        matches!(self.segments.as_slice(), [Segment::Key(k)] if k == key)
    }
}

/// Whether `c` may appear in a key of a property path.
pub(super) fn valid_key_char(c: char) -> bool {
    !(c.is_control() || matches!(c, '/' | ',' | '(' | ')' | '"' | '\'' | '\\'))
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.segments.iter().enumerate() {
            if i > 0 {
                f.write_char('/')?;
            }
            match seg {
                Segment::Key(k) => f.write_str(k)?,
                Segment::Any => f.write_char('*')?,
            }
        }
        Ok(())
    }
}

impl std::str::FromStr for Path {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Path::parse(s)
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Null => f.write_str("null"),
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Number(n) => write!(f, "{n}"),
            Literal::String(s) => {
                f.write_char('"')?;
                for c in s.chars() {
                    match c {
                        '"' => f.write_str("\\\"")?,
                        '\\' => f.write_str("\\\\")?,
                        '\n' => f.write_str("\\n")?,
                        '\r' => f.write_str("\\r")?,
                        '\t' => f.write_str("\\t")?,
                        '\u{8}' => f.write_str("\\b")?,
                        '\u{c}' => f.write_str("\\f")?,
                        c if c.is_control() => {
                            let mut buf = [0u16; 2];
                            for unit in c.encode_utf16(&mut buf) {
                                write!(f, "\\u{unit:04x}")?;
                            }
                        }
                        c => f.write_char(c)?,
                    }
                }
                f.write_char('"')
            }
        }
    }
}

impl Filter {
    /// Parses an RQL filter. Errors are `rql.expression.invalid` (400) and name the character
    /// position (counted from 0) where the input stopped making sense.
    pub fn parse(s: &str) -> Result<Self> {
        let root = parse::parse_filter(s)?;
        check_nodes(&root)?;
        Ok(Filter { root })
    }

    /// A filter from a node built in code, checked like parsed input (depth, arities, `like`
    /// patterns).
    pub fn new(root: Node) -> Result<Self> {
        let invalid = |why: String| {
            Error::new(
                ErrorKind::RqlInvalid,
                format!("The RQL filter is invalid: {why}."),
            )
        };
        // Iterative walk: a node built in code may be arbitrarily deep.
        let mut stack: Vec<(&Node, usize)> = vec![(&root, 1)];
        while let Some((node, depth)) = stack.pop() {
            if depth > MAX_DEPTH {
                return Err(invalid(format!(
                    "it is nested deeper than {MAX_DEPTH} levels"
                )));
            }
            match node {
                Node::And(children) | Node::Or(children) => {
                    if children.is_empty() {
                        return Err(invalid("'and' and 'or' need at least one argument".into()));
                    }
                    stack.extend(children.iter().map(|c| (c, depth + 1)));
                }
                Node::Not(child) => stack.push((child, depth + 1)),
                Node::Compare {
                    op: CmpOp::Like | CmpOp::ILike,
                    value,
                    ..
                } if !matches!(value, Literal::String(_)) => {
                    return Err(invalid("'like' and 'ilike' need a string pattern".into()));
                }
                Node::In { values, .. } if values.is_empty() => {
                    return Err(invalid("'in' needs at least one value".into()));
                }
                Node::Compare { .. } | Node::In { .. } | Node::Exists(_) => {}
            }
        }
        check_nodes(&root)?;
        Ok(Filter { root })
    }

    /// The root node.
    pub fn root(&self) -> &Node {
        &self.root
    }

    /// Whether `doc` (a [`crate::Thing`], a JSON object, ...) satisfies the filter.
    pub fn matches<D: Document + ?Sized>(&self, doc: &D) -> bool {
        self.root.eval(doc)
    }
}

/// Refuses a filter of more operators than `Limits::max_rql_nodes`: each is evaluated for
/// every thing a search visits.
fn check_nodes(root: &Node) -> Result<()> {
    let max = crate::Limits::get().max_rql_nodes;
    let mut count = 0usize;
    let mut stack = vec![root];
    while let Some(node) = stack.pop() {
        count += 1;
        if count > max {
            return Err(Error::new(
                ErrorKind::RqlInvalid,
                format!("The RQL filter is invalid: it has more than {max} operators."),
            )
            .with_description("Split the search, or use in(..) for lists of values."));
        }
        match node {
            Node::And(children) | Node::Or(children) => stack.extend(children.iter()),
            Node::Not(child) => stack.push(child),
            Node::Compare { .. } | Node::In { .. } | Node::Exists(_) => {}
        }
    }
    Ok(())
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Depth is bounded by MAX_DEPTH, so recursion is safe.
        fmt::Display::fmt(&self.root, f)
    }
}

impl std::str::FromStr for Filter {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Filter::parse(s)
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |f: &mut fmt::Formatter<'_>, name: &str, children: &[Node]| {
            write!(f, "{name}(")?;
            for (i, c) in children.iter().enumerate() {
                if i > 0 {
                    f.write_char(',')?;
                }
                write!(f, "{c}")?;
            }
            f.write_char(')')
        };
        match self {
            Node::And(children) => list(f, "and", children),
            Node::Or(children) => list(f, "or", children),
            Node::Not(child) => write!(f, "not({child})"),
            Node::Compare { op, path, value } => write!(f, "{}({path},{value})", op.name()),
            Node::In { path, values } => {
                write!(f, "in({path}")?;
                for v in values {
                    write!(f, ",{v}")?;
                }
                f.write_char(')')
            }
            Node::Exists(path) => write!(f, "exists({path})"),
        }
    }
}
