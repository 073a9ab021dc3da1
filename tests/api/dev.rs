//! `mayfly --dev` (as the README starts it) and `mayfly serve --dev` (as
//! DESIGN spells it): the real binary on an empty data directory seeds the
//! demo tenant and prints a command that mints a token, and that command
//! works when pasted into a shell.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::Value;

/// Kills the child however the test ends.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn dev_mode_prints_a_mint_command_that_works_as_pasted() {
    for args in [&["--dev"][..], &["serve", "--dev"][..]] {
        dev_mode_once(args);
    }
}

fn dev_mode_once(args: &[&str]) {
    let dir = std::env::temp_dir().join(format!("mayfly-dev-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Running(
        Command::new(env!("CARGO_BIN_EXE_mayfly"))
            .args(args)
            .env_clear()
            .env("MAYFLY_LISTEN", format!("127.0.0.1:{port}"))
            .env("MAYFLY_DATABASE_URL", format!("sqlite://{}/mayfly.db", dir.display()))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the mayfly binary runs"),
    );
    // The command is printed between the demo line and the console line.
    let stdout = BufReader::new(child.0.stdout.take().unwrap());
    let mut command = String::new();
    let mut printing = false;
    let mut lines = stdout.lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("a demo tenant is ready") {
            printing = true;
        } else if printing && line.starts_with("The console") {
            break;
        } else if printing {
            command.push_str(&line);
            command.push('\n');
        }
    }
    assert!(
        command.contains("curl"),
        "{args:?}: no mint command printed: {command:?}"
    );
    // Then the admin API: the export and the token command, pasted as printed.
    let mut admin = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.starts_with("  ") {
            admin.push_str(&line);
            admin.push('\n');
        }
        if line.contains(".access_token)") {
            break;
        }
    }
    assert!(admin.contains("export MAYFLY_ADMIN_SECRET='mfy_cs_"), "{admin}");
    let admin_run = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "set -e\n{}\nprintf %s \"$ADMIN\"",
            admin.replace("curl -sf", "curl -sf --retry 20 --retry-connrefused --retry-delay 1")
        ))
        .output()
        .unwrap();
    assert!(
        admin_run.status.success(),
        "{}",
        String::from_utf8_lossy(&admin_run.stderr)
    );
    assert!(
        String::from_utf8_lossy(&admin_run.stdout).starts_with("eyJ"),
        "an admin token"
    );
    // Pasted as printed (with -sS so a refusal is loud), against the port it names.
    let run = Command::new("sh")
        .arg("-c")
        .arg(command.replacen("curl -s", "curl -sS --retry 20 --retry-connrefused --retry-delay 1", 1))
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let answer: Value = serde_json::from_slice(&run.stdout).expect("a JSON answer");
    assert_eq!(answer["token_type"], "Bearer", "{answer}");
    assert_eq!(answer["scope"], "issues:read", "{answer}");
    assert!(answer["access_token"].as_str().is_some_and(|t| t.starts_with("eyJ")));
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
}
