//! A private `mosquitto` per test with what a production broker has: TLS (certificates made
//! by `openssl` at test time), mutual TLS, users in a `password_file` (made by
//! `mosquitto_passwd`) and an `acl_file`. Used by `mqtt_tls.rs` and `broker_auth.rs`.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::require_services;

/// Whether `bin` runs; otherwise skip loudly (or fail with `OPENTWINS_REQUIRE_SERVICES=1`).
pub fn have(bin: &str, arg: &str) -> bool {
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

fn run(dir: &Path, bin: &str, args: &[&str]) {
    let out = Command::new(bin)
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{bin} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`{name}.key`, `{name}.crt`) in `dir`.
pub fn make_ca(dir: &Path, name: &str) {
    run(
        dir,
        "openssl",
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
pub fn make_cert(dir: &Path, ca: &str, name: &str, cn: &str, ext: &str, serial: &str) {
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    run(
        dir,
        "openssl",
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
    run(
        dir,
        "openssl",
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

/// What the private broker requires.
#[derive(Default)]
pub struct BrokerSpec {
    /// A TLS listener: `Some(require_certificate)`; `None`: plain TCP.
    pub tls: Option<bool>,
    /// Users and passwords (`allow_anonymous false` and a `password_file` when not empty).
    pub users: Vec<(String, String)>,
    /// The `acl_file`'s text, if any.
    pub acl: Option<String>,
}

/// A private Mosquitto on a free 127.0.0.1 port, configured as `spec` says, its files in a temp
/// dir. With TLS, `ca` signs `server` (CN and SAN 127.0.0.1) and `client`; `other-ca` signs
/// nothing. Killed and reaped on drop, also when the test fails.
pub struct SecureBroker {
    dir: tempfile::TempDir,
    pub port: u16,
    tls: bool,
    child: Child,
}

impl SecureBroker {
    /// `None` (skipped loudly) when a binary it needs is missing.
    pub fn start(spec: &BrokerSpec) -> Option<SecureBroker> {
        if !have("mosquitto", "-h")
            || (spec.tls.is_some() && !have("openssl", "version"))
            || (!spec.users.is_empty() && !have("mosquitto_passwd", "-h"))
        {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut conf = String::new();
        if let Some(require_certificate) = spec.tls {
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
            conf += &format!(
                "cafile {0}/ca.crt\ncertfile {0}/server.crt\nkeyfile {0}/server.key\nrequire_certificate {require_certificate}\n",
                d.display()
            );
        }
        if spec.users.is_empty() {
            conf += "allow_anonymous true\n";
        } else {
            let file = d.join("passwd");
            for (i, (user, password)) in spec.users.iter().enumerate() {
                let mut args = vec!["-b"];
                if i == 0 {
                    args.push("-c");
                }
                let f = file.to_str().unwrap();
                args.extend([f, user.as_str(), password.as_str()]);
                run(d, "mosquitto_passwd", &args);
            }
            conf += &format!("allow_anonymous false\npassword_file {}\n", file.display());
        }
        if let Some(acl) = &spec.acl {
            std::fs::write(d.join("acl"), acl).unwrap();
            conf += &format!("acl_file {}/acl\n", d.display());
        }
        // Mosquitto started as root drops to the `mosquitto` user, which must read these.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        for f in std::fs::read_dir(d).unwrap() {
            std::fs::set_permissions(f.unwrap().path(), std::fs::Permissions::from_mode(0o644))
                .unwrap();
        }
        // A free port may be taken between choosing and binding it: one more try then.
        let mut last = String::new();
        for _ in 0..2 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let path = d.join("mosquitto.conf");
            std::fs::write(&path, format!("listener {port} 127.0.0.1\n{conf}")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let mut child = Command::new("mosquitto")
                .arg("-c")
                .arg(&path)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            // Its log, read to the end on a thread of its own (a full pipe would stop it):
            // "… running" once it listens, or an error and the end of the stream.
            let (tx, rx) = std::sync::mpsc::channel::<String>();
            let stderr = child.stderr.take().unwrap();
            std::thread::spawn(move || {
                use std::io::BufRead as _;
                for line in std::io::BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let _ = tx.send(line);
                }
            });
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut log = Vec::new();
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(line) if line.ends_with(" running") => {
                        TcpStream::connect(("127.0.0.1", port))
                            .expect("mosquitto runs but does not listen");
                        return Some(SecureBroker {
                            dir,
                            port,
                            tls: spec.tls.is_some(),
                            child,
                        });
                    }
                    Ok(line) => log.push(line),
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                        let status = child.wait().unwrap();
                        last = format!("{status}: {}", log.join("\n"));
                        break;
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        panic!("the private mosquitto did not start: {}", log.join("\n"));
                    }
                }
            }
        }
        panic!("the private mosquitto did not start twice: {last}");
    }

    /// `mqtts://127.0.0.1:{port}` with TLS, else `mqtt://…`, as link configurations write it.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The same as the client library writes it (`ssl://`, `tcp://`).
    pub fn uri(&self) -> String {
        self.url()
            .replace("mqtts://", "ssl://")
            .replace("mqtt://", "tcp://")
    }

    /// A file of the broker's directory (`ca.crt`, `client.key`, …).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for SecureBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
