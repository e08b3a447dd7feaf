//! The bridge: a cheap cloneable [`MqttHandle`] and the [`MqttDriver`] future that owns the
//! client, applies inbound messages and publishes outbound events.
//!
//! Threads and backpressure: the client library calls back on its own thread. The message
//! callback blocks on a bounded queue when the engine is behind, which stops the library from
//! reading the socket (nothing is dropped). The inbound loop therefore never waits for the
//! library (it never awaits a delivery token); tokens are awaited in small spawned tasks.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentwins_core::policy::AuthContext;
use opentwins_core::protocol::{Message, ThingEvent};
use opentwins_core::{FieldSelector, Pointer, ThingId, Twins};
use paho_mqtt as paho;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tracing::Instrument as _;

use super::config::{Mapping, MqttConfig, PACKET_HEADROOM};
use super::connect;
use super::error::MqttError;
use super::mapping::{self, DITTO_CONTENT_TYPE, Handled, Incoming, Reply, Telemetry};
use super::template::{EventTopic, TelemetryTemplate};

/// The connection state of the bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    /// Not connected: before the first connection, or after shutdown.
    Disconnected,
    /// Connected to the broker.
    Connected,
    /// The connection failed or was lost; retrying with backoff.
    Reconnecting,
}

/// Counters of the bridge (monotonic since start), for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MqttMetrics {
    /// Messages received from the broker.
    pub messages_in: u64,
    /// Messages the broker acknowledged (events, replies, status).
    pub messages_out: u64,
    /// Inbound messages applied by the engine.
    pub commands_applied: u64,
    /// Inbound commands the engine refused (policy, precondition, not found, limits).
    pub commands_refused: u64,
    /// Inbound messages that could not be read (bad JSON, topic, oversize, not a command).
    pub invalid_messages: u64,
    /// Publishes that failed (including oversize events).
    pub publish_errors: u64,
    /// Events the outbound stream missed because it fell behind.
    pub events_lagged: u64,
    /// Events not published because `outbound.fields` selected nothing of them (not an error).
    pub events_unselected: u64,
    /// Successful connections (the first one and every reconnect).
    pub connects: u64,
    /// Connections lost.
    pub connections_lost: u64,
}

impl MqttMetrics {
    /// All errors: invalid messages, refused commands, failed publishes and lagged events.
    pub fn errors(&self) -> u64 {
        self.invalid_messages + self.commands_refused + self.publish_errors + self.events_lagged
    }
}

#[derive(Default)]
struct Counters {
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    commands_applied: AtomicU64,
    commands_refused: AtomicU64,
    invalid_messages: AtomicU64,
    publish_errors: AtomicU64,
    events_lagged: AtomicU64,
    events_unselected: AtomicU64,
    connects: AtomicU64,
    connections_lost: AtomicU64,
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// State shared by the handle, the driver and the library's callbacks (not the client, so the
/// callbacks hold no reference cycle).
struct Shared {
    config: MqttConfig,
    state: watch::Sender<ConnectionState>,
    counters: Counters,
    shutdown: watch::Sender<bool>,
    done: watch::Sender<bool>,
    /// Notified when the connection is lost (see [`connect::keep_connected`]).
    lost: Notify,
    /// The span every log line of this bridge is in (it names the client).
    span: tracing::Span,
}

/// A cheap, cloneable handle on a running bridge.
#[derive(Clone)]
pub struct MqttHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MqttHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttHandle")
            .field("client_id", &self.shared.config.client_id())
            .field("state", &self.state())
            .finish()
    }
}

impl MqttHandle {
    /// The current connection state.
    pub fn state(&self) -> ConnectionState {
        *self.shared.state.borrow()
    }

    /// A receiver that sees every state change.
    pub fn watch_state(&self) -> watch::Receiver<ConnectionState> {
        self.shared.state.subscribe()
    }

