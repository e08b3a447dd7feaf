//! Enforcement: the hot path the engine runs on every command.
//!
//! A policy is compiled (lazily, once per change) into one tree per resource type whose nodes are
//! the resource-key path segments. Each node lists the rules (entry index, granted bits, revoked
//! bits) set at that key, sorted children for binary search, and summary bits saying whether any
//! rule below grants or revokes each permission. A subject maps to the bit set of the entries that
//! name it.
//!
//! A check builds the caller's entry set (a `u64` for policies of up to 64 entries: no
//! allocation), then walks the tree along the path, keeping the decision of the deepest node that
//! mentions the permission. Recursion (subtree checks, filtering) follows the tree, whose depth is
//! bounded by [`super::MAX_RESOURCE_DEPTH`], never the depth of the input value.

use serde_json::{Map, Value};

use super::AuthContext;
use super::model::{Permission, Policy, ResourceType};
use crate::model::Pointer;

/// The compiled form of a policy.
#[derive(Clone, Debug, Default)]
pub(crate) struct Compiled {
    /// Number of `u64` words of an entry bit set.
    words: usize,
    /// Subject id → the entries naming it (indices, ascending), sorted by subject id. Sparse,
    /// so that a policy of many entries with a subject each stays linear in size.
    subjects: Vec<(Box<str>, Box<[u32]>)>,
    /// One tree per [`ResourceType`], indexed by [`ResourceType::index`].
    roots: [Node; 3],
    /// About how many heap bytes the policy holds: its entries and this compiled form.
    bytes: usize,
}

#[derive(Clone, Debug, Default)]
struct Node {
    /// Children sorted by key.
    children: Vec<(Box<str>, Node)>,
    /// The rules set at exactly this key.
    rules: Vec<Rule>,
    /// Union of the granted bits of every rule strictly below this node.
    grant_below: u8,
    /// Union of the revoked bits of every rule strictly below this node.
    revoke_below: u8,
}

#[derive(Clone, Copy, Debug)]
struct Rule {
    entry: u32,
    grant: u8,
    revoke: u8,
}

/// The entries that apply to one caller.
enum Caller {
    Small(u64),
    Large(Vec<u64>),
}

impl Caller {
    #[inline]
    fn contains(&self, entry: u32) -> bool {
        let (word, bit) = ((entry / 64) as usize, entry % 64);
        match self {
            Caller::Small(m) => word == 0 && m & (1 << bit) != 0,
            Caller::Large(v) => v.get(word).is_some_and(|w| w & (1 << bit) != 0),
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Caller::Small(m) => *m == 0,
            Caller::Large(v) => v.iter().all(|w| *w == 0),
        }
    }
}

impl Node {
    #[inline]
    fn child(&self, key: &str) -> Option<&Node> {
        self.children
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| &self.children[i].1)
    }

    /// The child at `key`, made if missing (then `true`).
    fn child_mut(&mut self, key: &str) -> (&mut Node, bool) {
        let (i, new) = match self.children.binary_search_by(|(k, _)| (**k).cmp(key)) {
            Ok(i) => (i, false),
            Err(i) => {
                self.children.insert(i, (key.into(), Node::default()));
                (i, true)
            }
        };
        (&mut self.children[i].1, new)
    }

    /// The decision of this key for the caller: `Some(false)` if an applicable rule revokes,
    /// `Some(true)` if one grants and none revokes, `None` if none mentions the permission.
    #[inline]
    fn decide(&self, caller: &Caller, bit: u8) -> Option<bool> {
        let mut granted = false;
        for r in &self.rules {
            if (r.grant | r.revoke) & bit != 0 && caller.contains(r.entry) {
                if r.revoke & bit != 0 {
                    return Some(false);
                }
                granted = true;
            }
        }
        granted.then_some(true)
    }

    /// Fills `grant_below` / `revoke_below` (and trims the node's lists); returns the union of this node's own rules and
    /// everything below (grant, revoke).
    fn summarise(&mut self) -> (u8, u8) {
        // Built by pushing; most nodes have one child or rule, not the four a growing Vec
        // reserves.
        self.children.shrink_to_fit();
        self.rules.shrink_to_fit();
        let (mut g, mut r) = (0, 0);
        for (_, child) in &mut self.children {
            let (cg, cr) = child.summarise();
            g |= cg;
            r |= cr;
        }
        self.grant_below = g;
        self.revoke_below = r;
        for rule in &self.rules {
            g |= rule.grant;
            r |= rule.revoke;
        }
        (g, r)
    }

    /// Whether some key strictly below this node is revoked for the caller.
    fn revoked_below(&self, caller: &Caller, bit: u8) -> bool {
        self.revoke_below & bit != 0
            && self
                .children
                .iter()
                .any(|(_, c)| c.decide(caller, bit) == Some(false) || c.revoked_below(caller, bit))
    }

    /// Whether some key strictly below this node is granted for the caller.
    fn granted_below(&self, caller: &Caller, bit: u8) -> bool {
        self.grant_below & bit != 0
            && self
                .children
                .iter()
                .any(|(_, c)| c.decide(caller, bit) == Some(true) || c.granted_below(caller, bit))
    }
}

