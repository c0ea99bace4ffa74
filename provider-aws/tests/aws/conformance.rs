//! The conformance kit against moto, with nodes that carry provider IDs and with nodes found by private DNS name.

use std::sync::Arc;
use std::time::Duration;

use cloudprovider_api::conformance::{
    ConformanceTarget, Outcome, check_names, node_with_provider_id, run,
};
use cloudprovider_api::{CloudError, CloudProvider, CloudResult, Instances};
use k8s_openapi::api::core::v1::Node;
use provider_aws::instance_id_from_provider_id;

use crate::common::{Env, env_with, group, node};

struct AwsTarget {
    env: Env,
    with_provider_id: bool,
}

impl AwsTarget {
    /// The instance behind a node the kit got from `create_instance`.
    async fn instance_id(&self, node: &Node) -> CloudResult<String> {
        let md = self.env.cloud.instance_metadata(node).await?;
        instance_id_from_provider_id(&md.provider_id)
    }
}

fn setup_error(e: impl std::fmt::Debug) -> CloudError {
    CloudError::transient(format!("{e:?}"))
}

#[cloudprovider_api::async_trait]
impl ConformanceTarget for AwsTarget {
    fn provider(&self) -> Arc<dyn CloudProvider> {
        Arc::new(self.env.cloud.clone())
    }

    async fn create_instance(&self, name: &str) -> CloudResult<Node> {
        let _ = name; // kubelets on EC2 register under the private DNS name
        let instances = self.env.launch(1, 0).await;
        let instance = instances
            .first()
            .ok_or_else(|| setup_error("no instance"))?;
        Ok(node(instance, self.with_provider_id))
    }

    async fn stop_instance(&self, node: &Node) -> CloudResult<()> {
        let id = self.instance_id(node).await?;
        self.env
            .cloud
            .ec2_client()
            .stop_instances()
            .instance_ids(id)
            .send()
            .await
            .map_err(setup_error)?;
        Ok(())
    }

    async fn terminate_instance(&self, node: &Node) -> CloudResult<()> {
        // Already gone (the kit terminates some instances twice): nothing to do.
        let Ok(id) = self.instance_id(node).await else {
            return Ok(());
        };
        self.env.terminate(&id).await;
        Ok(())
    }

    /// The default absent node's provider ID (`aws://conformance-absent`) is not an AWS provider ID at all, which
    /// the provider rightly rejects as invalid input instead of calling it gone; a well-formed ID of an instance
    /// that never existed tests the contract.
    fn absent_node(&self) -> Node {
        node_with_provider_id(
            "conformance-absent",
            "aws:///us-east-1a/i-00000000000deadbe",
        )
    }

    fn settle_timeout(&self) -> Duration {
        Duration::from_secs(10)
    }
}

async fn target(with_provider_id: bool) -> AwsTarget {
    let env = env_with(|c| c.node_groups = vec![]).await;
    let image = env.image.clone();
    let mut config = env.cloud.config().clone();
    config.node_groups = vec![group(&image, "workers", 0, 4)];
    // No instance metadata service here: this process's zone comes from the config.
    config.zone = Some("us-east-1a".into());
    let env = Env {
        cloud: crate::common::cloud(config).await,
        ..env
    };
    AwsTarget {
        env,
        with_provider_id,
    }
}

fn assert_report(report: &cloudprovider_api::conformance::ConformanceReport) {
    report.assert_passed();
    let names: Vec<&str> = report.checks.iter().map(|c| c.name).collect();
    assert_eq!(names, check_names());
    for name in check_names() {
        let outcome = report.outcome(name);
        // Clusters are not offered (upstream's AWS provider has none either).
        if name.starts_with("clusters/") {
            assert!(
                matches!(outcome, Some(Outcome::Skipped(_))),
                "{name}: {outcome:?}"
            );
        } else {
            assert_eq!(outcome, Some(&Outcome::Passed), "{name}:\n{report}");
        }
    }
}

#[tokio::test]
async fn passes_with_provider_ids() {
    let target = target(true).await;
    let report = run(&target).await;
    println!("{report}");
    assert_report(&report);
    // It went through AWS and left no load balancer behind.
    let calls = target.env.cloud.api_calls();
    assert!(calls.count("DescribeInstances") > 0);
    assert!(calls.count("CreateLoadBalancer") >= 1);
    let lbs = target
        .env
        .cloud
        .elb_client()
        .describe_load_balancers()
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert!(lbs.load_balancers().is_empty(), "{lbs:?}");
}

#[tokio::test]
async fn passes_with_lookup_by_private_dns_name() {
    let target = target(false).await;
    let report = run(&target).await;
    println!("{report}");
    assert_report(&report);
}
