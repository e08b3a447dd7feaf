//! The edge binary itself: its default configuration, and a start, a write, SIGTERM, a restart
//! that still has the write.

use std::process::Command;
use std::time::Duration;

use opentwins_runtime::process::{Process, sibling_binary};
use opentwins_runtime::{InstanceConfig, Role};

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn prints_a_default_configuration_that_reads_back() {
    let out = Command::new(sibling_binary("opentwins-edge").unwrap())
        .arg("--print-default-config")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("# opentwins-edge default configuration"),
        "{text}"
    );
    assert_eq!(
        InstanceConfig::from_toml(Role::Edge, &text).unwrap(),
        InstanceConfig::defaults(Role::Edge)
    );
}

#[test]
fn a_bad_configuration_is_refused_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("edge.toml");
    std::fs::write(&config, "[enable]\nhttps = true\n").unwrap();
    let out = Command::new(sibling_binary("opentwins-edge").unwrap())
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("https"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_serves_stops_on_sigterm_and_keeps_its_data() {
    tokio::time::timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("edge.toml");
        let data = dir.path().join("data");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n[enable]\nmqtt = false\n\
                 [[things]]\nthingId = \"test:car\"\npolicyId = \"opentwins:fleet\"\n\
                 features = {{ speed = {{ properties = {{ value = 1 }} }} }}\n",
                data.display().to_string()
            ),
        )
        .unwrap();
        let binary = sibling_binary("opentwins-edge").unwrap();
        let env = [("OPENTWINS_INSTANCE_ID", "car-e2e")];
        let client = reqwest::Client::new();
        let mut edge = Process::spawn(&binary, &config, &env, LIMIT).unwrap();
        let url = format!(
            "{}/api/2/things/test:car/features/speed/properties/value",
            edge.url()
        );
        let health = client
            .get(format!("{}/health", edge.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
        let put = client
            .put(&url)
            .header("content-type", "application/json")
            .body("42")
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 204);
        let metrics = client
            .get(format!("{}/metrics", edge.url()))
            .send()
            .await
            .unwrap();
        let metrics = metrics.text().await.unwrap();
        assert!(
            metrics.contains("opentwins_processor_frames_total"),
            "{metrics}"
        );
        let status = tokio::task::spawn_blocking(move || {
            let status = edge.terminate(Duration::from_secs(20));
            (edge, status)
        });
        let (_edge, status) = status.await.unwrap();
        assert!(status.unwrap().success());

        let edge = Process::spawn(&binary, &config, &env, LIMIT).unwrap();
        let url = url.replace(&_edge.url(), &edge.url());
        let value = client.get(&url).send().await.unwrap().text().await.unwrap();
        assert_eq!(value, "42");
    })
    .await
    .unwrap();
}

// Issue 21, item 3: logs that tools can read. Off a terminal the text log has no colour codes;
// `--log-format json` writes one JSON object per line. Both say at start what runs and where
// the store is, and at the end what was flushed.
#[test]
fn logs_are_plain_off_a_terminal_and_json_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("edge.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n[enable]\nmqtt = false\n",
            dir.path().join("data").display().to_string()
        ),
    )
    .unwrap();
    let binary = sibling_binary("opentwins-edge").unwrap();
    // Each format on a fresh data directory: the first start also logs the admin token.
    let run = |format: &str| {
        let log = dir.path().join(format!("{format}.log"));
        let mut command = Command::new(&binary);
        command
            .arg("--config")
            .arg(&config)
            .env("OPENTWINS_DATA_DIR", dir.path().join(format))
            .arg("--log-format")
            .arg(format)
            .env_remove("NO_COLOR")
            .env("RUST_LOG", "info")
            .stderr(std::fs::File::create(&log).unwrap());
        let mut edge = Process::start(command, LIMIT).unwrap();
        assert!(edge.terminate(Duration::from_secs(20)).unwrap().success());
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(!text.contains('\u{1b}'), "colour codes in a file: {text}");
        text
    };

    let text = run("text");
    let started = text
        .lines()
        .find(|l| l.contains("instance started"))
        .expect(&text);
    assert!(
        started.contains("store=") && started.contains("things="),
        "{started}"
    );
    assert!(text.contains("instance stopped"), "{text}");

    let json = run("json");
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let message = |v: &serde_json::Value| v["fields"]["message"].as_str().unwrap_or("").to_owned();
    let started = lines
        .iter()
        .find(|v| message(v) == "instance started")
        .expect(&json);
    assert!(
        started["fields"]["store"]
            .as_str()
            .unwrap()
            .ends_with("store"),
        "{started}"
    );
    assert_eq!(started["level"], "INFO");
    assert!(
        lines
            .iter()
            .any(|v| message(v).starts_with("instance stopped")),
        "{json}"
    );
    assert!(
        lines
            .iter()
            .any(|v| message(v).starts_with("generated the administrator token")),
        "{json}"
    );
}
