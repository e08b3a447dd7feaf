//! A compact binary form of a batch of [`Update`]s, for links between our own instances.
//!
//! A plain Ditto peer gets (and keeps getting) the JSON merge commands of
//! [`Update::to_command`]: that form stays, and is the only one a Ditto peer understands. Between
//! two OpenTwins instances most of those bytes are the Ditto envelope, header names and clocks
//! written as text, repeated for every update of a batch (390 bytes for a change of 15).
//! This form writes every string once per batch (instance ids, namespaces, thing names, policy
//! ids, paths), every route (origin, hops, policy) once, stamps as small integers relative to a
//! base, and values as compact JSON text: the same update takes about a quarter of the bytes,
//! and an update of a batch of similar ones about 20.
//!
//! # Layout
//!
//! `v` is an unsigned LEB128 varint (7 bits a byte, low bits first, at most 10 bytes), `z` a
//! zigzag varint (0, -1, 1, -2, … as 0, 1, 2, 3, …), a "string" a `v` index into the string
//! table.
//!
//! | bytes | field |
//! |---|---|
//! | 4 | [`MAGIC`]: `F6 4F 54 42` (`F6` occurs nowhere in UTF-8, so no JSON text starts so) |
//! | v | format version, 1 |
//! | v | string count, then per string: `v` length and its UTF-8 bytes |
//! | v | route count, then per route: origin (string), policy (`v`: 0 none, else string + 1), hop count (≥ 1), hops (strings, origin first) |
//! | v | batch base: a wall time in ms |
//! | v | update count, 1 to `max_updates` |
//! | | per update: namespace (string), thing name (string), route (`v` index), entry count `n`, and if `n > 0` the update's base as `z` delta from the previous update's base (the batch base for the first), then the `n` entries |
//! | | per entry: path (string, as [`Pointer`] text), kind (1 byte, below), then the value or removal's stamp, the value (`v` length and compact JSON text), the "is an object" mark's stamp, each when the kind says so |
//! | | per stamp: `v` ms after the update's base, `v` counter and instance (string) when the kind says so (else 0 and the route's origin) |
//!
//! | kind bits | meaning |
//! |---|---|
//! | 0–1 | value or removal: 0 none, 1 a value, 2 a removal (3 is refused) |
//! | 2 | an "is an object" mark |
//! | 3, 4 | the value/removal stamp has a counter, an instance |
//! | 5, 6 | the mark's stamp has a counter, an instance |
//! | 7 | reserved, 0 |
//!
//! Kind 0 is an ancestor of written paths that has no clock. The entries of an update are in
//! path order, each path once. As in the compact clocks of the JSON form
//! ([`Replica::compact_clocks`]), an "is an object" mark is left out where it is implied: a
//! path above written paths holding only a mark, and that mark is the newest stamp below it
//! (what writing below a path gives each ancestor). A reader gives every ancestor of written
//! paths that has no entry the newest stamp below it as its mark; kind 0 keeps it bare.
//!
//! The one-property update of docs/distribution.md ("What crosses a link") is 97 bytes
//! (390 as a JSON command):
//!
//! ```text
//! f6 4f 54 42                magic
//! 01                         version 1
//! 05                         5 strings:
//! 05 66 6c 65 65 74            0 "fleet"
//! 05 63 61 72 2d 31            1 "car-1"
//! 06 65 64 67 65 2d 31         2 "edge-1"
//! 0c 66 6c 65 65 74 3a 70 6f 6c 69 63 79
//!                              3 "fleet:policy"
//! 20 2f 66 65 61 74 75 72 65 73 2f 6c 61 6e 65 2f 70 72 6f 70 65 72 74 69 65 73 2f 6f 66 66 73 65 74
//!                              4 "/features/lane/properties/offset"
//! 01                         1 route:
//! 02 04 01 02                  0 origin "edge-1", policy "fleet:policy" (3 + 1), 1 hop: "edge-1"
//! 80 b8 f2 da ab 33          batch base 1764080000000 ms
//! 01                         1 update:
//! 00 01 00                     thing "fleet" : "car-1", route 0
//! 01 00                        1 entry, base = batch base + 0
//! 04 09                        "/features/lane/properties/offset", kind 9: a value, stamp has a counter
//! 00 03                        stamp: base + 0 ms, counter 3, instance: the origin
//! 04 30 2e 31 32               value: 4 bytes "0.12"
//! ```
//!
//! # Hostile input
//!
//! [`decode_batch`] checks every count and length against the bytes left before allocating
//! anything for it, every index against its table, and every string for its role (UTF-8,
//! instance ids, thing and policy ids, paths as the JSON form parses them, values as JSON with
//! serde_json's recursion limit); trailing bytes are refused. The tables it builds are a small
//! multiple of the input. The updates it returns can be larger than the bytes, as sharing is the
//! point: a route or a path is written once and may be used by each of the (at most
//! `max_updates`) updates, and a written path implies a mark on each of its ancestors (at most
//! [`Limits::max_pointer_segments`](crate::limits::Limits::max_pointer_segments)), as in the
//! JSON form. A value is never a non-empty object (a replica writes `{}` plus its members).
//!
//! Values are the text serde_json writes, read back by serde_json: exact, floats included (the
//! workspace turns on serde_json's `float_roundtrip`; see the replica test
//! `floats_cross_both_wire_forms_exactly`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Display;
use std::sync::Arc;

use serde_json::Value;

use super::{Cell, Replica, Slot, Stamp, Update, valid_instance};
use crate::error::{Error, Result, excerpt};
use crate::model::{Pointer, PolicyId, ThingId};

/// The first bytes of every binary batch (never the start of JSON text: `0xF6` is not valid
/// anywhere in UTF-8).
pub const MAGIC: [u8; 4] = [0xF6, b'O', b'T', b'B'];

/// The version of the layout this module writes and reads.
const VERSION: u64 = 1;

/// The kind byte of an entry (see the module docs).
const REPLACE: u8 = 0b11;
const VALUE: u8 = 1;
const REMOVED: u8 = 2;
const OBJECT: u8 = 1 << 2;
const REPLACE_COUNTER: u8 = 1 << 3;
const REPLACE_INSTANCE: u8 = 1 << 4;
const OBJECT_COUNTER: u8 = 1 << 5;
const OBJECT_INSTANCE: u8 = 1 << 6;
const RESERVED: u8 = 1 << 7;

