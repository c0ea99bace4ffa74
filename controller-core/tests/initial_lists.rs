//! The shared caches fill through a streamed initial list (watch-list, `sendInitialEvents`) and fall back to
//! paginated lists on an apiserver without the WatchList feature — both against a real kube-apiserver, whose own
//! `apiserver_request_total` tells which way the Nodes were read.

use std::time::Duration;

use controller_core::runtime::{InitialList, NodeCache};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams};
use test_support::{ControlPlane, NodeBuilder, eventually};

const NODES: usize = 30;

/// `LIST nodes` requests the apiserver has served (its own counter, summed over codes and scopes).
async fn node_lists(client: &kube::Client) -> u64 {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .unwrap_or_else(|e| panic!("{e}"));
    let text = client
        .request_text(request)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    text.lines()
        .filter(|l| {
            l.starts_with("apiserver_request_total{")
                && l.contains("resource=\"nodes\"")
                && l.contains("verb=\"LIST\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

async fn fill(cp: &ControlPlane) -> (InitialList, u64) {
    let client = cp.client();
    let nodes: Api<Node> = Api::all(client.clone());
    for i in 0..NODES {
        nodes
            .create(
                &PostParams::default(),
                &NodeBuilder::new(format!("n{i}")).build(),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let before = node_lists(&client).await;
    let cache = std::sync::Arc::new(NodeCache::new(client.clone()));
    let watched = std::sync::Arc::clone(&cache);
    let task = tokio::spawn(async move { watched.run().await });
    eventually(Duration::from_secs(30), "the cache synced", async || {
        (cache.is_synced() && cache.store().state().len() == NODES).then_some(())
    })
    .await;
    let lists = node_lists(&client).await - before;
    task.abort();
    (cache.initial_list(), lists)
}

#[tokio::test]
async fn caches_stream_their_initial_list() {
    let cp = ControlPlane::start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (strategy, lists) = fill(&cp).await;
    assert_eq!(strategy, InitialList::Streaming);
    assert_eq!(lists, 0, "a streamed initial list sends no LIST request");
}

#[tokio::test]
async fn caches_fall_back_to_paginated_lists_without_watch_list() {
    let cp = ControlPlane::builder()
        .apiserver_arg("--feature-gates=WatchList=false")
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (strategy, lists) = fill(&cp).await;
    assert_eq!(strategy, InitialList::Paginated);
    assert!(lists >= 1, "the fallback lists ({lists} LIST requests)");
}
