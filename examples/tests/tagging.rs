//! provider-aws' tagging controller in the bundled `cloud-controller-manager` (`--controllers=tagging --tags=…`)
//! against a real kube-apiserver and moto: a Node's instance gets the tags (and the cluster tag when it has none,
//! never overwriting `shared`), the Node the checksum label; deleting the Node removes the tags again; a missing
//! `--tags` or another provider is a startup error naming the problem.
#![cfg(feature = "aws")]

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use aws_sdk_ec2::types::{Instance, InstanceType, ResourceType, Tag, TagSpecification};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, PostParams};
use provider_aws::tagging::TAGGING_LABEL;
use provider_aws::{AwsCloud, AwsConfig};
use test_support::{ControlPlane, Moto, NodeBuilder, eventually};

const BIN: &str = env!("CARGO_BIN_EXE_cloud-controller-manager");
const CLUSTER: &str = "tagged";
const CLUSTER_TAG: &str = "kubernetes.io/cluster/tagged";

async fn provider(moto: &Moto) -> (AwsCloud, AwsConfig) {
    let config = AwsConfig {
        region: Some("us-east-1".into()),
        endpoint_url: Some(moto.endpoint_url().to_owned()),
        ..AwsConfig::new(CLUSTER)
    };
    let sdk = AwsCloud::config_loader(&config)
        .test_credentials()
        .load()
        .await;
    let cloud = AwsCloud::from_sdk_config(config.clone(), &sdk).unwrap_or_else(|e| panic!("{e}"));
    (cloud, config)
}

async fn launch(cloud: &AwsCloud, tags: &[(&str, &str)]) -> Instance {
    let image = cloud
        .ec2_client()
        .describe_images()
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"))
        .images()
        .first()
        .and_then(|i| i.image_id())
        .map(str::to_owned)
        .unwrap_or_default();
    let mut request = cloud
        .ec2_client()
        .run_instances()
        .image_id(image)
        .instance_type(InstanceType::T3Medium)
        .min_count(1)
        .max_count(1);
    if !tags.is_empty() {
        request = request.tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Instance)
                .set_tags(Some(
                    tags.iter()
                        .map(|(k, v)| Tag::builder().key(*k).value(*v).build())
                        .collect(),
                ))
                .build(),
        );
    }
    let out = request.send().await.unwrap_or_else(|e| panic!("{e:?}"));
    out.instances()[0].clone()
}

async fn instance_tags(cloud: &AwsCloud, id: &str) -> BTreeMap<String, String> {
    cloud
        .ec2_client()
        .describe_instances()
        .instance_ids(id)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"))
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .flat_map(|i| i.tags())
        .filter_map(|t| {
            Some((
                t.key()?.to_owned(),
                t.value().unwrap_or_default().to_owned(),
            ))
        })
        .collect()
}

fn node_of(name: &str, instance: &Instance) -> Node {
    let zone = instance
        .placement()
        .and_then(|p| p.availability_zone())
        .unwrap_or("us-east-1a");
    NodeBuilder::new(name)
        .provider_id(format!(
            "aws:///{zone}/{}",
            instance.instance_id().unwrap_or_default()
        ))
        .ready(true)
        .build()
}

fn ccm(args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(BIN);
    command
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .kill_on_drop(true);
    command
}

