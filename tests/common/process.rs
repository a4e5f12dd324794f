//! The `waypoint` binary as a child process: its output in a log file, signals, and waiting for
//! it to exit or to log something.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running `waypoint` process. Killed (SIGKILL) when dropped, if still running.
pub struct Waypoint {
    child: Child,
    log: PathBuf,
}

impl Waypoint {
    /// Starts `waypoint <args>` with exactly `env` (plus `RUST_LOG=info`), its stdout and
    /// stderr appended to `log`.
    pub fn start(args: &[&str], env: &[(String, String)], log: &Path) -> Waypoint {
        let output = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_waypoint"))
            .args(args)
            .env_clear()
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("log file"))
            .stderr(output)
            .spawn()
            .expect("start waypoint");
        Waypoint {
            child,
            log: log.to_owned(),
        }
    }

    /// Everything the process (and earlier ones sharing the file) logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` (SIGTERM, SIGINT, SIGHUP...).
    pub fn signal(&self, signal: libc::c_int) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: signals our own child, which has not been reaped yet.
        assert_eq!(
            unsafe { libc::kill(pid, signal) },
            0,
            "kill({pid}, {signal})"
        );
    }

    /// SIGKILL, and reaps the process.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    /// Waits for the exit status; panics with the log after `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                started.elapsed() < within,
                "no exit within {within:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then the exit status of the drain.
    pub async fn terminate(&mut self, within: Duration) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit(within).await
    }

    /// Panics with the log when the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("wait") {
            panic!("waypoint exited ({status}); its log:\n{}", self.log());
        }
    }

    /// Waits until the log contains `text`.
    pub async fn wait_log(&mut self, text: &str) {
        let started = Instant::now();
        while !self.log().contains(text) {
            self.assert_running();
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no {text:?} in the log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Waypoint {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
