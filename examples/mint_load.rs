//! A load generator for the token endpoint that can send a fresh DPoP proof
//! with every request (oha sends one fixed request): for `bench/dpop.sh`,
//! which runs it with and without proofs against the same server, so the
//! proof check's cost is the only difference. Proofs are made before the
//! clock starts (each is single use and lives 60 s), so the generator does
//! the same work per request in both modes and does not steal the server's
//! CPU signing.
//!
//! `cargo run --release --example mint_load -- URL AUTH BODY [--dpop] [--seconds 10] [--connections 64]`
//! prints one markdown row: throughput, p50, p99, status codes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::json;

struct Args {
    url: String,
    auth: String,
    body: String,
    dpop: bool,
    seconds: u64,
    connections: usize,
}

fn args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let usage = "usage: mint_load URL AUTH BODY [--dpop] [--seconds N] [--connections N]";
    let (url, auth, body) = match (it.next(), it.next(), it.next()) {
        (Some(u), Some(a), Some(b)) => (u, a, b),
        _ => return Err(usage.into()),
    };
    let mut a = Args {
        url,
        auth,
        body,
        dpop: false,
        seconds: 10,
        connections: 64,
    };
    while let Some(flag) = it.next() {
        let mut number = || it.next().and_then(|v| v.parse::<u64>().ok()).ok_or(usage);
        match flag.as_str() {
            "--dpop" => a.dpop = true,
            "--seconds" => a.seconds = number()?,
            "--connections" => a.connections = number()? as usize,
            _ => return Err(usage.into()),
        }
    }
    Ok(a)
}

/// `count` proofs for `htu`, each with its own `jti`, made on every core.
fn proofs(htu: &str, count: usize) -> Vec<String> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("a P-256 key");
    let key = Arc::new(EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).expect("key"));
    let p = key.public_key().as_ref();
    let header = json!({"typ": "dpop+jwt", "alg": "ES256",
        "jwk": {"kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode(&p[1..33]), "y": URL_SAFE_NO_PAD.encode(&p[33..65])}});
    let header = URL_SAFE_NO_PAD.encode(header.to_string());
    let iat = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let chunks: Vec<_> = (0..threads)
        .map(|t| {
            let (key, header, htu) = (key.clone(), header.clone(), htu.to_string());
            std::thread::spawn(move || {
                let rng = SystemRandom::new();
                (t..count)
                    .step_by(threads)
                    .map(|i| {
                        let claims = json!({"jti": format!("bench-{iat}-{i}"), "htm": "POST", "htu": htu, "iat": iat});
                        let signed = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
                        let sig = key.sign(&rng, signed.as_bytes()).expect("signature");
                        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    chunks.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let a = args()?;
    let htu = format!("{}/oauth2/token", a.url);
    // Enough for 60k mints a second over the run; each proof is used once.
    let proofs = Arc::new(if a.dpop {
        proofs(&htu, 60_000 * a.seconds as usize)
    } else {
        Vec::new()
    });
    let next = Arc::new(AtomicUsize::new(0));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(a.connections)
        .build()
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(a.seconds);
    let workers: Vec<_> = (0..a.connections)
        .map(|_| {
            let (http, proofs, next) = (http.clone(), proofs.clone(), next.clone());
            let (htu, auth, body, dpop) = (htu.clone(), a.auth.clone(), a.body.clone(), a.dpop);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut codes: BTreeMap<u16, u64> = BTreeMap::new();
                while Instant::now() < deadline {
                    let mut req = http
                        .post(&htu)
                        .header("authorization", &auth)
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(body.clone());
                    if dpop {
                        let Some(proof) = proofs.get(next.fetch_add(1, Ordering::Relaxed)) else {
                            break;
                        };
                        req = req.header("dpop", proof);
                    }
                    let t = Instant::now();
                    let code = match req.send().await {
                        Ok(res) => {
                            let code = res.status().as_u16();
                            let _ = res.bytes().await;
                            code
                        }
                        Err(_) => 0,
                    };
                    latencies.push(t.elapsed());
                    *codes.entry(code).or_default() += 1;
                }
                (latencies, codes)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut codes: BTreeMap<u16, u64> = BTreeMap::new();
    for w in workers {
        let (l, c) = w.await.map_err(|e| e.to_string())?;
        latencies.extend(l);
        for (k, v) in c {
            *codes.entry(k).or_default() += v;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let codes: Vec<String> = codes.iter().map(|(k, v)| format!("{k}×{v}")).collect();
    println!(
        "| {} | {:.0}/s | {:.1} ms | {:.1} ms | {} |",
        if a.dpop {
            "with a DPoP proof each"
        } else {
            "bearer (no proof)"
        },
        latencies.len() as f64 / elapsed,
        pct(0.5),
        pct(0.99),
        codes.join(" ")
    );
    Ok(())
}
