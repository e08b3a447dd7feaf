//! [`Instance`]: one running twin instance assembled from its configuration, and its orderly
//! shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, bail};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use opentwins_core::history::{History, HistorySink, SledHistory, run_retention};
use opentwins_core::policy::AuthContext;
use opentwins_core::protocol::{Action, Headers, PolicyCommand, ThingCommand};
use opentwins_core::store::{SledStore, Store};
use opentwins_core::{ErrorKind, Pointer, PolicyId, ThingId, Twins};
use opentwins_infer::{LaneModel, Processor, ProcessorHandle};
use opentwins_transport::http::metrics::Registry;
use opentwins_transport::http::{
    HttpState, ServeLimits, TlsAcceptor, TokenConfig, app, generate_token, hash_token, serve_tls,
    serve_with,
};
use opentwins_transport::link::{Direction, LinkConfig, Links, PeerConfig};
use opentwins_transport::mqtt::{MqttBridge, MqttHandle};

use opentwins_postgres::PgStore;

use crate::config::{ADMIN, InstanceConfig, PROCESSOR, StoreConfig};

/// How long a start waits for its links to connect before it goes on without them.
const LINKS_READY: std::time::Duration = std::time::Duration::from_secs(5);

/// A running instance. [`Instance::shutdown`] stops it in order; dropping it without that
/// stops its tasks with the runtime but skips the final flush.
pub struct Instance {
    config: InstanceConfig,
    twins: Twins,
    links: Links,
    /// The sled database: the store, or beside PostgreSQL the history's and outboxes' home.
    local: Arc<SledStore>,
    /// The PostgreSQL store, when configured.
    postgres: Option<Arc<PgStore>>,
    registry: Registry,
    http: Option<(SocketAddr, JoinHandle<()>)>,
    mqtt: Option<(MqttHandle, JoinHandle<()>)>,
    processor: Option<ProcessorHandle>,
    /// The history's retention task (it holds the store's database until it ends).
    retention: Option<JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

impl Instance {
    /// Opens the store, loads the engine, provisions the fleet policy and things, and starts
    /// what the configuration enables. `config` is resolved first ([`InstanceConfig::resolve`]).
    pub async fn start(mut config: InstanceConfig) -> anyhow::Result<Instance> {
        config.resolve();
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating the data directory {:?}", config.data_dir))?;
        admin_token(&mut config)?;
        config
            .limits
            .clone()
            .install()
            .map_err(anyhow::Error::msg)
            .context("installing the limits")?;
        let local_config = config.local_store();
        let local = Arc::new(
            SledStore::open(local_config.clone())
                .with_context(|| format!("opening the store at {:?}", local_config.path))?,
        );
        let postgres = match &config.store {
            StoreConfig::Sled(_) => None,
            StoreConfig::Postgres(pg) => {
                // The outboxes and history points a write adds to the sled database are
                // flushed before the PostgreSQL transaction that acknowledges it.
                let db = local.db().clone();
                let flush = move || {
                    db.flush().map(drop).map_err(|e| {
                        opentwins_core::Error::unavailable(format!(
                            "flushing the outboxes and history: {e}"
                        ))
                    })
                };
                let store =
                    PgStore::open(pg.clone(), Some(Box::new(flush))).with_context(|| {
                        format!("opening the PostgreSQL store (schema {})", pg.schema)
                    })?;
                Some(Arc::new(store))
            }
        };
        let store: Arc<dyn Store> = match &postgres {
            Some(pg) => pg.clone(),
            None => local.clone(),
        };
        let twins = Twins::open(config.engine.clone(), store)
            .context("loading the engine from the store")?;
        let (stop, stopped) = watch::channel(false);
        // History records from the first write on, in the store's database (as durable as it).
        let mut retention = None;
        let history = if config.enable.history {
            let history: Arc<dyn History> = Arc::new(
                SledHistory::open(local.db())
                    .context("opening the history")?
                    .with_max_points(config.history.max_points_per_path),
            );
            twins.add_sink(Arc::new(HistorySink::new(history.clone(), &config.history)));
            let mut stopped = stopped.clone();
            retention = Some(tokio::spawn(run_retention(
                history.clone(),
                config.history.clone(),
                async move {
                    let _ = stopped.wait_for(|s| *s).await;
                },
            )));
            Some(history)
        } else {
            None
        };
        let registry = Registry::new();
        let links = Links::new(twins.clone(), local.db().clone(), None);
        for link in link_configs(&config) {
            let name = link.name.clone();
            links
                .add(link)
                .await
                .with_context(|| format!("starting link '{name}'"))?;
        }
        // A broker keeps a peer's updates for a link only once it has subscribed.
        if !links.wait_ready(LINKS_READY).await {
            tracing::warn!(
                "links not connected after {LINKS_READY:?}; updates for them wait in the outboxes"
            );
        }
        // After the links: a thing created here reaches the peers like any write.
        provision(&twins, &config).await?;

        let processor = if config.enable.processor {
            let model = match &config.model.path {
                Some(path) => LaneModel::load(path)
                    .with_context(|| format!("loading the model {}", path.display()))?,
                None => LaneModel::bundled().context("loading the bundled lane model")?,
            };
            let handle = Processor::spawn(
                twins.clone(),
                model,
                AuthContext::new([PROCESSOR]),
                config.processor.clone(),
            )
            .context("starting the lane processor")?;
            export_processor_metrics(&registry, &handle);
            Some(handle)
        } else {
            None
        };

        let mqtt = if config.enable.mqtt {
            let (handle, driver) = MqttBridge::start(config.mqtt.clone(), twins.clone())
                .context("starting the MQTT bridge")?;
            opentwins_transport::metrics::register_mqtt(&registry, handle.clone());
            Some((handle, tokio::spawn(driver.run())))
        } else {
            None
        };

        let http = if config.enable.http {
            Some(start_http(&config, &twins, &links, history, &registry, stopped).await?)
        } else {
            None
        };
        let link_names: Vec<String> = links
            .configs()
            .into_iter()
            .map(|c| format!("{} ({})", c.name, c.peer.describe()))
            .collect();
        tracing::info!(
            instance = %config.instance_id,
            http = ?http.as_ref().map(|(a, _)| *a),
            mqtt = config.enable.mqtt.then_some(config.mqtt.broker.as_str()),
            processor = config.enable.processor,
            store = %describe_store(&config),
            things = twins.thing_count(),
            history = config.enable.history,
            links = ?link_names,
            "instance started"
        );
        Ok(Instance {
            config,
            twins,
            links,
            local,
            postgres,
            registry,
            http,
            mqtt,
            processor,
            retention,
            stop,
        })
    }