    /// Waits until the bridge is connected (and subscribed), or `timeout` passes.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut rx = self.watch_state();
        tokio::time::timeout(timeout, rx.wait_for(|s| *s == ConnectionState::Connected))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> MqttMetrics {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MqttMetrics {
            messages_in: get(&c.messages_in),
            messages_out: get(&c.messages_out),
            commands_applied: get(&c.commands_applied),
            commands_refused: get(&c.commands_refused),
            invalid_messages: get(&c.invalid_messages),
            publish_errors: get(&c.publish_errors),
            events_lagged: get(&c.events_lagged),
            events_unselected: get(&c.events_unselected),
            connects: get(&c.connects),
            connections_lost: get(&c.connections_lost),
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &MqttConfig {
        &self.shared.config
    }

    /// Stops the bridge: stops consuming, publishes the retained `offline` status, disconnects
    /// cleanly (the broker keeps the session for `session_expiry`), and returns when the driver
    /// has finished. The driver must be running (or be run) for this to return.
    pub async fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
        let mut done = self.shared.done.subscribe();
        let _ = done.wait_for(|d| *d).await;
    }
}

/// The bridge's driver: run it (or spawn it) for the bridge to do anything.
#[must_use = "the bridge does nothing unless its driver runs"]
pub struct MqttDriver {
    shared: Arc<Shared>,
    client: paho::AsyncClient,
    connect: paho::ConnectOptions,
    inbound: mpsc::Receiver<paho::Message>,
    routes: Arc<Vec<Route>>,
    twins: Twins,
    events: Option<Outbound>,
    deltas: Option<Deltas>,
}

/// One inbound subscription, resolved.
struct Route {
    filter: String,
    matcher: paho::TopicFilter,
    qos: i32,
    auth: AuthContext,
    telemetry: Option<Telemetry>,
}

struct Outbound {
    subscription: opentwins_core::engine::Subscription,
    topic: EventTopic,
    auth: AuthContext,
    extra_fields: Option<FieldSelector>,
    fields: Option<FieldSelector>,
}

/// The retained desired/reported deltas: every event (unfiltered: the bridge is trusted; broker
/// ACLs guard the topic) that may change a thing's delta recomputes it from the thing's state.
struct Deltas {
    subscription: opentwins_core::engine::Subscription,
    topic: EventTopic,
    /// The delta last published per thing; `{}` stands for the empty payload that cleared it.
    last: HashMap<ThingId, Value>,
    /// Things seen without any `desiredProperties`: a report to their `properties` (a camera
    /// frame, a lane decision) cannot give them a delta, so it costs nothing here.
    undesired: std::collections::HashSet<ThingId>,
}

/// Starts the MQTT bridge.
#[derive(Debug)]
pub struct MqttBridge;

impl MqttBridge {
    /// Validates `config`, creates the client and subscribes to the engine's events (so no
    /// event after this call is missed). Nothing touches the network until the driver runs.
    /// Must be called inside a Tokio runtime.
    pub fn start(config: MqttConfig, twins: Twins) -> Result<(MqttHandle, MqttDriver), MqttError> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| MqttError::config("the MQTT bridge must start inside a Tokio runtime"))?;
        let (uri, _) = config.broker_uri()?;
        let default_auth = auth_of(&config.subject, &[]);

        let routes = config
            .subscriptions
            .iter()
            .map(|s| {
                let telemetry = match s.mapping {
                    Mapping::Ditto => None,
                    Mapping::Telemetry => Some(Telemetry {
                        template: TelemetryTemplate::parse(
                            &s.template.replace("{instance}", &config.instance_id),
                        )?,
                        feature: s.feature.clone(),
                        binary_property: s.binary_property.clone(),
                    }),
                };
                let filter = match (&telemetry, s.filter.is_empty()) {
                    (Some(t), true) => t.template.filter(),
                    _ => s.filter.replace("{instance}", &config.instance_id),
                };
                let matcher = paho::TopicFilter::new(filter.clone())
                    .map_err(|e| MqttError::config(format!("filter '{filter}': {e}")))?;
                Ok(Route {
                    filter,
                    matcher,
                    qos: i32::from(s.qos),
                    auth: if s.subject.is_empty() {
                        default_auth.clone()
                    } else {
                        auth_of(&s.subject, &[])
                    },
                    telemetry,
                })
            })
            .collect::<Result<Vec<_>, MqttError>>()?;

        let events = if config.outbound.enabled {
            let auth = if config.outbound.system {
                AuthContext::system()
            } else {
                auth_of(&config.outbound.subject, &config.subject)
            };
            Some(Outbound {
                subscription: twins.subscribe(auth.clone(), config.outbound.filter.as_deref())?,
                topic: EventTopic::parse(&config.outbound.topic)?,
                auth,
                extra_fields: config
                    .outbound
                    .extra_fields
                    .as_deref()
                    .map(FieldSelector::parse)
                    .transpose()?,
                fields: config
                    .outbound
                    .fields
                    .as_deref()
                    .map(FieldSelector::parse)
                    .transpose()?,
            })
        } else {
            None
        };

