//! A secondary index for search: every thing id in order, and the values found at chosen
//! property paths in order. [`SearchIndex::candidates`] says which things can match a filter —
//! always a superset of the matches: the caller still evaluates the filter (and the policy) on
//! each candidate, unless [`SearchIndex::exact`] says the candidates are the matches — so a
//! query looks at its matches instead of at every thing. Each thing comes with a handle `H` of
//! the caller's (the engine's: the thing's slot), so candidates lead straight to the things.
//!
//! What a path's index holds for a thing: every scalar (null, boolean, number, string) the path
//! resolves to, and the scalar elements of a resolved array (one level): exactly the values
//! `eq`, `in`, `gt`/`ge`/`lt`/`le` and `like` can match (see the module semantics). Numbers are
//! ordered numerically, so `1` and `1.0` are one key. A thing with a value that does not fit
//! (a string longer than [`MAX_KEY_BYTES`], more than [`MAX_KEYS`] values at the path) is kept
//! in the path's overflow set instead, and is a candidate of every query on that path.
//!
//! Answered from the index: `eq`, `in`, `gt`, `ge`, `lt`, `le`, and `like` with a literal
//! prefix, on an indexed path or on `thingId`; `and` through its most selective answerable
//! child; `or` as the union of its children when every child is answerable. Not answered (the
//! caller scans): `ne`, `not`, `exists`, `ilike`, wildcard paths and paths not indexed.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use serde_json::{Number, Value};

use super::ast::{CmpOp, Literal, Node, Path};
use super::eval::{cmp_numbers, for_each_value};
use crate::model::{Thing, ThingId};

/// Longest string kept as a key, in bytes; a thing with a longer one at a path is in its
/// overflow set.
pub const MAX_KEY_BYTES: usize = 256;

/// Most keys one thing has at one path; beyond, the thing is in the path's overflow set.
pub const MAX_KEYS: usize = 64;

/// An indexed scalar, in the order of the search's total order within a type.
#[derive(Debug, Clone)]
enum Key {
    Null,
    Bool(bool),
    Number(Number),
    String(Box<str>),
}

impl Key {
    /// The key of a scalar; `None` for arrays and objects.
    fn of_value(v: &Value) -> Option<Key> {
        Some(match v {
            Value::Null => Key::Null,
            Value::Bool(b) => Key::Bool(*b),
            Value::Number(n) => Key::Number(n.clone()),
            Value::String(s) => Key::String(s.as_str().into()),
            Value::Array(_) | Value::Object(_) => return None,
        })
    }

    fn of_literal(l: &Literal) -> Key {
        match l {
            Literal::Null => Key::Null,
            Literal::Bool(b) => Key::Bool(*b),
            Literal::Number(n) => Key::Number(n.clone()),
            Literal::String(s) => Key::String(s.as_str().into()),
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Key::Null => 0,
            Key::Bool(_) => 1,
            Key::Number(_) => 2,
            Key::String(_) => 3,
        }
    }

    fn too_big(&self) -> bool {
        matches!(self, Key::String(s) if s.len() > MAX_KEY_BYTES)
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Key::Bool(a), Key::Bool(b)) => a.cmp(b),
            (Key::Number(a), Key::Number(b)) => cmp_numbers(a, b),
            (Key::String(a), Key::String(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Key {}

/// A thing id ordered (and looked up) as its string.
#[derive(Debug, Clone)]
struct IdKey(ThingId);

impl Borrow<str> for IdKey {
    fn borrow(&self) -> &str {
        self.0.as_str()
    }
}

impl Ord for IdKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.as_str().cmp(other.0.as_str())
    }
}

impl PartialOrd for IdKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for IdKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for IdKey {}

/// What a path's index holds for one thing that has values there.
#[derive(Debug, Clone, PartialEq)]
enum Held {
    /// Its keys, sorted, without duplicates.
    Keys(Box<[Key]>),
    /// Values that do not fit: a candidate of every query on the path.
    Overflow,
}

impl Held {
    /// What `thing` holds at `path`; `None` when nothing is there.
    fn of(thing: &Thing, path: &Path) -> Option<Held> {
        let mut keys = Vec::new();
        let mut overflow = false;
        let mut add = |v: &Value| match Key::of_value(v) {
            Some(k) if k.too_big() => overflow = true,
            Some(k) => keys.push(k),
            None => {}
        };
        for_each_value(thing, path, &mut |v| {
            add(v);
            if let Value::Array(items) = v {
                items.iter().for_each(&mut add);
            }
        });
        keys.sort_unstable();
        keys.dedup();
        if overflow || keys.len() > MAX_KEYS {
            Some(Held::Overflow)
        } else if keys.is_empty() {
            None
        } else {
            Some(Held::Keys(keys.into()))
        }
    }
}

/// Things with their handles, in id order.
type Things<H> = BTreeMap<IdKey, H>;

/// The things of one key: most keys of a path with many distinct values (a sequence number, a
/// timestamp) have one, kept without a tree node of its own.
enum Set<H> {
    One(IdKey, H),
    Many(Things<H>),
}

impl<H: Clone> Set<H> {
    fn len(&self) -> usize {
        match self {
            Set::One(..) => 1,
            Set::Many(things) => things.len(),
        }
    }

