//! Links over real transports: HTTP peers (with `/api/2/connections` managing them) and MQTT
//! peers through Mosquitto in a star, with the broker stopped and started mid-stream.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentwins_core::protocol::{Action, Message, ThingCommand, ThingEvent};
use opentwins_core::replica::{Update, encode_batch};
use opentwins_core::{Pointer, Thing, ThingId};
use opentwins_transport::http::{
    HttpConfig, HttpState, ServeLimits, TlsAcceptor, TokenConfig, UserConfig, app, hash_password,
    hash_token, serve, serve_tls,
};
use opentwins_transport::link::{Direction, LinkConfig, Links, Network, PeerConfig, Wire};
use opentwins_transport::mqtt::TlsConfig;
use serde_json::{Value, json};

mod common;
mod tls_helpers;
use common::{PrivateBroker, instance, link_to, writer};

const LIMIT: Duration = Duration::from_secs(90);

fn merge_n(id: &ThingId, n: i64) -> ThingCommand {
    ThingCommand::new(
        id.clone(),
        Action::Merge,
        Pointer::parse("/attributes").unwrap(),
        Some(json!({"n": n})),
    )
}

fn create(id: &ThingId) -> ThingCommand {
    let body = json!({"policyId": "t:policy", "attributes": {"n": -1}});
    ThingCommand::new(id.clone(), Action::Modify, Pointer::root(), Some(body))
}

/// Every value of `attributes/n` each thing shows at an instance, as events arrive.
fn record(links: &Links) -> Arc<Mutex<Vec<(String, i64)>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    links
        .twins()
        .add_sink(Arc::new(move |e: &ThingEvent, _: Option<&Thing>| {
            if let Some(n) = e
                .value
                .as_ref()
                .and_then(|v| v.pointer("/attributes/n"))
                .and_then(Value::as_i64)
            {
                s.lock().unwrap().push((e.thing_id.to_string(), n));
            }
        }));
    seen
}

/// An edge's link `up` that posts to `remote_link` at `url`, with Basic credentials if given.
fn http_up(url: &str, remote_link: &str, basic: Option<(&str, &str)>) -> LinkConfig {
    LinkConfig {
        name: "up".into(),
        peer: PeerConfig::Http {
            url: url.into(),
            remote_link: remote_link.into(),
            username: basic.map(|(u, _)| u.into()),
            password: basic.map(|(_, p)| p.into()),
            token: None,
            tls: Default::default(),
        },
        direction: Direction::Out,
        ..link_to("hub")
    }
}

async fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn request(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    user: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = client.request(method, url).basic_auth(user, Some("pw"));
    if let Some(b) = body {
        r = r
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_links_are_managed_at_run_time_and_carry_updates() {
    tokio::time::timeout(LIMIT, async {
        let network = Network::new();
        let hub = instance("hub", &network).await;
        let edge = instance("edge", &network).await;
        let hash = hash_password("pw");
        let user = |name: &str, subjects: &[&str]| UserConfig {
            name: name.into(),
            password_hash: hash.clone(),
            subjects: subjects.iter().map(|s| s.to_string()).collect(),
        };
        let mut config = HttpConfig::default();
        config.auth.users = vec![user("admin", &[]), user("edge", &["link:peer"])];
        config.admin_subjects = vec!["basic:admin".into()];
        let state = HttpState::new(hub.twins().clone(), config)
            .unwrap()
            .with_links(hub.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, app(state), async {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::new();
        let conns = format!("{base}/api/2/connections");

        // Only administrators manage links; bad configurations are refused clearly.
        let inbox = json!({"peer": {"kind": "inbox"}, "direction": "in"});
        let (s, body) =
            request(&client, reqwest::Method::PUT, &format!("{conns}/from-edge"), "edge", Some(inbox.clone())).await;
        assert_eq!((s, body["error"].as_str()), (403, Some("connectivity:connection.notallowed")));
        let bad = json!({"peer": {"kind": "inbox"}});
        let (s, body) =
            request(&client, reqwest::Method::PUT, &format!("{conns}/from-edge"), "admin", Some(bad)).await;
        assert_eq!(s, 400, "{body}");
        assert!(body["message"].as_str().unwrap().contains("direction"), "{body}");
        let (s, _) =
            request(&client, reqwest::Method::PUT, &format!("{conns}/from-edge"), "admin", Some(inbox)).await;
        assert_eq!(s, 201);

        // The edge sends over HTTP as user `edge` (subject link:peer, which the policy grants).
        edge.add(http_up(&base, "from-edge", Some(("edge", "pw"))))
            .await
            .unwrap();
        let id = ThingId::new("t:car").unwrap();
        edge.twins().apply(&writer(), create(&id)).await.unwrap();
        for n in 0..20 {
            edge.twins().apply(&writer(), merge_n(&id, n)).await.unwrap();
        }
        wait_until("the hub to hold n = 19", || {
            hub.twins()
                .get_thing(&id)
                .is_some_and(|t| t.body()["attributes"]["n"] == 19)
        })
        .await;

        let (s, list) = request(&client, reqwest::Method::GET, &conns, "admin", None).await;
        assert_eq!(s, 200);
        assert_eq!(list[0]["config"]["name"], "from-edge");
        // 21 updates, fewer if some merged while waiting; what left the edge arrived.
        wait_until("the edge's outbox to drain", || edge.status()[0].backlog == 0).await;
        let sent = edge.status()[0].messages_out;
        assert!((1..=21).contains(&sent), "{sent}");
        assert_eq!(list[0]["status"]["messages_in"], sent);
        assert_eq!(list[0]["status"]["rejected"], 0);
        assert_eq!(edge.status()[0].coalesced + sent, 21);
        let metrics = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
        assert!(
            metrics.contains(&format!("opentwins_link_messages_in_total{{link=\"from-edge\"}} {sent}")),
            "{metrics}"
        );
        assert_eq!(edge.status()[0].backlog, 0);
        // The hub answered the link's hello: it reads binary batches, so `auto` sends them.
        assert_eq!(edge.status()[0].wire, Wire::Binary);
        assert_eq!(edge.status()[0].anti_entropy_rounds, 1);

        // Digests: the peer's subject learns which things differ (stamps, no values); a
        // subject that may not read a thing learns nothing of it; bad requests are 400s.
        let digest = |user: &'static str, body: Value| {
            let (client, url) = (client.clone(), format!("{conns}/from-edge/digest"));
            async move { request(&client, reqwest::Method::POST, &url, user, Some(body)).await }
        };
        let ask = json!({"instance": "edge", "things": [["t:car", "00"], ["t:nowhere", "00"]]});
        let (s, reply) = digest("edge", ask.clone()).await;
        assert_eq!(s, 200, "{reply}");
        assert_eq!((reply["instance"].as_str(), reply["binary"].as_bool()), (Some("hub"), Some(true)));
        let stamps = reply["differ"]["t:car"].as_array().expect("t:car differs");
        assert!(stamps.iter().any(|s| s[0] == "/attributes/n" && s[1] == "v"), "{reply}");
        assert!(
            stamps.iter().all(|s| s.as_array().unwrap().len() == 3 && s[2].as_str().unwrap().contains('@')),
            "[path, kind, stamp], no values: {reply}"
        );
        assert_eq!(reply["differ"]["t:nowhere"], Value::Null);
        assert!(reply["differ"].get("t:nowhere").is_some(), "missing here: {reply}");
        let (s, reply) = digest("admin", ask).await;
        assert_eq!(s, 200, "{reply}");
        assert!(reply["differ"].get("t:car").is_none(), "not readable by admin: {reply}");
        let many: Vec<Value> = (0..1001).map(|n| json!([format!("t:c{n}"), "00"])).collect();
        let (s, reply) = digest("edge", json!({"instance": "edge", "things": many})).await;
        assert_eq!((s, reply["error"].as_str()), (400, Some("json.field.invalid")), "{reply}");
        let (s, _) = digest("edge", json!({"instance": "edge", "include": ["/a//b"]})).await;
        assert_eq!(s, 400);
        let (s, _) = digest("edge", json!([1, 2])).await;
        assert_eq!(s, 400);

        // A refused update (no permission) is answered with a Ditto error, and counted.
        let (s, body) = request(
            &client,
            reqwest::Method::POST,
            &format!("{conns}/from-edge/inbox"),
            "admin",
            Some(json!({"topic": "t/car/things/twin/commands/merge", "path": "/", "value": {"attributes": {"x": 1}},
                        "headers": {"opentwins-origin": "x", "opentwins-hops": ["x"], "opentwins-clocks": {"/attributes/x": "v1.0@x"}}})),
        )
        .await;
        assert!(s == 403 || s == 404, "{s} {body}");
        assert!(body["error"].as_str().unwrap().starts_with("things:"), "{body}");
        let (s, one) = request(&client, reqwest::Method::GET, &format!("{conns}/from-edge"), "admin", None).await;
        assert_eq!((s, one["status"]["rejected"].as_u64()), (200, Some(1)));

        // The same update as a binary batch: the same permission check, the same refusal; a
        // damaged binary batch is a 400 with a Ditto error, and nothing changes.
        let post_binary = |bytes: Vec<u8>| {
            let client = client.clone();
            let url = format!("{conns}/from-edge/inbox");
            async move {
                let resp = client
                    .post(url)
                    .basic_auth("admin", Some("pw"))
                    .header("content-type", opentwins_transport::link::BINARY_CONTENT_TYPE)
                    .body(bytes)
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap();
                (status, serde_json::from_str(&text).unwrap_or(Value::Null))
            }
        };
        let cmd = json!({"topic": "t/car/things/twin/commands/merge", "path": "/", "value": {"attributes": {"x": 1}},
                         "headers": {"opentwins-origin": "x", "opentwins-hops": ["x"], "opentwins-clocks": {"/attributes/x": "v1.0@x"}}});
        let Ok(Message::ThingCommand(cmd)) = Message::from_slice(cmd.to_string().as_bytes()) else {
            panic!("not a command")
        };
        let update = Update::from_command(&cmd).unwrap().unwrap();
        let (s, body) = post_binary(encode_batch(&[update])).await;
        assert!(s == 403 || s == 404, "{s} {body}");
        assert!(body["error"].as_str().unwrap().starts_with("things:"), "{body}");
        let (s, body) = post_binary(vec![0xF6, b'O', b'T', b'B', 1, 0xFF, 0xFF]).await;
        assert_eq!(s, 400, "{body}");
        assert!(body["message"].as_str().is_some(), "{body}");
        let (s, one) = request(&client, reqwest::Method::GET, &format!("{conns}/from-edge"), "admin", None).await;
        assert_eq!((s, one["status"]["rejected"].as_u64()), (200, Some(3)));
        assert!(hub.twins().get_thing(&ThingId::new("t:car").unwrap())
            .is_none_or(|t| t.body()["attributes"].get("x").is_none()));

        let (s, _) = request(&client, reqwest::Method::DELETE, &format!("{conns}/from-edge"), "admin", None).await;
        assert_eq!(s, 204);
        let (s, body) = request(&client, reqwest::Method::GET, &format!("{conns}/from-edge"), "admin", None).await;
        assert_eq!((s, body["error"].as_str()), (404, Some("connectivity:connection.notfound")));
        let _ = stop.send(());
        server.await.unwrap().unwrap();
        edge.shutdown().await;
    })
    .await
    .expect("test hung");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_links_reach_an_https_peer_with_a_token_over_one_kept_alive_connection() {
    tokio::time::timeout(LIMIT, async {
        let pki = tls_helpers::Pki::new();
        let network = Network::new();
        let hub = instance("hub", &network).await;
        let edge = instance("edge", &network).await;
        let mut config = HttpConfig::default();
        config.auth.tokens = vec![TokenConfig {
            sha256: hash_token("edge-token"),
            subject: "link:peer".into(),
        }];
        let state = HttpState::new(hub.twins().clone(), config)
            .unwrap()
            .with_links(hub.clone());
        hub.add(LinkConfig {
            name: "from-edge".into(),
            peer: PeerConfig::Inbox {},
            direction: Direction::In,
            ..link_to("edge")
        })
        .await
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let line = DelayLine::start(listener.local_addr().unwrap(), Duration::ZERO).await;
        let (proxy, connections) = (line.addr, line.accepted.clone());
        let acceptor = TlsAcceptor::new(&pki.server(false)).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async {
            let _ = stopped.await;
        };
        let server = tokio::spawn(serve_tls(
            listener,
            app(state),
            shutdown,
            ServeLimits::default(),
            acceptor,
        ));
        let https = |name: &str, ca: &str| LinkConfig {
            name: name.into(),
            peer: PeerConfig::Http {
                url: format!("https://{proxy}"),
                remote_link: "from-edge".into(),
                username: None,
                password: None,
                token: Some("edge-token".into()),
                tls: TlsConfig {
                    ca_file: Some(pki.path(ca)),
                    ..TlsConfig::default()
                },
            },
            direction: Direction::Out,
            ..link_to("hub")
        };

        // A link that does not trust the hub's CA delivers nothing and says why.
        edge.add(https("untrusting", "other-ca.crt")).await.unwrap();
        let probe = ThingId::new("t:probe").unwrap();
        edge.twins().apply(&writer(), create(&probe)).await.unwrap();
        wait_until("the untrusting link to report its TLS failure", || {
            edge.status()[0]
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("TLS"))
        })
        .await;
        assert!(hub.twins().get_thing(&probe).is_none());
        edge.remove("untrusting").await.unwrap();
        let tried = connections.load(Ordering::SeqCst);
        assert!(tried >= 1);

        // With the CA: everything arrives, over one kept-alive connection.
        edge.add(https("up", "ca.crt")).await.unwrap();
        let id = ThingId::new("t:car").unwrap();
        edge.twins().apply(&writer(), create(&id)).await.unwrap();
        for n in 0..20 {
            edge.twins()
                .apply(&writer(), merge_n(&id, n))
                .await
                .unwrap();
        }
        wait_until("the hub to hold n = 19", || {
            hub.twins()
                .get_thing(&id)
                .is_some_and(|t| t.body()["attributes"]["n"] == 19)
        })
        .await;
        // The hub has applied the last update; its answer may still be on the way.
        wait_until("the edge's outbox to drain", || {
            edge.status()[0].backlog == 0
        })
        .await;
        assert_eq!(
            connections.load(Ordering::SeqCst),
            tried + 1,
            "one connection for 21 updates"
        );
        let _ = stop.send(());
        server.await.unwrap().unwrap();
        edge.shutdown().await;
    })
    .await
    .expect("test hung");
}

fn mqtt_link(name: &str, url: &str, publish: String, subscribe: String, peer: &str) -> LinkConfig {
    LinkConfig {
        name: name.into(),
        peer: PeerConfig::Mqtt {
            url: url.into(),
            publish,
            subscribe: Some(subscribe),
            qos: 1,
            client_id: None,
            username: None,
            password: None,
            tls: Default::default(),
        },
        ..link_to(peer)
    }
}

/// A hub and three edges linked through Mosquitto: each edge streams its own thing; the broker
/// is stopped and started mid-stream; the hub and every edge end with every thing, and the hub
/// saw every value. One edge's link sends binary batches, the others JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_star_over_mosquitto_loses_nothing_when_the_broker_restarts() {
    let Some(mut broker) = PrivateBroker::start() else {
        return;
    };
    tokio::time::timeout(LIMIT, async {
        let url = broker.url().replace("tcp://", "mqtt://");
        let network = Network::new();
        let prefix = format!("star-{}", std::process::id());
        let hub = instance("hub", &network).await;
        hub.add(mqtt_link(
            "edges",
            &url,
            format!("{prefix}/hub"),
            format!("{prefix}/edge/+"),
            "none",
        ))
        .await
        .unwrap();
        let mut edges = Vec::new();
        for i in 0..3 {
            let e = instance(&format!("e{i}"), &network).await;
            e.add(LinkConfig {
                // One edge sends binary batches: the hub reads both forms on one subscription.
                wire: if i == 1 { Wire::Binary } else { Wire::Auto },
                ..mqtt_link(
                    "hub",
                    &url,
                    format!("{prefix}/edge/e{i}"),
                    format!("{prefix}/hub"),
                    "hub",
                )
            })
            .await
            .unwrap();
            edges.push(e);
        }
        let seen = record(&hub);
        tokio::time::sleep(Duration::from_millis(500)).await;
        const N: i64 = 150;
        let ids: Vec<ThingId> = (0..3)
            .map(|i| ThingId::new(&format!("t:car{i}")).unwrap())
            .collect();
        for (e, id) in edges.iter().zip(&ids) {
            e.twins().apply(&writer(), create(id)).await.unwrap();
        }
        for n in 0..N {
            if n == N / 3 {
                broker.stop();
            }
            if n == 2 * N / 3 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                broker.run();
            }
            for (e, id) in edges.iter().zip(&ids) {
                e.twins().apply(&writer(), merge_n(id, n)).await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let all: Vec<&Links> = std::iter::once(&hub).chain(edges.iter()).collect();
        wait_until("every instance to hold every car at n = N-1", || {
            all.iter().all(|l| {
                ids.iter().all(|id| {
                    l.twins()
                        .get_thing(id)
                        .is_some_and(|t| t.body()["attributes"]["n"] == N - 1)
                })
            })
        })
        .await;
        for e in &edges {
            wait_until("the edge's outbox to drain", || e.status()[0].backlog == 0).await;
        }
        // In order per car: the hub never went back to an older value (values that waited
        // for the broker may have been merged into newer ones, and end at the last).
        assert_in_order(&seen.lock().unwrap(), &ids, N - 1);
        for l in &all {
            l.shutdown().await;
        }
    })
    .await
    .expect("test hung");
}

/// Each thing's values as an instance saw them only grow, and end at `last`.
fn assert_in_order(seen: &[(String, i64)], ids: &[ThingId], last: i64) {
    for id in ids {
        let got: Vec<i64> = seen
            .iter()
            .filter(|(t, _)| *t == id.to_string())
            .map(|(_, n)| *n)
            .collect();
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "{id}: values out of order: {got:?}"
        );
        assert_eq!(got.last(), Some(&last), "{id}");
    }
}

/// A TCP relay to `to` that delays every chunk by `delay` each way (pipelined, as a network
/// does), counts the connections it relays, and can cut every open connection at once.
struct DelayLine {
    addr: std::net::SocketAddr,
    connections: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accepted: Arc<AtomicUsize>,
}

impl DelayLine {
    async fn start(to: std::net::SocketAddr, delay: Duration) -> DelayLine {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (open, count) = (connections.clone(), accepted.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = tokio::net::TcpStream::connect(to).await else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let (ir, iw) = inbound.into_split();
                let (or, ow) = outbound.into_split();
                let mut open = open.lock().unwrap();
                open.push(tokio::spawn(delayed(ir, ow, delay)));
                open.push(tokio::spawn(delayed(or, iw, delay)));
            }
        });
        DelayLine {
            addr,
            connections,
            accepted,
        }
    }

    /// Closes every open connection (both ways), whatever is in flight on it.
    fn cut(&self) {
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

async fn delayed(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let writer = async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buf).await {
            let at = tokio::time::Instant::now() + delay;
            if tx.send((at, buf[..n].to_vec())).is_err() {
                return;
            }
        }
    };
    tokio::join!(reader, writer);
}

