//! RQL, Ditto's query language: filters (`and(eq(attributes/location,"kitchen"),gt(features/f/properties/p,3))`),
//! search options (`sort(+attributes/a,-thingId),size(10),cursor(..)`), and an in-memory search
//! with stable cursor paging.
//!
//! Semantics, in short (each point is tested in this module):
//! - A path is slash separated from the thing root, with an optional leading `/`; `*` matches
//!   any key (or any array element) at its level. Paths also cross arrays: `attributes/list/name`
//!   reaches `name` in every object of the array `list`.
//! - A path may therefore resolve to several values; a comparison holds when **any** of them
//!   satisfies it. A resolved array also satisfies `eq`/`in`/`gt`/.../`like` when one of its
//!   elements does (one level, as in MongoDB, which backs Ditto's search).
//! - `ne(p,v)` holds when `p` exists and `eq(p,v)` does not hold: as Ditto's search documents,
//!   things without the property are *not* returned (use `not(eq(p,v))` to include them).
//! - `exists(p)` holds when any value exists at `p`; JSON `null` counts as existing.
//! - Numbers compare numerically (`1` equals `1.0`); `gt`/`ge`/`lt`/`le` compare only numbers with
//!   numbers and strings with strings (by Unicode code points, so RFC 3339 timestamps in UTC
//!   like `_modified` order correctly); any other mix is false. `eq`/`ne` of different types are
//!   simply unequal.
//! - `like` takes a string pattern: `*` is any sequence, `?` exactly one character, everything
//!   else literal and case sensitive; `ilike` is the same ignoring case. Non-string values never
//!   match.
//! - Sorting orders values of different types as missing < null < booleans < numbers < strings
//!   < arrays < objects (descending reverses it, so missing comes last), then by `thingId`
//!   ascending, always, so paging is stable.

mod ast;
mod eval;
mod index;
mod options;
mod parse;
mod search;

use std::borrow::Cow;

use serde_json::Value;

pub use ast::{CmpOp, Filter, Literal, Node, Path, Segment};
pub use index::{MAX_KEY_BYTES, MAX_KEYS, SearchIndex};
pub use options::{DEFAULT_SIZE, MAX_SIZE, SearchOptions, SortKey};
pub use search::{Page, PageSelect, count, id_order_start, search};

use crate::model::Thing;

/// Longest filter or option string accepted, in bytes.
pub const MAX_INPUT_LEN: usize = 64 * 1024;

/// Deepest nesting of logical operators (`and`, `or`, `not`) in a filter.
pub const MAX_DEPTH: usize = 64;

/// Most segments in one path.
pub const MAX_PATH_SEGMENTS: usize = 128;

/// Something a filter can be evaluated against: a JSON object whose top-level fields are looked
/// up by key.
pub trait Document {
    /// The value of the top-level field `key`, if present.
    fn field(&self, key: &str) -> Option<Cow<'_, Value>>;

    /// All top-level keys, for paths that start with the wildcard `*`. The default has none, so
    /// such paths match nothing.
    fn keys(&self) -> Vec<Cow<'_, str>> {
        Vec::new()
    }
}

impl Document for Value {
    fn field(&self, key: &str) -> Option<Cow<'_, Value>> {
        self.as_object()?.get(key).map(Cow::Borrowed)
    }

    fn keys(&self) -> Vec<Cow<'_, str>> {
        self.as_object().map_or_else(Vec::new, |m| {
            m.keys().map(|k| Cow::Borrowed(k.as_str())).collect()
        })
    }
}

impl Document for Thing {
    fn field(&self, key: &str) -> Option<Cow<'_, Value>> {
        Thing::field(self, key)
    }

    fn keys(&self) -> Vec<Cow<'_, str>> {
        let mut keys = self.body().keys();
        keys.extend(["_revision", "_created", "_modified"].map(Cow::Borrowed));
        if self.metadata().is_some() {
            keys.push(Cow::Borrowed("_metadata"));
        }
        keys
    }
}

impl<D: Document + ?Sized> Document for &D {
    fn field(&self, key: &str) -> Option<Cow<'_, Value>> {
        (**self).field(key)
    }

    fn keys(&self) -> Vec<Cow<'_, str>> {
        (**self).keys()
    }
}

#[cfg(test)]
mod tests;
