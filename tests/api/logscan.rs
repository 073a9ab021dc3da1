//! Every server the suite starts logs into a scanner: a client secret, a
//! JWT, the master key or an Authorization header in any log line fails the
//! test (secrets and tokens never reach logs).

/// Log lines (of any server in this test process) that held a secret or a
/// token: every app's drop fails its test while this is not empty.
static LEAKS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Whether a log line holds a client secret, a JWT, the test master key or
/// the bootstrap admin secret (the patterns the interop suite scans for).
fn leaks(line: &str) -> bool {
    static PATTERNS: std::sync::OnceLock<Vec<regex_lite::Regex>> = std::sync::OnceLock::new();
    let patterns = PATTERNS.get_or_init(|| {
        [
            r"mfy_cs_[A-Za-z0-9_-]{8,}",
            r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
            &regex_lite::escape(crate::harness::MASTER_KEY),
            r"(?i)authorization:\s*(basic|bearer|dpop)\s+\S+",
        ]
        .iter()
        .map(|p| regex_lite::Regex::new(p).unwrap())
        .collect()
    });
    patterns.iter().any(|p| p.is_match(line))
}

/// Each formatted log event: scanned for secrets, and shown when TEST_LOG is set.
struct ScannedLine {
    buf: Vec<u8>,
    show: bool,
}

impl std::io::Write for ScannedLine {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for ScannedLine {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buf);
        if leaks(&text) {
            let mut leaked = LEAKS.lock().unwrap_or_else(|e| e.into_inner());
            leaked.push(text.chars().take(120).collect());
        }
        if self.show {
            eprint!("{text}");
        }
    }
}

/// Every server in the suite logs at info (mayfly and tower-http at debug;
/// or what TEST_LOG asks for) into
/// a scanner: a secret or token in any log line fails the test that made it.
/// `TEST_LOG=1` (or a filter such as `TEST_LOG=mayfly=debug`) also shows the
/// output.
pub fn init_test_log() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let wanted = std::env::var("TEST_LOG").ok();
        let show = wanted.is_some();
        let filter = match wanted.as_deref() {
            // mayfly's and tower-http's debug lines too: what a verbose operator would see.
            None | Some("1") => "info,mayfly=debug,tower_http=debug".to_string(),
            Some(f) => f.to_string(),
        };
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_ansi(false)
            .with_writer(move || ScannedLine { buf: Vec::new(), show })
            .try_init();
    });
}

/// Fails if any log line so far held a secret (a test's own failure first).
pub fn assert_no_leaks() {
    if std::thread::panicking() {
        return;
    }
    let leaked = LEAKS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(leaked.is_empty(), "a server logged secrets or tokens: {leaked:?}");
}

#[test]
fn the_log_scanner_knows_a_secret_and_a_token_from_ordinary_lines() {
    assert!(leaks("client authenticated secret=mfy_cs_abcdefghijkl"));
    assert!(leaks("token eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0x.c2lnbmF0dXJlc2ln"));
    assert!(leaks("headers: Authorization: Bearer abc"));
    assert!(!leaks(
        "INFO mint{tenant=acme client_id=acme-ci}: token issued lease=0193"
    ));
}