/// An edge streams updates of 20 things to a hub over MQTT through a 25 ms delay line (each
/// way); every connection on the line is cut twice with a window of updates in flight. The
/// hub ends with every last value and applies each thing's values in order (duplicates of
/// resent updates change nothing); updates that waited were merged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_over_a_delay_line_survives_cuts_mid_window() {
    let Some(broker) = PrivateBroker::start() else {
        return;
    };
    tokio::time::timeout(LIMIT, async {
        let line = DelayLine::start(
            format!("127.0.0.1:{}", broker.port).parse().unwrap(),
            Duration::from_millis(25),
        )
        .await;
        let network = Network::new();
        let prefix = format!("cut-{}", std::process::id());
        let hub = instance("hub", &network).await;
        hub.add(mqtt_link(
            "edges",
            &broker.url().replace("tcp://", "mqtt://"),
            format!("{prefix}/hub"),
            format!("{prefix}/edge/+"),
            "none",
        ))
        .await
        .unwrap();
        let edge = instance("e0", &network).await;
        edge.add(mqtt_link(
            "hub",
            &format!("mqtt://{}", line.addr),
            format!("{prefix}/edge/e0"),
            format!("{prefix}/hub"),
            "hub",
        ))
        .await
        .unwrap();
        assert!(hub.wait_ready(Duration::from_secs(20)).await);
        assert!(edge.wait_ready(Duration::from_secs(20)).await);
        let seen = record(&hub);
        let ids: Vec<ThingId> = (0..20)
            .map(|i| ThingId::new(&format!("t:sensor{i}")).unwrap())
            .collect();
        for id in &ids {
            edge.twins().apply(&writer(), create(id)).await.unwrap();
        }
        const N: i64 = 100;
        let mut reconnects = 1;
        for n in 0..N {
            if n == N / 3 || n == 2 * N / 3 {
                // Updates are in flight: written faster than one round trip each.
                assert!(edge.status()[0].backlog > 0, "nothing in flight to cut");
                line.cut();
                reconnects += 1;
            }
            if n == N / 3 + 5 || n == 2 * N / 3 + 5 {
                // Written while the link was down; now it is back before the next cut.
                wait_until("the edge to reconnect", || {
                    line.accepted.load(Ordering::SeqCst) >= reconnects
                })
                .await;
            }
            for id in &ids {
                edge.twins().apply(&writer(), merge_n(id, n)).await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        wait_until("the hub to hold every last value", || {
            ids.iter().all(|id| {
                hub.twins()
                    .get_thing(id)
                    .is_some_and(|t| t.body()["attributes"]["n"] == N - 1)
            })
        })
        .await;
        assert_in_order(&seen.lock().unwrap(), &ids, N - 1);
        wait_until("the edge's outbox to drain", || {
            edge.status()[0].backlog == 0
        })
        .await;
        let status = &edge.status()[0];
        // 20 creations and 2,000 updates crossed in far fewer messages: merged while waiting
        // (coalesced) or carried several per message.
        assert!(status.messages_out >= 20, "{status:?}");
        assert!(
            status.coalesced > 0,
            "nothing merged while waiting: {status:?}"
        );
        hub.shutdown().await;
        edge.shutdown().await;
    })
    .await
    .expect("test hung");
}

// A peer that is no OpenTwins instance (a plain Ditto, say: no digest resource, JSON only)
// gets JSON commands from an `auto` link, which stops asking for digests after the first 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_link_sends_json_to_a_peer_that_takes_no_digests() {
    tokio::time::timeout(LIMIT, async {
        let network = Network::new();
        let edge = instance("edge", &network).await;
        let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let log = seen.clone();
        let plain = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let log = log.clone();
            async move {
                let path = req.uri().path().to_owned();
                let ct = req
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let status = match (path.ends_with("/inbox"), ct == "application/json") {
                    (true, true) => axum::http::StatusCode::OK,
                    (true, false) => axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    _ => axum::http::StatusCode::NOT_FOUND,
                };
                log.lock().unwrap().push((path, ct));
                (status, "{}")
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(serve(listener, plain, std::future::pending::<()>()));
        edge.add(http_up(&base, "x", None)).await.unwrap();
        let id = ThingId::new("t:car").unwrap();
        edge.twins().apply(&writer(), create(&id)).await.unwrap();
        for n in 0..5 {
            edge.twins()
                .apply(&writer(), merge_n(&id, n))
                .await
                .unwrap();
        }
        wait_until(
            "the edge's outbox to drain and its hello to be answered",
            || {
                let s = &edge.status()[0];
                let asked = seen
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|(p, _)| p.ends_with("/digest"));
                s.backlog == 0 && s.messages_out >= 1 && asked
            },
        )
        .await;
        let s = edge.status().remove(0);
        assert_eq!(
            (s.wire, s.refused_by_peer, s.anti_entropy_rounds),
            (Wire::Json, 0, 0),
            "{s:?}"
        );
        let seen = seen.lock().unwrap().clone();
        let digests = seen.iter().filter(|(p, _)| p.ends_with("/digest")).count();
        assert_eq!(digests, 1, "{seen:?}");
        assert!(
            seen.iter()
                .filter(|(p, _)| p.ends_with("/inbox"))
                .all(|(_, ct)| ct == "application/json"),
            "{seen:?}"
        );
        server.abort();
        edge.shutdown().await;
    })
    .await
    .expect("test hung");
}

