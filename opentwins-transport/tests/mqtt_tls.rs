//! The MQTT bridge over TLS and mutual TLS against private `mosquitto` processes with
//! certificates made by `openssl` at test time. In a test binary of its own: paho's C library
//! with OpenSSL, torn down while plain clients of other tests run in the same process, aborted
//! the process now and then (glibc: "unaligned tcache chunk detected" at thread shutdown).

use std::net::TcpStream;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use opentwins_core::{EngineConfig, Twins};
use opentwins_transport::mqtt::{
    ConnectionState, Mapping, MqttBridge, MqttConfig, MqttHandle, SubscriptionConfig,
};

mod common;
mod mqtt_helpers;
use common::{prefix, require_services};
use mqtt_helpers::*;
use paho_mqtt as paho;
use serde_json::json;

/// Whether `bin` runs; otherwise skip loudly (or fail with `OPENTWINS_REQUIRE_SERVICES=1`).
fn have(bin: &str, arg: &str) -> bool {
    if Command::new(bin).arg(arg).output().is_ok() {
        return true;
    }
    assert!(
        !require_services(),
        "the {bin} binary is not on PATH and OPENTWINS_REQUIRE_SERVICES=1"
    );
    eprintln!("\n!!! SKIPPED: the {bin} binary is not on PATH !!!\n");
    false
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`{name}.key`, `{name}.crt`) in `dir`.
fn make_ca(dir: &std::path::Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            &format!("/CN=opentwins test {name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
        ],
    );
}

/// A key and certificate `{name}.key` / `{name}.crt` signed by `ca`, with extensions `ext`.
fn make_cert(dir: &std::path::Path, ca: &str, name: &str, cn: &str, ext: &str, serial: &str) {
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-set_serial",
            serial,
            "-days",
            "1",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.crt"),
        ],
    );
}