    fn insert(&mut self, id: IdKey, handle: H) {
        if let Set::One(one, h) = self
            && *one == id
        {
            *h = handle;
            return;
        }
        let mut things = match std::mem::replace(self, Set::Many(BTreeMap::new())) {
            Set::One(one, h) => BTreeMap::from([(one, h)]),
            Set::Many(things) => things,
        };
        things.insert(id, handle);
        *self = Set::Many(things);
    }

    /// Removes `id`; whether the set is empty now.
    fn remove(&mut self, id: &str) -> bool {
        match self {
            Set::One(one, _) => one.0.as_str() == id,
            Set::Many(things) => {
                things.remove(id);
                things.is_empty()
            }
        }
    }

    /// Calls `run` with this set's things after `lower`, in id order.
    fn run<'a>(&'a self, lower: Bound<&str>, run: &mut Runner<'a, '_, H>) {
        match self {
            Set::One(id, h) => {
                let after = match lower {
                    Bound::Excluded(a) => id.0.as_str() > a,
                    Bound::Included(a) => id.0.as_str() >= a,
                    Bound::Unbounded => true,
                };
                run(&mut after.then_some((id, h)).into_iter(), None);
            }
            Set::Many(things) => run(&mut things.range::<str, _>((lower, Bound::Unbounded)), None),
        }
    }
}