    /// The engine.
    pub fn twins(&self) -> &Twins {
        &self.twins
    }

    /// The links.
    pub fn links(&self) -> &Links {
        &self.links
    }

    /// The resolved configuration.
    pub fn config(&self) -> &InstanceConfig {
        &self.config
    }

    /// Where the HTTP API listens.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|(a, _)| *a)
    }

    /// The MQTT bridge.
    pub fn mqtt(&self) -> Option<&MqttHandle> {
        self.mqtt.as_ref().map(|(h, _)| h)
    }

    /// The lane processor.
    pub fn processor(&self) -> Option<&ProcessorHandle> {
        self.processor.as_ref()
    }

    /// The metrics registry `/metrics` renders.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Stops taking input (HTTP, MQTT), lets the processor finish its frames, stops the links
    /// (their outboxes stay for the next start) and flushes the store.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        if let Some((_, server)) = self.http {
            let _ = server.await;
        }
        if let Some((handle, driver)) = self.mqtt {
            handle.shutdown().await;
            let _ = driver.await;
        }
        if let Some(processor) = self.processor {
            processor.shutdown().await;
        }
        // What the links keep for the next start (waiting in their outboxes).
        let waiting: Vec<String> = self
            .links
            .status()
            .iter()
            .filter(|s| s.backlog > 0)
            .map(|s| format!("{}: {}", s.name, s.backlog))
            .collect();
        self.links.shutdown().await;
        // Until it ends it holds the database: a start in the same directory right after this
        // one would find it locked.
        if let Some(retention) = self.retention {
            let _ = retention.await;
        }
        self.twins.quiesce().await;
        if let Some(pg) = &self.postgres {
            pg.close().context("closing the PostgreSQL store")?;
        }
        self.local.close().context("flushing the store")?;
        tracing::info!(
            instance = %self.config.instance_id,
            things = self.twins.thing_count(),
            store = %describe_store(&self.config),
            outbox_backlog = ?waiting,
            "instance stopped: every acknowledged write flushed to the store"
        );
        Ok(())
    }
}

/// The store in log lines: the sled directory, or PostgreSQL's schema (never the URL, which
/// may hold a password).
fn describe_store(config: &InstanceConfig) -> String {
    match &config.store {
        StoreConfig::Sled(sled) => sled.path.display().to_string(),
        StoreConfig::Postgres(pg) => format!("postgres (schema {})", pg.schema),
    }
}