/// A private Mosquitto with a TLS listener on a free port, certificates made by `openssl` in a
/// temp dir: `ca` signs `server` (CN and SAN 127.0.0.1) and `client`; `other-ca` signs nothing.
/// Killed and reaped on drop, also when the test fails.
struct TlsBroker {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

impl TlsBroker {
    fn start(require_certificate: bool) -> Option<TlsBroker> {
        if !have("openssl", "version") || !have("mosquitto", "-h") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        make_ca(d, "ca");
        make_ca(d, "other-ca");
        make_cert(
            d,
            "ca",
            "server",
            "127.0.0.1",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
            "2",
        );
        make_cert(
            d,
            "ca",
            "client",
            "opentwins-test-client",
            "extendedKeyUsage=clientAuth\n",
            "3",
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\ncafile {0}/ca.crt\ncertfile {0}/server.crt\nkeyfile {0}/server.key\nrequire_certificate {require_certificate}\n",
            d.display()
        );
        std::fs::write(d.join("mosquitto.conf"), conf).unwrap();
        // Mosquitto started as root drops to the `mosquitto` user, which must read these.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        for f in std::fs::read_dir(d).unwrap() {
            std::fs::set_permissions(f.unwrap().path(), std::fs::Permissions::from_mode(0o644))
                .unwrap();
        }
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(d.join("mosquitto.conf"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let b = TlsBroker { dir, port, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", b.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "private TLS mosquitto did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(b)
    }

    fn url(&self) -> String {
        format!("ssl://127.0.0.1:{}", self.port)
    }

    fn file(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// A test-side client over TLS with the right CA and the client certificate.
    async fn client(&self, id: &str) -> Client {
        let mut cli = paho::CreateOptionsBuilder::new()
            .server_uri(self.url())
            .client_id(id)
            .mqtt_version(paho::MQTT_VERSION_5)
            .create_client()
            .unwrap();
        let rx = cli.get_stream(None);
        let ssl = paho::SslOptionsBuilder::new()
            .trust_store(self.file("ca.crt"))
            .unwrap()
            .key_store(self.file("client.crt"))
            .unwrap()
            .private_key(self.file("client.key"))
            .unwrap()
            .finalize();
        let opts = paho::ConnectOptionsBuilder::new_v5()
            .clean_start(true)
            .ssl_options(ssl)
            .finalize();
        cli.connect(opts).await.unwrap();
        Client { cli, rx }
    }

    /// A bridge config for this broker with a Ditto command subscription under `p`.
    fn config(&self, p: &str, ca: &str, client_cert: bool) -> MqttConfig {
        let mut c = config(&self.url(), p);
        c.connect_timeout = Duration::from_secs(3);
        c.tls.ca_file = Some(self.file(ca));
        if client_cert {
            c.tls.cert_file = Some(self.file("client.crt"));
            c.tls.key_file = Some(self.file("client.key"));
        }
        c.subscriptions.push(SubscriptionConfig {
            filter: format!("{p}/commands"),
            mapping: Mapping::Ditto,
            ..SubscriptionConfig::default()
        });
        c
    }
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A create sent over TLS to the bridge's command subscription is answered with 201.
async fn tls_round_trip(broker: &TlsBroker, p: &str, bridge: &MqttHandle) {
    let client = broker.client(&format!("{p}-client")).await;
    client.subscribe(&format!("{p}/responses")).await;
    let mut props = paho::Properties::new();
    props
        .push_string(paho::PropertyCode::ResponseTopic, &format!("{p}/responses"))
        .unwrap();
    let create = json!({"topic": "test.tls/car/things/twin/commands/create", "path": "/",
        "headers": {"correlation-id": "tls-1"}, "value": {"attributes": {"secure": true}}});
    client
        .publish(
            paho::MessageBuilder::new()
                .topic(format!("{p}/commands"))
                .payload(create.to_string())
                .qos(1)
                .properties(props)
                .finalize(),
        )
        .await;
    let v = json_of(&client.next(10).await);
    assert_eq!(v["status"], 201, "{v}");
    assert_eq!(v["headers"]["correlation-id"], "tls-1");
    assert_eq!(v["value"]["attributes"]["secure"], true, "{v}");
    wait_metrics(bridge, |m| m.commands_applied == 1).await;
    client.cli.disconnect(None).await.unwrap();
}

/// A bridge that must not connect: `wait_connected` is false, shutdown still returns.
async fn must_not_connect(config: MqttConfig, what: &str) {
    let tw = Twins::in_memory(EngineConfig::default());
    let (bridge, join) = MqttBridge::spawn(config, tw).unwrap();
    assert!(
        !bridge.wait_connected(Duration::from_secs(4)).await,
        "the bridge connected with {what}"
    );
    assert_eq!(bridge.metrics().connects, 0);
    bridge.shutdown().await;
    join.await.expect("the driver panicked");
    assert_eq!(bridge.state(), ConnectionState::Disconnected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_ca_connects_and_a_wrong_ca_does_not() {
    let Some(broker) = TlsBroker::start(false) else {
        return;
    };
    tokio::time::timeout(LIMIT, async {
        let p = prefix("tls");
        let tw = Twins::in_memory(EngineConfig::default());
        let bridge = start(broker.config(&p, "ca.crt", false), &tw).await;
        tls_round_trip(&broker, &p, &bridge).await;
        bridge.shutdown().await;

        let p = prefix("tls-wrong-ca");
        must_not_connect(broker.config(&p, "other-ca.crt", false), "a wrong CA").await;
    })
    .await
    .expect("test hung");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_needs_the_client_certificate() {
    let Some(broker) = TlsBroker::start(true) else {
        return;
    };
    tokio::time::timeout(LIMIT, async {
        let p = prefix("mtls");
        let tw = Twins::in_memory(EngineConfig::default());
        let bridge = start(broker.config(&p, "ca.crt", true), &tw).await;
        tls_round_trip(&broker, &p, &bridge).await;
        bridge.shutdown().await;

        let p = prefix("mtls-no-cert");
        must_not_connect(broker.config(&p, "ca.crt", false), "no client certificate").await;
        let p = prefix("mtls-wrong-ca");
        must_not_connect(broker.config(&p, "other-ca.crt", true), "a wrong CA").await;
    })
    .await
    .expect("test hung");
}
