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
        let options = SearchOptions::parse(options.unwrap_or(""))?;
        let matches = self.matching(auth, filter.as_ref());
        let views: HashMap<&ThingId, &Value> = matches
            .iter()
            .filter_map(|(t, v)| Some((t.id(), v.as_ref()?)))
            .collect();
        let page = query::search(matches.iter().map(|(t, _)| t), None, &options)?;
        let items = page
            .items
            .iter()
            .map(|t| render(t, views.get(t.id()).copied(), fields))
            .collect();
        Ok(SearchResult {
            items,
            cursor: page.cursor,
        })
    }

    /// Counts the things `auth` may read that match `filter`.
    pub fn count(&self, auth: &AuthContext, filter: Option<&str>) -> Result<usize> {
        let filter = filter.map(Filter::parse).transpose()?;
        Ok(self.matching(auth, filter.as_ref()).len())
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
                    Some(render(thing, None, fields))
                } else {
                    let view = access.filter(&Pointer::root(), thing.body())?;
                    Some(render(thing, Some(&view), fields))
                }
            })
            .collect()
    }

    /// Things matching `filter` as `auth` sees them: each with its restricted view when the
    /// caller may not read all of it.
    fn matching(&self, auth: &AuthContext, filter: Option<&Filter>) -> Vec<(Thing, Option<Value>)> {
        let mut out = Vec::new();
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
                    out.push((thing.clone(), None));
                }
            } else if let Some(view) = access.filter(&Pointer::root(), thing.body())
                && filter.is_none_or(|f| f.matches(&view))
            {
                out.push((thing.clone(), Some(view)));
            }
        }
        out
    }
}

fn render(thing: &Thing, view: Option<&Value>, fields: Option<&FieldSelector>) -> Value {
    match (view, fields) {
        (None, f) => thing.to_json(f),
        (Some(v), None) => v.clone(),
        (Some(v), Some(f)) => f.apply(v),
    }
}