/// Whether `bytes` starts as a binary batch does ([`MAGIC`]); JSON text never does.
pub fn is_binary_batch(bytes: &[u8]) -> bool {
    bytes.starts_with(&MAGIC)
}

/// 1..=n updates, in order, as one message (an empty slice gives a batch [`decode_batch`]
/// refuses).
pub fn encode_batch(updates: &[Update]) -> Vec<u8> {
    let mut strings = Strings::default();
    let mut routes = Routes::default();
    let batch_base = updates
        .iter()
        .find_map(|u| u.changes.oldest_wall())
        .unwrap_or(0);
    let mut body = Vec::new();
    put(&mut body, updates.len() as u64);
    let mut base = batch_base;
    for update in updates {
        put_update(&mut body, update, &mut base, &mut strings, &mut routes);
    }
    let mut out = Vec::with_capacity(body.len() + strings.bytes + 16 * routes.order.len() + 16);
    out.extend_from_slice(&MAGIC);
    put(&mut out, VERSION);
    put(&mut out, strings.order.len() as u64);
    for s in &strings.order {
        put(&mut out, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    }
    put(&mut out, routes.order.len() as u64);
    for route in &routes.order {
        put(&mut out, route.origin);
        put(&mut out, route.policy);
        put(&mut out, route.hops.len() as u64);
        for &hop in &route.hops {
            put(&mut out, hop);
        }
    }
    put(&mut out, batch_base);
    out.extend_from_slice(&body);
    out
}

/// The strings of a batch, each written once, in the order they are first used (the most used
/// come first, with one-byte indices).
#[derive(Default)]
struct Strings {
    index: HashMap<String, u64>,
    order: Vec<String>,
    bytes: usize,
}

impl Strings {
    fn intern(&mut self, s: &str) -> u64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.order.len() as u64;
        self.index.insert(s.to_owned(), i);
        self.order.push(s.to_owned());
        self.bytes += s.len() + 2;
        i
    }
}

/// Where an update comes from and where it has been, as string indices.
#[derive(Clone, PartialEq, Eq, Hash)]
struct RouteKey {
    origin: u64,
    /// 0 for none, else the policy id's string index + 1.
    policy: u64,
    hops: Vec<u64>,
}

#[derive(Default)]
struct Routes {
    index: HashMap<RouteKey, u64>,
    order: Vec<RouteKey>,
}

impl Routes {
    fn intern(&mut self, update: &Update, strings: &mut Strings) -> u64 {
        let key = RouteKey {
            origin: strings.intern(&update.origin),
            hops: update.hops.iter().map(|h| strings.intern(h)).collect(),
            policy: update
                .policy_id
                .as_ref()
                .map_or(0, |p| strings.intern(p.as_str()) + 1),
        };
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        let i = self.order.len() as u64;
        self.index.insert(key.clone(), i);
        self.order.push(key);
        i
    }
}

fn put_update(
    out: &mut Vec<u8>,
    update: &Update,
    base: &mut u64,
    strings: &mut Strings,
    routes: &mut Routes,
) {
    put(out, strings.intern(update.thing_id.namespace()));
    put(out, strings.intern(update.thing_id.name()));
    put(out, routes.intern(update, strings));
    let replica = &update.changes;
    let bare = replica.bare_ancestors();
    let mut entries: Vec<(&Pointer, Option<&Slot>)> = replica
        .slots
        .iter()
        .filter(|(path, slot)| !replica.implied(path, slot))
        .map(|(path, slot)| (path, Some(slot)))
        .chain(bare.iter().map(|path| (path, None)))
        .collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    put(out, entries.len() as u64);
    if entries.is_empty() {
        return;
    }
    let previous = *base;
    *base = replica.oldest_wall().unwrap_or(previous);
    put(out, zigzag(base.wrapping_sub(previous) as i64));
    let origin = &*update.origin;
    for (path, slot) in entries {
        put(out, strings.intern(&path.to_string()));
        let Some(slot) = slot else {
            out.push(0);
            continue;
        };
        let mut kind = 0;
        if let Some((stamp, cell)) = &slot.replace {
            kind |= match cell {
                Cell::Value(_) => VALUE,
                Cell::Removed => REMOVED,
                // `Replica::apply` keeps marks apart, so this never happens; if it did, the
                // reader refuses the batch rather than reading something else.
                Cell::Object => REPLACE,
            };
            kind |= stamp_flags(stamp, origin, REPLACE_COUNTER, REPLACE_INSTANCE);
        }
        if let Some(stamp) = &slot.object {
            kind |= OBJECT | stamp_flags(stamp, origin, OBJECT_COUNTER, OBJECT_INSTANCE);
        }
        out.push(kind);
        if let Some((stamp, cell)) = &slot.replace {
            put_stamp(out, stamp, *base, origin, strings);
            if let Cell::Value(value) = cell {
                let text = value.to_string();
                put(out, text.len() as u64);
                out.extend_from_slice(text.as_bytes());
            }
        }
        if let Some(stamp) = &slot.object {
            put_stamp(out, stamp, *base, origin, strings);
        }
    }
}

fn stamp_flags(stamp: &Stamp, origin: &str, counter: u8, instance: u8) -> u8 {
    let mut flags = 0;
    if stamp.counter != 0 {
        flags |= counter;
    }
    if *stamp.origin != *origin {
        flags |= instance;
    }
    flags
}

fn put_stamp(out: &mut Vec<u8>, stamp: &Stamp, base: u64, origin: &str, strings: &mut Strings) {
    // `base` is the oldest wall time of the update, so this never wraps.
    put(out, stamp.wall_ms - base);
    if stamp.counter != 0 {
        put(out, u64::from(stamp.counter));
    }
    if *stamp.origin != *origin {
        put(out, strings.intern(&stamp.origin));
    }
}