impl Compiled {
    fn new(policy: &Policy) -> Compiled {
        let entries = policy.entries();
        let words = entries.len().div_ceil(64).max(1);
        let mut roots: [Node; 3] = Default::default();
        let mut pairs: Vec<(&str, u32)> = Vec::new();
        let mut keys = Vec::new();
        for (i, (_, entry)) in entries.iter().enumerate() {
            let i = i as u32;
            pairs.extend(entry.subjects().iter().map(|(id, _)| (id.as_str(), i)));
            keys.extend(entry.resources().iter().map(|(key, r)| (key, i, r)));
        }
        // In key order every new child of a node sorts last: each insertion appends, so
        // building stays O(n log n) however many children a node gets.
        keys.sort_by(|a, b| a.0.cmp(b.0));
        let mut nodes = 0usize;
        for (key, entry, resource) in keys {
            let mut node = &mut roots[key.resource_type().index()];
            for seg in key.path().segments() {
                let (child, new) = node.child_mut(seg);
                nodes += usize::from(new);
                node = child;
            }
            node.rules.push(Rule {
                entry,
                grant: resource.grant.bits(),
                revoke: resource.revoke.bits(),
            });
        }
        for root in &mut roots {
            root.summarise();
        }
        // Sorted by subject, then entry: each subject's entries are one run, ascending.
        pairs.sort_unstable();
        pairs.dedup();
        let mut subjects: Vec<(Box<str>, Box<[u32]>)> = Vec::new();
        let mut run: Vec<u32> = Vec::new();
        for (n, (id, entry)) in pairs.iter().enumerate() {
            run.push(*entry);
            if pairs.get(n + 1).is_none_or(|(next, _)| next != id) {
                subjects.push(((*id).into(), std::mem::take(&mut run).into()));
            }
        }
        subjects.shrink_to_fit();
        let compiled_bytes = nodes * (std::mem::size_of::<(Box<str>, Node)>() + 16)
            + pairs.len() * 4
            + subjects.iter().map(|(id, _)| id.len() + 48).sum::<usize>()
            + entries
                .iter()
                .map(|(_, e)| e.resources().len() * std::mem::size_of::<Rule>())
                .sum::<usize>();
        Compiled {
            words,
            subjects,
            roots,
            bytes: policy.model_bytes() + compiled_bytes,
        }
    }

    fn caller(&self, auth: &AuthContext) -> Caller {
        let lookup = |s: &str| {
            self.subjects
                .binary_search_by(|(k, _)| (**k).cmp(s))
                .ok()
                .map(|i| &self.subjects[i].1)
        };
        if self.words == 1 {
            let mut m = 0;
            for s in auth.subjects() {
                for e in lookup(s).into_iter().flatten() {
                    m |= 1 << e;
                }
            }
            Caller::Small(m)
        } else {
            let mut v = vec![0u64; self.words];
            for s in auth.subjects() {
                for e in lookup(s).into_iter().flatten() {
                    v[(e / 64) as usize] |= 1 << (e % 64);
                }
            }
            Caller::Large(v)
        }
    }

    /// Walks to `path`: the effective decision there, and the node at exactly `path` if the
    /// tree reaches that far (if not, no key lies at or below `path`).
    #[inline]
    fn walk<'a>(
        &'a self,
        caller: &Caller,
        t: ResourceType,
        segments: &[String],
        bit: u8,
    ) -> (bool, Option<&'a Node>) {
        let mut node = &self.roots[t.index()];
        let mut decision = node.decide(caller, bit);
        for seg in segments {
            match node.child(seg) {
                Some(n) => {
                    node = n;
                    if let Some(d) = n.decide(caller, bit) {
                        decision = Some(d);
                    }
                }
                None => return (decision == Some(true), None),
            }
        }
        (decision == Some(true), Some(node))
    }
}

