//! Helpers shared by the integration tests that need services.
#![allow(dead_code, unreachable_pub)]

use std::net::TcpStream;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use opentwins_core::model::PolicyId;
use opentwins_core::policy::AuthContext;
use opentwins_core::protocol::{Action, Headers, PolicyCommand};
use opentwins_core::{EngineConfig, Pointer, Twins};
use opentwins_transport::link::{Direction, LinkConfig, Links, Network, PeerConfig};
use serde_json::json;

/// The shared broker's URL, or `None` (test skipped) when it is not running.
pub fn broker() -> Option<String> {
    let addr = "127.0.0.1:1883".parse().unwrap();
    if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
        return Some("tcp://127.0.0.1:1883".into());
    }
    assert!(
        !require_services(),
        "Mosquitto is not reachable on 127.0.0.1:1883 and OPENTWINS_REQUIRE_SERVICES=1"
    );
    eprintln!("\n!!! SKIPPED: Mosquitto is not reachable on 127.0.0.1:1883 !!!\n");
    None
}

/// A topic prefix of its own for one test run.
pub fn prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("ot-test/{test}/{}-{nanos}", std::process::id())
}

/// Whether missing services fail the test instead of skipping it (CI sets it).
pub fn require_services() -> bool {
    std::env::var("OPENTWINS_REQUIRE_SERVICES").as_deref() == Ok("1")
}

/// A private Mosquitto on a free port with persistence in a temp dir.
pub struct PrivateBroker {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

impl PrivateBroker {
    pub fn start() -> Option<PrivateBroker> {
        if Command::new("mosquitto").arg("-h").output().is_err() {
            assert!(
                !require_services(),
                "the mosquitto binary is not on PATH and OPENTWINS_REQUIRE_SERVICES=1"
            );
            eprintln!("\n!!! SKIPPED: the mosquitto binary is not on PATH !!!\n");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        // Mosquitto started as root drops to the `mosquitto` user, which must write here.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let conf = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nmax_queued_messages 100000\n",
            dir.path().display()
        );
        std::fs::write(dir.path().join("mosquitto.conf"), conf).unwrap();
        let mut b = PrivateBroker {
            dir,
            port,
            child: None,
        };
        b.run();
        Some(b)
    }

    pub fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    pub fn run(&mut self) {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "private mosquitto did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the broker with SIGTERM (it saves its persistence file) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn writer() -> AuthContext {
    AuthContext::new(["test:writer"])
}

/// An instance: engine (memory store), links, outboxes in a temporary sled database.
pub async fn instance(id: &str, network: &Network) -> Links {
    let twins = Twins::in_memory(EngineConfig {
        instance_id: id.into(),
        ..EngineConfig::default()
    });
    provision(&twins).await;
    let db = sled::Config::new().temporary(true).open().unwrap();
    Links::new(twins, db, Some(network.clone()))
}

/// Creates the policy `t:policy` (the test writer and link peers may do everything).
pub async fn provision(twins: &Twins) {
    let policy = json!({"entries": {"all": {
        "subjects": {"test:writer": {"type": "test"}, "link:peer": {"type": "link"}},
        "resources": {
            "thing:/": {"grant": ["READ", "WRITE"], "revoke": []},
            "policy:/": {"grant": ["READ", "WRITE"], "revoke": []}
        }
    }}});
    let cmd = PolicyCommand {
        policy_id: PolicyId::new("t:policy").unwrap(),
        action: Action::Create,
        path: Pointer::root(),
        value: Some(policy),
        headers: Headers::default(),
    };
    twins.apply_policy(&writer(), cmd).await.unwrap();
}

pub fn link_to(peer: &str) -> LinkConfig {
    LinkConfig {
        name: format!("to-{peer}"),
        peer: PeerConfig::InProcess {
            instance: peer.into(),
        },
        direction: Direction::Both,
        filter: None,
        include: Vec::new(),
        exclude: Vec::new(),
        owned: Vec::new(),
        subject: "link:peer".into(),
        policy: None,
        peer_instance: Some(peer.into()),
        outbox_bytes: 64 << 20,
        create: true,
        ..LinkConfig::new(String::new(), PeerConfig::Inbox {})
    }
}
