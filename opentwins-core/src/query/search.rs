//! In-memory search: filter, sort, page with opaque cursors, count.
//!
//! A cursor is base64url (no padding) of a small JSON object:
//! `{"v":1,"s":"+attributes/a","f":"<hash of the filter>","k":[[<value>]|[]],"t":"<thingId>"}`:
//! the effective sort, a hash of the canonical filter, and the sort values (`[]` when missing)
//! and `thingId` of the last item returned. The next page holds the items strictly after that
//! position in the total order.

use std::borrow::{Borrow, Cow};
use std::cmp::Ordering;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ast::{Filter, Path};
use super::eval::{single_value, total_cmp};
use super::options::{SearchOptions, SortKey};
use crate::error::{Error, ErrorKind, Result};
use crate::model::Thing;

/// One page of search results.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<'a> {
    /// The matching things of this page, in order.
    pub items: Vec<&'a Thing>,
    /// Where the next page starts; `Some` only when more results exist.
    pub cursor: Option<String>,
}

/// How many of `things` match `filter` (all when `None`).
pub fn count<'a>(things: impl IntoIterator<Item = &'a Thing>, filter: Option<&Filter>) -> usize {
    things
        .into_iter()
        .filter(|t| filter.is_none_or(|f| f.matches(*t)))
        .count()
}

/// One page of the things matching `filter`, ordered by `options.sort` then `thingId` ascending,
/// starting after `options.cursor`.
///
/// With a cursor and no `sort`, the cursor's sort applies; a cursor made with a different sort
/// or filter, or one that does not decode, is `things-search:option.invalid`. Memory is
/// O(size), time O(n) plus the cost of evaluating the filter.
pub fn search<'a>(
    things: impl IntoIterator<Item = &'a Thing>,
    filter: Option<&Filter>,
    options: &SearchOptions,
) -> Result<Page<'a>> {
    options.validate()?;
    let filter_tag = filter_hash(filter);
    let cursor = options.cursor.as_deref().map(Cursor::decode).transpose()?;
    let sort = match &cursor {
        Some(c) if options.sort.is_empty() => c.sort.clone(),
        Some(c) => {
            let mine = effective_sort(&options.sort);
            if sort_spec(mine) != sort_spec(&c.sort) {
                return Err(option_invalid(format!(
                    "the cursor was made for sort({}), not sort({})",
                    sort_spec(&c.sort),
                    sort_spec(mine)
                )));
            }
            mine.to_vec()
        }
        None => effective_sort(&options.sort).to_vec(),
    };
    if let Some(c) = &cursor
        && c.filter != filter_tag
    {
        return Err(option_invalid(
            "the cursor was made for a different filter".into(),
        ));
    }

    let limit = options.size + 1; // one more than a page tells whether more exist
    let cmp = |a: &Entry<'_>, b: &Entry<'_>| compare(&sort, &a.keys, a.id(), &b.keys, b.id());
    let mut kept: Vec<Entry<'a>> = Vec::with_capacity(limit.min(64) * 2);
    for thing in things {
        if filter.is_some_and(|f| !f.matches(thing)) {
            continue;
        }
        let keys: Vec<Option<Cow<'a, Value>>> =
            sort.iter().map(|k| single_value(thing, &k.path)).collect();
        let entry = Entry { keys, thing };
        if let Some(c) = &cursor
            && compare(&sort, &entry.keys, entry.id(), &c.keys, &c.thing_id) != Ordering::Greater
        {
            continue;
        }
        kept.push(entry);
        if kept.len() >= limit * 2 + 16 {
            // Keep the `limit` smallest: amortised O(1) per item, O(size) memory.
            kept.select_nth_unstable_by(limit - 1, cmp);
            kept.truncate(limit);
        }
    }
    kept.sort_by(cmp);
    let more = kept.len() > options.size;
    kept.truncate(options.size);
    let next = match kept.last() {
        Some(last) if more => Some(Cursor::encode(&sort, filter_tag, last)?),
        _ => None,
    };
    Ok(Page {
        items: kept.into_iter().map(|e| e.thing).collect(),
        cursor: next,
    })
}