/// Creates the fleet policy and the configured things when they are absent.
async fn provision(twins: &Twins, config: &InstanceConfig) -> anyhow::Result<()> {
    let system = AuthContext::system();
    let policy_id = PolicyId::new(&config.fleet.policy_id).context("fleet.policy_id")?;
    if twins.get_policy(&policy_id).is_none() {
        let subjects: serde_json::Map<_, _> = config
            .fleet
            .subjects
            .iter()
            .map(|s| (s.clone(), json!({"type": "opentwins"})))
            .collect();
        let grant = json!({"grant": ["READ", "WRITE"], "revoke": []});
        let policy = json!({"entries": {"fleet": {
            "subjects": subjects,
            "resources": {"thing:/": grant, "policy:/": grant, "message:/": grant}
        }}});
        let cmd = PolicyCommand {
            policy_id,
            action: Action::Create,
            path: Pointer::root(),
            value: Some(policy),
            headers: Headers::default(),
        };
        twins
            .apply_policy(&system, cmd)
            .await
            .context("creating the fleet policy")?;
    }
    for thing in &config.things {
        let Some(id) = thing.get("thingId").and_then(|v| v.as_str()) else {
            bail!("a provisioned thing has no thingId: {thing}");
        };
        let id = ThingId::new(id).with_context(|| format!("provisioned thing {id}"))?;
        if twins.get_thing(&id).is_some() {
            continue;
        }
        let cmd = ThingCommand::new(
            id.clone(),
            Action::Create,
            Pointer::root(),
            Some(thing.clone()),
        );
        match twins.apply(&system, cmd).await {
            Ok(_) => tracing::info!(thing = %id, "provisioned"),
            // A peer's update created it meanwhile.
            Err(e) if e.kind() == ErrorKind::ThingConflict => {}
            Err(e) => return Err(e).with_context(|| format!("provisioning {id}")),
        }
    }
    Ok(())
}

/// The configured links plus the edge's link to its hub and the hub's fleet links, each with
/// the fleet policy for things a peer creates.
fn link_configs(config: &InstanceConfig) -> Vec<LinkConfig> {
    let mut all = config.links.clone();
    let hub = &config.hub;
    let id = &config.instance_id;
    let base = |name: &str| LinkConfig::new(name, PeerConfig::Inbox {});
    if let Some(rest) = hub
        .url
        .strip_prefix("http://")
        .or(hub.url.strip_prefix("https://"))
    {
        let scheme = if hub.url.starts_with("https") {
            "https"
        } else {
            "http"
        };
        let remote = if hub.remote_link.is_empty() {
            id
        } else {
            &hub.remote_link
        };
        all.push(LinkConfig {
            peer: PeerConfig::Http {
                url: format!("{scheme}://{rest}"),
                remote_link: remote.clone(),
                username: hub.username.clone(),
                password: hub.password.clone(),
                token: hub.token.clone(),
                tls: hub.tls.clone(),
            },
            direction: Direction::Out,
            exclude: hub.exclude.clone(),
            owned: hub.owned.clone(),
            peer_instance: Some(hub.instance.clone()),
            ..base("hub")
        });
    } else if !hub.url.is_empty() {
        all.push(LinkConfig {
            peer: PeerConfig::Mqtt {
                url: hub.url.clone(),
                publish: hub.up.replace("{instance}", id),
                subscribe: Some(hub.down.replace("{instance}", &hub.instance)),
                qos: 1,
                client_id: None,
                username: hub.username.clone(),
                password: hub.password.clone(),
                tls: hub.tls.clone(),
            },
            exclude: hub.exclude.clone(),
            owned: hub.owned.clone(),
            peer_instance: Some(hub.instance.clone()),
            create: false,
            ..base("hub")
        });
    }
    let fleet = &config.fleet_links;
    if fleet.enabled && config.enable.mqtt {
        let mqtt = |publish: String, subscribe: Option<String>| PeerConfig::Mqtt {
            url: config.mqtt.broker.clone(),
            publish,
            subscribe,
            qos: 1,
            client_id: None,
            // The hub's links log in to the broker as its bridge does.
            username: config.mqtt.username.clone(),
            password: config.mqtt.password.clone(),
            tls: config.mqtt.tls.clone(),
        };
        let down = fleet.down.replace("{instance}", id);
        all.push(LinkConfig {
            peer: mqtt(down.clone(), Some(fleet.up.clone())),
            direction: Direction::In,
            owned: fleet.owned.clone(),
            // Each edge is its own subject (`link:car-1`): it writes the things it brought.
            subject: fleet.subject.clone(),
            ..base("fleet-up")
        });
        all.push(LinkConfig {
            peer: mqtt(down, None),
            direction: Direction::Out,
            include: fleet.down_include.clone(),
            ..base("fleet-down")
        });
    }
    for link in &mut all {
        if link.policy.is_none() {
            link.policy = Some(config.fleet.policy_id.clone());
        }
    }
    all
}