        let deltas = match config.delta_pattern() {
            Some(pattern) => Some(Deltas {
                subscription: twins.subscribe(AuthContext::system(), None)?,
                topic: EventTopic::parse(pattern)?,
                last: HashMap::new(),
                undesired: std::collections::HashSet::new(),
            }),
            None => None,
        };

        let buffered = i32::try_from(config.max_buffered_messages).unwrap_or(i32::MAX);
        let persistence = match &config.persistence_dir {
            Some(dir) => paho::PersistenceType::FilePath(dir.clone()),
            None => paho::PersistenceType::None,
        };
        let create = paho::CreateOptionsBuilder::new()
            .server_uri(uri)
            .client_id(config.client_id())
            .mqtt_version(paho::MQTT_VERSION_5)
            .max_buffered_messages(buffered)
            .send_while_disconnected(true)
            .allow_disconnected_send_at_anytime(true)
            .persistence(persistence)
            .finalize();
        let client = paho::AsyncClient::new(create).map_err(MqttError::client)?;
        let connect = connect_options(&config)?;

        let (state, _) = watch::channel(ConnectionState::Disconnected);
        let shared = Arc::new(Shared {
            state,
            counters: Counters::default(),
            shutdown: watch::channel(false).0,
            done: watch::channel(false).0,
            lost: Notify::new(),
            span: tracing::info_span!("mqtt_bridge", client = %config.client_id()),
            config,
        });
        let routes = Arc::new(routes);
        let (tx, inbound) = mpsc::channel(shared.config.inbound_queue);
        install_callbacks(&client, &shared, &routes, tx, runtime);

        let handle = MqttHandle {
            shared: shared.clone(),
        };
        Ok((
            handle,
            MqttDriver {
                shared,
                client,
                connect,
                inbound,
                routes,
                twins,
                events,
                deltas,
            },
        ))
    }

    /// [`MqttBridge::start`] and spawn the driver on the current runtime.
    pub fn spawn(
        config: MqttConfig,
        twins: Twins,
    ) -> Result<(MqttHandle, tokio::task::JoinHandle<()>), MqttError> {
        let (handle, driver) = MqttBridge::start(config, twins)?;
        Ok((handle, tokio::spawn(driver.run())))
    }
}

fn auth_of(subjects: &[String], fallback: &[String]) -> AuthContext {
    if subjects.is_empty() {
        AuthContext::new(fallback.iter().cloned())
    } else {
        AuthContext::new(subjects.iter().cloned())
    }
}

fn connect_options(config: &MqttConfig) -> Result<paho::ConnectOptions, MqttError> {
    let will = config.status.enabled.then(|| {
        paho::MessageBuilder::new()
            .topic(config.status_topic())
            .payload(config.status.offline.as_bytes())
            .qos(1)
            .retained(true)
            .finalize()
    });
    connect::connect_options(&connect::Connect {
        url: &config.broker,
        username: config.username.as_deref(),
        password: config.password.as_deref(),
        tls: &config.tls,
        clean_start: config.clean_start,
        session_expiry: config.session_expiry,
        keep_alive: config.keep_alive,
        connect_timeout: config.connect_timeout,
        max_packet: Some(
            u32::try_from(config.max_message_size.saturating_add(PACKET_HEADROOM))
                .unwrap_or(u32::MAX),
        ),
        will,
    })
}