fn put(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

fn unzigzag(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

/// The updates of a batch, in order; an error (400) when the batch is malformed or holds more
/// than `max_updates` updates.
pub fn decode_batch(bytes: &[u8], max_updates: usize) -> Result<Vec<Update>> {
    if !is_binary_batch(bytes) {
        return Err(Error::field_invalid(
            "A binary batch must start with the bytes F6 4F 54 42.",
        ));
    }
    let mut r = Reader {
        bytes,
        pos: MAGIC.len(),
    };
    let version = r.varint(&"the format version")?;
    if version != VERSION {
        return Err(r.error(format!(
            "the batch is in format version {version}; this instance reads version {VERSION}"
        )));
    }
    let mut table = Table::read(&mut r)?;
    let routes = read_routes(&mut r, &mut table)?;
    let mut base = r.varint(&"the batch base")?;
    let at = r.pos;
    let count = r.varint(&"the number of updates")?;
    if count == 0 || count > max_updates as u64 {
        return Err(Error::field_invalid(format!(
            "A batch carries 1 to {max_updates} updates, not {count} (byte {at})."
        )));
    }
    // Each update takes at least 4 bytes.
    let count = r.bounded(count, 4, at, &"updates")?;
    let mut updates = Vec::with_capacity(count);
    for _ in 0..count {
        updates.push(read_update(&mut r, &mut table, &routes, &mut base)?);
    }
    if r.left() > 0 {
        return Err(r.error(format!("{} bytes follow the last update", r.left())));
    }
    Ok(updates)
}

/// Reads a batch from its start. `what` names the field being read, for error messages
/// (formatted only when there is an error).
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn error(&self, message: impl Display) -> Error {
        error_at(self.pos, message)
    }

    fn byte(&mut self, what: &dyn Display) -> Result<u8> {
        let b = *self
            .bytes
            .get(self.pos)
            .ok_or_else(|| self.error(format_args!("the batch ends inside {what}")))?;
        self.pos += 1;
        Ok(b)
    }

    /// `n` bytes; `n` was checked against the bytes left by [`Reader::count`].
    fn take(&mut self, n: usize) -> &'a [u8] {
        let end = self.pos.saturating_add(n).min(self.bytes.len());
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        slice
    }

    fn varint(&mut self, what: &dyn Display) -> Result<u64> {
        let at = self.pos;
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte(what)?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                break;
            }
            n |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(error_at(
            at,
            format_args!("{what} is a varint of more than 64 bits"),
        ))
    }

    /// A count of things of at least `each` bytes, refused if the bytes left cannot hold them.
    fn count(&mut self, what: &dyn Display, each: usize) -> Result<usize> {
        let at = self.pos;
        let n = self.varint(&format_args!("the number of {what}"))?;
        self.bounded(n, each, at, what)
    }

    fn bounded(&self, n: u64, each: usize, at: usize, what: &dyn Display) -> Result<usize> {
        let room = self.left() / each;
        match usize::try_from(n) {
            Ok(n) if n <= room => Ok(n),
            _ => Err(error_at(
                at,
                format_args!("{n} {what} do not fit in the {} bytes left", self.left()),
            )),
        }
    }

    fn index(&mut self, what: &dyn Display, len: usize, table: &str) -> Result<usize> {
        let at = self.pos;
        let i = self.varint(what)?;
        match usize::try_from(i) {
            Ok(i) if i < len => Ok(i),
            _ => Err(error_at(
                at,
                format_args!("{what} is {table} {i}, but there are only {len}"),
            )),
        }
    }
}

fn error_at(pos: usize, message: impl Display) -> Error {
    Error::field_invalid(format!(
        "The binary batch is malformed at byte {pos}: {message}."
    ))
}

/// The string table, and the instance ids and paths read from it so far (each string is
/// checked and parsed once, however many updates use it).
struct Table<'a> {
    strings: Vec<&'a str>,
    instances: HashMap<usize, Arc<str>>,
    paths: HashMap<usize, Pointer>,
}

