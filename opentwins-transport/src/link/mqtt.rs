//! Links over an MQTT broker: updates are published (QoS 1 or 2) to the link's `publish` topic
//! and read from its `subscribe` filter, with `no_local` so an instance never reads its own.
//!
//! Up to the broker's receive maximum (MQTT 5 CONNACK; 20 for a default Mosquitto) publishes
//! are in flight, each carrying a batch of updates; what waits stays in the outbox, where it
//! merges and joins the next batch, not in the client's queue.
//!
//! The client keeps an MQTT 5 persistent session (clean start off, one hour expiry): updates a
//! peer publishes while this instance is away wait at the broker. Updates this instance cannot
//! publish wait in the link's outbox; `send` fails fast while disconnected.
//!
//! The connect options (credentials, TLS with CA and client certificate) come from the same
//! function as the MQTT bridge's (`crate::mqtt::connect`); the link's status reports why the
//! client is not connected (the broker refused the login, the certificate did not verify).
//!
//! Anti-entropy (`digest.rs`) over MQTT is MQTT 5 request/response: a link publishing to
//! `…/car-1/up` also subscribes `…/car-1/digest` ([`reply_topic`]) and publishes its digest
//! requests to `publish` with content type [`DIGEST_REQUEST`], that topic as response topic
//! and correlation data; the peer's receiving link answers on the response topic with content
//! type [`DIGEST_REPLY`] and the same correlation data. A peer answers only on a response topic
//! that differs from the request's topic in its last level alone, so a request cannot make it
//! publish elsewhere. Neither kind of message is ever taken for an update.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentwins_core::policy::AuthContext;
use paho_mqtt as paho;
use tokio::sync::{Notify, mpsc, oneshot, watch};

use super::digest::Asked;
use super::{LinkConfig, Links, PeerConfig, RequestFuture, SendFuture, Transport};
use crate::mqtt::connect;

/// How long the broker may take to acknowledge a publish (a full window queued behind the
/// broker's receive maximum included).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);
/// Content type of an anti-entropy request over MQTT.
pub(super) const DIGEST_REQUEST: &str = "application/vnd.opentwins.digest+json";
/// Content type of its answer.
pub(super) const DIGEST_REPLY: &str = "application/vnd.opentwins.digest-reply+json";
/// How long a digest request waits for its answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Unanswered requests after which a peer that never answered one is taken for one that
/// takes no digests (a plain Ditto connection reading the topic, say).
const UNANSWERED: u32 = 3;

/// Digest requests waiting for their answer, by correlation data.
type Pending = Arc<Mutex<HashMap<Vec<u8>, oneshot::Sender<Vec<u8>>>>>;

