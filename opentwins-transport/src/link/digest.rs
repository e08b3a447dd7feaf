//! Anti-entropy: a sending link and its peer compare digests of what the link carries, and the
//! sender queues only the changes the peer lacks (docs/distribution.md, "Anti-entropy").
//!
//! A round starts with a hello (a request without things) that tells the sender the peer's
//! side of the link: the paths it takes and those it owns (its changes there never come from
//! this side), and whether it reads binary batches. Then pages of up to [`MAX_THINGS`] things
//! follow, each with a digest of the stamps of the paths both sides carry. The peer answers,
//! for each thing whose digest differs from its own, its stamps of those paths (or that it
//! lacks the thing); the sender queues the changes newer than the peer's in the link's outbox,
//! as any other update. A digest carries paths and stamps, never values, and the peer answers
//! only for things the link's subject may read there.
//!
//! Things with updates waiting in the outbox are left out of a round: the outbox sends them.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use opentwins_core::error::Error;
use opentwins_core::model::{Thing, ThingId};
use opentwins_core::policy::AuthContext;
use opentwins_core::replica::{Cell, Change, Provenance, Replica, Stamp};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::config::{Pattern, Selection, covered, parse_pattern};
use super::{Link, Links, Shared};

/// Things one digest request names at most.
pub(super) const MAX_THINGS: usize = 1000;
/// Include, exclude or owned patterns one side of a link may name at most.
const MAX_PATTERNS: usize = 64;
/// How long a peer may take to answer one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request got no answer.
#[derive(Debug)]
pub(super) enum Asked {
    /// The peer (or the transport) does not take digests: a plain Ditto peer, an MQTT link.
    Unsupported(String),
    /// It may work later (unreachable, timed out, not allowed yet).
    Failed(String),
}

impl Asked {
    /// A peer's refusal with `status` (HTTP, or the status an MQTT answer carries): a peer
    /// without the resource (a plain Ditto, an older instance) or that cannot read the request
    /// takes no digests; anything else may pass.
    pub(super) fn refused(status: u16, why: String) -> Asked {
        match status {
            400 | 404 | 405 | 415 => Asked::Unsupported(why),
            _ => Asked::Failed(why),
        }
    }
}

/// What the sender asks (fields a later version adds are ignored).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Request {
    /// The sending instance.
    instance: String,
    /// The sender's selection.
    #[serde(default)]
    include: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
    /// `[thing id, digest]`, none in a hello.
    #[serde(default)]
    things: Vec<(String, String)>,
}

/// What the peer answers.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Reply {
    /// The answering instance.
    instance: String,
    /// Whether it reads binary batches.
    binary: bool,
    /// Its link's selection and owned paths.
    include: Vec<String>,
    exclude: Vec<String>,
    owned: Vec<String>,
    /// The things whose digest differs: `[path, kind, stamp]` of each compared path (`v`
    /// value, `o` "is an object", `r` removed), or `null` when the peer lacks the thing.
    differ: BTreeMap<String, Option<Vec<Stamped>>>,
}

/// One compared clock: `[path, kind, stamp]`.
type Stamped = (String, String, String);

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Round {
    /// Things compared.
    pub things: usize,
    /// Things whose digests differed.
    pub differing: usize,
    /// Things with changes queued for the peer.
    pub queued: usize,
}

/// The paths both sides of a link carry: the sender's selection, then the receiver's, less
/// what the receiver owns.
pub(super) struct Scope {
    sender: Selection,
    receiver: Selection,
    owned: Vec<Pattern>,
}

impl Scope {
    fn new(
        sender: (&[String], &[String]),
        receiver: (&[String], &[String]),
        owned: &[String],
    ) -> Result<Scope, String> {
        let count = sender.0.len() + sender.1.len() + receiver.0.len() + receiver.1.len();
        if count > 2 * MAX_PATTERNS || owned.len() > MAX_PATTERNS {
            return Err(format!("more than {MAX_PATTERNS} path patterns"));
        }
        Ok(Scope {
            sender: Selection::new(sender.0, sender.1)?,
            receiver: Selection::new(receiver.0, receiver.1)?,
            owned: owned
                .iter()
                .map(|s| parse_pattern(s))
                .collect::<Result<_, _>>()?,
        })
    }

    /// What a change is when compared: `None` when one side does not carry it.
    fn carry(&self, change: Change) -> Option<Change> {
        let change = self.receiver.carry(self.sender.carry(change)?)?;
        (!covered(&self.owned, &change.path)).then_some(change)
    }

    fn compared(&self, clocks: &Replica) -> Vec<Change> {
        clocks.changes().filter_map(|c| self.carry(c)).collect()
    }
}

fn kind(cell: &Cell) -> &'static str {
    match cell {
        Cell::Value(_) => "v",
        Cell::Object => "o",
        Cell::Removed => "r",
    }
}