fn install_callbacks(
    client: &paho::AsyncClient,
    shared: &Arc<Shared>,
    routes: &Arc<Vec<Route>>,
    tx: mpsc::Sender<paho::Message>,
    runtime: tokio::runtime::Handle,
) {
    client.set_message_callback(move |_, msg| {
        if let Some(msg) = msg {
            // Blocks the library's thread when the engine is behind: backpressure, no loss.
            // Fails only once the driver has stopped.
            let _ = tx.blocking_send(msg);
        }
    });
    let s = shared.clone();
    let r = routes.clone();
    client.set_connected_callback(move |cli| {
        let (s, r, cli) = (s.clone(), r.clone(), cli.clone());
        let span = s.span.clone();
        runtime.spawn(on_connected(s, r, cli).instrument(span));
    });
    let s = shared.clone();
    client.set_connection_lost_callback(move |_| {
        let _span = s.span.enter();
        inc(&s.counters.connections_lost);
        tracing::warn!("MQTT connection lost; reconnecting");
        s.state.send_replace(ConnectionState::Reconnecting);
        s.lost.notify_one();
    });
    let s = shared.clone();
    client.set_disconnected_callback(move |_, _, reason| {
        let _span = s.span.enter();
        tracing::warn!(%reason, "the MQTT broker disconnected us; reconnecting");
        inc(&s.counters.connections_lost);
        s.state.send_replace(ConnectionState::Reconnecting);
        s.lost.notify_one();
    });
}

/// After every (re)connect: subscribe (again: a broker without the session forgot the
/// subscriptions; with it, this is harmless and retained messages are not resent), publish the
/// `online` status (the will may have set `offline` meanwhile), then report `Connected`.
async fn on_connected(shared: Arc<Shared>, routes: Arc<Vec<Route>>, client: paho::AsyncClient) {
    if *shared.shutdown.borrow() {
        return;
    }
    for (i, route) in routes.iter().enumerate() {
        let opts = paho::SubscribeOptionsBuilder::new()
            .no_local(true)
            .retain_handling(paho::RetainHandling::SendRetainedOnNew)
            .finalize();
        let mut props = paho::Properties::new();
        // Identifier i+1 tells which subscription a message matched.
        let _ = props.push_int(paho::PropertyCode::SubscriptionIdentifier, i as i32 + 1);
        if let Err(e) = client
            .subscribe_with_options(route.filter.as_str(), route.qos, opts, props)
            .await
        {
            tracing::error!(filter = %route.filter, error = %e, "MQTT subscribe failed");
        }
    }
    if shared.config.status.enabled {
        let msg = paho::Message::new_retained(
            shared.config.status_topic(),
            shared.config.status.online.as_bytes(),
            1,
        );
        match client.publish(msg).await {
            Ok(()) => inc(&shared.counters.messages_out),
            Err(e) => {
                inc(&shared.counters.publish_errors);
                tracing::warn!(error = %e, "publishing the online status failed");
            }
        }
    }
    inc(&shared.counters.connects);
    tracing::info!(client_id = %shared.config.client_id(), "MQTT connected");
    shared.state.send_replace(ConnectionState::Connected);
}

impl MqttDriver {
    /// Runs the bridge until [`MqttHandle::shutdown`]; its log lines name its client.
    pub async fn run(self) {
        let span = self.shared.span.clone();
        self.drive().instrument(span).await;
    }

    async fn drive(self) {
        let MqttDriver {
            shared,
            client,
            connect,
            inbound,
            routes,
            twins,
            events,
            deltas,
        } = self;
        let stop = shared.shutdown.subscribe();
        let connection = connect::keep_connected(
            &client,
            connect,
            (shared.config.reconnect_min, shared.config.reconnect_max),
            &shared.lost,
            stop.clone(),
            |r| {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "MQTT connect failed");
                    shared.state.send_replace(ConnectionState::Reconnecting);
                }
            },
        );
        // The loops start with the first connection (subscribed, `online` published).
        let work = async {
            let mut state = shared.state.subscribe();
            let mut stopped = stop.clone();
            let connected = tokio::select! {
                r = state.wait_for(|s| *s == ConnectionState::Connected) => r.is_ok(),
                _ = stopped.wait_for(|s| *s) => false,
            };
            if !connected {
                return false;
            }
            let inbound_loop =
                inbound_loop(&shared, &client, &routes, &twins, inbound, stop.clone());
            let outbound_loop = async {
                if let Some(events) = events {
                    outbound_loop(&shared, &client, &twins, events, stop.clone()).await;
                }
            };
            let delta_loop = async {
                if let Some(deltas) = deltas {
                    delta_loop(&shared, &client, &twins, deltas, stop.clone()).await;
                }
            };
            tokio::join!(inbound_loop, outbound_loop, delta_loop);
            true
        };
        let ((), connected) = tokio::join!(connection, work);
        if connected {
            // Leave cleanly: offline status, then DISCONNECT (no will; the session stays).
            if shared.config.status.enabled && client.is_connected() {
                let msg = paho::Message::new_retained(
                    shared.config.status_topic(),
                    shared.config.status.offline.as_bytes(),
                    1,
                );
                match tokio::time::timeout(Duration::from_secs(5), client.publish(msg)).await {
                    Ok(Ok(())) => inc(&shared.counters.messages_out),
                    _ => inc(&shared.counters.publish_errors),
                }
            }
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                client.disconnect(paho::DisconnectOptions::new()),
            )
            .await;
        }
        client.remove_message_callback();
        shared.state.send_replace(ConnectionState::Disconnected);
        shared.done.send_replace(true);
        tracing::info!("MQTT bridge stopped");
    }
}