pub(super) struct MqttPeer {
    client: paho::AsyncClient,
    topic: String,
    qos: i32,
    stop: watch::Sender<bool>,
    /// True once connected and subscribed.
    ready: watch::Receiver<bool>,
    /// Why the last connection attempt failed or the connection was lost.
    problem: Arc<Mutex<Option<String>>>,
    /// The broker's receive maximum (MQTT 5 CONNACK): publishes it takes unacknowledged.
    receive_maximum: Arc<AtomicUsize>,
    /// Where the peer answers digest requests ([`reply_topic`]); `None`: no anti-entropy.
    reply_topic: Option<String>,
    pending: Pending,
    /// Correlation data of the next request: this client's id and a counter.
    correlation: (String, AtomicU64),
    /// Whether the peer ever answered a digest request, and how many went unanswered.
    answered: AtomicBool,
    unanswered: AtomicU32,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Connects (in the background, retrying) and starts reading the peer's updates.
pub(super) fn connect(links: &Links, config: &LinkConfig) -> Result<Arc<dyn Transport>, String> {
    let PeerConfig::Mqtt {
        url,
        publish,
        subscribe,
        qos,
        client_id,
        username,
        password,
        tls,
    } = &config.peer
    else {
        unreachable!("called for MQTT peers only")
    };
    if !(1..=2).contains(qos) {
        return Err(format!("qos must be 1 or 2, not {qos}"));
    }
    let (uri, _) = connect::broker_uri(url).map_err(|e| e.to_string())?;
    let options = connect::connect_options(&connect::Connect {
        url,
        username: username.as_deref(),
        password: password.as_deref(),
        tls,
        clean_start: false,
        session_expiry: Duration::from_secs(3600),
        keep_alive: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(10),
        max_packet: None,
        will: None,
    })
    .map_err(|e| e.to_string())?;
    let client_id = client_id
        .clone()
        .unwrap_or_else(|| format!("{}-{}", links.instance_id(), config.name));
    let correlation = (client_id.clone(), AtomicU64::new(0));
    let create = paho::CreateOptionsBuilder::new()
        .server_uri(uri)
        .client_id(client_id)
        .mqtt_version(paho::MQTT_VERSION_5)
        .persistence(paho::PersistenceType::None)
        .finalize();
    let client = paho::AsyncClient::new(create).map_err(|e| e.to_string())?;
    // Why the client is not connected, for the link's status.
    let problem = Arc::new(Mutex::new(None::<String>));
    // True while connected (and subscribed): the sender waits for it to turn true again
    // instead of sleeping out its backoff when the broker comes back.
    let (ready_tx, ready) = watch::channel(false);
    let ready_tx = Arc::new(ready_tx);
    // Notified when the connection is lost: `connect::keep_connected` connects again.
    let lost = Arc::new(Notify::new());
    let on_lost = {
        let (problem, ready_tx, lost) = (problem.clone(), ready_tx.clone(), lost.clone());
        Arc::new(move |why: String| {
            ready_tx.send_replace(false);
            *lock(&problem) = Some(why);
            lost.notify_one();
        })
    };
    {
        let on_lost = on_lost.clone();
        client.set_connection_lost_callback(move |_| {
            on_lost("the connection to the broker was lost".to_owned());
        });
    }
    client.set_disconnected_callback(move |_, _, reason| {
        on_lost(format!("the broker disconnected the link: {reason}"));
    });

    let (tx, mut rx) = mpsc::channel::<paho::Message>(1024);
    client.set_message_callback(move |_, msg| {
        if let Some(msg) = msg {
            // Blocks the library's thread while the engine is behind: backpressure, no loss.
            let _ = tx.blocking_send(msg);
        }
    });
    // Rounds only on a link to one peer: both ways, a subscribe topic without wildcards. A
    // link that only sends publishes to whoever reads the topic (a hub's fleet-down to every
    // edge), one with a wildcard hears many peers.
    let one_peer = config.direction == super::Direction::Both
        && subscribe
            .as_deref()
            .is_some_and(|t| !t.contains(['+', '#']));
    let reply_topic = (config.anti_entropy_secs > 0 && one_peer)
        .then(|| reply_topic(publish))
        .flatten();
    let runtime = tokio::runtime::Handle::current();
    {
        let (filter, qos, problem) = (subscribe.clone(), *qos, problem.clone());
        let (ready_tx, replies, name) =
            (ready_tx.clone(), reply_topic.clone(), config.name.clone());
        client.set_connected_callback(move |cli| {
            *lock(&problem) = None;
            let (cli, ready_tx, problem) = (cli.clone(), ready_tx.clone(), problem.clone());
            let (filter, replies, name) = (filter.clone(), replies.clone(), name.clone());
            runtime.spawn(async move {
                let opts = || {
                    paho::SubscribeOptionsBuilder::new()
                        .no_local(true)
                        .finalize()
                };
                if let Some(filter) = filter
                    && let Err(e) = cli
                        .subscribe_with_options(filter.as_str(), qos, opts(), None)
                        .await
                {
                    tracing::error!(link = %name, %filter, error = %e, "link subscribe failed");
                    *lock(&problem) = Some(format!("subscribing to '{filter}' failed: {e}"));
                    return;
                }
                ready_tx.send_replace(true);
                // Answers to this link's digest requests; without them, no anti-entropy.
                if let Some(topic) = replies
                    && let Err(e) = cli.subscribe_with_options(topic.as_str(), 1, opts(), None).await
                {
                    tracing::warn!(link = %name, %topic, error = %e, "subscribing to digest answers failed: no anti-entropy");
                }
            });
        });
    }
    let subscribes = subscribe.is_some();
    let per_peer = config.subject.contains(PEER);
    let (template, filter) = (
        config.subject.clone(),
        subscribe.clone().unwrap_or_default(),
    );
    let pending: Pending = Arc::default();
    let (stop, mut stopped) = watch::channel(false);
    // MQTT's default when the broker names none.
    let receive_maximum = Arc::new(AtomicUsize::new(65_535));
    let (c, name, links, url, last_problem, receive_max, waiting) = (
        client.clone(),
        config.name.clone(),
        Arc::downgrade(&links.inner),
        url.clone(),
        problem.clone(),
        receive_maximum.clone(),
        pending.clone(),
    );
    tokio::spawn(async move {
        let connection = connect::keep_connected(
            &c,
            options,
            (Duration::from_millis(100), Duration::from_secs(5)),
            &lost,
            stopped.clone(),
            |r| match r {
                // The connected callback has cleared the last problem.
                Ok(rsp) => {
                    // More in flight than the broker takes would only queue in the client,
                    // where updates can neither merge nor join a batch.
                    if let Some(max) = rsp.properties().get_int(paho::PropertyCode::ReceiveMaximum)
                    {
                        receive_max
                            .store(usize::try_from(max).unwrap_or(1).max(1), Ordering::Relaxed);
                    }
                    if !subscribes {
                        ready_tx.send_replace(true);
                    }
                }
                Err(e) => {
                    // Loud once per reason (a wrong password or CA does not heal by itself).
                    let why = format!("connecting to {url} failed: {e}");
                    let mut last = lock(&last_problem);
                    if last.as_deref() == Some(why.as_str()) {
                        tracing::debug!(link = %name, error = %why, "link connect failed");
                    } else {
                        tracing::warn!(link = %name, error = %why, "link connect failed; retrying");
                        *last = Some(why);
                    }
                }
            },
        );
        let receiving = async {
            loop {
                let msg = tokio::select! {
                    m = rx.recv() => match m { Some(m) => m, None => return },
                    _ = stopped.wait_for(|s| *s) => return,
                };
                let Some(inner) = links.upgrade() else { return };
                let auth = if per_peer {
                    match peer_subject(&template, &filter, msg.topic()) {
                        Some(auth) => Some(auth),
                        None => {
                            tracing::warn!(link = %name, topic = msg.topic(),
                                "link: the topic names no valid peer subject; update dropped");
                            continue;
                        }
                    }
                } else {
                    None
                };
                let links = Links { inner };
                let props = msg.properties();
                match props.get_string(paho::PropertyCode::ContentType).as_deref() {
                    Some(DIGEST_REPLY) => {
                        let waiter = props
                            .get_binary(paho::PropertyCode::CorrelationData)
                            .and_then(|id| lock(&waiting).remove(&id));
                        if let Some(waiter) = waiter {
                            let _ = waiter.send(msg.payload().to_vec());
                        }
                        continue;
                    }
                    Some(DIGEST_REQUEST) => {
                        answer_digest(&links, &c, &name, auth.as_ref(), &msg).await;
                        continue;
                    }
                    _ => {}
                }
                // A refused update is counted by `receive`; the broker has already been answered.
                let _ = links.receive(&name, auth.as_ref(), msg.payload()).await;
            }
        };
        // Either ends the link: a stop, or the instance gone.
        tokio::select! {
            () = connection => {}
            () = receiving => {}
        }
        let _ = c.disconnect(paho::DisconnectOptions::new()).await;
    });
    Ok(Arc::new(MqttPeer {
        client,
        topic: publish.clone(),
        qos: *qos,
        stop,
        ready,
        problem,
        receive_maximum,
        reply_topic,
        pending,
        correlation,
        answered: AtomicBool::new(false),
        unanswered: AtomicU32::new(0),
    }))
}

/// Answers a peer's digest request (when the link receives and the response topic is allowed)
/// with [`DIGEST_REPLY`]: the reply, or `{"status", "error", "message"}` for a refusal.
async fn answer_digest(
    links: &Links,
    client: &paho::AsyncClient,
    name: &str,
    auth: Option<&opentwins_core::policy::AuthContext>,
    msg: &paho::Message,
) {
    let props = msg.properties();
    let (Some(topic), Some(correlation)) = (
        props.get_string(paho::PropertyCode::ResponseTopic),
        props.get_binary(paho::PropertyCode::CorrelationData),
    ) else {
        tracing::warn!(link = %name, "a digest request without response topic or correlation data; dropped");
        return;
    };
    if !reply_allowed(msg.topic(), &topic) {
        tracing::warn!(link = %name, request = msg.topic(), response = %topic.escape_debug(),
            "a digest request names a response topic outside its own; dropped");
        return;
    }
    let payload = match links.digest(name, auth, msg.payload()).await {
        Ok(reply) => reply,
        Err(e) => serde_json::to_vec(&serde_json::json!({
            "status": e.status(), "error": e.code(), "message": e.message()
        }))
        .expect("an error serializes"),
    };
    let mut reply_props = paho::Properties::new();
    let _ = reply_props.push_string(paho::PropertyCode::ContentType, DIGEST_REPLY);
    let _ = reply_props.push_binary(paho::PropertyCode::CorrelationData, correlation);
    let reply = paho::MessageBuilder::new()
        .topic(topic)
        .payload(payload)
        .qos(1)
        .properties(reply_props)
        .finalize();
    if let Err(e) = client.try_publish(reply) {
        tracing::warn!(link = %name, error = %e, "publishing a digest answer failed");
    }
}

/// The topic a link publishing to `publish` reads digest answers from: its last level
/// replaced by `digest` (`opentwins/links/car-1/up` → `opentwins/links/car-1/digest`); `None`
/// for a topic of one level or with wildcards.
fn reply_topic(publish: &str) -> Option<String> {
    let (base, _) = publish.rsplit_once('/')?;
    (!base.is_empty() && !publish.contains(['+', '#'])).then(|| format!("{base}/digest"))
}

/// Whether a peer may be answered on `response` for a request published on `request`: the
/// same levels but the last, no wildcards.
fn reply_allowed(request: &str, response: &str) -> bool {
    let (Some((req_base, _)), Some((rsp_base, last))) =
        (request.rsplit_once('/'), response.rsplit_once('/'))
    else {
        return false;
    };
    req_base == rsp_base && !last.is_empty() && !response.contains(['+', '#', '\0'])
}

/// Removes a request's entry when its future ends, answered or not.
struct Waiting<'a> {
    pending: &'a Pending,
    id: Vec<u8>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        lock(self.pending).remove(&self.id);
    }
}