impl Policy {
    fn compiled(&self) -> &Compiled {
        self.compiled.get_or_init(|| Compiled::new(self))
    }

    /// About how many heap bytes this policy holds, its compiled form included (computed
    /// once per version, with the compiled form).
    pub(crate) fn memory_estimate(&self) -> usize {
        self.compiled().bytes
    }

    /// Whether `auth` has permission `p` at exactly `path` of resource type `t`.
    ///
    /// The deepest resource key on the way from the root to `path` that mentions `p` for any of
    /// the caller's entries decides; at equal depth revoke wins; no mention means denied.
    pub fn has_permission(
        &self,
        auth: &AuthContext,
        t: ResourceType,
        path: &Pointer,
        p: Permission,
    ) -> bool {
        if auth.is_system() {
            return true;
        }
        let c = self.compiled();
        let caller = c.caller(auth);
        !caller.is_empty() && c.walk(&caller, t, path.segments(), p.bit()).0
    }

    /// Whether `auth` has `p` at `path` and everywhere below it (no key below `path` revokes it
    /// for the caller): what reading or replacing a whole subtree needs.
    pub fn has_unrestricted(
        &self,
        auth: &AuthContext,
        t: ResourceType,
        path: &Pointer,
        p: Permission,
    ) -> bool {
        if auth.is_system() {
            return true;
        }
        let c = self.compiled();
        let caller = c.caller(auth);
        if caller.is_empty() {
            return false;
        }
        let bit = p.bit();
        match c.walk(&caller, t, path.segments(), bit) {
            (false, _) => false,
            (true, None) => true,
            (true, Some(node)) => !node.revoked_below(&caller, bit),
        }
    }

    /// Whether `auth` has `p` at `path` or at some key below it: the caller may see (or touch)
    /// at least a part of the subtree.
    pub fn has_partial(
        &self,
        auth: &AuthContext,
        t: ResourceType,
        path: &Pointer,
        p: Permission,
    ) -> bool {
        if auth.is_system() {
            return true;
        }
        let c = self.compiled();
        let caller = c.caller(auth);
        if caller.is_empty() {
            return false;
        }
        let bit = p.bit();
        match c.walk(&caller, t, path.segments(), bit) {
            (true, _) => true,
            (false, None) => false,
            (false, Some(node)) => node.granted_below(&caller, bit),
        }
    }

    /// The part of `value` (which sits at `path` of resource type `t`) that `auth` may READ, or
    /// `None` if it may read nothing of it.
    ///
    /// Object members are pruned recursively by the keys below `path`; any other value (arrays
    /// included) is kept whole if READ is effective at its path. An object whose members are all
    /// hidden is kept as `{}` if READ is effective at the object itself.
    pub fn filter_readable(
        &self,
        auth: &AuthContext,
        t: ResourceType,
        path: &Pointer,
        value: &Value,
    ) -> Option<Value> {
        if auth.is_system() {
            return Some(value.clone());
        }
        let c = self.compiled();
        let caller = c.caller(auth);
        if caller.is_empty() {
            return None;
        }
        let bit = Permission::Read.bit();
        let (readable, node) = c.walk(&caller, t, path.segments(), bit);
        filter(node, readable, value, &caller, bit)
    }
}