// Anti-entropy over MQTT (request/response on the link's own topics): a hub restored empty is
// brought back by the edge's next round, although the edge's outbox had nothing left to send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_mqtt_a_hub_restored_empty_is_repaired_by_the_edges_next_round() {
    let Some(url) = common::broker() else {
        return;
    };
    tokio::time::timeout(LIMIT, async {
        let prefix = common::prefix("digest");
        let network = Network::new();
        let hub_link = || LinkConfig {
            anti_entropy_secs: 0,
            ..mqtt_link(
                "edges",
                &url,
                format!("{prefix}/car-1/down"),
                format!("{prefix}/+/up"),
                "none",
            )
        };
        let hub = instance("hub", &network).await;
        hub.add(hub_link()).await.unwrap();
        assert!(hub.wait_ready(Duration::from_secs(10)).await);
        let edge = instance("edge", &network).await;
        let ids: Vec<ThingId> = (0..50)
            .map(|n| ThingId::new(&format!("t:car{n}")).unwrap())
            .collect();
        for id in &ids {
            edge.twins().apply(&writer(), create(id)).await.unwrap();
        }
        edge.add(LinkConfig {
            anti_entropy_secs: 1,
            ..mqtt_link(
                "hub",
                &url,
                format!("{prefix}/car-1/up"),
                format!("{prefix}/car-1/down"),
                "hub",
            )
        })
        .await
        .unwrap();
        wait_until("the hub to hold the edge's things", || {
            hub.twins().thing_count() == 50
        })
        .await;
        wait_until("the first round", || {
            edge.status()[0].anti_entropy_rounds >= 1
        })
        .await;
        let before = edge.status()[0].repaired;

        hub.shutdown().await;
        drop(hub);
        let hub = instance("hub", &network).await;
        hub.add(hub_link()).await.unwrap();
        wait_until("the restored hub to be repaired", || {
            hub.twins().thing_count() == 50
        })
        .await;
        for id in &ids {
            let (e, h) = (
                edge.twins().get_thing(id).unwrap(),
                hub.twins().get_thing(id).unwrap(),
            );
            assert_eq!(e.body(), h.body(), "{id}");
        }
        let s = edge.status().remove(0);
        assert_eq!(s.repaired - before, 50, "{s:?}");
        assert_eq!(s.wire, Wire::Json, "auto is JSON over MQTT");
        hub.shutdown().await;
        edge.shutdown().await;
    })
    .await
    .expect("test hung");
}