/// Takes one run of candidates in id order, with the prefix their ids must start with (the run
/// ends at the first that does not).
type Runner<'a, 'f, H> =
    dyn FnMut(&mut dyn Iterator<Item = (&'a IdKey, &'a H)>, Option<&'a str>) + 'f;

/// The index of one path.
struct PathIndex<H> {
    path: Path,
    /// Whether it holds every thing (an index added while things exist is filled first).
    ready: bool,
    by_key: BTreeMap<Key, Set<H>>,
    overflow: Things<H>,
    /// What each thing with values at the path holds, to unlink it when it changes.
    of_thing: HashMap<ThingId, Held>,
}

impl<H: Clone> PathIndex<H> {
    fn new(path: Path, ready: bool) -> Self {
        PathIndex {
            path,
            ready,
            by_key: BTreeMap::new(),
            overflow: BTreeMap::new(),
            of_thing: HashMap::new(),
        }
    }

    fn set(&mut self, id: &ThingId, handle: &H, new: Option<Held>) {
        if self.of_thing.get(id) == new.as_ref() {
            return;
        }
        match self.of_thing.remove(id) {
            Some(Held::Keys(keys)) => {
                for key in &*keys {
                    if let Some(set) = self.by_key.get_mut(key)
                        && set.remove(id.as_str())
                    {
                        self.by_key.remove(key);
                    }
                }
            }
            Some(Held::Overflow) => {
                self.overflow.remove(id.as_str());
            }
            None => {}
        }
        match &new {
            Some(Held::Keys(keys)) => {
                for key in keys.iter() {
                    let (id, handle) = (IdKey(id.clone()), handle.clone());
                    match self.by_key.get_mut(key) {
                        Some(set) => set.insert(id, handle),
                        None => {
                            self.by_key.insert(key.clone(), Set::One(id, handle));
                        }
                    }
                }
            }
            Some(Held::Overflow) => {
                self.overflow.insert(IdKey(id.clone()), handle.clone());
            }
            None => {}
        }
        if let Some(new) = new {
            self.of_thing.insert(id.clone(), new);
        }
    }

    /// The sets of the keys `op value` can match (the overflow set aside); `None` when the
    /// operator is not answered from an index.
    fn matching<'a>(
        &'a self,
        op: CmpOp,
        value: &'a Literal,
    ) -> Option<Box<dyn Iterator<Item = &'a Set<H>> + 'a>> {
        let key = Key::of_literal(value);
        let rank = key.rank();
        let same = move |k: &&Key| k.rank() == rank;
        let ordered = matches!(key, Key::Number(_) | Key::String(_));
        Some(match op {
            CmpOp::Eq => Box::new(self.by_key.get(&key).into_iter()),
            CmpOp::Gt | CmpOp::Ge | CmpOp::Lt | CmpOp::Le if !ordered => {
                Box::new(std::iter::empty())
            }
            CmpOp::Gt | CmpOp::Ge => {
                let lower = if op == CmpOp::Gt {
                    Bound::Excluded(key)
                } else {
                    Bound::Included(key)
                };
                Box::new(
                    self.by_key
                        .range((lower, Bound::Unbounded))
                        .take_while(move |(k, _)| same(k))
                        .map(|(_, s)| s),
                )
            }
            CmpOp::Lt | CmpOp::Le => {
                let upper = if op == CmpOp::Lt {
                    Bound::Excluded(key)
                } else {
                    Bound::Included(key)
                };
                Box::new(
                    self.by_key
                        .range((Bound::Unbounded, upper))
                        .rev()
                        .take_while(move |(k, _)| same(k))
                        .map(|(_, s)| s),
                )
            }
            CmpOp::Like => {
                let prefix = like_prefix(value)?;
                let from = Key::String(prefix.into());
                Box::new(
                    self.by_key
                        .range(from..)
                        .take_while(
                            move |(k, _)| matches!(k, Key::String(s) if s.starts_with(prefix)),
                        )
                        .map(|(_, s)| s),
                )
            }
            CmpOp::Ne | CmpOp::ILike => return None,
        })
    }
}

/// Whether the range between `lower` and `upper` holds nothing (`BTreeMap::range` panics on
/// such bounds).
fn empty_range(lower: Bound<&str>, upper: Bound<&str>) -> bool {
    match (lower, upper) {
        (Bound::Included(l), Bound::Included(u)) => l > u,
        (Bound::Included(l) | Bound::Excluded(l), Bound::Excluded(u))
        | (Bound::Excluded(l), Bound::Included(u)) => l >= u,
        _ => false,
    }
}

/// Whether `like` with this pattern is exactly "starts with its literal prefix".
fn like_is_prefix(value: &Literal) -> bool {
    matches!(value, Literal::String(p) if p.ends_with('*') && like_prefix(value).is_some_and(|pre| pre.len() == p.len() - 1))
}

/// The literal start of a `like` pattern, when it has one.
fn like_prefix(value: &Literal) -> Option<&str> {
    let Literal::String(pattern) = value else {
        return None;
    };
    let end = pattern.find(['*', '?']).unwrap_or(pattern.len());
    (end > 0).then(|| &pattern[..end])
}

/// The ids of all things and the indexes of chosen paths, each thing with its handle `H`. Not
/// synchronised: the engine keeps it behind a lock and updates it with every write, while the
/// thing's write lock is held.
pub struct SearchIndex<H> {
    ids: BTreeMap<IdKey, H>,
    paths: Vec<PathIndex<H>>,
}

impl<H: Clone> Default for SearchIndex<H> {
    fn default() -> Self {
        SearchIndex {
            ids: BTreeMap::new(),
            paths: Vec::new(),
        }
    }
}

impl<H: Clone> SearchIndex<H> {
    /// An empty index of thing ids only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of things held.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no thing is held.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Starts indexing `path`. Things written from now on are indexed there; the others are
    /// added with [`SearchIndex::fill`], and queries use the path once [`SearchIndex::ready`]
    /// says so. Returns `false` when the path is already indexed (or being filled), or has a
    /// wildcard.
    pub fn add_path(&mut self, path: Path) -> bool {
        if path.has_wildcard() || path.is_key("thingId") || self.has_path(&path) {
            return false;
        }
        self.paths.push(PathIndex::new(path, false));
        true
    }

