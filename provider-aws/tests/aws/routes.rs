//! Routes in the cluster's route table: lifecycle, source/dest check, blackhole replacement.

use cloudprovider_api::{Route, Routes, ipnet::IpNet};

use crate::common::{env, id};

fn route(node: &str, cidr: &str) -> Route {
    Route {
        name: String::new(),
        target_node: node.to_owned(),
        target_node_addresses: vec![],
        destination_cidr: cidr.parse::<IpNet>().unwrap_or_else(|e| panic!("{e}")),
        blackhole: false,
    }
}

async fn table_routes(env: &crate::common::Env) -> Vec<(String, Option<String>)> {
    env.cloud
        .ec2_client()
        .describe_route_tables()
        .route_table_ids(&env.route_table)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"))
        .route_tables()
        .iter()
        .flat_map(|t| t.routes())
        .filter(|r| r.instance_id().is_some())
        .map(|r| {
            (
                r.destination_cidr_block().unwrap_or_default().to_owned(),
                r.instance_id().map(str::to_owned),
            )
        })
        .collect()
}

#[tokio::test]
async fn route_lifecycle() {
    let env = env().await;
    let instance = env.launch(1, 0).await.remove(0);
    let name = instance.private_dns_name().unwrap_or_default().to_owned();
    assert_eq!(
        env.describe(&id(&instance)).await.source_dest_check(),
        Some(true)
    );
    let r = route(&name, "10.244.3.0/24");

    env.cloud
        .create_route("c", "uid-1", &r)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // The table found by its cluster tag got the route; the instance may now forward pod traffic.
    assert_eq!(
        table_routes(&env).await,
        vec![("10.244.3.0/24".into(), Some(id(&instance)))]
    );
    assert_eq!(
        env.describe(&id(&instance)).await.source_dest_check(),
        Some(false)
    );

    let calls = env.cloud.api_calls();
    calls.reset();
    let listed = env
        .cloud
        .list_routes("c")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    println!("list_routes: {:?}", calls.snapshot());
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].target_node, name);
    assert_eq!(listed[0].destination_cidr, r.destination_cidr);
    assert!(!listed[0].blackhole);

    env.cloud
        .delete_route("c", &listed[0])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(table_routes(&env).await.is_empty());
    assert!(
        env.cloud
            .list_routes("c")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_empty()
    );
    // Deleting an absent route succeeds.
    env.cloud
        .delete_route("c", &listed[0])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn a_blackhole_route_is_listed_and_replaced() {
    let env = env().await;
    let mut instances = env.launch(2, 0).await;
    let (old, new) = (instances.remove(0), instances.remove(0));
    let old_name = old.private_dns_name().unwrap_or_default().to_owned();
    let new_name = new.private_dns_name().unwrap_or_default().to_owned();
    env.cloud
        .create_route("c", "uid-old", &route(&old_name, "10.244.4.0/24"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    env.terminate(&id(&old)).await;

    let listed = env
        .cloud
        .list_routes("c")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(listed.len(), 1);
    assert!(listed[0].blackhole, "{listed:?}");

    // The pod CIDR moves to the new node: the blackhole is replaced, not duplicated.
    env.cloud
        .create_route("c", "uid-new", &route(&new_name, "10.244.4.0/24"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        table_routes(&env).await,
        vec![("10.244.4.0/24".into(), Some(id(&new)))]
    );
    let listed = env
        .cloud
        .list_routes("c")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (listed[0].target_node.as_str(), listed[0].blackhole),
        (new_name.as_str(), false)
    );
}

#[tokio::test]
async fn configured_route_table_wins() {
    let env = crate::common::env_with(|_| {}).await;
    let other = env
        .cloud
        .ec2_client()
        .create_route_table()
        .vpc_id(&env.vpc)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"))
        .route_table()
        .and_then(|t| t.route_table_id())
        .map(str::to_owned)
        .unwrap_or_default();
    let mut config = env.cloud.config().clone();
    config.route_table_id = Some(other.clone());
    let cloud = crate::common::cloud(config).await;
    let instance = env.launch(1, 0).await.remove(0);
    cloud
        .create_route(
            "c",
            "uid",
            &route(
                instance.private_dns_name().unwrap_or_default(),
                "10.244.5.0/24",
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        table_routes(&env).await.is_empty(),
        "the cluster-tagged table was used"
    );
    assert_eq!(cloud.list_routes("c").await.map(|r| r.len()).ok(), Some(1));
}