impl Transport for MqttPeer {
    fn send(&self, message: Vec<u8>) -> SendFuture<'_> {
        // Published now, in call order (the window's messages reach the broker in order);
        // the future waits for the broker's acknowledgement.
        if !self.client.is_connected() {
            let why = lock(&self.problem)
                .clone()
                .unwrap_or_else(|| "not connected to the broker".to_owned());
            return Box::pin(std::future::ready(Err(why)));
        }
        let token = self
            .client
            .publish(paho::Message::new(self.topic.as_str(), message, self.qos));
        Box::pin(async move {
            match tokio::time::timeout(PUBLISH_TIMEOUT, token).await {
                Ok(Ok(())) => Ok(None),
                Ok(Err(e)) => Err(format!("publish failed: {e}")),
                Err(_) => Err(format!(
                    "publish not acknowledged within {PUBLISH_TIMEOUT:?}"
                )),
            }
        })
    }

    fn close(&self) {
        let _ = self.stop.send(true);
    }

    fn max_in_flight(&self) -> usize {
        self.receive_maximum.load(Ordering::Relaxed)
    }

    fn ready(&self) -> Option<watch::Receiver<bool>> {
        Some(self.ready.clone())
    }

    fn request(&self, body: Vec<u8>) -> Option<RequestFuture<'_>> {
        let reply_topic = self.reply_topic.as_ref()?;
        let (client_id, counter) = &self.correlation;
        let mut id = client_id.as_bytes().to_vec();
        id.push(b'/');
        id.extend_from_slice(&counter.fetch_add(1, Ordering::Relaxed).to_be_bytes());
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id.clone(), tx);
        let waiting = Waiting {
            pending: &self.pending,
            id: id.clone(),
        };
        let mut props = paho::Properties::new();
        let _ = props.push_string(paho::PropertyCode::ContentType, DIGEST_REQUEST);
        let _ = props.push_string(paho::PropertyCode::ResponseTopic, reply_topic);
        let _ = props.push_binary(paho::PropertyCode::CorrelationData, id);
        let message = paho::MessageBuilder::new()
            .topic(self.topic.as_str())
            .payload(body)
            .qos(self.qos)
            .properties(props)
            .finalize();
        let connected = self.client.is_connected();
        let token = connected.then(|| self.client.publish(message));
        Some(Box::pin(async move {
            let _waiting = waiting;
            let Some(token) = token else {
                return Err(Asked::Failed("not connected to the broker".into()));
            };
            tokio::time::timeout(PUBLISH_TIMEOUT, token)
                .await
                .map_err(|_| Asked::Failed("digest request not acknowledged".into()))?
                .map_err(|e| Asked::Failed(format!("publishing a digest request: {e}")))?;
            let Ok(Ok(answer)) = tokio::time::timeout(REPLY_TIMEOUT, rx).await else {
                let never = !self.answered.load(Ordering::Relaxed);
                if never && self.unanswered.fetch_add(1, Ordering::Relaxed) + 1 >= UNANSWERED {
                    return Err(Asked::Unsupported(format!(
                        "{UNANSWERED} digest requests went unanswered"
                    )));
                }
                return Err(Asked::Failed(format!(
                    "no digest answer within {REPLY_TIMEOUT:?}"
                )));
            };
            self.answered.store(true, Ordering::Relaxed);
            refusal(&answer).map_or(Ok(answer), Err)
        }))
    }

    fn connection(&self) -> Option<Result<(), String>> {
        let problem = lock(&self.problem).clone();
        Some(match (self.client.is_connected(), problem) {
            (true, None) => Ok(()),
            // Connected, but the subscription was refused: the link receives nothing.
            (_, Some(why)) => Err(why),
            (false, None) => Err("not connected to the broker".to_owned()),
        })
    }
}