    /// Whether `path` is indexed or being filled.
    pub fn has_path(&self, path: &Path) -> bool {
        self.paths.iter().any(|p| &p.path == path)
    }

    /// Number of paths indexed or being filled.
    pub fn path_count(&self) -> usize {
        self.paths.len()
    }

    /// The indexed paths with whether each is ready.
    pub fn paths(&self) -> impl Iterator<Item = (&Path, bool)> {
        self.paths.iter().map(|p| (&p.path, p.ready))
    }

    /// Indexes `thing` (as it is now) at `path` only, while the path is being filled. Call it
    /// with the thing's write lock held, for things that exist.
    pub fn fill(&mut self, path: &Path, thing: &Thing, handle: &H) {
        if let Some(p) = self.paths.iter_mut().find(|p| &p.path == path) {
            p.set(thing.id(), handle, Held::of(thing, path));
        }
    }

    /// Marks `path` as holding every thing: queries use it from now on.
    pub fn ready(&mut self, path: &Path) {
        if let Some(p) = self.paths.iter_mut().find(|p| &p.path == path) {
            p.ready = true;
        }
    }

    /// Adds the id of a thing held but not parsed (loaded cold); its values are added to the
    /// paths by [`SearchIndex::fill`] or its next [`SearchIndex::put`].
    pub fn insert_id(&mut self, id: &ThingId, handle: &H) {
        self.ids.insert(IdKey(id.clone()), handle.clone());
    }

    /// Adds or updates `thing` everywhere.
    pub fn put(&mut self, thing: &Thing, handle: &H) {
        if !self.ids.contains_key(thing.id().as_str()) {
            self.insert_id(thing.id(), handle);
        }
        for p in &mut self.paths {
            let held = Held::of(thing, &p.path);
            p.set(thing.id(), handle, held);
        }
    }

    /// Updates `thing` everywhere, with the handle it was put with (nothing if it was not).
    pub fn update(&mut self, thing: &Thing) {
        if let Some(handle) = self.ids.get(thing.id().as_str()).cloned() {
            self.put(thing, &handle);
        }
    }

    /// Whether [`SearchIndex::put`] of `thing` would change anything (so that a write that
    /// changes no indexed value takes only a read lock).
    pub fn changes(&self, thing: &Thing) -> bool {
        !self.ids.contains_key(thing.id().as_str())
            || self
                .paths
                .iter()
                .any(|p| p.of_thing.get(thing.id()) != Held::of(thing, &p.path).as_ref())
    }

    /// Removes a thing everywhere.
    pub fn remove(&mut self, id: &ThingId) {
        let Some(handle) = self.ids.remove(id.as_str()) else {
            return;
        };
        for p in &mut self.paths {
            p.set(id, &handle, None);
        }
    }

    /// Up to `n` things after the id `after` (from the first without it), in id order.
    pub fn ids_after(&self, after: Option<&str>, n: usize) -> Vec<(ThingId, H)> {
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.ids
            .range::<str, _>((lower, Bound::Unbounded))
            .take(n)
            .map(|(k, h)| (k.0.clone(), h.clone()))
            .collect()
    }

    /// The things that can match `node`, in id order without duplicates; `None` when the
    /// filter is not answered from the index (every thing can match).
    pub fn candidates(&self, node: &Node) -> Option<Vec<(ThingId, H)>> {
        self.candidates_after(node, None, usize::MAX)
    }

    /// The first `n` things after the id `after` that can match `node`, in id order without
    /// duplicates; `None` when not answered. Takes at most `n` from each run of ids the filter
    /// reads (one per key), so a page costs about a page.
    pub fn candidates_after(
        &self,
        node: &Node,
        after: Option<&str>,
        n: usize,
    ) -> Option<Vec<(ThingId, H)>> {
        if !self.answerable(node) {
            return None;
        }
        let mut out = Vec::new();
        self.collect(node, after, n, &mut |id, h| {
            out.push((id.clone(), h.clone()))
        });
        // Usually one ordered run (a single key): sorting it is a linear check.
        out.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        out.dedup_by(|a, b| a.0 == b.0);
        out.truncate(n);
        Some(out)
    }