/// Where a page starts when its order is by `thingId` ascending alone (no sort, or a sort whose
/// first key is `+thingId`): `Some(after)`, with the id of the previous page's last item
/// (`None` for the first page). `None` when another order applies. A caller that hands
/// [`search`] only the `options.size + 1` first matches after that id gets the same page.
pub fn id_order_start(options: &SearchOptions) -> Result<Option<Option<String>>> {
    let cursor = options.cursor.as_deref().map(Cursor::decode).transpose()?;
    let sort = match &cursor {
        Some(c) if options.sort.is_empty() => c.sort.as_slice(),
        _ => effective_sort(&options.sort),
    };
    let by_id = sort
        .first()
        .is_none_or(|k| k.ascending && k.path.is_key("thingId"));
    Ok(by_id.then(|| cursor.map(|c| c.thing_id)))
}

/// Chooses, among things offered one at a time, those that can be on a search's page, so that a
/// caller copies only those ([`PageSelect::offer`]) and hands them to [`search`], which then
/// returns the same page as over every match. Keeps the sort values of about two pages.
pub struct PageSelect {
    sort: Vec<SortKey>,
    cursor: Option<Cursor>,
    limit: usize,
    /// Sort values and ids of the things accepted since the last pruning, and the smallest
    /// `limit` before it.
    kept: Vec<(Vec<Option<Value>>, String)>,
    /// The largest of the `limit` smallest accepted so far: anything after it is not on the page.
    bound: Option<(Vec<Option<Value>>, String)>,
}

impl PageSelect {
    /// A selection for `options` (sort, size, cursor); errors as [`search`]'s.
    pub fn new(options: &SearchOptions) -> Result<Self> {
        options.validate()?;
        let cursor = options.cursor.as_deref().map(Cursor::decode).transpose()?;
        let sort = match &cursor {
            Some(c) if options.sort.is_empty() => c.sort.clone(),
            _ => effective_sort(&options.sort).to_vec(),
        };
        Ok(PageSelect {
            sort,
            cursor,
            limit: options.size + 1,
            kept: Vec::new(),
            bound: None,
        })
    }

    /// Whether `thing` (a match) can be on the page: after the cursor, and not after `limit`
    /// things already accepted.
    pub fn offer(&mut self, thing: &Thing) -> bool {
        let keys: Vec<Option<Cow<'_, Value>>> = self
            .sort
            .iter()
            .map(|k| single_value(thing, &k.path))
            .collect();
        let id = thing.id().as_str();
        let after = |(k, i): &(Vec<Option<Value>>, String)| {
            compare(&self.sort, &keys, id, k, i) == Ordering::Greater
        };
        let past_cursor = self.cursor.as_ref().is_none_or(|c| {
            compare(&self.sort, &keys, id, &c.keys, &c.thing_id) == Ordering::Greater
        });
        if !past_cursor || self.bound.as_ref().is_some_and(after) {
            return false;
        }
        let owned = keys.into_iter().map(|k| k.map(Cow::into_owned)).collect();
        self.kept.push((owned, id.to_owned()));
        if self.kept.len() >= self.limit * 2 + 16 {
            let sort = &self.sort;
            let cmp = |a: &(Vec<Option<Value>>, String), b: &(Vec<Option<Value>>, String)| {
                compare(sort, &a.0, &a.1, &b.0, &b.1)
            };
            self.kept.select_nth_unstable_by(self.limit - 1, cmp);
            self.kept.truncate(self.limit);
            self.bound = self.kept.iter().max_by(|a, b| cmp(a, b)).cloned();
        }
        true
    }
}

/// A candidate with its sort values.
struct Entry<'a> {
    keys: Vec<Option<Cow<'a, Value>>>,
    thing: &'a Thing,
}

impl Entry<'_> {
    fn id(&self) -> &str {
        self.thing.id().as_str()
    }
}

