//! Ditto's search options: `sort(+attributes/a,-thingId),size(10),cursor(XYZ)`.

use std::fmt;

use super::ast::Path;
use super::parse::Scanner;
use crate::error::{Error, ErrorKind, Result};

/// Page size when `size` is not given (Ditto's default).
pub const DEFAULT_SIZE: usize = 25;

/// Largest accepted `size` (Ditto's maximum).
pub const MAX_SIZE: usize = 200;

/// One sort criterion: `+path` (ascending) or `-path` (descending).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SortKey {
    /// The property to sort by (no wildcards).
    pub path: Path,
    /// `+` is ascending, `-` descending.
    pub ascending: bool,
}

impl fmt::Display for SortKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", if self.ascending { '+' } else { '-' }, self.path)
    }
}

/// Parsed search options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchOptions {
    /// Sort criteria, most significant first; `thingId` ascending always breaks ties.
    pub sort: Vec<SortKey>,
    /// Page size, 1 to [`MAX_SIZE`].
    pub size: usize,
    /// The cursor of a previous page, to continue after it.
    pub cursor: Option<String>,
}

impl Default for SearchOptions {
    fn default() -> Self {
        SearchOptions {
            sort: Vec::new(),
            size: DEFAULT_SIZE,
            cursor: None,
        }
    }
}

impl SearchOptions {
    /// Parses Ditto's `option=` value: `sort(..)`, `size(n)`, `cursor(..)`, comma separated, in any
    /// order, each at most once. An empty string gives the defaults. Errors are
    /// `things-search:option.invalid` (400).
    pub fn parse(s: &str) -> Result<Self> {
        let mut sc = Scanner::new(s, ErrorKind::OptionInvalid, "search option");
        sc.check_len()?;
        let mut out = SearchOptions::default();
        let (mut seen_sort, mut seen_size, mut seen_cursor) = (false, false, false);
        sc.skip_ws();
        if sc.at_end() {
            return Ok(out);
        }
        loop {
            sc.skip_ws();
            let start = sc.pos;
            let name = sc.ident();
            let seen = match name {
                "sort" => &mut seen_sort,
                "size" => &mut seen_size,
                "cursor" => &mut seen_cursor,
                "limit" => {
                    return Err(sc.error_at(
                        start,
                        "'limit' is deprecated in Ditto and not supported; use size(n) and cursor(..)",
                    ));
                }
                "" => return Err(sc.error("expected an option: sort(..), size(..) or cursor(..)")),
                other => {
                    return Err(sc.error_at(
                        start,
                        format_args!("unknown option '{other}' (known: sort, size, cursor)"),
                    ));
                }
            };
            if std::mem::replace(seen, true) {
                return Err(sc.error_at(start, format_args!("the option '{name}' is given twice")));
            }
            sc.expect('(', &format!("after '{name}'"))?;
            match name {
                "sort" => out.sort = sort_keys(&mut sc)?,
                "size" => out.size = size(&mut sc)?,
                _ => out.cursor = Some(cursor(&mut sc)?),
            }
            sc.skip_ws();
            let at = sc.pos;
            match sc.bump() {
                None => break,
                Some(',') => {}
                Some(c) => {
                    return Err(sc.error_at(
                        at,
                        format_args!("expected ',' between options, found {c:?}"),
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Checks options built in code: size in range, sort paths without wildcards and distinct.
    pub fn validate(&self) -> Result<()> {
        let invalid = |why: String| {
            Error::new(
                ErrorKind::OptionInvalid,
                format!("The search options are invalid: {why}."),
            )
        };
        if self.size == 0 || self.size > MAX_SIZE {
            return Err(invalid(format!(
                "size must be between 1 and {MAX_SIZE}, not {}",
                self.size
            )));
        }
        for (i, k) in self.sort.iter().enumerate() {
            if k.path.has_wildcard() {
                return Err(invalid(format!(
                    "cannot sort by the wildcard path '{}'",
                    k.path
                )));
            }
            if self.sort[..i].iter().any(|o| o.path == k.path) {
                return Err(invalid(format!("'{}' is sorted by twice", k.path)));
            }
        }
        Ok(())
    }
}

/// `+a,-b/c)`: the keys of `sort(`, through the closing parenthesis.
fn sort_keys(sc: &mut Scanner<'_>) -> Result<Vec<SortKey>> {
    let mut keys: Vec<SortKey> = Vec::new();
    loop {
        sc.skip_ws();
        let at = sc.pos;
        let ascending = match sc.bump() {
            Some('+') => true,
            Some('-') => false,
            Some(')') if keys.is_empty() => {
                return Err(sc.error_at(at, "'sort' needs at least one property"));
            }
            _ => {
                return Err(sc.error_at(
                    at,
                    "each sort property needs '+' (ascending, %2B in URLs) or '-' (descending) before it",
                ));
            }
        };
        let path_at = sc.pos;
        let path = sc.path()?;
        if path.has_wildcard() {
            return Err(sc.error_at(path_at, "cannot sort by a path with the wildcard '*'"));
        }
        if keys.iter().any(|k| k.path == path) {
            return Err(sc.error_at(path_at, format_args!("'{path}' is sorted by twice")));
        }
        keys.push(SortKey { path, ascending });
        sc.skip_ws();
        let at = sc.pos;
        match sc.bump() {
            Some(',') => {}
            Some(')') => return Ok(keys),
            Some(c) => {
                return Err(sc.error_at(
                    at,
                    format_args!("expected ',' or ')' in 'sort', found {c:?}"),
                ));
            }
            None => {
                return Err(sc.error_at(
                    at,
                    "expected ',' or ')' in 'sort', found the end of the input",
                ));
            }
        }
    }
}

/// `10)`: the count of `size(`, through the closing parenthesis.
fn size(sc: &mut Scanner<'_>) -> Result<usize> {
    sc.skip_ws();
    let start = sc.pos;
    while sc.peek().is_some_and(|c| c.is_ascii_digit()) {
        sc.pos += 1;
    }
    let digits = &sc.src[start..sc.pos];
    if digits.is_empty() {
        return Err(sc.error_at(start, "'size' needs a positive integer"));
    }
    let n = digits
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_SIZE).contains(n));
    let Some(n) = n else {
        return Err(sc.error_at(
            start,
            format_args!("'size' must be between 1 and {MAX_SIZE}"),
        ));
    };
    sc.expect(')', "after the size")?;
    Ok(n)
}

/// `XYZ)`: the cursor of `cursor(`, through the closing parenthesis. Its content is checked by
/// the search that uses it.
fn cursor(sc: &mut Scanner<'_>) -> Result<String> {
    sc.skip_ws();
    let start = sc.pos;
    while sc
        .peek()
        .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '='))
    {
        sc.pos += 1;
    }
    let token = sc.src[start..sc.pos].to_owned();
    if token.is_empty() {
        return Err(sc.error_at(
            start,
            "'cursor' needs the cursor of a previous search result",
        ));
    }
    sc.expect(
        ')',
        "after the cursor (a cursor holds only letters, digits, '-' and '_')",
    )?;
    Ok(token)
}

impl fmt::Display for SearchOptions {
    /// Canonical form: `sort(..),` when sorting, `size(n)`, then `,cursor(..)` when continuing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.sort.is_empty() {
            f.write_str("sort(")?;
            for (i, k) in self.sort.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{k}")?;
            }
            f.write_str("),")?;
        }
        write!(f, "size({})", self.size)?;
        if let Some(c) = &self.cursor {
            write!(f, ",cursor({c})")?;
        }
        Ok(())
    }
}