/// SHA-256 (first 16 bytes, hex) of the paths, kinds and stamps, in the replica's order.
fn digest(changes: &[Change]) -> String {
    let mut h = Sha256::new();
    for c in changes {
        h.update(c.path.to_string().as_bytes());
        h.update([0]);
        h.update(kind(&c.cell).as_bytes());
        h.update(c.stamp.to_string().as_bytes());
        h.update([b'\n']);
    }
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The peer's stamps as a replica (placeholder values: only stamps are compared).
fn theirs(stamps: &[Stamped]) -> Result<Replica, String> {
    let mut changes = Vec::with_capacity(stamps.len());
    for (path, kind, stamp) in stamps {
        let cell = match kind.as_str() {
            "v" => Cell::Value(serde_json::Value::Null),
            "o" => Cell::Object,
            "r" => Cell::Removed,
            other => return Err(format!("'{other}' is no kind of change")),
        };
        changes.push(Change {
            path: opentwins_core::model::Pointer::parse(path).map_err(|e| e.to_string())?,
            cell,
            stamp: Stamp::parse(stamp).map_err(|e| e.to_string())?,
        });
    }
    Ok(Replica::from(changes))
}

impl Links {
    /// Answers a peer's digest request on link `name` (JSON, see the module docs). `auth`
    /// replaces the link's subject when the transport authenticated the peer itself (HTTP).
    pub async fn digest(
        &self,
        name: &str,
        auth: Option<&AuthContext>,
        body: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let link = self.receiving(name)?;
        let request: Request = serde_json::from_slice(body).map_err(Error::json_invalid)?;
        if request.things.len() > MAX_THINGS {
            return Err(Error::field_invalid(format!(
                "A digest request names at most {MAX_THINGS} things."
            )));
        }
        let config = &link.config;
        let scope = Scope::new(
            (&request.include, &request.exclude),
            (&config.include, &config.exclude),
            &config.owned,
        )
        .map_err(Error::field_invalid)?;
        let auth = auth.unwrap_or(&link.auth);
        let mut differ = BTreeMap::new();
        for (id, their_digest) in request.things {
            let thing_id = ThingId::new(&id)?;
            match self.inner.twins.readable_thing(auth, &thing_id) {
                Some(thing) => {
                    let mine = scope.compared(thing.clocks());
                    if digest(&mine) != their_digest {
                        let stamps = mine
                            .iter()
                            .map(|c| {
                                (
                                    c.path.to_string(),
                                    kind(&c.cell).into(),
                                    c.stamp.to_string(),
                                )
                            })
                            .collect();
                        differ.insert(id, Some(stamps));
                    }
                }
                // Not here (or not readable): worth sending only if the link may create it.
                None if config.create && self.inner.twins.get_thing(&thing_id).is_none() => {
                    differ.insert(id, None);
                }
                None => {}
            }
        }
        let reply = Reply {
            instance: self.instance_id().to_owned(),
            binary: true,
            include: config.include.clone(),
            exclude: config.exclude.clone(),
            owned: config.owned.clone(),
            differ,
        };
        Ok(serde_json::to_vec(&reply).expect("a reply serializes"))
    }

    /// One anti-entropy round over `link` (a hello, then every thing it carries, page by
    /// page). Also learns whether the peer reads binary batches. Only a hello when
    /// `hello_only`.
    pub(super) async fn anti_entropy(&self, link: &Link, hello_only: bool) -> Result<Round, Asked> {
        let config = &link.config;
        let me = self.instance_id().to_owned();
        let mut request = Request {
            instance: me.clone(),
            include: config.include.clone(),
            exclude: config.exclude.clone(),
            things: Vec::new(),
        };
        let hello = ask(link, &request).await?;
        link.stats
            .peer_binary
            .store(hello.binary, Ordering::Relaxed);
        let mut round = Round::default();
        if hello_only {
            return Ok(round);
        }
        let scope = Scope::new(
            (&config.include, &config.exclude),
            (&hello.include, &hello.exclude),
            &hello.owned,
        )
        .map_err(|e| Asked::Failed(format!("the peer's digest reply: {e}")))?;
        let outbox = link.outbox.as_ref().expect("a sending link has an outbox");
        let mut ids: Vec<ThingId> = self.inner.twins.thing_ids();
        ids.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        ids.retain(|id| !outbox.is_pending(id.as_str().as_bytes()));
        for page in ids.chunks(MAX_THINGS) {
            request.things = page
                .iter()
                .filter_map(|id| self.carried(link, id))
                .map(|thing| {
                    let d = digest(&scope.compared(thing.clocks()));
                    (thing.id().as_str().to_owned(), d)
                })
                .collect();
            if request.things.is_empty() {
                continue;
            }
            round.things += request.things.len();
            let reply = ask(link, &request).await?;
            for (id, stamps) in reply.differ {
                // Only what was asked.
                let Ok(id) = ThingId::new(&id) else { continue };
                if page
                    .binary_search_by(|p| p.as_str().cmp(id.as_str()))
                    .is_err()
                {
                    continue;
                }
                round.differing += 1;
                let Some(thing) = self.carried(link, &id) else {
                    continue;
                };
                let peer = match stamps.as_deref().map(theirs).transpose() {
                    Ok(peer) => peer,
                    Err(e) => return Err(Asked::Failed(format!("the peer's digest reply: {e}"))),
                };
                if self.send_missing(link, &thing, peer.as_ref().map(|p| (&scope, p))) {
                    round.queued += 1;
                }
            }
        }
        Ok(round)
    }

    /// The thing if the link carries it (it exists and matches the link's filter).
    fn carried(&self, link: &Link, id: &ThingId) -> Option<Thing> {
        let thing = self.inner.twins.get_thing(id)?;
        match &link.filter {
            Some(f) if !f.matches(&thing) => None,
            _ => Some(thing),
        }
    }

    /// Queues the changes of `thing` the peer would take, given its stamps of the paths in
    /// scope, or everything the link carries of it (the peer lacks the thing, or a resync).
    /// Returns whether anything was queued.
    pub(super) fn send_missing(
        &self,
        link: &Link,
        thing: &Thing,
        peer: Option<(&Scope, &Replica)>,
    ) -> bool {
        let mut all = thing.clocks().clone();
        all.fill_values(&opentwins_core::engine::replicated(thing.body()));
        let changes = match peer {
            None => all,
            Some((scope, peer)) => Replica::from(
                all.changes()
                    .filter(|c| {
                        scope
                            .carry(c.clone())
                            .is_some_and(|compared| peer.would_take(&compared))
                    })
                    .collect::<Vec<Change>>(),
            ),
        };
        if changes.is_empty() {
            return false;
        }
        let me: Arc<str> = Arc::from(self.instance_id());
        let provenance = Provenance {
            origin: me.clone(),
            hops: vec![me],
            changes,
        };
        link.enqueue(&provenance, thing.id(), Some(thing))
    }
}

/// Runs a link's anti-entropy: a round at start, then every `anti_entropy_secs` and whenever
/// the peer comes back (a reconnect, a send that succeeds after failing); only the hello that
/// learns the peer's wire form when rounds are off. A peer that takes no digests is asked
/// again a period later.
pub(super) async fn anti_entropy_loop(
    links: Weak<Shared>,
    link: Arc<Link>,
    mut stopped: watch::Receiver<bool>,
) {
    let name = &link.config.name;
    let every = Duration::from_secs(link.config.anti_entropy_secs);
    let mut ready = link.transport.ready();
    let mut backoff = Duration::from_secs(1);
    let mut hello_done = false;
    let mut unsupported = false;
    loop {
        let Some(shared) = links.upgrade() else {
            return;
        };
        let links_now = Links { inner: shared };
        let round = tokio::select! {
            r = links_now.anti_entropy(&link, every.is_zero()) => r,
            _ = stopped.changed() => return,
        };
        drop(links_now);
        let wait = match round {
            Ok(round) => {
                backoff = Duration::from_secs(1);
                unsupported = false;
                if every.is_zero() {
                    return;
                }
                hello_done = true;
                link.stats.rounds.fetch_add(1, Ordering::Relaxed);
                link.stats
                    .repaired
                    .fetch_add(round.queued as u64, Ordering::Relaxed);
                if round.differing > 0 {
                    tracing::info!(link = %name, things = round.things, differing = round.differing, queued = round.queued, "anti-entropy round");
                }
                every
            }
            // Asked again after a period: a peer restarting its link answers 404 for a moment.
            Err(Asked::Unsupported(why)) => {
                if every.is_zero() {
                    return;
                }
                if !std::mem::replace(&mut unsupported, true) {
                    tracing::info!(link = %name, %why, "the peer takes no digests: no anti-entropy until it does");
                }
                every
            }
            Err(Asked::Failed(why)) => {
                if hello_done {
                    tracing::debug!(link = %name, %why, "anti-entropy round failed");
                }
                let wait = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(60));
                wait
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = super::reconnected(&mut ready) => {}
            () = link.peer_back.notified() => {}
            _ = stopped.changed() => return,
        }
    }
}

/// One request to the link's peer and its parsed answer.
async fn ask(link: &Link, request: &Request) -> Result<Reply, Asked> {
    let body = serde_json::to_vec(request).expect("a request serializes");
    let Some(answer) = link.transport.request(body) else {
        return Err(Asked::Unsupported(
            "the transport carries no digest requests".into(),
        ));
    };
    let bytes = tokio::time::timeout(REQUEST_TIMEOUT, answer)
        .await
        .map_err(|_| Asked::Failed(format!("no digest answer within {REQUEST_TIMEOUT:?}")))??;
    serde_json::from_slice(&bytes)
        .map_err(|e| Asked::Failed(format!("the peer's digest reply: {e}")))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::{Just, Strategy as _};

    use super::*;

    fn change(path: &str, cell: Cell, wall_ms: u64) -> Change {
        Change {
            path: opentwins_core::model::Pointer::parse(path).unwrap(),
            cell,
            stamp: Stamp {
                wall_ms,
                counter: 0,
                origin: Arc::from("a"),
            },
        }
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn digests_compare_only_what_both_sides_carry() {
        let scope = Scope::new(
            (&s(&["/features"]), &[]),
            (&[], &s(&["/features/camera"])),
            &s(&["/features/lane/desiredProperties"]),
        )
        .unwrap();
        let v = |n: i64| Cell::Value(n.into());
        let base = vec![
            change("/features/lane/properties/x", v(1), 10),
            change("/features/lane/desiredProperties/x", v(2), 11),
            change("/features/camera/properties/y", v(3), 12),
            change("/attributes/a", v(4), 13),
        ];
        let a = Replica::from(base.clone());
        let compared = scope.compared(&a);
        assert_eq!(compared.len(), 1, "{compared:?}");
        assert_eq!(compared[0].path.to_string(), "/features/lane/properties/x");

        // Changes outside the scope do not change the digest; one inside does.
        let mut other = base.clone();
        other[1].stamp.wall_ms = 99;
        other[2].stamp.wall_ms = 99;
        other[3].stamp.wall_ms = 99;
        let b = Replica::from(other);
        assert_eq!(digest(&scope.compared(&a)), digest(&scope.compared(&b)));
        let mut newer = base;
        newer[0].stamp.wall_ms = 20;
        let c = Replica::from(newer);
        assert_ne!(digest(&scope.compared(&a)), digest(&scope.compared(&c)));
        assert_eq!(digest(&[]).len(), 32);
    }

    #[test]
    fn a_peer_reply_with_bad_stamps_is_an_error_not_a_panic() {
        assert!(theirs(&[("/a".into(), "v".into(), "1.0@a".into())]).is_ok());
        for bad in [
            ("/a", "x", "1.0@a"),
            ("/a//b", "v", "1.0@a"),
            ("/a", "v", "soon"),
        ] {
            let bad = (bad.0.to_owned(), bad.1.to_owned(), bad.2.to_owned());
            assert!(theirs(&[bad]).is_err());
        }
    }

    fn segment() -> impl proptest::strategy::Strategy<Value = String> {
        proptest::prop_oneof![
            "[a-c]{1,2}",
            Just("*".to_owned()),
            Just(String::new()),
            "[~/%é ]{1,2}"
        ]
    }

    fn pointer() -> impl proptest::strategy::Strategy<Value = String> {
        proptest::collection::vec(segment(), 0..4).prop_map(|s| format!("/{}", s.join("/")))
    }

    proptest::proptest! {
        // A peer's answer and patterns, shaped like real ones and broken in every field: read
        // or refused, never a panic; what is read compares the same on both sides.
        #[test]
        fn peer_answers_and_patterns_are_read_or_refused(
            stamps in proptest::collection::vec(
                (pointer(), proptest::prop_oneof!["[vor]", "[a-z]{0,2}"],
                 proptest::prop_oneof!["[0-9]{1,14}\\.[0-9]{1,3}@[a-z]{1,3}", "[0-9.@a-z-]{0,12}"]),
                0..12),
            include in proptest::collection::vec(pointer(), 0..3),
            exclude in proptest::collection::vec(pointer(), 0..3),
            owned in proptest::collection::vec(pointer(), 0..3),
        ) {
            let Ok(peer) = theirs(&stamps) else { return Ok(()) };
            let Ok(scope) = Scope::new((&include, &exclude), (&[], &[]), &owned) else {
                return Ok(());
            };
            let compared = scope.compared(&peer);
            proptest::prop_assert!(compared.len() <= 2 * stamps.len());
            proptest::prop_assert_eq!(digest(&compared), digest(&scope.compared(&peer.clone())));
            for c in compared {
                proptest::prop_assert!(!covered(&scope.owned, &c.path));
            }
        }
    }

    #[test]
    fn scopes_refuse_too_many_patterns() {
        let many: Vec<String> = (0..=2 * MAX_PATTERNS).map(|i| format!("/a{i}")).collect();
        assert!(Scope::new((&many, &[]), (&[], &[]), &[]).is_err());
        assert!(Scope::new((&[], &[]), (&[], &[]), &s(&["/a/b"])).is_ok());
    }
}