/// Orders two positions: the sort keys, then the thing id ascending.
fn compare<A: Borrow<Value>, B: Borrow<Value>>(
    sort: &[SortKey],
    a: &[Option<A>],
    a_id: &str,
    b: &[Option<B>],
    b_id: &str,
) -> Ordering {
    for ((key, x), y) in sort.iter().zip(a).zip(b) {
        let o = total_cmp(
            x.as_ref().map(Borrow::borrow),
            y.as_ref().map(Borrow::borrow),
        );
        let o = if key.ascending { o } else { o.reverse() };
        if o != Ordering::Equal {
            return o;
        }
    }
    a_id.cmp(b_id)
}

/// The sort keys that matter: everything up to and including the first `thingId` key (the ids
/// are unique, so later keys never decide).
fn effective_sort(sort: &[SortKey]) -> &[SortKey] {
    match sort.iter().position(|k| k.path.is_key("thingId")) {
        Some(i) => &sort[..=i],
        None => sort,
    }
}

fn sort_spec(sort: &[SortKey]) -> String {
    sort.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// FNV-1a of the canonical filter, so a cursor can only continue the search it came from.
fn filter_hash(filter: Option<&Filter>) -> String {
    let text = filter.map(ToString::to_string).unwrap_or_default();
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")
}

fn option_invalid(why: String) -> Error {
    Error::new(ErrorKind::OptionInvalid, format!("The search option 'cursor' is invalid: {why}."))
        .with_description("Use the cursor of the previous page with the same filter and sort, or search without a cursor.")
}

/// A decoded cursor.
struct Cursor {
    sort: Vec<SortKey>,
    filter: String,
    keys: Vec<Option<Cow<'static, Value>>>,
    thing_id: String,
}

#[derive(Serialize, Deserialize)]
struct CursorJson<'a> {
    v: u32,
    #[serde(borrow)]
    s: Cow<'a, str>,
    #[serde(borrow)]
    f: Cow<'a, str>,
    k: Vec<Vec<Value>>,
    #[serde(borrow)]
    t: Cow<'a, str>,
}

impl Cursor {
    fn encode(sort: &[SortKey], filter: String, last: &Entry<'_>) -> Result<String> {
        let json = CursorJson {
            v: 1,
            s: Cow::Owned(sort_spec(sort)),
            f: Cow::Owned(filter),
            k: last
                .keys
                .iter()
                .map(|k| k.iter().map(|v| v.as_ref().clone()).collect())
                .collect(),
            t: Cow::Borrowed(last.id()),
        };
        let bytes = serde_json::to_vec(&json).map_err(|e| {
            Error::new(
                ErrorKind::OptionInvalid,
                format!("The cursor cannot be encoded: {e}"),
            )
        })?;
        Ok(URL_SAFE_NO_PAD.encode(bytes))
    }

    fn decode(text: &str) -> Result<Self> {
        let bad = || option_invalid("it is not a cursor returned by this search".into());
        let bytes = URL_SAFE_NO_PAD
            .decode(text.trim_end_matches('='))
            .map_err(|_| bad())?;
        let json: CursorJson<'_> = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        if json.v != 1 {
            return Err(bad());
        }
        let sort = if json.s.is_empty() {
            Vec::new()
        } else {
            let mut sort = Vec::new();
            for key in json.s.split(',') {
                let (ascending, path) = match key.as_bytes().first() {
                    Some(b'+') => (true, &key[1..]),
                    Some(b'-') => (false, &key[1..]),
                    _ => return Err(bad()),
                };
                let path = Path::parse(path).map_err(|_| bad())?;
                if path.has_wildcard() {
                    return Err(bad());
                }
                sort.push(SortKey { path, ascending });
            }
            sort
        };
        if json.k.len() != sort.len() || json.k.iter().any(|k| k.len() > 1) {
            return Err(bad());
        }
        Ok(Cursor {
            sort,
            filter: json.f.into_owned(),
            keys: json
                .k
                .into_iter()
                .map(|mut k| k.pop().map(Cow::Owned))
                .collect(),
            thing_id: json.t.into_owned(),
        })
    }
}
