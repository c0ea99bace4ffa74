//! Node group configuration: sizes, the node template and how launches behave.

use std::collections::BTreeMap;
use std::time::Duration;

use cloudprovider_api::{CloudInstanceError, CloudInstanceErrorClass, parse_quantity};
use serde::{Deserialize, Serialize};

use crate::error::FakeError;

/// The largest `maxSize` (and so `minSize` and `initialSize`) of a node group.
pub const MAX_NODE_GROUP_SIZE: u32 = 10_000;
/// The most entries of a list or map in the configuration (instances, node groups, template labels and taints,
/// clusters, classes, per-method latencies).
pub const MAX_LIST_LEN: usize = 10_000;
/// The longest latency or provision delay, in milliseconds: one day.
pub const MAX_DELAY_MS: u64 = 24 * 60 * 60 * 1000;

/// A taint of a node group's nodes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FakeTaint {
    /// The taint key.
    pub key: String,
    /// The taint value.
    #[serde(default)]
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
}

/// What a node group's nodes look like ("as if just started").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeTemplate {
    /// Instance type; default the cloud's default instance type.
    pub instance_type: Option<String>,
    /// Zone; default the cloud's zone.
    pub zone: Option<String>,
    /// Region; default the cloud's region.
    pub region: Option<String>,
    /// Labels of the nodes (also reported as additional labels of the instances).
    pub labels: BTreeMap<String, String>,
    /// Taints of the nodes.
    pub taints: Vec<FakeTaint>,
    /// CPU capacity, a Kubernetes quantity. Default `"2"`.
    pub cpu: String,
    /// Memory capacity, a Kubernetes quantity. Default `"4Gi"`.
    pub memory: String,
    /// Pod capacity. Default `"110"`.
    pub pods: String,
}

impl Default for NodeTemplate {
    fn default() -> Self {
        Self {
            instance_type: None,
            zone: None,
            region: None,
            labels: BTreeMap::new(),
            taints: Vec::new(),
            cpu: "2".to_owned(),
            memory: "4Gi".to_owned(),
            pods: "110".to_owned(),
        }
    }
}

/// The class of a simulated launch failure.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum FailureClass {
    /// Out of capacity or quota.
    #[default]
    OutOfResources,
    /// Anything else.
    Other,
}

/// How the instances a node group creates come up. In configuration files:
/// `provisioning: { mode: neverReady }` or `provisioning: { mode: fail, class: outOfResources, code: NoCapacity }`.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(tag = "mode", rename_all = "camelCase", deny_unknown_fields)]
pub enum Provisioning {
    /// `Creating`, then `Running` after the provision delay.
    #[default]
    Succeed,
    /// `Creating` forever (for launch-timeout tests).
    NeverReady,
    /// `Creating`, then failed with this error after the provision delay (the instance does not exist; the group
    /// reports it as `Creating` with the error, as cluster-autoscaler expects).
    Fail {
        /// The error class.
        #[serde(default)]
        class: FailureClass,
        /// A cloud-specific code. Default `InsufficientInstanceCapacity`.
        #[serde(default = "default_fail_code")]
        code: String,
        /// A message.
        #[serde(default)]
        message: String,
    },
}

fn default_fail_code() -> String {
    "InsufficientInstanceCapacity".to_owned()
}

impl Provisioning {
    /// Out of capacity, with code `InsufficientInstanceCapacity`.
    pub fn out_of_resources() -> Self {
        Provisioning::Fail {
            class: FailureClass::OutOfResources,
            code: default_fail_code(),
            message: "the fake cloud has no capacity left".to_owned(),
        }
    }

    pub(crate) fn error(&self) -> Option<CloudInstanceError> {
        match self {
            Provisioning::Fail {
                class,
                code,
                message,
            } => Some(CloudInstanceError {
                class: match class {
                    FailureClass::OutOfResources => CloudInstanceErrorClass::OutOfResources,
                    FailureClass::Other => CloudInstanceErrorClass::Other,
                },
                code: code.clone(),
                message: message.clone(),
            }),
            _ => None,
        }
    }
}