fn to_incoming(msg: &paho::Message) -> Incoming {
    let p = msg.properties();
    Incoming {
        topic: msg.topic().to_owned(),
        payload: msg.payload().to_vec(),
        content_type: p.get_string(paho::PropertyCode::ContentType),
        response_topic: p.get_string(paho::PropertyCode::ResponseTopic),
        correlation_data: p.get_binary(paho::PropertyCode::CorrelationData),
    }
}

/// The subscriptions a message belongs to: by MQTT 5 subscription identifier, else by filter.
fn routes_of(routes: &[Route], msg: &paho::Message) -> Vec<usize> {
    let p = msg.properties();
    let mut ids: Vec<usize> = (0..)
        .map_while(|i| p.get_int_at(paho::PropertyCode::SubscriptionIdentifier, i))
        .filter_map(|id| usize::try_from(id).ok()?.checked_sub(1))
        .filter(|i| *i < routes.len())
        .collect();
    if ids.is_empty() {
        ids = (0..routes.len())
            .filter(|i| routes[*i].matcher.is_match(msg.topic()))
            .take(1)
            .collect();
    }
    ids
}

async fn inbound_loop(
    shared: &Arc<Shared>,
    client: &paho::AsyncClient,
    routes: &[Route],
    twins: &Twins,
    mut inbound: mpsc::Receiver<paho::Message>,
    mut stop: watch::Receiver<bool>,
) {
    let c = &shared.counters;
    loop {
        let msg = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            m = inbound.recv() => match m { Some(m) => m, None => return },
        };
        inc(&c.messages_in);
        if msg.payload().len() > shared.config.max_message_size {
            inc(&c.invalid_messages);
            tracing::warn!(
                topic = msg.topic(),
                size = msg.payload().len(),
                "MQTT message too large; dropped"
            );
            continue;
        }
        let incoming = to_incoming(&msg);
        let matched = routes_of(routes, &msg);
        if matched.is_empty() {
            inc(&c.invalid_messages);
            tracing::warn!(topic = msg.topic(), "MQTT message matches no subscription");
        }
        for i in matched {
            let route = &routes[i];
            let (handled, reply) = match &route.telemetry {
                None => mapping::ditto(twins, &route.auth, &incoming).await,
                Some(t) => (
                    mapping::telemetry(twins, &route.auth, t, &incoming).await,
                    None,
                ),
            };
            match handled {
                Handled::Applied => inc(&c.commands_applied),
                Handled::Refused(e) => {
                    inc(&c.commands_refused);
                    tracing::debug!(topic = %incoming.topic, error = %e, "command refused");
                }
                Handled::TimedOut(wait) => {
                    inc(&c.commands_refused);
                    tracing::debug!(topic = %incoming.topic, ?wait, "command timed out");
                }
                Handled::Invalid(e) => {
                    inc(&c.invalid_messages);
                    tracing::warn!(topic = %incoming.topic, error = %e, "invalid MQTT message");
                }
            }
            if let Some(reply) = reply {
                publish_reply(shared, client, reply);
            }
        }
    }
}

/// A topic the library can publish to (no NUL, no wildcards, not empty).
fn publishable(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['\0', '+', '#'])
}

fn ditto_props(correlation: Option<&[u8]>) -> paho::Properties {
    let mut props = paho::Properties::new();
    let _ = props.push_string(paho::PropertyCode::ContentType, DITTO_CONTENT_TYPE);
    if let Some(data) = correlation {
        let _ = props.push_binary(paho::PropertyCode::CorrelationData, data.to_vec());
    }
    props
}

