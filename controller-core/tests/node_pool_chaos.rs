//! NodePool chaos: two replicas of the node-pool controller under leader election (as `node-pool-controller` runs
//! them) against a real kube-apiserver, kube-scheduler and kwok, with provider-fake's node group as the cloud (its
//! state outlives every replica). Each round scales a Deployment up, then down to half, then to zero, and kills the
//! leader (its task aborted: no Lease release, no further call) at a random moment of each step; a new replica
//! takes its place. Invariants: a scale-up launches exactly the nodes its pods need (never twice for the same pods),
//! and no Node is removed while a pod still runs on it.
//!
//! The short version runs in `scripts/test`; `scripts/chaos` runs the long one (`CHAOS_NODEPOOL_ROUNDS`,
//! `CHAOS_NODEPOOL_REPORT`). `CHAOS_SEED` replays a run.

mod common;
mod node_pool_env;

use std::collections::BTreeSet;
use std::time::Duration;

use controller_core::cloud_node::{CloudNodeConfig, CloudNodeController};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use rand::{Rng, SeedableRng};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use common::{Env, eventually};
use node_pool_env::*;

/// 500m pods on 2-CPU nodes.
const PODS_PER_NODE: usize = 4;

/// The running replicas: (identity, task).
struct Replicas {
    running: Vec<(String, JoinHandle<()>)>,
    generation: usize,
}

impl Replicas {
    fn spawn(&mut self, env: &Env) {
        self.generation += 1;
        let id = format!("np-g{}", self.generation);
        let (manager, elector) = replica(env, &id);
        let shutdown = env.shutdown.clone();
        let task = tokio::spawn(async move {
            let _ = manager.run_with_leader_election(elector, shutdown).await;
        });
        self.running.push((id, task));
    }

    /// Aborts the leader's task (a `kill -9`: no release) and starts a replacement. True if a leader was killed.
    async fn kill_leader(&mut self, env: &Env) -> bool {
        let deadline = Instant::now() + Duration::from_secs(6);
        loop {
            let holder = lease_holder(env).await;
            if let Some(i) = holder.and_then(|h| self.running.iter().position(|(id, _)| *id == h)) {
                let (_, task) = self.running.remove(i);
                task.abort();
                self.spawn(env);
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn ever_launched(env: &Env) -> usize {
    env.cloud
        .node_group_members(GROUP)
        .map(|m| m.len())
        .unwrap_or_default()
}

async fn node_names(env: &Env) -> BTreeSet<String> {
    let nodes: Api<Node> = Api::all(env.client());
    nodes
        .list(&ListParams::default())
        .await
        .map(|l| {
            l.items
                .into_iter()
                .filter_map(|n| n.metadata.name)
                .collect()
        })
        .unwrap_or_default()
}

/// Pods of `web` bound to a Node that no longer exists.
async fn pods_on_removed_nodes(env: &Env) -> usize {
    let nodes = node_names(env).await;
    replicas(env, "web")
        .await
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()))
        .filter(|n| !nodes.contains(n))
        .count()
}

/// Nodes some pod of `web` is bound to.
async fn busy_nodes(env: &Env) -> BTreeSet<String> {
    replicas(env, "web")
        .await
        .iter()
        .filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()))
        .collect()
}

#[derive(Default)]
struct Outcome {
    rounds: usize,
    kills: usize,
    launched: usize,
    duplicate_launches: usize,
    busy_nodes_removed: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kills_during_scaling_never_launch_twice_nor_remove_busy_nodes() {
    let rounds: usize = std::env::var("CHAOS_NODEPOOL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("chaos seed {seed} (rerun with CHAOS_SEED={seed}), {rounds} rounds");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let started = Instant::now();

    let env = cluster(Duration::from_secs(2)).await;
    env.run(CloudNodeController::new(CloudNodeConfig::default()));
    let _joiner = joiner(&env);
    let mut procs = Replicas {
        running: Vec::new(),
        generation: 0,
    };
    procs.spawn(&env);
    procs.spawn(&env);
    create_pool(&env, pool_spec()).await;
    deploy(&env, "web", 0).await;

    let mut outcome = Outcome {
        rounds,
        ..Outcome::default()
    };
    for round in 0..rounds {
        // Up: exactly the nodes the pods need.
        let up = rng.random_range(5..=16_usize);
        let before = ever_launched(&env);
        let live_before = live_members(&env).len();
        scale(&env, "web", i32::try_from(up).unwrap_or(4)).await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..3000))).await;
        if procs.kill_leader(&env).await {
            outcome.kills += 1;
        }
        eventually(WAIT, "every replica Running after the scale-up", || {
            all_running(&env, "web", up)
        })
        .await;
        let launched = ever_launched(&env) - before;
        let needed = up.div_ceil(PODS_PER_NODE).saturating_sub(live_before);
        outcome.launched += launched;
        outcome.duplicate_launches += launched.saturating_sub(needed);
        eprintln!("round {round}: {up} pods, {launched} launched, {needed} needed");

        // Down to half, then to zero: only empty nodes may go.
        for target in [up / 2, 0] {
            scale(&env, "web", i32::try_from(target).unwrap_or(0)).await;
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..3000))).await;
            if procs.kill_leader(&env).await {
                outcome.kills += 1;
            }
            eventually(WAIT, "the scale-down to finish", || async {
                let list = replicas(&env, "web").await;
                (list.len() == target).then_some(())
            })
            .await;
            // Every empty node goes (after the pool's 2 s delay and any takeover); the busy ones stay.
            eventually(WAIT, "the empty nodes to be removed", || async {
                let busy = busy_nodes(&env).await.len();
                (live_members(&env).len() == busy).then_some(())
            })
            .await;
            outcome.busy_nodes_removed += pods_on_removed_nodes(&env).await;
            eprintln!(
                "round {round}: scaled to {target}, {} nodes left",
                live_members(&env).len()
            );
        }
    }
    for (_, task) in procs.running.drain(..) {
        task.abort();
    }

    let table = format!(
        "| rounds | leader kills | instances launched | duplicate launches | nodes removed with pods on them | run time | seed |\n\
         |---|---|---|---|---|---|---|\n\
         | {} | {} | {} | {} | {} | {:.0} s | {seed} |\n",
        outcome.rounds,
        outcome.kills,
        outcome.launched,
        outcome.duplicate_launches,
        outcome.busy_nodes_removed,
        started.elapsed().as_secs_f64()
    );
    eprintln!("{table}");
    if let Ok(path) = std::env::var("CHAOS_NODEPOOL_REPORT") {
        std::fs::write(&path, &table).unwrap_or_else(|e| panic!("write {path}: {e}"));
    }
    assert_eq!(outcome.duplicate_launches, 0, "duplicate launches");
    assert_eq!(
        outcome.busy_nodes_removed, 0,
        "nodes removed while pods ran on them"
    );
    assert!(
        outcome.kills >= rounds,
        "too few leader kills to mean anything: {}",
        outcome.kills
    );
}