/// A node group of the fake cloud.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeGroupSpec {
    /// Unique id; instances are named `<id>-<n>` with provider ID `<provider>://<id>-<n>`, `n` counting from 1.
    pub id: String,
    /// The fewest instances.
    #[serde(default)]
    pub min_size: u32,
    /// The most instances.
    pub max_size: u32,
    /// Instances running when the group is added; default `min_size`.
    #[serde(default)]
    pub initial_size: Option<u32>,
    /// What its nodes look like.
    #[serde(default)]
    pub template: NodeTemplate,
    /// How long new instances stay `Creating`, in milliseconds. Default 0: running at once.
    #[serde(default)]
    pub provision_delay_ms: u64,
    /// How new instances come up.
    #[serde(default)]
    pub provisioning: Provisioning,
    /// What one instance costs per hour (reported as [`NodeGroup::price`](cloudprovider_api::NodeGroup::price));
    /// a node pool offering several groups launches the cheapest that fits. Default: unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<f64>,
}

impl NodeGroupSpec {
    /// A group `id` with sizes in `[min, max]`, starting at `min`, with the default template.
    pub fn new(id: impl Into<String>, min_size: u32, max_size: u32) -> Self {
        Self {
            id: id.into(),
            min_size,
            max_size,
            initial_size: None,
            template: NodeTemplate::default(),
            provision_delay_ms: 0,
            provisioning: Provisioning::Succeed,
            price: None,
        }
    }

    /// Sets the price per instance-hour.
    #[must_use]
    pub fn with_price(mut self, price: f64) -> Self {
        self.price = Some(price);
        self
    }

    /// Sets the initial size.
    #[must_use]
    pub fn with_initial_size(mut self, size: u32) -> Self {
        self.initial_size = Some(size);
        self
    }

    /// Sets the template.
    #[must_use]
    pub fn with_template(mut self, template: NodeTemplate) -> Self {
        self.template = template;
        self
    }

    /// Sets the provision delay.
    #[must_use]
    pub fn with_provision_delay(mut self, delay: Duration) -> Self {
        self.provision_delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Sets how new instances come up.
    #[must_use]
    pub fn with_provisioning(mut self, provisioning: Provisioning) -> Self {
        self.provisioning = provisioning;
        self
    }

    /// Checks the sizes and the template; `field` is the path to report errors under.
    pub(crate) fn validate(&self, field: &str) -> Result<(), FakeError> {
        if self.id.is_empty() {
            return Err(FakeError::config(
                format!("{field}.id"),
                "must not be empty",
            ));
        }
        if self.min_size > self.max_size {
            return Err(FakeError::config(
                format!("{field}.minSize"),
                format!(
                    "{} is greater than maxSize {}",
                    self.min_size, self.max_size
                ),
            ));
        }
        let initial = self.initial_size.unwrap_or(self.min_size);
        if !(self.min_size..=self.max_size).contains(&initial) {
            return Err(FakeError::config(
                format!("{field}.initialSize"),
                format!(
                    "{initial} is outside [{}, {}]",
                    self.min_size, self.max_size
                ),
            ));
        }
        for (name, value) in [("maxSize", self.max_size), ("initialSize", initial)] {
            if value > MAX_NODE_GROUP_SIZE {
                return Err(FakeError::config(
                    format!("{field}.{name}"),
                    format!("must be at most {MAX_NODE_GROUP_SIZE}"),
                ));
            }
        }
        if let Some(price) = self.price
            && !(price.is_finite() && price >= 0.0)
        {
            return Err(FakeError::config(
                format!("{field}.price"),
                format!("{price} is not a non-negative number"),
            ));
        }
        if self.provision_delay_ms > MAX_DELAY_MS {
            return Err(FakeError::config(
                format!("{field}.provisionDelayMs"),
                format!("must be at most {MAX_DELAY_MS} (one day)"),
            ));
        }
        let template = &self.template;
        for (name, len) in [
            ("labels", template.labels.len()),
            ("taints", template.taints.len()),
        ] {
            if len > MAX_LIST_LEN {
                return Err(FakeError::config(
                    format!("{field}.template.{name}"),
                    format!("must have at most {MAX_LIST_LEN} entries"),
                ));
            }
        }
        for (name, value) in [
            ("cpu", &template.cpu),
            ("memory", &template.memory),
            ("pods", &template.pods),
        ] {
            if parse_quantity(value).is_none_or(|q| q < 0) {
                return Err(FakeError::config(
                    format!("{field}.template.{name}"),
                    "must be a non-negative Kubernetes quantity such as \"2\", \"500m\" or \"4Gi\"",
                ));
            }
        }
        Ok(())
    }
}