    /// The handles of the things that can match `node`, in no order, without duplicates (by
    /// the handles' order, which must tell things apart); `None` when not answered. Cheaper
    /// than [`SearchIndex::candidates`]: no id is touched.
    pub fn candidate_handles(&self, node: &Node) -> Option<Vec<H>>
    where
        H: Ord,
    {
        if !self.answerable(node) {
            return None;
        }
        let mut out = Vec::new();
        self.collect(node, None, usize::MAX, &mut |_, h| out.push(h.clone()));
        out.sort_unstable();
        out.dedup();
        Some(out)
    }

    /// Whether the candidates of `node` are exactly the things it matches (as the index holds
    /// them): one comparison (`eq`, `in`, `gt`, `ge`, `lt`, `le`, `like "prefix*"`) on
    /// `thingId` or on an indexed path without overflow.
    pub fn exact(&self, node: &Node) -> bool {
        let (op, path, value) = match node {
            Node::Compare { op, path, value } => (*op, path, Some(value)),
            Node::In { path, .. } => (CmpOp::Eq, path, None),
            _ => return false,
        };
        let exact_op = match op {
            CmpOp::Like => value.is_some_and(like_is_prefix),
            CmpOp::Ne | CmpOp::ILike => false,
            _ => true,
        };
        exact_op
            && (path.is_key("thingId")
                || self
                    .paths
                    .iter()
                    .any(|p| p.ready && &p.path == path && p.overflow.is_empty()))
    }

    /// The plain paths `node` compares (outside `not`) that are not indexed: those a query
    /// would be answered from if they were.
    pub fn unindexed(&self, node: &Node) -> Vec<Path> {
        let mut found: Vec<Path> = Vec::new();
        let mut stack = vec![node];
        while let Some(node) = stack.pop() {
            let path = match node {
                Node::And(c) | Node::Or(c) => {
                    stack.extend(c);
                    continue;
                }
                Node::Compare { op, path, .. } if !matches!(op, CmpOp::Ne | CmpOp::ILike) => path,
                Node::In { path, .. } => path,
                _ => continue,
            };
            if !path.has_wildcard()
                && !path.is_key("thingId")
                && !self.has_path(path)
                && !found.contains(path)
            {
                found.push(path.clone());
            }
        }
        found
    }

    /// Whether `node` is answered from the index ([`SearchIndex::estimate`] is `Some`), found
    /// without counting.
    fn answerable(&self, node: &Node) -> bool {
        match node {
            Node::And(children) => children.iter().any(|c| self.answerable(c)),
            Node::Or(children) => children.iter().all(|c| self.answerable(c)),
            Node::Compare { op, path, value } => {
                let answered_op = match op {
                    CmpOp::Ne | CmpOp::ILike => false,
                    CmpOp::Like => like_prefix(value).is_some(),
                    _ => true,
                };
                answered_op && self.answers_path(path)
            }
            Node::In { path, .. } => self.answers_path(path),
            Node::Not(_) | Node::Exists(_) => false,
        }
    }

    fn answers_path(&self, path: &Path) -> bool {
        path.is_key("thingId") || self.paths.iter().any(|p| p.ready && &p.path == path)
    }

    /// How many candidates `node` has at most; `None` when it is not answered.
    fn estimate(&self, node: &Node) -> Option<usize> {
        match node {
            Node::And(children) => children.iter().filter_map(|c| self.estimate(c)).min(),
            Node::Or(children) => children.iter().map(|c| self.estimate(c)).sum(),
            Node::Compare { op, path, value } => self.leaf_count(path, *op, value),
            Node::In { path, values } => values
                .iter()
                .map(|v| self.leaf_count(path, CmpOp::Eq, v))
                .sum(),
            Node::Not(_) | Node::Exists(_) => None,
        }
    }