/// Publishes a reply without waiting for the library (see the module doc).
fn publish_reply(shared: &Arc<Shared>, client: &paho::AsyncClient, reply: Reply) {
    if !publishable(&reply.topic) || reply.payload.len() > shared.config.max_message_size {
        inc(&shared.counters.publish_errors);
        tracing::warn!(topic = %reply.topic.escape_debug(), "reply not publishable; dropped");
        return;
    }
    let msg = paho::MessageBuilder::new()
        .topic(reply.topic)
        .payload(reply.payload)
        .qos(1)
        .properties(ditto_props(reply.correlation_data.as_deref()))
        .finalize();
    match client.try_publish(msg) {
        Ok(token) => watch_delivery(shared, token, None),
        Err(e) => {
            inc(&shared.counters.publish_errors);
            tracing::warn!(error = %e, "publishing a reply failed");
        }
    }
}

/// Counts the outcome of a publish once the broker acknowledged it (or it failed).
fn watch_delivery(
    shared: &Arc<Shared>,
    token: paho::DeliveryToken,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) {
    let shared = shared.clone();
    let span = shared.span.clone();
    tokio::spawn(
        async move {
            match token.await {
                Ok(()) => inc(&shared.counters.messages_out),
                Err(e) => {
                    inc(&shared.counters.publish_errors);
                    tracing::warn!(error = %e, "MQTT publish failed");
                }
            }
            drop(permit);
        }
        .instrument(span),
    );
}

/// Ditto's `fields` on an event (as its SSE stream applies them): the event's value placed at
/// its path inside the thing, reduced with the selector; published with path `/` and the
/// reduced value. `None` when nothing but `thingId` is selected (or the event has no value, as
/// a deletion): Ditto does not send those.
fn select_fields(sel: &FieldSelector, event: ThingEvent) -> Option<ThingEvent> {
    let value = event.value.as_ref()?;
    let reduced = sel.apply(&event.path.wrap(value.clone()));
    let selected = reduced
        .as_object()
        .is_some_and(|m| m.keys().any(|k| k != "thingId"));
    selected.then(|| ThingEvent {
        path: Pointer::root(),
        value: Some(reduced),
        ..event
    })
}

async fn outbound_loop(
    shared: &Arc<Shared>,
    client: &paho::AsyncClient,
    twins: &Twins,
    mut events: Outbound,
    mut stop: watch::Receiver<bool>,
) {
    let out = &shared.config.outbound;
    let pending = Arc::new(Semaphore::new(out.max_pending));
    loop {
        let event = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            e = events.subscription.recv() => e,
        };
        let event = match event {
            Ok(e) => e,
            Err(opentwins_core::engine::RecvError::Lagged(n)) => {
                shared
                    .counters
                    .events_lagged
                    .fetch_add(n, Ordering::Relaxed);
                tracing::warn!(missed = n, "outbound MQTT events fell behind");
                continue;
            }
            Err(opentwins_core::engine::RecvError::Closed) => return,
        };
        let event = match &events.fields {
            None => event,
            Some(sel) => match select_fields(sel, event) {
                Some(e) => e,
                None => {
                    inc(&shared.counters.events_unselected);
                    continue;
                }
            },
        };
        let topic = events.topic.render(
            &event.thing_id,
            event.action.as_str(),
            &shared.config.instance_id,
        );
        let mut envelope = Message::ThingEvent(event.clone()).to_envelope();
        if let Some(sel) = &events.extra_fields {
            let thing = twins.retrieve_things(
                &events.auth,
                std::slice::from_ref(&event.thing_id),
                Some(sel),
            );
            if let Some(Value::Object(extra)) = thing.into_iter().next() {
                envelope.extra = Some(extra);
            }
        }
        let payload = envelope.to_vec();
        if !publishable(&topic) || payload.len() > shared.config.max_message_size {
            inc(&shared.counters.publish_errors);
            tracing::warn!(%topic, size = payload.len(), "event not publishable; dropped");
            continue;
        }
        let permit = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            p = pending.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let msg = paho::MessageBuilder::new()
            .topic(topic)
            .payload(payload)
            .qos(i32::from(out.qos))
            .retained(out.retain)
            .properties(ditto_props(None))
            .finalize();
        match client.try_publish(msg) {
            Ok(token) => watch_delivery(shared, token, Some(permit)),
            Err(e) => {
                inc(&shared.counters.publish_errors);
                tracing::warn!(error = %e, "publishing an event failed");
            }
        }
    }
}

