//! A stdio MCP server bridged to Streamable HTTP: one process per MCP
//! session, started on `initialize` and ended by `DELETE` (or when the
//! gateway stops). Requests are written as JSON lines and answered with the
//! process's response for their id. The child starts from a clean
//! environment (a short allowlist, plus the route's credential in the
//! variable the route names): the gateway's secrets stay in the gateway.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::oneshot;

/// Sessions (processes) one route may hold at once.
const MAX_SESSIONS: usize = 256;
/// How long a request may wait for the process's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest line read from the process.
const MAX_LINE: usize = 16 * 1024 * 1024;
/// A session unused this long is ended (its process stopped).
const IDLE: Duration = Duration::from_secs(600);
/// The variables a stdio server inherits from the gateway.
const INHERITED: [&str; 10] = [
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "TZ",
    "TMPDIR",
    "VIRTUAL_ENV",
    "SYSTEMROOT",
];

#[derive(Debug, thiserror::Error)]
pub enum StdioError {
    #[error("no such session")]
    NoSession,
    #[error("too many sessions on this route")]
    Full,
    #[error("the server process failed: {0}")]
    Process(String),
    #[error("the server process did not answer in time")]
    Timeout,
}

struct Process {
    stdin: tokio::sync::Mutex<ChildStdin>,
    pending: Mutex<HashMap<String, oneshot::Sender<Value>>>,
    child: Mutex<Option<Child>>,
    last_used: Mutex<Instant>,
}

impl Process {
    fn spawn(argv: &[String], credential: Option<(&str, &SecretString)>) -> Result<Arc<Process>, StdioError> {
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .env_clear();
        for name in INHERITED {
            if let Some(v) = std::env::var_os(name) {
                cmd.env(name, v);
            }
        }
        if let Some((name, value)) = credential {
            cmd.env(name, value.expose_secret());
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| StdioError::Process(format!("cannot start {}: {e}", argv[0])))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(StdioError::Process("no pipes".into()));
        };
        let process = Arc::new(Process {
            stdin: tokio::sync::Mutex::new(stdin),
            pending: Mutex::new(HashMap::new()),
            child: Mutex::new(Some(child)),
            last_used: Mutex::new(Instant::now()),
        });
        let reader = Arc::downgrade(&process);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout);
            let mut line = String::new();
            loop {
                line.clear();
                match lines.read_line(&mut line).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) if line.len() > MAX_LINE => continue,
                    Ok(_) => {}
                }
                let Ok(msg) = serde_json::from_str::<Value>(line.trim()) else {
                    continue;
                };
                let Some(process) = reader.upgrade() else { break };
                let is_answer = msg.get("result").is_some() || msg.get("error").is_some();
                match msg.get("id").filter(|_| is_answer) {
                    Some(id) => {
                        let waiter = process.pending.lock().ok().and_then(|mut p| p.remove(&id.to_string()));
                        if let Some(w) = waiter {
                            let _ = w.send(msg);
                        }
                    }
                    // Notifications and the server's own requests have no HTTP stream to go to here.
                    None => tracing::debug!("a stdio server's message with no request waiting for it was dropped"),
                }
            }
            // The process ended: everyone still waiting learns it now.
            if let Some(process) = reader.upgrade()
                && let Ok(mut p) = process.pending.lock()
            {
                p.clear();
            }
        });
        Ok(process)
    }

    /// Writes `messages`; answers the requests among them, in order.
    async fn exchange(&self, messages: &[Value]) -> Result<Vec<Value>, StdioError> {
        if let Ok(mut t) = self.last_used.lock() {
            *t = Instant::now();
        }
        let mut waiting = Vec::new();
        for m in messages {
            let is_request = m.get("method").is_some() && m.get("id").is_some_and(|id| !id.is_null());
            if is_request && let Some(id) = m.get("id") {
                let (tx, rx) = oneshot::channel();
                if let Ok(mut p) = self.pending.lock() {
                    p.insert(id.to_string(), tx);
                }
                waiting.push(rx);
            }
        }
        {
            let mut stdin = self.stdin.lock().await;
            for m in messages {
                let mut line = serde_json::to_vec(m).map_err(|e| StdioError::Process(e.to_string()))?;
                line.push(b'\n');
                stdin
                    .write_all(&line)
                    .await
                    .map_err(|e| StdioError::Process(e.to_string()))?;
            }
            stdin.flush().await.map_err(|e| StdioError::Process(e.to_string()))?;
        }
        let mut answers = Vec::new();
        for rx in waiting {
            match tokio::time::timeout(ANSWER_TIMEOUT, rx).await {
                Ok(Ok(answer)) => answers.push(answer),
                Ok(Err(_)) => return Err(StdioError::Process("the process exited".into())),
                Err(_) => return Err(StdioError::Timeout),
            }
        }
        Ok(answers)
    }

    fn stop(&self) {
        if let Ok(mut child) = self.child.lock()
            && let Some(mut c) = child.take()
        {
            let _ = c.start_kill();
        }
    }
}

/// A route's processes, by session id.
pub struct Processes {
    argv: Vec<String>,
    credential: Option<(String, SecretString)>,
    sessions: Mutex<HashMap<String, Arc<Process>>>,
}

impl Processes {
    pub fn new(argv: Vec<String>, credential: Option<(String, SecretString)>) -> Arc<Self> {
        let processes = Arc::new(Processes {
            argv,
            credential,
            sessions: Mutex::new(HashMap::new()),
        });
        tokio::spawn(reap(Arc::downgrade(&processes)));
        processes
    }

    /// Starts a process for a new session; returns its session id.
    pub fn start(&self) -> Result<String, StdioError> {
        let mut sessions = self.sessions.lock().map_err(|_| StdioError::Full)?;
        if sessions.len() >= MAX_SESSIONS {
            return Err(StdioError::Full);
        }
        let credential = self.credential.as_ref().map(|(name, value)| (name.as_str(), value));
        let process = Process::spawn(&self.argv, credential)?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        sessions.insert(id.clone(), process);
        Ok(id)
    }

    pub async fn exchange(&self, session: &str, messages: &[Value]) -> Result<Vec<Value>, StdioError> {
        let process = self
            .sessions
            .lock()
            .ok()
            .and_then(|s| s.get(session).cloned())
            .ok_or(StdioError::NoSession)?;
        let answers = process.exchange(messages).await;
        if answers.is_err() {
            // A broken process is not reused: the client starts a new session.
            self.end(session);
        }
        answers
    }

    pub fn end(&self, session: &str) -> bool {
        let process = self.sessions.lock().ok().and_then(|mut s| s.remove(session));
        match process {
            Some(p) => {
                p.stop();
                true
            }
            None => false,
        }
    }
}

/// Ends idle sessions until the route is gone.
async fn reap(processes: Weak<Processes>) {
    loop {
        tokio::time::sleep(Duration::from_secs(30)).await;
        let Some(processes) = processes.upgrade() else { return };
        let idle: Vec<String> = match processes.sessions.lock() {
            Ok(s) => s
                .iter()
                .filter(|(_, p)| p.last_used.lock().map(|t| t.elapsed() > IDLE).unwrap_or(true))
                .map(|(id, _)| id.clone())
                .collect(),
            Err(_) => return,
        };
        for id in idle {
            processes.end(&id);
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        if let Ok(s) = self.sessions.lock() {
            s.values().for_each(|p| p.stop());
        }
    }
}
