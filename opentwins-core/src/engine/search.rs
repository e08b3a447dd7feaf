//! Search and multi-retrieve over the things a caller may read.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::Value;

use super::access::Access;
use super::hot::{Slot, SlotRef};
use super::{Twins, lock, read, write};
use crate::error::Result;
use crate::model::{FieldSelector, Pointer, Thing, ThingId};
use crate::policy::AuthContext;
use crate::query::{self, Filter, Node, Path, SearchIndex, SearchOptions};

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
    ///
    /// The search index names the candidates when it can answer the filter; in `thingId` order
    /// (the default) the search stops after one page of matches.
    pub fn search(
        &self,
        auth: &AuthContext,
        filter: Option<&str>,
        options: Option<&str>,
        fields: Option<&FieldSelector>,
    ) -> Result<SearchResult> {
        let filter = filter.map(Filter::parse).transpose()?;
        let mut options = SearchOptions::parse(options.unwrap_or(""))?;
        options.validate()?;
        if let Some(token) = options.cursor.take() {
            options.cursor = Some(self.inner.cursors.open(auth, &token)?);
        }
        let filter = filter.as_ref();
        let mut matches = Vec::new();
        match query::id_order_start(&options)? {
            Some(after) => {
                let mut keep = |thing: &Thing, view: Option<Value>| {
                    matches.push(match view {
                        None => (thing.clone(), false),
                        Some(view) => (thing.with_body(view), true),
                    });
                };
                // One page plus one (to tell whether more exist) of the first matches after
                // the cursor's id is all the page needs.
                let want = options.size + 1;
                let mut found = 0;
                self.each_candidate_after(filter, after, &mut |slot| {
                    found += usize::from(self.visit_slot(auth, filter, &slot.0, &mut keep));
                    found < want
                });
            }
            None => {
                // Another order: every match is looked at, and only those that can still be
                // on the page are copied.
                // In no particular order (the page is sorted below): the slots alone will do.
                let candidates = self.candidates(filter, SearchIndex::candidate_handles);
                let mut select = query::PageSelect::new(&options)?;
                let mut offer = |thing: &Thing, view: Option<Value>| {
                    let restricted = view.is_some();
                    let seen = match view {
                        None => Cow::Borrowed(thing),
                        Some(view) => Cow::Owned(thing.with_body(view)),
                    };
                    if select.offer(&seen) {
                        matches.push((seen.into_owned(), restricted));
                    }
                };
                match candidates {
                    Some(slots) => slots.iter().for_each(|slot| {
                        self.visit_slot(auth, filter, &slot.0, &mut offer);
                    }),
                    None => self.visit(auth, filter, offer),
                }
            }
        }
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
        let filter = filter.as_ref();
        let exact = |index: &SearchIndex<SlotRef>, node: &Node| {
            Some((index.candidate_handles(node)?, index.exact(node)))
        };
        Ok(match self.candidates(filter, exact) {
            Some((slots, exact)) => self.count_slots(auth, filter, exact, &slots),
            None => {
                let mut count = 0;
                self.visit(auth, filter, |_, _| count += 1);
                count
            }
        })
    }

    /// How many of the candidates in `slots` the caller finds. Exact candidates are the things
    /// that match as the index holds them: only the caller's permission is left to check (and,
    /// on a part it may read, the filter). Many candidates are split over the cores: checking
    /// one is a few cache misses (its slot, its policy), which cores overlap.
    fn count_slots(
        &self,
        auth: &AuthContext,
        filter: Option<&Filter>,
        exact: bool,
        slots: &[SlotRef],
    ) -> usize {
        const PER_THREAD: usize = 8192;
        let count = |part: &[SlotRef]| {
            let mut n = 0;
            let found = &mut |_: &Thing, _| n += 1;
            for slot in part {
                self.visit_checked(auth, filter, exact, &slot.0, found);
            }
            n
        };
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(slots.len() / PER_THREAD)
            .min(4);
        if threads < 2 {
            return count(slots);
        }
        let chunk = slots.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let others: Vec<_> = slots[chunk..]
                .chunks(chunk)
                .map(|part| scope.spawn(move || count(part)))
                .collect();
            let mine = count(&slots[..chunk]);
            mine + others
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .sum::<usize>()
        })
    }

    /// What `answer` makes of the index for `filter`, when there is a filter; first indexes
    /// the paths it compares that are not indexed yet, while fewer than
    /// [`EngineConfig::max_search_indexes`](super::EngineConfig::max_search_indexes) are.
    fn candidates<T>(
        &self,
        filter: Option<&Filter>,
        answer: impl FnOnce(&SearchIndex<SlotRef>, &Node) -> Option<T>,
    ) -> Option<T> {
        let filter = filter?;
        let new = {
            let index = read(&self.inner.index);
            let room = self
                .inner
                .config
                .max_search_indexes
                .saturating_sub(index.path_count());
            let mut new = index.unindexed(filter.root());
            new.truncate(room);
            new
        };
        for path in new {
            self.build_index(path);
        }
        answer(&read(&self.inner.index), filter.root())
    }

    /// Indexes `path` for search: from now on for every write, and now for every thing held
    /// (each under its lock, so a write in between is never undone). Queries use the path once
    /// it is filled.
    pub(super) fn build_index(&self, path: Path) {
        if !write(&self.inner.index).add_path(path.clone()) {
            return;
        }
        let started = std::time::Instant::now();
        for slot in self.inner.things.all() {
            let entry = lock(&slot);
            // An absent slot's thing was deleted after the path was added, and the deletion
            // already left the index.
            if let Ok(Some(thing)) = entry.peek() {
                write(&self.inner.index).fill(&path, &thing, &SlotRef(slot.clone()));
            }
        }
        write(&self.inner.index).ready(&path);
        tracing::info!(%path, elapsed = ?started.elapsed(), "search index filled");
    }

    /// Calls `take` with every thing after the id `after` that can match `filter`, in id
    /// order, until it returns `false`. Things are read from the index a chunk at a time (the
    /// candidates when the index answers the filter, else every thing), so no lock of the index
    /// is held while `take` runs.
    fn each_candidate_after(
        &self,
        filter: Option<&Filter>,
        mut after: Option<String>,
        take: &mut impl FnMut(&SlotRef) -> bool,
    ) {
        const CHUNK: usize = 256;
        loop {
            let chunk = self
                .candidates(filter, |index, node| {
                    index.candidates_after(node, after.as_deref(), CHUNK)
                })
                .unwrap_or_else(|| read(&self.inner.index).ids_after(after.as_deref(), CHUNK));
            for (_, slot) in &chunk {
                if !take(slot) {
                    return;
                }
            }
            match chunk.last() {
                Some((last, _)) if chunk.len() == CHUNK => after = Some(last.to_string()),
                _ => return,
            }
        }
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
            self.visit_slot(auth, filter, &slot, &mut found);
        }
    }

    /// [`Twins::visit`] for the thing in `slot` alone; whether it matched.
    fn visit_slot(
        &self,
        auth: &AuthContext,
        filter: Option<&Filter>,
        slot: &Slot,
        found: &mut impl FnMut(&Thing, Option<Value>),
    ) -> bool {
        self.visit_checked(auth, filter, false, slot, found)
    }

    /// [`Twins::visit_slot`], or, when `matches` (the index says the thing matches), with the
    /// filter evaluated only on a part the caller may read.
    fn visit_checked(
        &self,
        auth: &AuthContext,
        filter: Option<&Filter>,
        matches: bool,
        slot: &Slot,
        found: &mut impl FnMut(&Thing, Option<Value>),
    ) -> bool {
        let guard = lock(slot);
        let Ok(Some(thing)) = guard.peek() else {
            return false;
        };
        let thing = thing.as_ref();
        let policy = self.inner.policy(thing.policy_id());
        let access = Access::new(auth, policy.as_deref());
        if access.read_all(&Pointer::root()) {
            if matches || filter.is_none_or(|f| f.matches(thing)) {
                found(thing, None);
                return true;
            }
        } else if let Some(view) = access.filter(&Pointer::root(), thing.body())
            && filter.is_none_or(|f| f.matches(&view))
        {
            found(thing, Some(view));
            return true;
        }
        false
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