/// Whether an event at `path` can change the thing's delta: the whole thing, `features`, a
/// feature, or anything at or below a feature's `properties` or `desiredProperties`.
fn touches_delta(path: &Pointer) -> bool {
    match path.segments() {
        [] => true,
        [f, ..] if f != "features" => false,
        [_] | [_, _] => true,
        [_, _, section, ..] => section == "properties" || section == "desiredProperties",
    }
}

/// Whether an event at `path` only reports state (at or below a feature's `properties`).
fn reports_only(path: &Pointer) -> bool {
    matches!(path.segments(), [f, _, section, ..] if f == "features" && section == "properties")
}

/// Publishes each thing's delta retained when it changed (an empty retained payload when it
/// became empty), and republishes the pending ones after every reconnect (a broker that lost
/// its retained messages gets them back).
async fn delta_loop(
    shared: &Arc<Shared>,
    client: &paho::AsyncClient,
    twins: &Twins,
    mut deltas: Deltas,
    mut stop: watch::Receiver<bool>,
) {
    let pending = Arc::new(Semaphore::new(shared.config.outbound.max_pending));
    let mut state = shared.state.subscribe();
    loop {
        // The things to look at, and whether to publish even an unchanged delta.
        let (ids, again): (Vec<ThingId>, bool) = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            changed = state.changed() => {
                if changed.is_err() {
                    return;
                }
                if *state.borrow_and_update() != ConnectionState::Connected {
                    continue;
                }
                // Connected again: publish every pending delta anew.
                let pending_ids = deltas
                    .last
                    .iter()
                    .filter(|(_, d)| d.as_object().is_some_and(|m| !m.is_empty()))
                    .map(|(id, _)| id.clone())
                    .collect();
                (pending_ids, true)
            }
            e = deltas.subscription.recv() => match e {
                Ok(event)
                    if touches_delta(&event.path)
                        && !(deltas.undesired.contains(&event.thing_id)
                            && reports_only(&event.path)) =>
                {
                    (vec![event.thing_id], false)
                }
                Ok(_) => continue,
                Err(opentwins_core::engine::RecvError::Lagged(n)) => {
                    shared.counters.events_lagged.fetch_add(n, Ordering::Relaxed);
                    tracing::warn!(missed = n, "the MQTT delta stream fell behind; recomputing known things");
                    (deltas.last.keys().cloned().collect(), false)
                }
                Err(opentwins_core::engine::RecvError::Closed) => return,
            },
        };
        for id in ids {
            let thing = twins.get_thing(&id);
            let has_desired = thing.as_ref().is_some_and(|t| {
                t.body()["features"]
                    .as_object()
                    .is_some_and(|f| f.values().any(|f| f.get("desiredProperties").is_some()))
            });
            if has_desired {
                deltas.undesired.remove(&id);
            } else if thing.is_some() {
                deltas.undesired.insert(id.clone());
            } else {
                deltas.undesired.remove(&id);
            }
            let delta = thing.as_ref().map_or_else(
                || Value::Object(serde_json::Map::new()),
                |t| opentwins_core::delta::thing_delta(t.body()),
            );
            if !again && deltas.last.get(&id) == Some(&delta) {
                continue;
            }
            let topic = deltas
                .topic
                .render(&id, "delta", &shared.config.instance_id);
            let Some(permit) = permit(&pending, &mut stop).await else {
                return;
            };
            if publish_delta(shared, client, topic, &delta, permit) {
                if thing.is_some() {
                    deltas.last.insert(id, delta);
                } else {
                    deltas.last.remove(&id);
                }
            }
        }
    }
}

/// A permit to publish (at most `outbound.max_pending` awaiting their PUBACK); `None` on shutdown.
async fn permit(
    pending: &Arc<Semaphore>,
    stop: &mut watch::Receiver<bool>,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    tokio::select! {
        biased;
        _ = stop.wait_for(|s| *s) => None,
        p = pending.clone().acquire_owned() => p.ok(),
    }
}