/// The refusal a digest answer carries (`{"status": 4xx/5xx, …}`), as the HTTP transport
/// reads the same status.
fn refusal(answer: &[u8]) -> Option<Asked> {
    #[derive(serde::Deserialize)]
    struct Refused {
        status: u16,
        #[serde(default)]
        message: String,
    }
    let r: Refused = serde_json::from_slice(answer).ok()?;
    let why = format!(
        "the peer refused the digest request ({}): {}",
        r.status, r.message
    );
    Some(Asked::refused(r.status, why))
}

/// The placeholder of [`super::LinkConfig::subject`] for the peer a topic names.
pub(super) const PEER: &str = "{peer}";

/// The subject `template` with [`PEER`] replaced by the level of `topic` that the first `+`
/// of `filter` matched; `None` if there is none or the result is not a valid subject id.
fn peer_subject(template: &str, filter: &str, topic: &str) -> Option<AuthContext> {
    let at = filter.split('/').position(|level| level == "+")?;
    let peer = topic.split('/').nth(at).filter(|p| !p.is_empty())?;
    let subject = template.replace(PEER, peer);
    opentwins_core::policy::validate_subject_id(&subject).ok()?;
    Some(AuthContext::new([subject]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_answers_go_only_beside_the_request_topic() {
        assert!(reply_allowed(
            "opentwins/links/car-1/up",
            "opentwins/links/car-1/down"
        ));
        assert!(reply_allowed("fleet/car-1", "fleet/hub"));
        for bad in [
            "opentwins/links/car-2/down",
            "opentwins/links/car-1/",
            "opentwins/links/car-1/+",
            "opentwins/links/car-1/#",
            "opentwins/things/car-1/down",
            "down",
        ] {
            assert!(!reply_allowed("opentwins/links/car-1/up", bad), "{bad}");
        }
        assert!(!reply_allowed("up", "down"));
        let mine = reply_topic("opentwins/links/car-1/up").unwrap();
        assert_eq!(mine, "opentwins/links/car-1/digest");
        assert!(reply_allowed("opentwins/links/car-1/up", &mine));
        assert_eq!(reply_topic("up"), None);
        assert_eq!(reply_topic("/up"), None);
    }

    #[test]
    fn a_refused_digest_request_reads_like_an_http_status() {
        let refused =
            |status: u16| refusal(format!(r#"{{"status":{status},"message":"m"}}"#).as_bytes());
        assert!(matches!(refused(404), Some(Asked::Unsupported(_))));
        assert!(matches!(refused(403), Some(Asked::Failed(_))));
        assert!(matches!(refused(503), Some(Asked::Failed(_))));
        assert!(refusal(br#"{"instance":"hub","binary":true,"differ":{}}"#).is_none());
    }

    #[test]
    fn the_topic_names_the_peer() {
        let filter = "opentwins/links/+/up";
        let subject =
            |topic: &str| peer_subject("link:{peer}", filter, topic).map(|a| a.subjects().to_vec());
        assert_eq!(
            subject("opentwins/links/car-1/up"),
            Some(vec!["link:car-1".to_owned()])
        );
        assert_eq!(subject("opentwins/links//up"), None);
        assert_eq!(subject("opentwins/links"), None);
        assert_eq!(
            peer_subject("link:{peer}", "fleet/#", "fleet/a").map(|_| ()),
            None
        );
    }
}