/// Gives [`ADMIN`] a bearer token when the configuration names it an administrator but gives
/// no credential for it (the default configuration): generated at the first start into
/// `{data_dir}/admin-token`, readable by the owner only, and announced on stderr; read from
/// there at later starts. Nobody is an administrator without it.
fn admin_token(config: &mut InstanceConfig) -> anyhow::Result<()> {
    let http = &mut config.http;
    if !http.admin_subjects.iter().any(|s| s == ADMIN)
        || http.auth.tokens.iter().any(|t| t.subject == ADMIN)
    {
        return Ok(());
    }
    let path = config.data_dir.join("admin-token");
    let token = match std::fs::read_to_string(&path) {
        Ok(token) => token.trim().to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let token = generate_token();
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            writeln!(file, "{token}").with_context(|| format!("writing {}", path.display()))?;
            // A log line (in the log's format), at a level the default filter shows.
            tracing::warn!(
                subject = ADMIN,
                file = %path.display(),
                "generated the administrator token; send it as 'Authorization: Bearer <token>' \
                 to manage connections"
            );
            token
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    anyhow::ensure!(!token.is_empty(), "{} is empty", path.display());
    http.auth.tokens.push(TokenConfig {
        sha256: hash_token(&token),
        subject: ADMIN.into(),
    });
    Ok(())
}

/// Binds the HTTP API and serves it until `stopped` turns true.
async fn start_http(
    config: &InstanceConfig,
    twins: &Twins,
    links: &Links,
    history: Option<Arc<dyn History>>,
    registry: &Registry,
    mut stopped: watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("binding the HTTP API to {}", config.listen))?;
    let addr = listener.local_addr()?;
    if config.http.auth.anonymous && !addr.ip().is_loopback() {
        bail!(
            "the HTTP API lets anonymous callers in (http.auth.anonymous) and would listen on \
             {addr}, which is not a loopback address: configure users or tokens and turn \
             anonymous off, or listen on 127.0.0.1"
        );
    }
    let mut state = HttpState::with_registry(twins.clone(), config.http.clone(), registry.clone())
        .context("HTTP configuration")?
        .with_links(links.clone());
    if let Some(history) = history {
        state = state.with_history(history);
    }
    let mut router = app(state);
    if config.enable.dashboard {
        router = router.merge(crate::dashboard::router(&config.instance_id));
    }
    let tls = config
        .http
        .tls
        .as_ref()
        .map(TlsAcceptor::new)
        .transpose()
        .context("HTTP TLS configuration")?;
    let server = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        let limits = ServeLimits::default();
        let served = match tls {
            Some(tls) => serve_tls(listener, router, shutdown, limits, tls).await,
            None => serve_with(listener, router, shutdown, limits).await,
        };
        if let Err(e) = served {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    Ok((addr, server))
}

fn export_processor_metrics(registry: &Registry, handle: &ProcessorHandle) {
    let read = Arc::new(handle.metrics_reader());
    type Field = fn(&opentwins_infer::ProcessorMetrics) -> u64;
    let counters: [(&str, &str, Field); 4] = [
        (
            "opentwins_processor_frames_total",
            "Frames received.",
            |m| m.frames_in,
        ),
        (
            "opentwins_processor_processed_total",
            "Frames inferred.",
            |m| m.processed,
        ),
        (
            "opentwins_processor_skipped_total",
            "Frames replaced by a newer one before inference.",
            |m| m.skipped,
        ),
        (
            "opentwins_processor_errors_total",
            "Frames that failed.",
            |m| m.errors,
        ),
    ];
    for (name, help, field) in counters {
        let read = read.clone();
        registry.counter_fn(name, help, &[], move || field(&read()));
    }
    let read = read.clone();
    registry.gauge_fn(
        "opentwins_processor_inference_us",
        "Average inference time per frame, microseconds.",
        &[],
        move || (read().avg_inference_ms * 1000.0) as i64,
    );
}