/// Publishes one thing's delta retained (QoS 1): the JSON, or an empty payload when the delta
/// is `{}` (which deletes the retained message). False when it could not be handed over.
fn publish_delta(
    shared: &Arc<Shared>,
    client: &paho::AsyncClient,
    topic: String,
    delta: &Value,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> bool {
    let empty = delta.as_object().is_some_and(serde_json::Map::is_empty);
    let payload = if empty {
        Vec::new()
    } else {
        delta.to_string().into_bytes()
    };
    if !publishable(&topic) || payload.len() > shared.config.max_message_size {
        inc(&shared.counters.publish_errors);
        tracing::warn!(topic = %topic.escape_debug(), size = payload.len(), "delta not publishable; dropped");
        return false;
    }
    let mut b = paho::MessageBuilder::new()
        .topic(topic)
        .payload(payload)
        .qos(1)
        .retained(true);
    if !empty {
        let mut props = paho::Properties::new();
        let _ = props.push_string(paho::PropertyCode::ContentType, "application/json");
        b = b.properties(props);
    }
    match client.try_publish(b.finalize()) {
        Ok(token) => {
            watch_delivery(shared, token, Some(permit));
            true
        }
        Err(e) => {
            inc(&shared.counters.publish_errors);
            tracing::warn!(error = %e, "publishing a delta failed");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use opentwins_core::protocol::{EventAction, Headers};
    use opentwins_core::{ThingId, Timestamp};
    use serde_json::json;

    use super::*;

    fn event(action: EventAction, path: &str, value: Option<Value>) -> ThingEvent {
        ThingEvent {
            thing_id: ThingId::new("ns:car").unwrap(),
            action,
            path: Pointer::parse(path).unwrap(),
            value,
            revision: 4,
            timestamp: Timestamp::now(),
            headers: Headers::default(),
            provenance: None,
        }
    }

    #[test]
    fn only_feature_state_touches_the_delta() {
        let touches = |p: &str| touches_delta(&Pointer::parse(p).unwrap());
        for p in [
            "/",
            "/features",
            "/features/ac",
            "/features/ac/properties",
            "/features/ac/properties/on/x",
            "/features/ac/desiredProperties",
            "/features/ac/desiredProperties/on",
        ] {
            assert!(touches(p), "{p}");
        }
        for p in [
            "/attributes",
            "/attributes/features",
            "/policyId",
            "/definition",
            "/features/ac/definition",
        ] {
            assert!(!touches(p), "{p}");
        }
    }

    #[test]
    fn fields_reduce_the_event_at_its_path_and_publish_it_at_root() {
        let sel = FieldSelector::parse("thingId,features/*/properties/speed").unwrap();
        let e = event(
            EventAction::Merged,
            "/features/gps/properties",
            Some(json!({"speed": 3, "alt": null})),
        );
        let out = select_fields(&sel, e).unwrap();
        assert_eq!(out.path, Pointer::root());
        assert_eq!(out.action, EventAction::Merged);
        assert_eq!(out.revision, 4);
        assert_eq!(
            out.value,
            Some(json!({"features": {"gps": {"properties": {"speed": 3}}}}))
        );
        // A merge that deletes the selected field keeps the null (the deletion is the news).
        let e = event(
            EventAction::Merged,
            "/features/gps/properties",
            Some(json!({"speed": null})),
        );
        assert_eq!(
            select_fields(&sel, e).unwrap().value,
            Some(json!({"features": {"gps": {"properties": {"speed": null}}}}))
        );
    }

    #[test]
    fn fields_that_select_nothing_or_only_the_thing_id_drop_the_event() {
        let sel = FieldSelector::parse("thingId,attributes/kind").unwrap();
        let other = event(EventAction::Modified, "/attributes/x", Some(json!(1)));
        assert!(select_fields(&sel, other).is_none());
        let created = event(
            EventAction::Created,
            "/",
            Some(json!({"thingId": "ns:car", "features": {}})),
        );
        assert!(select_fields(&sel, created).is_none(), "only thingId");
        let deleted = event(EventAction::Deleted, "/attributes/kind", None);
        assert!(select_fields(&sel, deleted).is_none(), "no value");
        let whole = event(
            EventAction::Modified,
            "/attributes",
            Some(json!({"kind": "car", "x": 1})),
        );
        assert_eq!(
            select_fields(&sel, whole).unwrap().value,
            Some(json!({"attributes": {"kind": "car"}}))
        );
    }
}