#[tokio::test]
async fn instances_of_nodes_are_tagged_and_untagged() {
    let cp = ControlPlane::start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let moto = Moto::start().await.unwrap_or_else(|e| panic!("{e}"));
    let (cloud, config) = provider(&moto).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cloud_config = dir.path().join("aws.yaml");
    std::fs::write(
        &cloud_config,
        serde_yaml_ng::to_string(&config).unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let plain = launch(&cloud, &[]).await;
    let shared = launch(&cloud, &[(CLUSTER_TAG, "shared"), ("team", "old")]).await;
    let nodes: Api<Node> = Api::all(cp.client());
    for (name, instance) in [("plain", &plain), ("shared", &shared)] {
        nodes
            .create(&PostParams::default(), &node_of(name, instance))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let log = dir.path().join("ccm.log");
    let mut child = ccm(&[
        "--cloud-provider=aws",
        &format!("--cloud-config={}", cloud_config.display()),
        &format!("--kubeconfig={}", cp.kubeconfig_path().display()),
        "--controllers=tagging",
        "--tags=team=platform,cost-center=42",
        "--leader-elect=false",
        "--secure-port=0",
    ])
    .stderr(std::fs::File::create(&log).unwrap_or_else(|e| panic!("{e}")))
    .spawn()
    .unwrap_or_else(|e| panic!("{e}"));

    let plain_id = plain.instance_id().unwrap_or_default().to_owned();
    let shared_id = shared.instance_id().unwrap_or_default().to_owned();
    let tagged = eventually(Duration::from_secs(60), "instances tagged", async || {
        let a = instance_tags(&cloud, &plain_id).await;
        let b = instance_tags(&cloud, &shared_id).await;
        (a.contains_key("cost-center") && b.contains_key("cost-center")).then_some((a, b))
    })
    .await;
    assert_eq!(tagged.0.get("team").map(String::as_str), Some("platform"));
    assert_eq!(
        tagged.0.get(CLUSTER_TAG).map(String::as_str),
        Some("owned"),
        "cluster tag added"
    );
    assert_eq!(
        tagged.1.get(CLUSTER_TAG).map(String::as_str),
        Some("shared"),
        "never overwritten"
    );
    assert_eq!(
        tagged.1.get("team").map(String::as_str),
        Some("platform"),
        "configured value wins"
    );
    let label = eventually(Duration::from_secs(30), "checksum label", async || {
        let node = nodes.get("plain").await.ok()?;
        node.metadata.labels?.get(TAGGING_LABEL).cloned()
    })
    .await;
    assert_eq!(
        label,
        provider_aws::tagging::checksum(
            &provider_aws::tagging::parse_tags("team=platform,cost-center=42").unwrap_or_default()
        )
    );

    // The Node goes: its instance loses the configured tags, keeps the cluster tag; the other is untouched.
    nodes
        .delete("plain", &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let after = eventually(Duration::from_secs(60), "tags removed", async || {
        let tags = instance_tags(&cloud, &plain_id).await;
        (!tags.contains_key("cost-center")).then_some(tags)
    })
    .await;
    assert!(!after.contains_key("team"), "{after:?}");
    assert_eq!(after.get(CLUSTER_TAG).map(String::as_str), Some("owned"));
    assert!(
        instance_tags(&cloud, &shared_id)
            .await
            .contains_key("cost-center")
    );
    assert!(
        child.try_wait().ok().flatten().is_none(),
        "the CCM is still running"
    );
    let _ = child.kill().await;
}

#[tokio::test]
async fn the_tagging_controller_refuses_to_start_without_tags_or_aws() {
    let cp = ControlPlane::start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let moto = Moto::start().await.unwrap_or_else(|e| panic!("{e}"));
    let (_, config) = provider(&moto).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cloud_config = dir.path().join("aws.yaml");
    std::fs::write(
        &cloud_config,
        serde_yaml_ng::to_string(&config).unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let kubeconfig = format!("--kubeconfig={}", cp.kubeconfig_path().display());
    let aws_config = format!("--cloud-config={}", cloud_config.display());
    for (args, want) in [
        (
            vec![
                "--cloud-provider=aws",
                aws_config.as_str(),
                "--controllers=tagging",
            ],
            "--tags must not be empty",
        ),
        (
            vec![
                "--cloud-provider=fake",
                "--controllers=tagging",
                "--tags=a=b",
            ],
            "--cloud-provider=aws only",
        ),
        (
            vec![
                "--cloud-provider=aws",
                aws_config.as_str(),
                "--controllers=tagging",
                "--tags==x",
            ],
            "--tags",
        ),
    ] {
        let mut all = args.clone();
        all.extend([
            kubeconfig.as_str(),
            "--leader-elect=false",
            "--secure-port=0",
        ]);
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            ccm(&all).stderr(Stdio::piped()).output(),
        )
        .await
        .unwrap_or_else(|_| panic!("{args:?} did not exit"))
        .unwrap_or_else(|e| panic!("{e}"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            stderr.contains(want),
            "{args:?}: want {want:?} in\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
