//! Running the `opentwins-edge` / `opentwins-hub` binaries as child processes, as end-to-end
//! tests and benchmarks do: start with a configuration, wait until the HTTP API listens, stop
//! with SIGTERM or kill -9.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A binary built in the same target directory as the running executable (a test in
/// `target/debug/deps/` finds `target/debug/{name}`). `cargo test --workspace` builds every
/// binary of a package that has integration tests, as the edge and hub packages do.
pub fn sibling_binary(name: &str) -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") || dir.ends_with("examples") {
        dir.pop();
    }
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if path.is_file() {
        Ok(path)
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} is not built (cargo build -p {name})", path.display()),
        ))
    }
}

/// A running instance binary.
pub struct Process {
    child: Child,
    addr: SocketAddr,
    /// `http` or `https`, as the process announced it.
    scheme: &'static str,
}

impl Process {
    /// Starts `binary --config {config}` with `env` and waits (up to `timeout`) for its
    /// `listening on http(s)://..` line. Its log goes to this process's stderr.
    pub fn spawn(
        binary: &Path,
        config: &Path,
        env: &[(&str, &str)],
        timeout: Duration,
    ) -> std::io::Result<Process> {
        let mut command = Command::new(binary);
        command
            .arg("--config")
            .arg(config)
            .envs(env.iter().copied());
        Process::start(command, timeout)
    }

    /// Starts `command` (an instance binary with its arguments, or an emulator running one)
    /// with stdout piped and waits (up to `timeout`) for its `listening on http(s)://..` line.
    pub fn start(mut command: Command, timeout: Duration) -> std::io::Result<Process> {
        let program = command.get_program().to_owned();
        // stderr (the log) is inherited unless the command redirects it.
        let mut child = command.stdout(Stdio::piped()).spawn()?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Some(url) = line.strip_prefix("listening on ") else {
                    continue;
                };
                let announced = [("http://", "http"), ("https://", "https")]
                    .into_iter()
                    .find_map(|(prefix, scheme)| Some((scheme, url.strip_prefix(prefix)?)));
                if let Some((scheme, addr)) = announced {
                    let _ = tx.send((scheme, addr.trim().to_owned()));
                }
            }
        });
        let (scheme, addr) = match rx.recv_timeout(timeout) {
            Ok(announced) => announced,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait()?;
                return Err(std::io::Error::other(format!(
                    "{} did not start listening within {timeout:?} ({status})",
                    program.to_string_lossy()
                )));
            }
        };
        let addr = addr
            .parse()
            .map_err(|e| std::io::Error::other(format!("bad address '{addr}': {e}")))?;
        Ok(Process {
            child,
            addr,
            scheme,
        })
    }

    /// Where its HTTP API listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://{addr}`, or `https://{addr}` when it serves TLS.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit (then kills it).
    pub fn terminate(&mut self, timeout: Duration) -> std::io::Result<ExitStatus> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        Err(std::io::Error::other(format!(
            "no exit within {timeout:?} of SIGTERM"
        )))
    }

    /// kill -9, and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
