//! Search and multi-retrieve over the things a caller may read.

use std::collections::HashMap;

use serde_json::Value;

use super::access::Access;
use super::{Twins, lock};
use crate::error::Result;
use crate::model::{FieldSelector, Pointer, Thing, ThingId};
use crate::policy::AuthContext;
use crate::query::{self, Filter, SearchOptions};

/// One page of search results.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchResult {
    /// The things, as the caller may read them, reduced to `fields` if given.
    pub items: Vec<Value>,
    /// Where the next page starts; `None` on the last page.
    pub cursor: Option<String>,
}

impl Twins {
    /// Searches the things `auth` may read with an RQL `filter` and Ditto's `option` string
    /// (`sort(+attributes/a),size(10),cursor(..)`). The filter only sees what the caller may read.
    pub fn search(
        &self,
        auth: &AuthContext,
        filter: Option<&str>,
        options: Option<&str>,
        fields: Option<&FieldSelector>,
    ) -> Result<SearchResult> {
        let filter = filter.map(Filter::parse).transpose()?;
        let mut options = SearchOptions::parse(options.unwrap_or(""))?;
        if let Some(token) = options.cursor.take() {
            options.cursor = Some(self.inner.cursors.open(auth, &token)?);
        }
        let mut matches = Vec::new();
        self.visit(auth, filter.as_ref(), |thing, view| {
            matches.push(match view {
                None => (thing.clone(), false),
                Some(view) => (thing.with_body(view), true),
            });
        });
        let restricted: HashMap<&ThingId, bool> =
            matches.iter().map(|(t, r)| (t.id(), *r)).collect();
        // Sorted on what the caller may read: neither the order nor a cursor (which holds the
        // last item's sort values, sealed for this caller) tells anything about hidden values.
        let page = query::search(matches.iter().map(|(t, _)| t), None, &options)?;
        let items = page
            .items
            .iter()
            .map(|t| render(t, restricted[t.id()], fields))
            .collect();
        Ok(SearchResult {
            items,
            cursor: page.cursor.map(|c| self.inner.cursors.seal(auth, &c)),
        })
    }

    /// Counts the things `auth` may read that match `filter`.
    pub fn count(&self, auth: &AuthContext, filter: Option<&str>) -> Result<usize> {
        let filter = filter.map(Filter::parse).transpose()?;
        let mut count = 0;
        self.visit(auth, filter.as_ref(), |_, _| count += 1);
        Ok(count)
    }

    /// The things with these ids that `auth` may read, in the order asked; missing or
    /// unreadable ones are left out (as Ditto's `GET /things?ids=`).
    pub fn retrieve_things(
        &self,
        auth: &AuthContext,
        ids: &[ThingId],
        fields: Option<&FieldSelector>,
    ) -> Vec<Value> {
        ids.iter()
            .filter_map(|id| {
                let slot = self.inner.things.get(id)?;
                let guard = lock(&slot);
                let thing = guard.peek().ok()??;
                let thing = thing.as_ref();
                let policy = self.inner.policy(thing.policy_id());
                let access = Access::new(auth, policy.as_deref());
                if access.read_all(&Pointer::root()) {
                    Some(render(thing, false, fields))
                } else {
                    let view = access.filter(&Pointer::root(), thing.body())?;
                    Some(render(&thing.with_body(view), true, fields))
                }
            })
            .collect()
    }

    /// A snapshot of one thing if `auth` may read all of it (a peer's anti-entropy digest
    /// compares only such things).
    pub fn readable_thing(&self, auth: &AuthContext, id: &ThingId) -> Option<Thing> {
        let thing = self.get_thing(id)?;
        let policy = self.inner.policy(thing.policy_id());
        Access::new(auth, policy.as_deref())
            .read_all(&Pointer::root())
            .then_some(thing)
    }

    /// Calls `found` with every thing matching `filter` as `auth` sees it, with its readable
    /// part when the caller may not read all of it.
    fn visit(
        &self,
        auth: &AuthContext,
        filter: Option<&Filter>,
        mut found: impl FnMut(&Thing, Option<Value>),
    ) {
        for slot in self.inner.things.all() {
            let guard = lock(&slot);
            let Ok(Some(thing)) = guard.peek() else {
                continue;
            };
            let thing = thing.as_ref();
            let policy = self.inner.policy(thing.policy_id());
            let access = Access::new(auth, policy.as_deref());
            if access.read_all(&Pointer::root()) {
                if filter.is_none_or(|f| f.matches(thing)) {
                    found(thing, None);
                }
            } else if let Some(view) = access.filter(&Pointer::root(), thing.body())
                && filter.is_none_or(|f| f.matches(&view))
            {
                found(thing, Some(view));
            }
        }
    }
}

/// A thing as a result item: a restricted copy is its readable body only (no metadata).
fn render(thing: &Thing, restricted: bool, fields: Option<&FieldSelector>) -> Value {
    match (restricted, fields) {
        (false, f) => thing.to_json(f),
        (true, None) => thing.body().clone(),
        (true, Some(f)) => f.apply(thing.body()),
    }
}
