//! Leader election against a real kube-apiserver.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use lease_election::{Ended, LeaseConfig};
use test_support::{ControlPlane, FaultProxy, ProxyMode};
use tokio::time::Instant;

async fn transitions(client: &kube::Client, name: &str) -> i32 {
    let api: Api<Lease> = Api::namespaced(client.clone(), NS);
    api.get(name)
        .await
        .ok()
        .and_then(|l| l.spec)
        .and_then(|s| s.lease_transitions)
        .unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_among_five_and_all_agree_who() {
    let cp = ControlPlane::start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let audit = Audit::default();
    let candidates: Vec<Candidate> = (0..5)
        .map(|i| Candidate::start(cp.client(), fast("five", &format!("c{i}")), &audit))
        .collect();
    wait_until(Duration::from_secs(10), "a leader", || {
        single_leader(&candidates).is_some()
    })
    .await;
    // Two more lease durations: still exactly one leader, and every follower names it.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let leader = single_leader(&candidates).unwrap_or_else(|| panic!("not exactly one leader"));
    let leader_id = format!("c{leader}");
    for (i, c) in candidates.iter().enumerate() {
        assert_eq!(
            c.elector.current_leader().as_deref(),
            Some(leader_id.as_str()),
            "candidate c{i}"
        );
    }
    assert_eq!(
        audit.sessions().len(),
        1,
        "leadership changed hands without a fault: {:?}",
        audit.sessions()
    );
    assert_eq!(transitions(&cp.client(), "five").await, 1);
    for c in candidates {
        c.kill().await;
    }
    audit.assert_no_overlap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_handover_uses_the_release() {
    let cp = ControlPlane::start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let audit = Audit::default();
    // client-go's defaults: without the release, a takeover would take >= 15 s.
    let (a, b) = leader_and_follower(
        (cp.client(), LeaseConfig::new(NS, "handover", "a")),
        (cp.client(), LeaseConfig::new(NS, "handover", "b")),
        &audit,
    )
    .await;

    let released = Instant::now();
    assert_eq!(a.shutdown().await, Ended::Shutdown);
    wait_until(Duration::from_secs(10), "b to lead", || b.is_leading()).await;
    let took = released.elapsed();
    eprintln!("graceful handover took {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "takeover took {took:?}: the release was not used"
    );
    assert_eq!(transitions(&cp.client(), "handover").await, 2);
    b.kill().await;
    audit.assert_no_overlap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_takeover_waits_for_expiry() {
    let cp = ControlPlane::start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let audit = Audit::default();
    let (a, b) = leader_and_follower(
        (cp.client(), fast("crash", "a")),
        (cp.client(), fast("crash", "b")),
        &audit,
    )
    .await;

    let crashed = Instant::now();
    a.kill().await;
    wait_until(Duration::from_secs(10), "b to lead", || b.is_leading()).await;
    let took = crashed.elapsed();
    eprintln!("crash takeover took {took:?}");
    // a renewed at most one retry period before the crash; b must wait a full lease duration after seeing that.
    let lease = Duration::from_secs(2);
    let retry = Duration::from_secs(1);
    assert!(
        took + retry >= lease,
        "b took over {took:?} after the crash: before the lease expired"
    );
    assert!(
        took <= lease + Duration::from_secs(1),
        "takeover took {took:?} (> lease + 1 s)"
    );
    b.kill().await;
    audit.assert_no_overlap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_stops_before_another_acquires() {
    let cp = ControlPlane::start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let proxy = FaultProxy::start(cp.server_url())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let audit = Audit::default();
    let a_client = proxy.client(cp.config()).unwrap_or_else(|e| panic!("{e}"));
    let (a, b) = leader_and_follower(
        (a_client, fast("partition", "a")),
        (cp.client(), fast("partition", "b")),
        &audit,
    )
    .await;

    proxy.set_mode(ProxyMode::Blackhole);
    wait_until(Duration::from_secs(10), "b to lead", || b.is_leading()).await;
    let sessions = audit.sessions();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    assert_eq!((sessions[0].0.as_str(), sessions[1].0.as_str()), ("a", "b"));
    eprintln!(
        "gap between a's last act and b's first: {:?}",
        sessions[1].1 - sessions[0].2
    );
    audit.assert_no_overlap();

    // a noticed on its own and stopped its work.
    let ended = tokio::time::timeout(Duration::from_secs(5), a.task)
        .await
        .unwrap_or_else(|_| panic!("a still runs"));
    assert!(matches!(ended, Ok(Ended::LeadershipLost)), "{ended:?}");
    b.kill().await;
}

/// The renew lands on the server but its answer comes after the request timeout. With the watch off, the next renew
/// carries a stale resourceVersion and meets a 409 caused by our own write; with it on, the watch shows the write.
async fn own_timed_out_write(watch: bool) {
    let cp = ControlPlane::start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let proxy = FaultProxy::start(cp.server_url())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let audit = Audit::default();
    let client = proxy.client(cp.config()).unwrap_or_else(|e| panic!("{e}"));
    // lease 15 s, renew deadline 10 s, retry 2 s, request timeout 1 s.
    let mut config = LeaseConfig::new(NS, "own-write", "a");
    config.request_timeout = Duration::from_secs(1);
    config.watch = watch;
    let a = Candidate::start(client, config, &audit);
    wait_until(Duration::from_secs(10), "a to lead", || a.is_leading()).await;
    let mut states = a.elector.subscribe();
    states.mark_unchanged();
    let before = transitions(&cp.client(), "own-write").await;

    proxy.set_mode(ProxyMode::DelayResponses(Duration::from_millis(1500)));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    proxy.set_mode(ProxyMode::Pass);
    // Let the next renews happen.
    tokio::time::sleep(Duration::from_secs(5)).await;

    assert!(a.is_leading(), "a lost leadership: {:?}", a.elector.state());
    assert!(
        !states.has_changed().unwrap_or(true),
        "a's state changed to {:?}",
        *states.borrow()
    );
    assert!(
        a.metrics.failure_count("own-write") >= 1,
        "no write timed out"
    );
    let slowpath = a.metrics.slowpath_count("own-write");
    if !watch {
        assert!(slowpath >= 1, "no 409 was provoked (slowpath = {slowpath})");
    }
    eprintln!("watch={watch}: conflicts met = {slowpath}");
    assert_eq!(
        transitions(&cp.client(), "own-write").await,
        before,
        "leadership changed hands"
    );
    a.kill().await;
    assert_eq!(audit.sessions().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_from_our_own_timed_out_write_keeps_leadership() {
    own_timed_out_write(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_watch_our_own_timed_out_write_is_recognised() {
    own_timed_out_write(true).await;
}

/// Without the watch (RBAC without list/watch on leases), followers read the Lease every retry period as client-go
/// does: a release is noticed within a retry period and a crashed leader is replaced at expiry, not later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_watch_followers_poll_like_client_go() {
    let cp = ControlPlane::start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let audit = Audit::default();
    let config = |id: &str| {
        let mut config = LeaseConfig::new(NS, "no-watch", id);
        config.watch = false;
        config
    };
    let (a, b) = leader_and_follower(
        (cp.client(), config("a")),
        (cp.client(), config("b")),
        &audit,
    )
    .await;
    // Let a renew a few times so b's first view is stale unless it polls.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let released = Instant::now();
    assert_eq!(a.shutdown().await, Ended::Shutdown);
    wait_until(Duration::from_secs(20), "b to lead", || b.is_leading()).await;
    let graceful = released.elapsed();
    // Retry period 2 s with 20 % jitter, plus a request.
    assert!(
        graceful < Duration::from_secs(4),
        "graceful handover without watch took {graceful:?}"
    );

    let c = Candidate::start(cp.client(), config("c"), &audit);
    wait_until(Duration::from_secs(10), "c to follow b", || {
        c.elector.current_leader().as_deref() == Some("b")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let crashed = Instant::now();
    b.kill().await;
    wait_until(Duration::from_secs(40), "c to lead", || c.is_leading()).await;
    let crash = crashed.elapsed();
    eprintln!("without watch: graceful {graceful:?}, crash {crash:?}");
    // b renewed at most one retry period before the kill; c sees a renew at most one (jittered) retry period late.
    assert!(
        crash >= Duration::from_secs(13),
        "c took over {crash:?} after the crash: before expiry"
    );
    assert!(
        crash <= Duration::from_secs(15 + 3 + 1),
        "crash takeover without watch took {crash:?}"
    );
    c.kill().await;
    audit.assert_no_overlap();
}