impl<'a> Table<'a> {
    fn read(r: &mut Reader<'a>) -> Result<Table<'a>> {
        let n = r.count(&"strings", 1)?;
        let mut strings = Vec::with_capacity(n);
        for i in 0..n {
            let len = r.count(&format_args!("bytes of string {i}"), 1)?;
            let at = r.pos;
            let s = std::str::from_utf8(r.take(len))
                .map_err(|e| error_at(at, format_args!("string {i} is not UTF-8 ({e})")))?;
            strings.push(s);
        }
        Ok(Table {
            strings,
            instances: HashMap::new(),
            paths: HashMap::new(),
        })
    }

    fn text(&self, r: &mut Reader<'a>, what: &dyn Display) -> Result<&'a str> {
        let i = r.index(what, self.strings.len(), "string")?;
        Ok(self.strings[i])
    }

    fn instance(&mut self, r: &mut Reader<'a>, what: &dyn Display) -> Result<Arc<str>> {
        let at = r.pos;
        let i = r.index(what, self.strings.len(), "string")?;
        if let Some(id) = self.instances.get(&i) {
            return Ok(id.clone());
        }
        let s = self.strings[i];
        if !valid_instance(s) {
            return Err(error_at(
                at,
                format_args!(
                    "{what} '{}' is not an instance id (1 to 64 of letters, digits, '.', '_', '-', ':')",
                    excerpt(s).escape_debug()
                ),
            ));
        }
        let id: Arc<str> = Arc::from(s);
        self.instances.insert(i, id.clone());
        Ok(id)
    }

    /// A path, parsed as the JSON form's clocks are.
    fn path(&mut self, r: &mut Reader<'a>) -> Result<Pointer> {
        let at = r.pos;
        let i = r.index(&"an entry's path", self.strings.len(), "string")?;
        if let Some(path) = self.paths.get(&i) {
            return Ok(path.clone());
        }
        let s = self.strings[i];
        if !s.starts_with('/') {
            return Err(error_at(
                at,
                format_args!(
                    "the path '{}' does not start with '/'",
                    excerpt(s).escape_debug()
                ),
            ));
        }
        let path = Pointer::parse(s)?;
        self.paths.insert(i, path.clone());
        Ok(path)
    }
}

/// A route as read: who made the changes, where they have been, the thing's policy.
struct Route {
    origin: Arc<str>,
    hops: Vec<Arc<str>>,
    policy_id: Option<PolicyId>,
}

fn read_routes<'a>(r: &mut Reader<'a>, table: &mut Table<'a>) -> Result<Vec<Route>> {
    // Origin, policy, hop count and one hop: at least 4 bytes each.
    let n = r.count(&"routes", 4)?;
    let mut routes = Vec::with_capacity(n);
    for _ in 0..n {
        let origin = table.instance(r, &"a route's origin")?;
        let at = r.pos;
        let policy = r.varint(&"a route's policy")?;
        let policy_id = match policy.checked_sub(1) {
            None => None,
            Some(i) => match usize::try_from(i) {
                Ok(i) if i < table.strings.len() => Some(PolicyId::new(table.strings[i])?),
                _ => {
                    return Err(error_at(
                        at,
                        format!(
                            "a route's policy is string {i}, but there are only {}",
                            table.strings.len()
                        ),
                    ));
                }
            },
        };
        let at = r.pos;
        let hops = r.count(&"hops", 1)?;
        if hops == 0 {
            return Err(error_at(
                at,
                "a route has no hops (it must list the origin at least)",
            ));
        }
        let mut list = Vec::with_capacity(hops);
        for _ in 0..hops {
            list.push(table.instance(r, &"a hop")?);
        }
        routes.push(Route {
            origin,
            hops: list,
            policy_id,
        });
    }
    Ok(routes)
}

fn read_update<'a>(
    r: &mut Reader<'a>,
    table: &mut Table<'a>,
    routes: &[Route],
    base: &mut u64,
) -> Result<Update> {
    let namespace = table.text(r, &"a thing's namespace")?;
    let name = table.text(r, &"a thing's name")?;
    let thing_id = ThingId::new(&format!("{namespace}:{name}"))?;
    if thing_id.namespace() != namespace {
        return Err(r.error(format_args!(
            "the namespace '{}' contains ':'",
            excerpt(namespace).escape_debug()
        )));
    }
    let route = &routes[r.index(&"an update's route", routes.len(), "route")?];
    // Each entry takes at least 2 bytes (path and kind).
    let n = r.count(&"entries", 2)?;
    if n > 0 {
        let delta = unzigzag(r.varint(&"an update's base")?);
        *base = base.wrapping_add(delta as u64);
    }
    let mut slots: BTreeMap<Pointer, Slot> = BTreeMap::new();
    let mut bare: BTreeSet<Pointer> = BTreeSet::new();
    for _ in 0..n {
        let at = r.pos;
        let path = table.path(r)?;
        // Entries come in path order: the last one read is the greatest so far.
        let last = match (slots.keys().next_back(), bare.last()) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        if let Some(last) = last
            && *last >= path
        {
            return Err(error_at(
                at,
                format_args!(
                    "the entries must be in path order, each path once: '{}' follows '{}'",
                    Shown(&path),
                    Shown(last)
                ),
            ));
        }
        let kind = read_kind(r)?;
        if kind == 0 {
            bare.insert(path);
            continue;
        }
        if let Some(first) = path.segments().first()
            && (first == "thingId" || first == "policyId")
        {
            return Err(error_at(
                at,
                format_args!(
                    "'{}' is not replicated; an update cannot change it",
                    Shown(&path)
                ),
            ));
        }
        let origin = &route.origin;
        let replace = match kind & REPLACE {
            0 => None,
            cell => {
                let stamp = read_stamp(r, table, *base, origin, kind, REPLACE_COUNTER)?;
                let cell = if cell == VALUE {
                    Cell::Value(read_value(r, &path)?)
                } else {
                    Cell::Removed
                };
                Some((stamp, cell))
            }
        };
        let object = if kind & OBJECT != 0 {
            Some(read_stamp(r, table, *base, origin, kind, OBJECT_COUNTER)?)
        } else {
            None
        };
        slots.insert(path, Slot { replace, object });
    }
    let mut changes = Replica { slots };
    changes.add_implied_marks(&bare)?;
    Ok(Update {
        thing_id,
        origin: route.origin.clone(),
        hops: route.hops.clone(),
        policy_id: route.policy_id.clone(),
        changes,
    })
}

fn read_kind(r: &mut Reader<'_>) -> Result<u8> {
    let at = r.pos;
    let kind = r.byte(&"an entry's kind")?;
    let refuse = |why: &str| Err(error_at(at, format!("the entry kind {kind:#04x} {why}")));
    if kind & RESERVED != 0 {
        return refuse("sets the reserved bit 7");
    }
    if kind & REPLACE == REPLACE {
        return refuse("has the undefined value/removal kind 3");
    }
    if kind & REPLACE == 0 && kind & (REPLACE_COUNTER | REPLACE_INSTANCE) != 0 {
        return refuse("describes the stamp of a value or removal it does not have");
    }
    if kind & OBJECT == 0 && kind & (OBJECT_COUNTER | OBJECT_INSTANCE) != 0 {
        return refuse("describes the stamp of a mark it does not have");
    }
    Ok(kind)
}

/// A stamp; `counter_bit` is the kind bit saying it has a counter (the next bit: an instance).
fn read_stamp<'a>(
    r: &mut Reader<'a>,
    table: &mut Table<'a>,
    base: u64,
    origin: &Arc<str>,
    kind: u8,
    counter_bit: u8,
) -> Result<Stamp> {
    let at = r.pos;
    let delta = r.varint(&"a stamp's milliseconds")?;
    let wall_ms = base.checked_add(delta).ok_or_else(|| {
        error_at(
            at,
            format!("a stamp {delta} ms after {base} ms lies beyond the largest wall time"),
        )
    })?;
    let counter = if kind & counter_bit != 0 {
        let at = r.pos;
        let n = r.varint(&"a stamp's counter")?;
        u32::try_from(n)
            .map_err(|_| error_at(at, format!("a stamp's counter {n} does not fit 32 bits")))?
    } else {
        0
    };
    let origin = if kind & (counter_bit << 1) != 0 {
        table.instance(r, &"a stamp's instance")?
    } else {
        origin.clone()
    };
    Ok(Stamp {
        wall_ms,
        counter,
        origin,
    })
}

fn read_value(r: &mut Reader<'_>, path: &Pointer) -> Result<Value> {
    let len = r.count(&format_args!("bytes of the value of '{}'", Shown(path)), 1)?;
    let at = r.pos;
    let text = r.take(len);
    let value: Value = serde_json::from_slice(text).map_err(|e| {
        Error::json_invalid(format!("the value of '{}' (byte {at}): {e}", Shown(path)))
    })?;
    if value.as_object().is_some_and(|m| !m.is_empty()) {
        return Err(error_at(
            at,
            format_args!(
                "the value of '{}' is a non-empty object (an object is written as {{}} plus an entry per member)",
                Shown(path)
            ),
        ));
    }
    Ok(value)
}

