//! In-process peers: instances in one process reach each other through a [`Network`], which
//! tests also use to inject faults (delay, duplication, reordering, a peer that is down). A
//! sender to a peer that was down wakes as soon as it is up again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use super::digest::Asked;
use super::{Links, PeerConfig, RequestFuture, SendFuture, Shared, Transport, read};

/// Faults a [`Network`] injects into every delivery (all off by default).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Seed of the fault decisions.
    pub seed: u64,
    /// Each delivery waits a random time up to this long (so deliveries overtake each other).
    pub max_delay: Duration,
    /// Probability that a delivery happens twice.
    pub duplicate: f64,
}

/// Instances of one process, by instance id. Cheap to clone.
#[derive(Clone, Default)]
pub struct Network {
    inner: Arc<NetworkInner>,
}

#[derive(Default)]
struct NetworkInner {
    instances: Mutex<HashMap<String, Weak<Shared>>>,
    down: Mutex<Vec<String>>,
    /// Per instance: true while it is reachable (senders to it wake when it comes back).
    up: Mutex<HashMap<String, watch::Sender<bool>>>,
    faults: Mutex<Option<(Faults, u64)>>,
    in_flight: AtomicUsize,
}

impl Network {
    /// A network without faults.
    pub fn new() -> Network {
        Network::default()
    }

    /// A network that injects `faults` into every delivery.
    pub fn with_faults(faults: Faults) -> Network {
        let n = Network::default();
        let seed = faults.seed;
        *lock(&n.inner.faults) = Some((faults, seed));
        n
    }

    pub(super) fn register(&self, instance: &str, links: &Links) {
        lock(&self.inner.instances).insert(instance.to_owned(), Arc::downgrade(&links.inner));
    }

    /// Makes `instance` unreachable (`true`) or reachable again: deliveries to it fail, so
    /// updates wait in the senders' outboxes.
    pub fn set_down(&self, instance: &str, down: bool) {
        {
            let mut list = lock(&self.inner.down);
            list.retain(|i| i != instance);
            if down {
                list.push(instance.to_owned());
            }
        }
        self.up_signal(instance).send_replace(!down);
    }

    /// The reachability signal of `instance` (created reachable unless it is down).
    fn up_signal(&self, instance: &str) -> watch::Sender<bool> {
        let down = lock(&self.inner.down).iter().any(|i| i == instance);
        lock(&self.inner.up)
            .entry(instance.to_owned())
            .or_insert_with(|| watch::channel(!down).0)
            .clone()
    }

    /// Deliveries started and not finished (delayed ones included).
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::SeqCst)
    }

    pub(super) fn transport(&self, from: &str, to: &str) -> InProcessPeer {
        InProcessPeer {
            network: self.clone(),
            from: from.to_owned(),
            to: to.to_owned(),
            pipe: Mutex::new(None),
        }
    }

    /// The next fault decision: (delay, duplicate).
    fn roll(&self) -> (Duration, bool) {
        let mut faults = lock(&self.inner.faults);
        let Some((f, state)) = faults.as_mut() else {
            return (Duration::ZERO, false);
        };
        let mut next = || {
            *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = *state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) as f64 / u64::MAX as f64
        };
        let delay = f.max_delay.mul_f64(next());
        (delay, next() < f.duplicate)
    }
}

/// The transport of a link to an in-process peer.
pub(super) struct InProcessPeer {
    network: Network,
    from: String,
    to: String,
    /// Faithful deliveries, applied in order by a task of their own (the peer's side of the
    /// wire: the sender prepares the next message while the peer applies this one).
    pipe: Mutex<Option<mpsc::UnboundedSender<Delivery>>>,
}

/// A message and where its outcome goes.
type Delivery = (Vec<u8>, oneshot::Sender<Result<Option<String>, String>>);

