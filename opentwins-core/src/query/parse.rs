//! The RQL filter parser: recursive descent over the input with a depth cap, never panicking.
//!
//! Grammar (whitespace is allowed between tokens):
//! ```text
//! query    = logic | cmp | in | exists
//! logic    = ("and" | "or") "(" query { "," query } ")" | "not" "(" query ")"
//! cmp      = ("eq"|"ne"|"gt"|"ge"|"lt"|"le"|"like"|"ilike") "(" path "," value ")"
//! in       = "in" "(" path "," value { "," value } ")"
//! exists   = "exists" "(" path ")"
//! value    = string | number | "true" | "false" | "null"
//! string   = '"' chars '"' | "'" chars "'"       (escapes \" \' \\ \/ \b \f \n \r \t \uXXXX)
//! number   = ["+"|"-"] digits ["." digits] [("e"|"E") ["+"|"-"] digits]
//! path     = ["/"] key { "/" key }               (key "*" is the wildcard)
//! ```

use serde_json::Number;

use super::ast::{CmpOp, Literal, Node, Path};
use super::{MAX_DEPTH, MAX_INPUT_LEN};
use crate::error::{Error, ErrorKind, Result, excerpt};

/// The whitespace RQL skips between tokens.
pub(super) fn is_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\u{c}')
}

/// The character position (from 0) of byte offset `byte` in `s`.
pub(super) fn char_pos(s: &str, byte: usize) -> usize {
    s.get(..byte).map_or(0, |p| p.chars().count())
}

/// A cursor over the input shared by the filter and option parsers.
pub(super) struct Scanner<'a> {
    pub(super) src: &'a str,
    pub(super) pos: usize,
    kind: ErrorKind,
    what: &'static str,
}

impl<'a> Scanner<'a> {
    /// A scanner whose errors are of `kind` and call the input `what` ("RQL filter").
    pub(super) fn new(src: &'a str, kind: ErrorKind, what: &'static str) -> Self {
        Scanner {
            src,
            pos: 0,
            kind,
            what,
        }
    }

    /// An error at byte offset `at`.
    pub(super) fn error_at(&self, at: usize, why: impl std::fmt::Display) -> Error {
        Error::new(
            self.kind,
            format!(
                "The {} '{}' is invalid at position {}: {why}.",
                self.what,
                excerpt(self.src),
                char_pos(self.src, at)
            ),
        )
        .with_description(match self.kind {
            ErrorKind::OptionInvalid => {
                "Options look like sort(+attributes/a,-thingId),size(10),cursor(...); \
                 encode '+' as %2B in URLs. Positions count characters from 0."
            }
            _ => {
                "Filters look like and(eq(attributes/location,\"kitchen\"),gt(features/f/properties/p,3)). \
                 Positions count characters from 0."
            }
        })
    }

    /// An error at the current position.
    pub(super) fn error(&self, why: impl std::fmt::Display) -> Error {
        self.error_at(self.pos, why)
    }

    /// Checks the input length.
    pub(super) fn check_len(&self) -> Result<()> {
        if self.src.len() > MAX_INPUT_LEN {
            return Err(Error::new(
                self.kind,
                format!(
                    "The {} is too long: {} bytes, at most {MAX_INPUT_LEN} are accepted.",
                    self.what,
                    self.src.len()
                ),
            ));
        }
        Ok(())
    }

    pub(super) fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    pub(super) fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    pub(super) fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    pub(super) fn skip_ws(&mut self) {
        while let Some(c) = self.peek().filter(|&c| is_ws(c)) {
            self.pos += c.len_utf8();
        }
    }

    /// Skips whitespace, then consumes `c` or fails with "expected `c` `context`".
    pub(super) fn expect(&mut self, c: char, context: &str) -> Result<()> {
        self.skip_ws();
        match self.peek() {
            Some(got) if got == c => {
                self.pos += c.len_utf8();
                Ok(())
            }
            Some(got) => Err(self.error(format_args!("expected '{c}' {context}, found {got:?}"))),
            None => Err(self.error(format_args!(
                "expected '{c}' {context}, found the end of the input"
            ))),
        }
    }