    /// Calls `out` with the candidates of an answerable `node` after the id `after`: all of
    /// them, or at least the first `n` in id order.
    fn collect(
        &self,
        node: &Node,
        after: Option<&str>,
        n: usize,
        out: &mut dyn FnMut(&ThingId, &H),
    ) {
        let mut leaf = |path: &Path, op: CmpOp, value: &Literal| {
            self.each_run(path, op, value, after, &mut |run, prefix| {
                run.take_while(|(k, _)| prefix.is_none_or(|p| k.0.as_str().starts_with(p)))
                    .take(n)
                    .for_each(|(k, h)| out(&k.0, h));
            });
        };
        match node {
            Node::And(children) => {
                let best = children
                    .iter()
                    .filter_map(|c| Some((self.estimate(c)?, c)))
                    .min_by_key(|(count, _)| *count);
                if let Some((_, child)) = best {
                    self.collect(child, after, n, out);
                }
            }
            Node::Or(children) => children.iter().for_each(|c| self.collect(c, after, n, out)),
            Node::Compare { op, path, value } => leaf(path, *op, value),
            Node::In { path, values } => values.iter().for_each(|v| leaf(path, CmpOp::Eq, v)),
            Node::Not(_) | Node::Exists(_) => {}
        }
    }

    /// How many candidates one comparison has; `None` when it is not answered.
    fn leaf_count(&self, path: &Path, op: CmpOp, value: &Literal) -> Option<usize> {
        if path.is_key("thingId") {
            let mut count = 0;
            let answered = self.each_run(path, op, value, None, &mut |run, prefix| {
                count += run
                    .take_while(|(k, _)| prefix.is_none_or(|p| k.0.as_str().starts_with(p)))
                    .count();
            });
            return answered.then_some(count);
        }
        let p = self.paths.iter().find(|p| p.ready && &p.path == path)?;
        let sets = p.matching(op, value)?;
        Some(p.overflow.len() + sets.map(Set::len).sum::<usize>())
    }

    /// Calls `run` with the candidates of one comparison after the id `after`, as runs each in
    /// id order (one per key, the overflow set, or a range of ids), each with the prefix its
    /// ids must start with (the run ends at the first that does not); `false` when the
    /// comparison is not answered.
    fn each_run<'a>(
        &'a self,
        path: &Path,
        op: CmpOp,
        value: &'a Literal,
        after: Option<&'a str>,
        run: &mut Runner<'a, '_, H>,
    ) -> bool {
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        if path.is_key("thingId") {
            return self.id_run(op, value, after, run);
        }
        let Some(p) = self.paths.iter().find(|p| p.ready && &p.path == path) else {
            return false;
        };
        let Some(sets) = p.matching(op, value) else {
            return false;
        };
        run(
            &mut p.overflow.range::<str, _>((lower, Bound::Unbounded)),
            None,
        );
        for set in sets {
            set.run(lower, run);
        }
        true
    }

    /// [`SearchIndex::each_run`] for `thingId`: one range of the ordered ids.
    fn id_run<'a>(
        &'a self,
        op: CmpOp,
        value: &'a Literal,
        after: Option<&'a str>,
        run: &mut Runner<'a, '_, H>,
    ) -> bool {
        let Literal::String(s) = value else {
            // Ids are strings: no other literal matches one.
            return !matches!(op, CmpOp::Ne | CmpOp::ILike);
        };
        let s = s.as_str();
        let (lower, upper, prefix) = match op {
            CmpOp::Eq => (Bound::Included(s), Bound::Included(s), None),
            CmpOp::Gt => (Bound::Excluded(s), Bound::Unbounded, None),
            CmpOp::Ge => (Bound::Included(s), Bound::Unbounded, None),
            CmpOp::Lt => (Bound::Unbounded, Bound::Excluded(s), None),
            CmpOp::Le => (Bound::Unbounded, Bound::Included(s), None),
            CmpOp::Like => match like_prefix(value) {
                Some(prefix) => (Bound::Included(prefix), Bound::Unbounded, Some(prefix)),
                None => return false,
            },
            CmpOp::Ne | CmpOp::ILike => return false,
        };
        let lower = match (lower, after) {
            (Bound::Unbounded, Some(a)) => Bound::Excluded(a),
            (Bound::Included(l) | Bound::Excluded(l), Some(a)) if a >= l => Bound::Excluded(a),
            (lower, _) => lower,
        };
        if !empty_range(lower, upper) {
            run(&mut self.ids.range::<str, _>((lower, upper)), prefix);
        }
        true
    }
}

#[cfg(test)]
mod tests;
