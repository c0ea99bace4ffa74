//! Randomized chaos: kills, partitions and latency against a real kube-apiserver; an audit log of every instant any
//! candidate acted as leader must show no overlap.

mod common;

use std::time::Duration;

use common::*;
use rand::{Rng, SeedableRng};
use test_support::{ControlPlane, FaultProxy, ProxyMode};
use tokio::time::Instant;

const CANDIDATES: usize = 3;
/// Rounds of the short version (`scripts/test`); `scripts/chaos` sets `CHAOS_ROUNDS` (500) for the long one.
const ROUNDS: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_never_two_leaders() {
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    let rounds = std::env::var("CHAOS_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(ROUNDS);
    eprintln!("chaos seed {seed} (rerun with CHAOS_SEED={seed}), {rounds} rounds");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let cp = ControlPlane::start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let audit = Audit::default();
    let mut proxies = Vec::new();
    let mut candidates: Vec<Option<Candidate>> = Vec::new();
    let mut generation = 0usize;
    for i in 0..CANDIDATES {
        let proxy = FaultProxy::start(cp.server_url())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let client = proxy.client(cp.config()).unwrap_or_else(|e| panic!("{e}"));
        candidates.push(Some(Candidate::start(
            client,
            fast("chaos", &format!("c{i}-g0")),
            &audit,
        )));
        proxies.push(proxy);
    }

    let mut actions = [0usize; 5];
    let started = Instant::now();
    for round in 0..rounds {
        let leader = candidates
            .iter()
            .position(|c| c.as_ref().is_some_and(Candidate::is_leading));
        let victim = leader.unwrap_or_else(|| rng.random_range(0..CANDIDATES));
        let action = rng.random_range(0..5);
        actions[action] += 1;
        match action {
            // kill -9
            0 => {
                if let Some(c) = candidates[victim].take() {
                    c.kill().await;
                }
            }
            // graceful shutdown
            1 => {
                if let Some(c) = candidates[victim].take() {
                    let _ = c.shutdown().await;
                }
            }
            // partition (apiserver paused, as this candidate sees it)
            2 => {
                proxies[victim].set_mode(ProxyMode::Blackhole);
                tokio::time::sleep(Duration::from_millis(rng.random_range(200..3000))).await;
                proxies[victim].set_mode(ProxyMode::Pass);
            }
            // slow answers (writes land, answers come late)
            3 => {
                let delay = Duration::from_millis(rng.random_range(100..1500));
                proxies[victim].set_mode(ProxyMode::DelayResponses(delay));
                tokio::time::sleep(Duration::from_millis(rng.random_range(500..2500))).await;
                proxies[victim].set_mode(ProxyMode::Pass);
            }
            // nothing: let time pass
            _ => tokio::time::sleep(Duration::from_millis(rng.random_range(100..1000))).await,
        }
        // Restart whatever is down, with a new identity (a new process).
        for (i, slot) in candidates.iter_mut().enumerate() {
            if slot.is_none() {
                generation += 1;
                let client = proxies[i]
                    .client(cp.config())
                    .unwrap_or_else(|e| panic!("{e}"));
                *slot = Some(Candidate::start(
                    client,
                    fast("chaos", &format!("c{i}-g{generation}")),
                    &audit,
                ));
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..800))).await;
        if round % 10 == 9 {
            audit.assert_no_overlap();
        }
    }
    for c in candidates.into_iter().flatten() {
        c.kill().await;
    }
    let sessions = audit.sessions();
    eprintln!(
        "{rounds} rounds in {:?}: actions kill/shutdown/partition/latency/idle = {actions:?}; {} leadership sessions",
        started.elapsed(),
        sessions.len()
    );
    assert!(
        sessions.len() >= 10,
        "too few changes of leadership to mean anything: {}",
        sessions.len()
    );
    audit.assert_no_overlap();
    if let Ok(path) = std::env::var("CHAOS_REPORT") {
        let [kill, shutdown, partition, latency, idle] = actions;
        let table = format!(
            "| rounds | kill -9 | graceful shutdown | partition | slow answers | idle | leadership sessions | overlapping leaders | run time | seed |\n\
             |---|---|---|---|---|---|---|---|---|---|\n\
             | {rounds} | {kill} | {shutdown} | {partition} | {latency} | {idle} | {} | 0 | {:.0} s | {seed} |\n",
            sessions.len(),
            started.elapsed().as_secs_f64()
        );
        std::fs::write(&path, table).unwrap_or_else(|e| panic!("write {path}: {e}"));
    }
}