    /// An identifier of ASCII letters (possibly empty).
    pub(super) fn ident(&mut self) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_alphabetic()) {
            self.pos += 1;
        }
        &self.src[start..self.pos]
    }

    /// A property path: everything up to `,`, `(`, `)` or a quote, without surrounding whitespace.
    pub(super) fn path(&mut self) -> Result<Path> {
        self.skip_ws();
        let start = self.pos;
        while let Some(c) = self.peek() {
            if matches!(c, ',' | '(' | ')' | '"' | '\'') {
                break;
            }
            self.pos += c.len_utf8();
        }
        let raw = &self.src[start..self.pos];
        let token = raw.trim_end_matches(is_ws);
        if token.is_empty() {
            return Err(self.error_at(
                start,
                "expected a property path such as attributes/location",
            ));
        }
        Path::parse_reason(token).map_err(|(at, why)| {
            let byte = token.char_indices().nth(at).map_or(token.len(), |(b, _)| b);
            self.error_at(start + byte, why)
        })
    }

    /// A value: string, number, `true`, `false` or `null`.
    fn literal(&mut self) -> Result<Literal> {
        self.skip_ws();
        let start = self.pos;
        match self.peek() {
            Some(q @ ('"' | '\'')) => {
                self.pos += 1;
                self.string(q, start).map(Literal::String)
            }
            Some(c) if c == '-' || c == '+' || c.is_ascii_digit() => self.number(),
            Some(c) if c.is_ascii_alphabetic() => {
                let word = self.ident();
                if self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    return Err(self.error_at(
                        start,
                        "expected a value (string, number, true, false or null)",
                    ));
                }
                match word {
                    "true" => Ok(Literal::Bool(true)),
                    "false" => Ok(Literal::Bool(false)),
                    "null" => Ok(Literal::Null),
                    _ => Err(self.error_at(
                        start,
                        format_args!(
                            "'{word}' is not a value; strings need quotes, e.g. \"{word}\""
                        ),
                    )),
                }
            }
            Some(c) => Err(self.error(format_args!(
                "expected a value (string, number, true, false or null), found {c:?}"
            ))),
            None => Err(self.error("expected a value, found the end of the input")),
        }
    }

    /// The rest of a string literal opened by `quote` at `open`.
    fn string(&mut self, quote: char, open: usize) -> Result<String> {
        let mut out = String::new();
        loop {
            let at = self.pos;
            match self.bump() {
                None => return Err(self.error_at(open, "the string is not terminated")),
                Some(c) if c == quote => return Ok(out),
                Some('\\') => {
                    let c = match self.bump() {
                        Some(c @ ('"' | '\'' | '\\' | '/')) => c,
                        Some('b') => '\u{8}',
                        Some('f') => '\u{c}',
                        Some('n') => '\n',
                        Some('r') => '\r',
                        Some('t') => '\t',
                        Some('u') => self.unicode_escape(at)?,
                        Some(other) => {
                            return Err(
                                self.error_at(at, format_args!("unknown escape '\\{other}'"))
                            );
                        }
                        None => return Err(self.error_at(open, "the string is not terminated")),
                    };
                    out.push(c);
                }
                Some(c) => out.push(c),
            }
        }
    }

    /// Four hex digits after `\u` (and a low surrogate after a high one).
    fn unicode_escape(&mut self, at: usize) -> Result<char> {
        let hi = self.hex4(at)?;
        let code = if (0xD800..0xDC00).contains(&hi) {
            if !self.src[self.pos..].starts_with("\\u") {
                return Err(self.error_at(
                    at,
                    "a high surrogate \\u escape must be followed by a low one",
                ));
            }
            self.pos += 2;
            let lo = self.hex4(at)?;
            if !(0xDC00..0xE000).contains(&lo) {
                return Err(self.error_at(at, "invalid surrogate pair in \\u escapes"));
            }
            0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
        } else {
            hi
        };
        char::from_u32(code)
            .ok_or_else(|| self.error_at(at, "the \\u escape is not a valid character"))
    }

    fn hex4(&mut self, at: usize) -> Result<u32> {
        let digits = self
            .src
            .get(self.pos..self.pos + 4)
            .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()));
        let Some(digits) = digits else {
            return Err(self.error_at(at, "'\\u' must be followed by four hex digits"));
        };
        self.pos += 4;
        u32::from_str_radix(digits, 16).map_err(|_| self.error_at(at, "invalid \\u escape"))
    }

    /// A number: optional sign, digits, optional fraction and exponent.
    fn number(&mut self) -> Result<Literal> {
        let start = self.pos;
        if matches!(self.peek(), Some('+' | '-')) {
            self.pos += 1;
        }
        let digits = |s: &mut Self| {
            let from = s.pos;
            while s.peek().is_some_and(|c| c.is_ascii_digit()) {
                s.pos += 1;
            }
            s.pos > from
        };
        if !digits(self) {
            return Err(self.error_at(start, "a number needs digits after its sign"));
        }
        let mut float = false;
        if self.peek() == Some('.') {
            self.pos += 1;
            float = true;
            if !digits(self) {
                return Err(self.error_at(start, "a number needs digits after the decimal point"));
            }
        }
        if matches!(self.peek(), Some('e' | 'E')) {
            self.pos += 1;
            float = true;
            if matches!(self.peek(), Some('+' | '-')) {
                self.pos += 1;
            }
            if !digits(self) {
                return Err(self.error_at(start, "a number needs digits in its exponent"));
            }
        }
        if self
            .peek()
            .is_some_and(|c| c.is_alphanumeric() || c == '.' || c == '_')
        {
            return Err(self.error_at(start, "malformed number"));
        }
        let text = &self.src[start..self.pos];
        let text = text.strip_prefix('+').unwrap_or(text);
        let number = if float {
            None
        } else if let Ok(i) = text.parse::<i64>() {
            Some(Number::from(i))
        } else {
            text.parse::<u64>().ok().map(Number::from)
        };
        match number {
            Some(n) => Ok(Literal::Number(n)),
            None => text
                .parse::<f64>()
                .ok()
                .and_then(Number::from_f64)
                .map(Literal::Number)
                .ok_or_else(|| self.error_at(start, "the number is out of range")),
        }
    }

    /// One query node at nesting level `depth` (the root is 1).
    fn node(&mut self, depth: usize) -> Result<Node> {
        self.skip_ws();
        let start = self.pos;
        let name = self.ident();
        if name.is_empty() {
            return Err(match self.peek() {
                Some(c) => self.error(format_args!(
                    "expected an operator such as eq, and or exists, found {c:?}"
                )),
                None => self.error(
                    "expected an operator such as eq, and or exists, found the end of the input",
                ),
            });
        }
        if depth > MAX_DEPTH {
            return Err(self.error_at(
                start,
                format_args!("the filter is nested deeper than {MAX_DEPTH} levels"),
            ));
        }
        let known = matches!(name, "and" | "or" | "not" | "in" | "exists")
            || CmpOp::from_name(name).is_some();
        if !known {
            return Err(self.error_at(
                start,
                format_args!(
                    "unknown operator '{name}' (known: eq, ne, gt, ge, lt, le, in, like, ilike, exists, and, or, not)"
                ),
            ));
        }
        self.expect('(', &format!("after '{name}'"))?;
        let node = match name {
            "and" | "or" => {
                self.skip_ws();
                if self.peek() == Some(')') {
                    return Err(self.error(format_args!("'{name}' needs at least one query")));
                }
                let mut children = Vec::new();
                loop {
                    children.push(self.node(depth + 1)?);
                    self.skip_ws();
                    let at = self.pos;
                    match self.bump() {
                        Some(',') => {}
                        Some(')') => break,
                        Some(c) => {
                            return Err(self.error_at(
                                at,
                                format_args!("expected ',' or ')' in '{name}', found {c:?}"),
                            ));
                        }
                        None => {
                            return Err(self.error_at(
                                at,
                                format_args!(
                                    "expected ',' or ')' in '{name}', found the end of the input"
                                ),
                            ));
                        }
                    }
                }
                if name == "and" {
                    Node::And(children)
                } else {
                    Node::Or(children)
                }
            }
            "not" => {
                let child = self.node(depth + 1)?;
                self.expect(')', "after the query of 'not' (it takes exactly one)")?;
                Node::Not(Box::new(child))
            }
            "exists" => {
                let path = self.path()?;
                self.expect(')', "after the property of 'exists'")?;
                Node::Exists(path)
            }
            "in" => {
                let path = self.path()?;
                self.expect(
                    ',',
                    "after the property of 'in' (it needs at least one value)",
                )?;
                let mut values = vec![self.literal()?];
                loop {
                    self.skip_ws();
                    let at = self.pos;
                    match self.bump() {
                        Some(',') => values.push(self.literal()?),
                        Some(')') => break,
                        Some(c) => {
                            return Err(self.error_at(
                                at,
                                format_args!("expected ',' or ')' in 'in', found {c:?}"),
                            ));
                        }
                        None => {
                            return Err(self
                                .error("expected ',' or ')' in 'in', found the end of the input"));
                        }
                    }
                }
                Node::In { path, values }
            }
            _ => {
                // Checked above: a comparison.
                let op = CmpOp::from_name(name).unwrap_or(CmpOp::Eq);
                let path = self.path()?;
                self.expect(',', &format!("after the property of '{name}'"))?;
                self.skip_ws();
                let value_at = self.pos;
                let value = self.literal()?;
                if matches!(op, CmpOp::Like | CmpOp::ILike) && !matches!(value, Literal::String(_))
                {
                    return Err(
                        self.error_at(value_at, format_args!("'{name}' needs a string pattern"))
                    );
                }
                self.expect(
                    ')',
                    &format!("after the value of '{name}' (it takes a property and one value)"),
                )?;
                Node::Compare { op, path, value }
            }
        };
        Ok(node)
    }
}

/// Parses a whole filter.
pub(super) fn parse_filter(src: &str) -> Result<Node> {
    let mut s = Scanner::new(src, ErrorKind::RqlInvalid, "RQL filter");
    s.check_len()?;
    s.skip_ws();
    if s.at_end() {
        return Err(s.error("the filter is empty"));
    }
    let node = s.node(1)?;
    s.skip_ws();
    if !s.at_end() {
        return Err(s.error("unexpected text after the end of the filter"));
    }
    Ok(node)
}