impl InProcessPeer {
    /// The peer's links and the name of its link back to us.
    fn target(&self) -> Result<(Links, String), String> {
        if lock(&self.network.inner.down).contains(&self.to) {
            return Err(format!("instance '{}' is down", self.to));
        }
        let shared = lock(&self.network.inner.instances)
            .get(&self.to)
            .and_then(Weak::upgrade)
            .ok_or_else(|| format!("no instance '{}' in this process", self.to))?;
        let name = read(&shared.links)
            .values()
            .find(|l| {
                l.config.direction.receives()
                    && matches!(&l.config.peer, PeerConfig::InProcess { instance } if *instance == self.from)
            })
            .map(|l| l.config.name.clone())
            .ok_or_else(|| format!("instance '{}' has no link from '{}'", self.to, self.from))?;
        Ok((Links { inner: shared }, name))
    }

    /// Delivers `message` as the peer's own link would take it.
    async fn deliver(&self, message: &[u8]) -> Result<Option<String>, String> {
        let (links, name) = self.target()?;
        match links.receive(&name, None, message).await {
            Ok(_) => Ok(None),
            Err(e) if e.status() >= 500 => Err(e.to_string()),
            Err(e) => Ok(Some(e.to_string())),
        }
    }

    /// The queue of the task that delivers in order (started on first use).
    fn pipe(&self) -> mpsc::UnboundedSender<Delivery> {
        let mut slot = lock(&self.pipe);
        if let Some(tx) = slot.as_ref().filter(|tx| !tx.is_closed()) {
            return tx.clone();
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<Delivery>();
        let peer = self.network.transport(&self.from, &self.to);
        tokio::spawn(async move {
            while let Some((message, outcome)) = rx.recv().await {
                let _ = outcome.send(peer.deliver(&message).await);
            }
        });
        *slot = Some(tx.clone());
        tx
    }
}

impl Transport for InProcessPeer {
    fn send(&self, message: Vec<u8>) -> SendFuture<'_> {
        let (delay, twice) = self.network.roll();
        if delay.is_zero() && !twice {
            // Faithful delivery: queued at once (a window's messages are on the way before
            // the first is answered), applied in order, and the peer has it (durably) when
            // the future resolves.
            let (outcome, result) = oneshot::channel();
            let queued = self.pipe().send((message, outcome)).is_ok();
            return Box::pin(async move {
                let stopped = || "in-process delivery stopped".to_owned();
                if !queued {
                    return Err(stopped());
                }
                result.await.unwrap_or_else(|_| Err(stopped()))
            });
        }
        Box::pin(async move {
            let (links, name) = self.target()?;
            // Faulty delivery: acknowledged now, delivered later (maybe twice, maybe after
            // later updates).
            let copies = if twice { 2 } else { 1 };
            for copy in 0..copies {
                let (links, name, message) = (links.clone(), name.clone(), message.clone());
                let network = self.network.clone();
                let delay = if copy == 0 {
                    delay
                } else {
                    self.network.roll().0
                };
                network.inner.in_flight.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = links.receive(&name, None, &message).await;
                    network.inner.in_flight.fetch_sub(1, Ordering::SeqCst);
                });
            }
            Ok(None)
        })
    }

    fn ready(&self) -> Option<watch::Receiver<bool>> {
        Some(self.network.up_signal(&self.to).subscribe())
    }

    fn request(&self, body: Vec<u8>) -> Option<RequestFuture<'_>> {
        Some(Box::pin(async move {
            let (links, name) = self.target().map_err(Asked::Failed)?;
            links.digest(&name, None, &body).await.map_err(|e| {
                if e.status() >= 500 {
                    Asked::Failed(e.to_string())
                } else {
                    Asked::Unsupported(e.to_string())
                }
            })
        }))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_coming_back_up_signals_its_senders() {
        let network = Network::new();
        let peer = network.transport("a", "b");
        let ready = peer.ready().expect("in-process peers signal");
        assert!(*ready.borrow(), "a peer starts reachable");
        network.set_down("b", true);
        assert!(!*ready.borrow());
        // A sender that looks only now sees it down too.
        assert!(!*peer.ready().unwrap().borrow());
        network.set_down("b", false);
        assert!(*ready.borrow(), "the sender is not told the peer is back");
        // Other instances are not affected.
        assert!(*network.transport("b", "c").ready().unwrap().borrow());
    }
}