/// Filters `value` whose path has the effective decision `readable` and the tree node `node`
/// (`None` once the path is below every key).
fn filter(
    node: Option<&Node>,
    readable: bool,
    value: &Value,
    caller: &Caller,
    bit: u8,
) -> Option<Value> {
    let Some(node) = node else {
        return readable.then(|| value.clone());
    };
    if readable && node.revoke_below & bit == 0 {
        return Some(value.clone());
    }
    if !readable && node.grant_below & bit == 0 {
        return None;
    }
    match value {
        Value::Object(members) => {
            let mut out = Map::new();
            for (k, v) in members {
                let child = node.child(k);
                let child_readable = child
                    .and_then(|c| c.decide(caller, bit))
                    .unwrap_or(readable);
                if let Some(kept) = filter(child, child_readable, v, caller, bit) {
                    out.insert(k.clone(), kept);
                }
            }
            (readable || !out.is_empty()).then_some(Value::Object(out))
        }
        _ => readable.then(|| value.clone()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::model::{PolicyEntry, Resource, ResourceKey};
    use super::*;
    use crate::model::{PolicyId, Timestamp};

    use Permission::{Read, Write};
    use ResourceType::{Message, Thing};

    fn ptr(s: &str) -> Pointer {
        Pointer::parse(s).unwrap()
    }

    fn auth(s: &[&str]) -> AuthContext {
        AuthContext::new(s.iter().copied())
    }

    /// Builds a policy from compact JSON entries without the manageability check.
    fn policy(entries: Value) -> Policy {
        let id = PolicyId::new("ns:p").unwrap();
        let entries = super::super::model::parse_entries(&entries).unwrap();
        Policy::new(id, entries, Timestamp::from_micros(1))
    }

    fn r(grant: &[&str], revoke: &[&str]) -> Value {
        json!({"grant": grant, "revoke": revoke})
    }

    /// The example of Ditto's policy documentation (with its misplaced `resources` of entry
    /// `private` put where it belongs).
    fn ditto_example() -> Policy {
        let body = json!({
            "policyId": "my.namespace:policy-a",
            "entries": {
                "owner": {
                    "subjects": {"nginx:ditto": {"type": "nginx basic auth user"}},
                    "resources": {
                        "thing:/": r(&["READ", "WRITE"], &[]),
                        "policy:/": r(&["READ", "WRITE"], &[]),
                        "message:/": r(&["READ", "WRITE"], &[])
                    }
                },
                "observer": {
                    "subjects": {
                        "nginx:observer-client": {"type": "technical client"},
                        "nginx:some-users": {"type": "a group of users"}
                    },
                    "resources": {
                        "thing:/features/featureX": r(&["READ"], &[]),
                        "thing:/features/featureY": r(&["READ"], &[])
                    }
                },
                "private": {
                    "subjects": {"nginx:some-users": {"type": "a group of users"}},
                    "resources": {
                        "thing:/features/featureX/properties/location/city": r(&[], &["READ"])
                    }
                }
            }
        });
        let id = PolicyId::new("my.namespace:policy-a").unwrap();
        Policy::from_json(&id, &body, Timestamp::now()).unwrap()
    }

    #[test]
    fn ditto_doc_example() {
        let p = ditto_example();
        let owner = auth(&["nginx:ditto"]);
        let observer = auth(&["nginx:observer-client"]);
        let users = auth(&["nginx:some-users"]);
        let city = ptr("/features/featureX/properties/location/city");

        for path in [
            "/",
            "/attributes/a",
            "/features/featureX/properties/location/city",
        ] {
            assert!(p.has_permission(&owner, Thing, &ptr(path), Read), "{path}");
            assert!(p.has_permission(&owner, Thing, &ptr(path), Write), "{path}");
        }
        assert!(p.has_unrestricted(&owner, Thing, &Pointer::root(), Write));
        assert!(p.has_permission(&owner, ResourceType::Policy, &Pointer::root(), Write));
        assert!(p.has_permission(&owner, Message, &ptr("/inbox/messages/x"), Write));

        // Observer: reads both features entirely, nothing else, writes nothing.
        assert!(p.has_unrestricted(&observer, Thing, &ptr("/features/featureX"), Read));
        assert!(p.has_permission(&observer, Thing, &city, Read));
        assert!(!p.has_permission(&observer, Thing, &ptr("/features/featureX"), Write));
        assert!(!p.has_permission(&observer, Thing, &ptr("/attributes"), Read));
        assert!(!p.has_permission(&observer, Thing, &Pointer::root(), Read));
        assert!(p.has_partial(&observer, Thing, &Pointer::root(), Read));
        assert!(p.has_partial(&observer, Thing, &ptr("/features"), Read));
        assert!(!p.has_partial(&observer, Thing, &ptr("/attributes"), Read));
        assert!(!p.has_permission(&observer, ResourceType::Policy, &Pointer::root(), Read));

        // The group: like the observer, but the city is hidden.
        assert!(!p.has_permission(&users, Thing, &city, Read));
        assert!(!p.has_permission(&users, Thing, &city.child("x"), Read));
        assert!(p.has_permission(
            &users,
            Thing,
            &ptr("/features/featureX/properties/location"),
            Read
        ));
        assert!(!p.has_unrestricted(&users, Thing, &ptr("/features/featureX"), Read));
        assert!(p.has_unrestricted(&users, Thing, &ptr("/features/featureY"), Read));

        let thing = json!({
            "thingId": "my.namespace:thing-0123",
            "attributes": {"owner": "ditto"},
            "features": {
                "featureX": {"properties": {"location": {"city": "Berlin", "street": "Main"}}},
                "featureY": {"properties": {"temp": 21}},
                "featureZ": {"properties": {"secret": 1}}
            }
        });
        assert_eq!(
            p.filter_readable(&owner, Thing, &Pointer::root(), &thing),
            Some(thing.clone())
        );
        assert_eq!(
            p.filter_readable(&users, Thing, &Pointer::root(), &thing),
            Some(json!({"features": {
                "featureX": {"properties": {"location": {"street": "Main"}}},
                "featureY": {"properties": {"temp": 21}}
            }}))
        );
        assert_eq!(
            p.filter_readable(&observer, Thing, &ptr("/features"), &thing["features"]),
            Some(json!({
                "featureX": {"properties": {"location": {"city": "Berlin", "street": "Main"}}},
                "featureY": {"properties": {"temp": 21}}
            }))
        );
        assert_eq!(
            p.filter_readable(&users, Thing, &city, &json!("Berlin")),
            None
        );
        assert_eq!(
            p.filter_readable(&users, Thing, &ptr("/attributes"), &thing["attributes"]),
            None
        );
        assert_eq!(
            p.filter_readable(&auth(&["nginx:nobody"]), Thing, &Pointer::root(), &thing),
            None
        );
    }

    #[test]
    fn revoke_wins_at_equal_depth() {
        // Same entry.
        let p = policy(json!({"a": {"subjects": {"s:1": {"type": "t"}},
            "resources": {"thing:/x": r(&["READ", "WRITE"], &["READ"])}}}));
        assert!(!p.has_permission(&auth(&["s:1"]), Thing, &ptr("/x"), Read));
        assert!(p.has_permission(&auth(&["s:1"]), Thing, &ptr("/x"), Write));
        // Two entries naming the same subject.
        let p = policy(json!({
            "a": {"subjects": {"s:1": {"type": "t"}}, "resources": {"thing:/x": r(&["READ"], &[])}},
            "b": {"subjects": {"s:1": {"type": "t"}}, "resources": {"thing:/x": r(&[], &["READ"])}}
        }));
        assert!(!p.has_permission(&auth(&["s:1"]), Thing, &ptr("/x/y"), Read));
        // Two subjects of one caller in different entries.
        let p = policy(json!({
            "a": {"subjects": {"s:1": {"type": "t"}}, "resources": {"thing:/": r(&["READ"], &[])}},
            "b": {"subjects": {"s:2": {"type": "t"}}, "resources": {"thing:/": r(&[], &["READ"])}}
        }));
        assert!(p.has_permission(&auth(&["s:1"]), Thing, &Pointer::root(), Read));
        assert!(!p.has_permission(&auth(&["s:1", "s:2"]), Thing, &Pointer::root(), Read));
        assert!(!p.has_partial(&auth(&["s:2", "s:1"]), Thing, &Pointer::root(), Read));
    }

    #[test]
    fn deeper_key_overrides_higher_one() {
        // Deeper grant beats a higher revoke, across entries.
        let p = policy(json!({
            "a": {"subjects": {"s:1": {"type": "t"}}, "resources": {
                "thing:/": r(&["READ"], &[]),
                "thing:/features": r(&[], &["READ"])
            }},
            "b": {"subjects": {"s:1": {"type": "t"}}, "resources": {
                "thing:/features/lane/properties": r(&["READ"], &[])
            }}
        }));
        let a = auth(&["s:1"]);
        assert!(p.has_permission(&a, Thing, &ptr("/attributes"), Read));
        assert!(!p.has_permission(&a, Thing, &ptr("/features"), Read));
        assert!(!p.has_permission(&a, Thing, &ptr("/features/lane"), Read));
        assert!(p.has_permission(&a, Thing, &ptr("/features/lane/properties"), Read));
        assert!(p.has_permission(&a, Thing, &ptr("/features/lane/properties/offset/x"), Read));
        assert!(!p.has_unrestricted(&a, Thing, &Pointer::root(), Read));
        assert!(p.has_partial(&a, Thing, &ptr("/features"), Read));
        assert!(!p.has_partial(&a, Thing, &ptr("/features/other"), Read));
        // Deeper revoke beats a higher grant.
        assert!(p.has_unrestricted(&a, Thing, &ptr("/attributes"), Read));
        // Permissions are independent: a key that mentions only WRITE does not stop READ.
        let p = policy(
            json!({"a": {"subjects": {"s:1": {"type": "t"}}, "resources": {
                "thing:/": r(&["READ", "WRITE"], &[]),
                "thing:/attributes": r(&[], &["WRITE"])
            }}}),
        );
        assert!(p.has_unrestricted(&a, Thing, &Pointer::root(), Read));
        assert!(!p.has_unrestricted(&a, Thing, &Pointer::root(), Write));
        assert!(p.has_permission(&a, Thing, &Pointer::root(), Write));
        assert!(!p.has_permission(&a, Thing, &ptr("/attributes/x"), Write));
        assert!(p.has_permission(&a, Thing, &ptr("/features"), Write));
        // Resource types are separate trees.
        assert!(!p.has_permission(&a, ResourceType::Policy, &Pointer::root(), Read));
        assert!(!p.has_permission(&a, Message, &Pointer::root(), Write));
    }

    #[test]
    fn unknown_and_empty_callers_get_nothing_system_everything() {
        let p = ditto_example();
        for a in [auth(&["nginx:stranger"]), auth(&[]), auth(&["ditto"])] {
            assert!(!p.has_permission(&a, Thing, &Pointer::root(), Read));
            assert!(!p.has_partial(&a, Thing, &Pointer::root(), Read));
            assert!(!p.has_unrestricted(&a, Thing, &Pointer::root(), Read));
            assert_eq!(
                p.filter_readable(&a, Thing, &Pointer::root(), &json!({"a": 1})),
                None
            );
        }
        let sys = AuthContext::system();
        let empty = policy(json!({}));
        assert!(empty.has_unrestricted(&sys, Thing, &ptr("/a/b"), Write));
        assert!(empty.has_permission(&sys, Message, &Pointer::root(), Read));
        assert!(empty.has_partial(&sys, ResourceType::Policy, &Pointer::root(), Read));
        assert_eq!(
            empty.filter_readable(&sys, Thing, &Pointer::root(), &json!({"a": 1})),
            Some(json!({"a": 1}))
        );
    }

    #[test]
    fn filter_readable_nested() {
        let p = policy(
            json!({"a": {"subjects": {"s:1": {"type": "t"}}, "resources": {
                "thing:/attributes": r(&["READ"], &[]),
                "thing:/attributes/secret": r(&[], &["READ"]),
                "thing:/attributes/secret/public": r(&["READ"], &[]),
                "thing:/attributes/list/0": r(&[], &["READ"]),
                "thing:/features/f/properties/only": r(&["READ"], &[])
            }}}),
        );
        let a = auth(&["s:1"]);
        let thing = json!({
            "thingId": "ns:t",
            "attributes": {
                "plain": 1,
                "secret": {"pin": 1234, "public": {"name": "x"}, "other": [1, 2]},
                "list": [1, 2, 3],
                "hidden_all": {},
                "nested": {"deep": {"deeper": true}}
            },
            "features": {"f": {"properties": {"only": {"v": 1}, "not": 2}}, "g": {}}
        });
        assert_eq!(
            p.filter_readable(&a, Thing, &Pointer::root(), &thing),
            Some(json!({
                "attributes": {
                    "plain": 1,
                    "secret": {"public": {"name": "x"}},
                    "list": [1, 2, 3],
                    "hidden_all": {},
                    "nested": {"deep": {"deeper": true}}
                },
                "features": {"f": {"properties": {"only": {"v": 1}}}}
            }))
        );
        // At a sub-path.
        assert_eq!(
            p.filter_readable(
                &a,
                Thing,
                &ptr("/attributes/secret"),
                &thing["attributes"]["secret"]
            ),
            Some(json!({"public": {"name": "x"}}))
        );
        // A non-object at a revoked path, and an object whose readable parts are absent.
        assert_eq!(
            p.filter_readable(&a, Thing, &ptr("/attributes/secret"), &json!(5)),
            None
        );
        assert_eq!(
            p.filter_readable(&a, Thing, &ptr("/attributes/secret"), &json!({"pin": 1})),
            None
        );
        // Readable object whose members are all hidden stays as {}.
        let p2 = policy(
            json!({"a": {"subjects": {"s:1": {"type": "t"}}, "resources": {
                "thing:/attributes": r(&["READ"], &[]),
                "thing:/attributes/x": r(&[], &["READ"])
            }}}),
        );
        assert_eq!(
            p2.filter_readable(&a, Thing, &ptr("/attributes"), &json!({"x": 1})),
            Some(json!({}))
        );
    }

    #[test]
    fn many_entries_use_the_large_mask() {
        let mut entries = Vec::new();
        for i in 0..150 {
            let mut e = PolicyEntry::new();
            e.set_subject(format!("s:{i}"), super::super::model::Subject::new("t"))
                .unwrap();
            let key = ResourceKey::parse(&format!("thing:/attributes/a{i}")).unwrap();
            let grant = if i == 149 {
                Permissions::NONE
            } else {
                Permissions::ALL
            };
            let revoke = if i == 149 {
                Permissions::ALL
            } else {
                Permissions::NONE
            };
            e.set_resource(key, Resource::new(grant, revoke));
            entries.push((format!("e{i}"), e));
        }
        let p = Policy::new(PolicyId::new("ns:p").unwrap(), entries, Timestamp::now());
        let a = auth(&["s:130"]);
        assert!(p.has_permission(&a, Thing, &ptr("/attributes/a130/x"), Write));
        assert!(!p.has_permission(&a, Thing, &ptr("/attributes/a129"), Write));
        assert!(p.has_partial(&a, Thing, &Pointer::root(), Read));
        assert!(!p.has_permission(&auth(&["s:149"]), Thing, &ptr("/attributes/a149"), Read));
        assert!(!p.has_partial(&auth(&["s:149"]), Thing, &Pointer::root(), Read));
        assert_eq!(
            p.filter_readable(&a, Thing, &ptr("/attributes"), &json!({"a130": 1, "a1": 2})),
            Some(json!({"a130": 1}))
        );
    }

    use super::super::model::Permissions;

    #[test]
    fn edits_invalidate_the_compiled_form() {
        let mut p = ditto_example();
        let stranger = auth(&["nginx:stranger"]);
        assert!(!p.has_permission(&stranger, Thing, &Pointer::root(), Read));
        p.modify_at(
            &ptr("/entries/owner/subjects/nginx:stranger"),
            json!({"type": "new"}),
        )
        .unwrap();
        assert!(p.has_permission(&stranger, Thing, &Pointer::root(), Read));
    }

    /// Timing of the hot path. Run with
    /// `cargo test --release -p opentwins-core --lib policy::enforce::tests::timing -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn timing() {
        let p = policy(json!({
            "owner": {"subjects": {"nginx:ditto": {"type": "t"}}, "resources": {
                "thing:/": r(&["READ", "WRITE"], &[]),
                "policy:/": r(&["READ", "WRITE"], &[])
            }},
            "observer": {"subjects": {"nginx:observer": {"type": "t"}, "nginx:users": {"type": "t"}},
                "resources": {
                    "thing:/features/featureX": r(&["READ"], &[]),
                    "thing:/features/featureY": r(&["READ"], &[])
            }},
            "private": {"subjects": {"nginx:users": {"type": "t"}}, "resources": {
                "thing:/features/featureX/properties/location/city": r(&[], &["READ"]),
                "message:/": r(&["READ"], &[])
            }}
        }));
        let path = ptr("/features/featureX/properties/location/street");
        let callers = [
            auth(&["nginx:ditto"]),
            auth(&["nginx:users", "nginx:other"]),
        ];
        let n = 2_000_000u32;
        for (name, f) in [
            (
                "has_permission",
                Policy::has_permission
                    as fn(&Policy, &AuthContext, ResourceType, &Pointer, Permission) -> bool,
            ),
            ("has_unrestricted", Policy::has_unrestricted),
            ("has_partial", Policy::has_partial),
        ] {
            for a in &callers {
                let start = std::time::Instant::now();
                let mut yes = 0u32;
                for _ in 0..n {
                    yes += u32::from(f(
                        std::hint::black_box(&p),
                        a,
                        Thing,
                        std::hint::black_box(&path),
                        Read,
                    ));
                }
                let ns = start.elapsed().as_nanos() as f64 / f64::from(n);
                println!("{name} {a:?}: {ns:.1} ns/check ({yes} granted)");
            }
        }
    }
}