/// A path in an error message, shortened if long.
struct Shown<'a>(&'a Pointer);

impl Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&excerpt(&self.0.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::protocol::Message;
    use crate::replica::{Change, Clock, change_for_delete, changes_for_merge, changes_for_modify};

    const T: u64 = 1_764_080_000_000;

    fn stamp(wall_ms: u64, counter: u32, origin: &str) -> Stamp {
        Stamp {
            wall_ms,
            counter,
            origin: Arc::from(origin),
        }
    }

    /// The update of docs/distribution.md: one property of a lane feature, merged.
    fn lane_update(thing: &str, offset: f64, stamp: &Stamp) -> Update {
        Update {
            thing_id: ThingId::new(thing).unwrap(),
            origin: Arc::from("edge-1"),
            hops: vec![Arc::from("edge-1")],
            policy_id: Some(PolicyId::new("fleet:policy").unwrap()),
            changes: Replica::from(changes_for_merge(
                &Pointer::parse("/features/lane/properties").unwrap(),
                &json!({ "offset": offset }),
                stamp,
            )),
        }
    }

    fn hex(bytes: &[u8]) -> String {
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn json_batch_len(updates: &[Update]) -> usize {
        let commands: Vec<Vec<u8>> = updates
            .iter()
            .map(|u| Message::ThingCommand(u.to_command()).to_vec())
            .collect();
        commands.iter().map(Vec::len).sum::<usize>() + commands.len() + 1
    }

    /// Example (a), byte for byte as the module docs show it.
    #[test]
    fn a_one_property_update_is_97_bytes() {
        let update = lane_update("fleet:car-1", 0.12, &stamp(T, 3, "edge-1"));
        // Four "is an object" marks above the value, implied.
        assert_eq!(update.changes.len(), 5);
        let bytes = encode_batch(std::slice::from_ref(&update));
        let json = Message::ThingCommand(update.to_command()).to_vec();
        println!(
            "{} bytes (JSON command: {}): {}",
            bytes.len(),
            json.len(),
            hex(&bytes)
        );
        assert!(bytes.len() <= 141, "{} bytes", bytes.len());
        assert_eq!(
            hex(&bytes),
            "f6 4f 54 42 01 05 05 66 6c 65 65 74 05 63 61 72 2d 31 06 65 64 67 65 2d 31 \
             0c 66 6c 65 65 74 3a 70 6f 6c 69 63 79 \
             20 2f 66 65 61 74 75 72 65 73 2f 6c 61 6e 65 2f 70 72 6f 70 65 72 74 69 65 73 2f 6f 66 66 73 65 74 \
             01 02 04 01 02 80 b8 f2 da ab 33 01 00 01 00 01 00 04 09 00 03 04 30 2e 31 32"
        );
        assert_eq!(bytes.len(), 97);
        assert_eq!(decode_batch(&bytes, 1).unwrap(), vec![update]);
    }

    /// Example (b): 100 things of one fleet, stamps within one second.
    #[test]
    fn a_batch_of_a_hundred_similar_updates_is_about_20_bytes_each() {
        let updates: Vec<Update> = (0..100u32)
            .map(|i| {
                let s = stamp(T + 9 * u64::from(i), i % 4, "edge-1");
                lane_update(&format!("fleet:car-{i}"), f64::from(12 + i) / 100.0, &s)
            })
            .collect();
        let bytes = encode_batch(&updates);
        println!(
            "{} bytes for 100 updates (JSON array of commands: {})",
            bytes.len(),
            json_batch_len(&updates)
        );
        assert!(bytes.len() <= 2_250, "{} bytes", bytes.len());
        assert_eq!(decode_batch(&bytes, 100).unwrap(), updates);
        assert!(decode_batch(&bytes, 99).is_err());
    }

    #[test]
    fn binary_batches_are_told_apart_from_json() {
        // No text starts like a binary batch: its first byte occurs nowhere in UTF-8.
        assert!(String::from_utf8([&MAGIC[..], b"{}"].concat()).is_err());
        let bytes = encode_batch(&[lane_update("a:b", 1.0, &stamp(1, 0, "edge-1"))]);
        assert!(is_binary_batch(&bytes));
        for json in [&b"[{\"topic\":1}]"[..], b"{}", b"", &MAGIC[..3]] {
            assert!(!is_binary_batch(json));
        }
    }

    #[test]
    fn removals_marks_bare_ancestors_and_foreign_stamps_round_trip() {
        let p = |s: &str| Pointer::parse(s).unwrap();
        let mut r = Replica::from(changes_for_modify(
            &p("/features/lane/properties/offset"),
            &json!(1),
            &stamp(10, 0, "hub"),
        ));
        // A newer value below an older mark: the marks are written, not implied.
        r.apply(Change {
            path: p("/features/lane/properties/offset"),
            cell: Cell::Value(json!({})),
            stamp: stamp(12, 1, "edge-1"),
        });
        // A removal whose ancestors have no clock: written bare.
        r.apply(change_for_delete(
            &p("/attributes/x/y"),
            &stamp(11, 0, "edge-1"),
        ));
        // A value hidden by a newer mark at the same path.
        r.apply(Change {
            path: p("/attributes/v"),
            cell: Cell::Value(json!([1, "two"])),
            stamp: stamp(13, 0, "edge-1"),
        });
        r.apply(Change {
            path: p("/attributes/v"),
            cell: Cell::Object,
            stamp: stamp(14, u32::MAX, "h.u_b:2"),
        });
        let update = Update {
            thing_id: ThingId::new(":no-namespace").unwrap(),
            origin: Arc::from("edge-1"),
            hops: vec![Arc::from("edge-1"), Arc::from("hub")],
            policy_id: None,
            changes: r,
        };
        let empty = Update {
            thing_id: ThingId::new("a.b-c:x:y").unwrap(),
            changes: Replica::new(),
            ..update.clone()
        };
        let batch = vec![empty.clone(), update, empty];
        assert_eq!(decode_batch(&encode_batch(&batch), 3).unwrap(), batch);
    }

    #[test]
    fn bases_far_apart_round_trip() {
        let batch: Vec<Update> = [u64::MAX, 0, u64::MAX - 1, 1 << 63, 5]
            .iter()
            .map(|&ms| lane_update("a:b", 0.5, &stamp(ms, 0, "edge-1")))
            .collect();
        assert_eq!(decode_batch(&encode_batch(&batch), 5).unwrap(), batch);
    }

    /// A batch written field by field, to break one field at a time. The sample is one update
    /// of `fleet:car-1` setting `/a` to 1.
    #[derive(Clone)]
    struct Raw {
        version: u64,
        strings: Vec<Vec<u8>>,
        routes: Vec<Vec<u64>>,
        base: u64,
        count: Option<u64>,
        updates: Vec<Vec<u8>>,
        tail: Vec<u8>,
    }

    fn varints(ns: &[u64]) -> Vec<u8> {
        let mut out = Vec::new();
        for &n in ns {
            put(&mut out, n);
        }
        out
    }

    fn text(s: &str) -> Vec<u8> {
        let mut out = varints(&[s.len() as u64]);
        out.extend_from_slice(s.as_bytes());
        out
    }

    /// Namespace 1, name 2, route 0, 1 entry, base + 0, then `entry`.
    fn update_with(entry: &[u8]) -> Vec<u8> {
        [&varints(&[1, 2, 0, 1, 0])[..], entry].concat()
    }

    /// Path 3 ("/a"), a value stamped base + 0: 1.
    fn value_entry() -> Vec<u8> {
        [&varints(&[3, u64::from(VALUE), 0])[..], &text("1")].concat()
    }

    impl Raw {
        fn sample() -> Raw {
            Raw {
                version: VERSION,
                strings: ["edge-1", "fleet", "car-1", "/a", "fleet:policy"]
                    .iter()
                    .map(|s| s.as_bytes().to_vec())
                    .collect(),
                // Origin "edge-1", policy "fleet:policy", hops ["edge-1"].
                routes: vec![vec![0, 5, 1, 0]],
                base: 1000,
                count: None,
                updates: vec![update_with(&value_entry())],
                tail: Vec::new(),
            }
        }

        fn bytes(&self) -> Vec<u8> {
            let mut out = MAGIC.to_vec();
            put(&mut out, self.version);
            put(&mut out, self.strings.len() as u64);
            for s in &self.strings {
                put(&mut out, s.len() as u64);
                out.extend_from_slice(s);
            }
            put(&mut out, self.routes.len() as u64);
            for route in &self.routes {
                out.extend(varints(route));
            }
            put(&mut out, self.base);
            put(&mut out, self.count.unwrap_or(self.updates.len() as u64));
            for u in &self.updates {
                out.extend_from_slice(u);
            }
            out.extend_from_slice(&self.tail);
            out
        }

        fn string(mut self, i: usize, s: &[u8]) -> Raw {
            self.strings[i] = s.to_vec();
            self
        }

        fn entry(mut self, entry: &[u8]) -> Raw {
            self.updates = vec![update_with(entry)];
            self
        }
    }

    #[track_caller]
    fn refused(bytes: &[u8], expected: &str) {
        let err = decode_batch(bytes, 8).expect_err(expected);
        assert_eq!(err.status(), 400, "{err}");
        assert!(
            err.message().contains(expected),
            "{:?} does not say {expected:?}",
            err.message()
        );
    }

    #[test]
    fn the_sample_of_the_validation_tests_is_valid() {
        let updates = decode_batch(&Raw::sample().bytes(), 1).unwrap();
        assert_eq!(updates.len(), 1);
        let u = &updates[0];
        assert_eq!(u.thing_id.as_str(), "fleet:car-1");
        assert_eq!(&*u.origin, "edge-1");
        assert_eq!(u.policy_id.as_ref().unwrap().as_str(), "fleet:policy");
        assert_eq!(u.changes.materialize(), json!({"a": 1}));
        // The root mark is implied, with the value's stamp.
        let root = u.changes.slots.get(&Pointer::root()).unwrap();
        assert_eq!(root.object, Some(stamp(1000, 0, "edge-1")));
        // The encoder orders its strings by first use: other bytes, same updates.
        assert_eq!(decode_batch(&encode_batch(&updates), 1).unwrap(), updates);
    }

    #[test]
    fn malformed_framing_is_refused_with_what_is_wrong() {
        let s = Raw::sample;
        refused(
            b"[{\"topic\":\"a/b\"}]",
            "must start with the bytes F6 4F 54 42",
        );
        refused(&MAGIC, "ends inside the format version");
        refused(&Raw { version: 2, ..s() }.bytes(), "format version 2");
        let mut huge = MAGIC.to_vec();
        huge.extend(varints(&[1, 1_000_000]));
        refused(&huge, "1000000 strings do not fit in the 0 bytes left");
        let mut long = MAGIC.to_vec();
        long.extend([1]);
        long.extend([0xff; 10]);
        refused(
            &long,
            "the number of strings is a varint of more than 64 bits",
        );
        let mut cut = MAGIC.to_vec();
        cut.extend(varints(&[1, 2, 5]));
        cut.extend(b"ab");
        refused(&cut, "5 bytes of string 0 do not fit in the 2 bytes left");
        refused(
            &s().string(2, &[0x63, 0xff]).bytes(),
            "string 2 is not UTF-8",
        );
        refused(
            &Raw {
                count: Some(0),
                ..s()
            }
            .bytes(),
            "A batch carries 1 to 8 updates, not 0",
        );
        let two = Raw {
            updates: vec![update_with(&value_entry()); 2],
            ..s()
        };
        assert_eq!(decode_batch(&two.bytes(), 2).unwrap().len(), 2);
        let err = decode_batch(&two.bytes(), 1).unwrap_err();
        assert!(err.message().contains("1 to 1 updates, not 2"), "{err}");
        refused(
            &Raw {
                count: Some(2),
                ..s()
            }
            .bytes(),
            "the batch ends inside a thing's namespace",
        );
        refused(
            &Raw {
                tail: vec![0, 0],
                ..s()
            }
            .bytes(),
            "2 bytes follow the last update",
        );
    }

    #[test]
    fn malformed_routes_are_refused_with_what_is_wrong() {
        let s = Raw::sample;
        let routes = |routes: Vec<Vec<u64>>| Raw { routes, ..s() }.bytes();
        refused(
            &s().string(0, b"no spaces").bytes(),
            "a route's origin 'no spaces' is not an instance id",
        );
        refused(
            &routes(vec![vec![9, 0, 1, 0]]),
            "a route's origin is string 9, but there are only 5",
        );
        refused(
            &routes(vec![vec![0, 99, 1, 0]]),
            "a route's policy is string 98, but there are only 5",
        );
        refused(
            &s().string(4, b"no-colon").bytes(),
            "Policy ID 'no-colon' is not valid",
        );
        refused(&routes(vec![vec![0, 0, 0, 0]]), "a route has no hops");
        refused(
            &routes(vec![vec![0, 0, 1, 3]]),
            "a hop '/a' is not an instance id",
        );
        refused(&routes(vec![vec![0, 0, 1000, 0]]), "1000 hops do not fit");
        let crowded = [
            &MAGIC[..],
            &varints(&[1, 1]),
            &text("edge-1"),
            &varints(&[50, 0, 0, 1, 0]),
        ]
        .concat();
        refused(&crowded, "50 routes do not fit in the 4 bytes left");
        let no_route = Raw {
            updates: vec![[&varints(&[1, 2, 7, 1, 0])[..], &value_entry()].concat()],
            ..s()
        };
        refused(
            &no_route.bytes(),
            "an update's route is route 7, but there are only 1",
        );
    }

    #[test]
    fn malformed_things_and_entries_are_refused_with_what_is_wrong() {
        let s = Raw::sample;
        let bad_ns = Raw {
            updates: vec![[&varints(&[42, 2, 0, 1, 0])[..], &value_entry()].concat()],
            ..s()
        };
        refused(
            &bad_ns.bytes(),
            "a thing's namespace is string 42, but there are only 5",
        );
        refused(
            &s().string(1, b"1fleet").bytes(),
            "Thing ID '1fleet:car-1' is not valid",
        );
        refused(
            &s().string(1, b"fleet:x").bytes(),
            "the namespace 'fleet:x' contains ':'",
        );
        let many = Raw {
            updates: vec![varints(&[1, 2, 0, 500, 0, 3, 1, 0, 1, b'1' as u64])],
            ..s()
        };
        refused(&many.bytes(), "500 entries do not fit");
        refused(
            &s().string(3, b"a").bytes(),
            "the path 'a' does not start with '/'",
        );
        refused(
            &s().string(3, b"/a//b").bytes(),
            "contains an empty segment",
        );
        refused(
            &s().string(3, b"/thingId").bytes(),
            "'/thingId' is not replicated",
        );
        refused(
            &s().string(3, b"/policyId/x").bytes(),
            "'/policyId/x' is not replicated",
        );
        let twice = Raw {
            updates: vec![
                [
                    &varints(&[1, 2, 0, 2, 0])[..],
                    &value_entry(),
                    &value_entry(),
                ]
                .concat(),
            ],
            ..s()
        };
        refused(
            &twice.bytes(),
            "in path order, each path once: '/a' follows '/a'",
        );
        // "/" after "/a": out of order.
        let unordered = Raw {
            strings: [&s().strings[..], &[b"/".to_vec()]].concat(),
            updates: vec![
                [
                    &varints(&[1, 2, 0, 2, 0])[..],
                    &value_entry(),
                    &varints(&[5, 0]),
                ]
                .concat(),
            ],
            ..s()
        };
        refused(&unordered.bytes(), "'/' follows '/a'");
        for (kind, why) in [
            (0x81, "sets the reserved bit 7"),
            (0x03, "has the undefined value/removal kind 3"),
            (
                0x0c,
                "describes the stamp of a value or removal it does not have",
            ),
            (
                0x14,
                "describes the stamp of a value or removal it does not have",
            ),
            (0x21, "describes the stamp of a mark it does not have"),
            (0x41, "describes the stamp of a mark it does not have"),
        ] {
            let why = format!("the entry kind {kind:#04x} {why}");
            refused(&s().entry(&varints(&[3, kind])).bytes(), &why);
        }
        refused(
            &s().entry(&varints(&[3])).bytes(),
            "ends inside an entry's kind",
        );
    }

    #[test]
    fn malformed_stamps_and_values_are_refused_with_what_is_wrong() {
        let s = Raw::sample;
        let removal = |stamp: &[u64]| {
            s().entry(
                &[
                    &varints(&[3, u64::from(REMOVED | REPLACE_COUNTER | REPLACE_INSTANCE)])[..],
                    &varints(stamp),
                ]
                .concat(),
            )
        };
        // A removal stamped base + 2, counter 7, by "edge-1" (string 0) is fine.
        assert!(decode_batch(&removal(&[2, 7, 0]).bytes(), 1).is_ok());
        refused(
            &removal(&[2, 1 << 32, 0]).bytes(),
            "a stamp's counter 4294967296 does not fit 32 bits",
        );
        refused(
            &removal(&[2, 7, 3]).bytes(),
            "a stamp's instance '/a' is not an instance id",
        );
        refused(
            &removal(&[2, 7, 5]).bytes(),
            "a stamp's instance is string 5, but there are only 5",
        );
        refused(&removal(&[2, 7]).bytes(), "ends inside a stamp's instance");
        let late = Raw {
            base: u64::MAX - 1,
            ..removal(&[2, 7, 0])
        };
        refused(
            &late.bytes(),
            "a stamp 2 ms after 18446744073709551614 ms lies beyond the largest wall time",
        );
        let value =
            |v: &str| s().entry(&[&varints(&[3, u64::from(VALUE), 0])[..], &text(v)].concat());
        assert!(decode_batch(&value(" [{\"k\": [1, 2.5, \"é\"]}] ").bytes(), 1).is_ok());
        assert!(decode_batch(&value("{}").bytes(), 1).is_ok());
        refused(
            &value("{\"k\": 1}").bytes(),
            "the value of '/a' is a non-empty object",
        );
        for bad in ["", "{", "01", "[1,]", "1 2", "'x'"] {
            let err = decode_batch(&value(bad).bytes(), 1).expect_err(bad);
            assert_eq!(
                err.kind(),
                crate::error::ErrorKind::JsonInvalid,
                "{bad}: {err}"
            );
            assert!(err.message().contains("the value of '/a'"), "{err}");
        }
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        refused(&value(&deep).bytes(), "recursion limit exceeded");
        let not_utf8 =
            s().entry(&[&varints(&[3, u64::from(VALUE), 0, 2])[..], &[b'"', 0xff]].concat());
        refused(&not_utf8.bytes(), "the value of '/a'");
        let cut = s().entry(&varints(&[3, u64::from(VALUE), 0, 9, b'1'.into()]));
        refused(
            &cut.bytes(),
            "9 bytes of the value of '/a' do not fit in the 1 bytes left",
        );
    }

    // Generated batches: paths, values and ops of several writers.

    fn key() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["a", "b", "c", "é", "two words", "q\"uote"])
    }

    fn path() -> impl Strategy<Value = Pointer> {
        prop::collection::vec(key(), 0..4).prop_map(|segs| Pointer::from_segments(segs).unwrap())
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-100_000i32..100_000).prop_map(|n| Value::from(f64::from(n) / 100.0)),
            // Any finite float (JSON has no NaN or infinity).
            any::<f64>().prop_filter_map("finite", |f| f.is_finite().then(|| Value::from(f))),
            prop::sample::select(vec!["", "x", "é\"\\\n\u{1F600}\u{0}"]).prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
            Just(json!([1, "x", null, {"k": []}])),
            Just(json!({})),
            Just(Value::Null),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(3, 12, 3, |inner| {
            prop::collection::btree_map(key(), inner, 0..3).prop_map(|m| {
                Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            })
        })
    }

    #[derive(Debug, Clone)]
    enum Op {
        Modify(Pointer, Value),
        Merge(Pointer, Value),
        Delete(Pointer),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (path(), value()).prop_map(|(p, v)| Op::Modify(p, v)),
            (path(), value()).prop_map(|(p, v)| Op::Merge(p, v)),
            path().prop_map(Op::Delete),
        ]
    }

    const INSTANCES: [&str; 4] = ["edge-1", "hub", "edge.2_b:x", "quiet"];

    /// What one instance holds of the changes of three writers whose clocks are skewed and
    /// step slowly (so stamps share milliseconds and have counters), each writer having seen
    /// part of the others' changes.
    fn replica_of(ops: &[(usize, Op)], seed: u64) -> Replica {
        let clocks: Vec<Clock> = INSTANCES[..3]
            .iter()
            .enumerate()
            .map(|(i, origin)| {
                let t = Arc::new(AtomicU64::new(3 * (T + 5 * i as u64)));
                Clock::with_wall(origin, move || t.fetch_add(1, Ordering::Relaxed) / 3)
            })
            .collect();
        let mut log: Vec<Change> = Vec::new();
        for (k, (writer, op)) in ops.iter().enumerate() {
            let seen = (seed as usize ^ k) % (log.len() + 1);
            for change in &log[..seen] {
                clocks[*writer].observe(&change.stamp);
            }
            let stamp = clocks[*writer].now();
            log.extend(match op {
                Op::Modify(p, v) => changes_for_modify(p, v, &stamp),
                Op::Merge(p, v) => changes_for_merge(p, v, &stamp),
                Op::Delete(p) => vec![change_for_delete(p, &stamp)],
            });
        }
        let mut replica = Replica::new();
        for (k, change) in log.into_iter().enumerate() {
            // Most of the changes, in the order they were made.
            if (seed >> (k % 64)) & 3 != 0 {
                replica.apply(change);
            }
        }
        replica
    }

    fn update() -> impl Strategy<Value = Update> {
        (
            prop::sample::select(vec![
                "fleet:car-1",
                "fleet:car-2",
                ":bare",
                "a.b-c:x:y",
                "f:é",
            ]),
            0..INSTANCES.len(),
            prop::collection::vec(0..INSTANCES.len(), 0..3),
            prop::option::of(prop::sample::select(vec!["fleet:policy", "p:q"])),
            prop::collection::vec((0usize..3, op()), 0..8),
            any::<u64>(),
        )
            .prop_map(|(thing, origin, hops, policy, ops, seed)| Update {
                thing_id: ThingId::new(thing).unwrap(),
                origin: Arc::from(INSTANCES[origin]),
                hops: std::iter::once(origin)
                    .chain(hops)
                    .map(|i| Arc::from(INSTANCES[i]))
                    .collect(),
                policy_id: policy.map(|p| PolicyId::new(p).unwrap()),
                changes: replica_of(&ops, seed),
            })
    }

    fn batch(max: usize) -> impl Strategy<Value = Vec<Update>> {
        prop::collection::vec(update(), 1..max)
    }

    /// Whatever decodes encodes back to bytes that decode the same.
    fn stable(updates: &[Update]) -> std::result::Result<(), TestCaseError> {
        let again = decode_batch(&encode_batch(updates), updates.len());
        prop_assert_eq!(again.as_deref(), Ok(updates));
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn batches_round_trip_exactly(updates in batch(20)) {
            let bytes = encode_batch(&updates);
            prop_assert_eq!(decode_batch(&bytes, updates.len()), Ok(updates.clone()));
            prop_assert!(decode_batch(&bytes, updates.len() - 1).is_err());
        }

        #[test]
        fn every_truncation_is_an_error(updates in batch(5)) {
            let bytes = encode_batch(&updates);
            for n in 0..bytes.len() {
                prop_assert!(decode_batch(&bytes[..n], 64).is_err(), "{} of {} bytes", n, bytes.len());
            }
        }

        #[test]
        fn single_byte_mutations_never_panic(
            updates in batch(5),
            mutations in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let mut bytes = encode_batch(&updates);
            for (at, byte) in mutations {
                let at = at.index(bytes.len());
                bytes[at] = byte;
                if let Ok(read) = decode_batch(&bytes, 64) {
                    stable(&read)?;
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn any_bytes_after_the_magic_never_panic(
            version in prop_oneof![Just(1u8), any::<u8>()],
            // Mostly small numbers, so counts and indices often hold and decoding goes deep.
            rest in prop::collection::vec(prop_oneof![3 => 0u8..8, 1 => any::<u8>()], 0..200),
        ) {
            let bytes = [&MAGIC[..], &[version], &rest].concat();
            if let Ok(read) = decode_batch(&bytes, 64) {
                stable(&read)?;
            }
        }
    }
}
