//! What a Network Load Balancer needs on its target instances' security groups, decided without calling AWS (the
//! writes are in [`security_groups`](super::security_groups)).
//!
//! As upstream: an NLB keeps client addresses, so the instances' security group must admit the clients
//! (`spec.loadBalancerSourceRanges`, else `0.0.0.0/0`) on the NodePorts, and the NLB's own health checks (from the
//! CIDRs of the NLB's subnets) on the health-check ports; plus ICMP "fragmentation needed" from the clients for
//! path-MTU discovery. Rules are told apart by their description: `kubernetes.io/rule/nlb/client=<lb name>` and
//! `kubernetes.io/rule/nlb/health=<lb name>` belong to one load balancer, `kubernetes.io/rule/nlb/mtu` is shared by
//! every NLB with a client rule for that CIDR. Only rules with those descriptions are ever revoked; a rule someone
//! else made that already admits the same traffic is left as it is and not duplicated.

use std::collections::BTreeSet;

use aws_sdk_ec2::types::{IpPermission, IpRange, Ipv6Range};

use super::annotations::LbSpec;

/// Description prefix of the rules admitting an NLB's clients.
pub const NLB_CLIENT_RULE: &str = "kubernetes.io/rule/nlb/client";
/// Description prefix of the rules admitting an NLB's health checks.
pub const NLB_HEALTH_RULE: &str = "kubernetes.io/rule/nlb/health";
/// Description of the ICMP rules for path-MTU discovery.
pub const NLB_MTU_RULE: &str = "kubernetes.io/rule/nlb/mtu";

/// One ingress rule: one protocol, one port range, one CIDR.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Rule {
    /// `tcp`, `udp`, `icmp`, or a protocol number (`-1` = all).
    pub(crate) protocol: String,
    /// First port (ICMP: type).
    pub(crate) from_port: i32,
    /// Last port (ICMP: code).
    pub(crate) to_port: i32,
    /// An IPv4 or IPv6 CIDR.
    pub(crate) cidr: String,
    pub(crate) description: Option<String>,
}

impl Rule {
    fn new(protocol: &str, from_port: i32, to_port: i32, cidr: &str, description: &str) -> Self {
        Self {
            protocol: protocol.to_owned(),
            from_port,
            to_port,
            cidr: cidr.to_owned(),
            description: Some(description.to_owned()),
        }
    }

    /// A rule without description.
    pub(crate) fn plain(protocol: &str, from_port: i32, to_port: i32, cidr: &str) -> Self {
        Self {
            protocol: protocol.to_owned(),
            from_port,
            to_port,
            cidr: cidr.to_owned(),
            description: None,
        }
    }

    /// The same rule without its description (for groups whose every rule is ours).
    pub(crate) fn without_description(self) -> Self {
        Self {
            description: None,
            ..self
        }
    }

    /// True when both admit the same traffic (EC2 keeps one rule per protocol, ports and CIDR).
    fn same_traffic(&self, other: &Rule) -> bool {
        (&self.protocol, self.from_port, self.to_port, &self.cidr)
            == (&other.protocol, other.from_port, other.to_port, &other.cidr)
    }

    /// True when this rule admits all traffic `other` does: same protocol and ports, a CIDR containing its CIDR.
    fn covers(&self, other: &Rule) -> bool {
        let contains = match (
            self.cidr.parse::<ipnet::IpNet>(),
            other.cidr.parse::<ipnet::IpNet>(),
        ) {
            (Ok(outer), Ok(inner)) => outer.contains(&inner),
            _ => self.cidr == other.cidr,
        };
        contains
            && (&self.protocol, self.from_port, self.to_port)
                == (&other.protocol, other.from_port, other.to_port)
    }

    fn has_description(&self, description: &str) -> bool {
        self.description.as_deref() == Some(description)
    }

    /// The rule as the one permission the EC2 API takes.
    pub(crate) fn to_permission(&self) -> IpPermission {
        let mut p = IpPermission::builder()
            .ip_protocol(&self.protocol)
            .from_port(self.from_port)
            .to_port(self.to_port);
        if self.cidr.contains(':') {
            p = p.ipv6_ranges(
                Ipv6Range::builder()
                    .cidr_ipv6(&self.cidr)
                    .set_description(self.description.clone())
                    .build(),
            );
        } else {
            p = p.ip_ranges(
                IpRange::builder()
                    .cidr_ip(&self.cidr)
                    .set_description(self.description.clone())
                    .build(),
            );
        }
        p.build()
    }
}

/// Splits a group's permissions into single rules (security-group references and prefix lists are never ours and
/// are left out).
pub(crate) fn ungroup(permissions: &[IpPermission]) -> BTreeSet<Rule> {
    let mut rules = BTreeSet::new();
    for p in permissions {
        let protocol = p.ip_protocol().unwrap_or("-1").to_owned();
        let (from_port, to_port) = (p.from_port().unwrap_or(-1), p.to_port().unwrap_or(-1));
        let v4 = p
            .ip_ranges()
            .iter()
            .filter_map(|r| Some((r.cidr_ip()?, r.description())));
        let v6 = p
            .ipv6_ranges()
            .iter()
            .filter_map(|r| Some((r.cidr_ipv6()?, r.description())));
        for (cidr, description) in v4.chain(v6) {
            rules.insert(Rule {
                protocol: protocol.clone(),
                from_port,
                to_port,
                cidr: cidr.to_owned(),
                description: description.map(str::to_owned),
            });
        }
    }
    rules
}

/// What one NLB needs on the security groups of its instances.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NlbIngress {
    /// The load balancer's name, part of the rule descriptions.
    pub(crate) lb_name: String,
    /// `tcp` or `udp`.
    pub(crate) client_protocol: String,
    /// The NodePorts.
    pub(crate) client_ports: BTreeSet<i32>,
    /// The CIDRs clients come from.
    pub(crate) client_cidrs: BTreeSet<String>,
    /// The ports health checks probe (TCP).
    pub(crate) health_ports: BTreeSet<i32>,
    /// The CIDRs of the load balancer's subnets.
    pub(crate) health_cidrs: BTreeSet<String>,
}

impl NlbIngress {
    /// What the Service's load balancer `lb_name` needs: clients from its source ranges on the NodePorts, health
    /// checks from `health_cidrs` (the NLB's subnets) on the health-check port (`traffic-port`: the NodePorts).
    pub(crate) fn for_service(
        lb_name: &str,
        spec: &LbSpec,
        health_cidrs: BTreeSet<String>,
    ) -> Self {
        let client_ports: BTreeSet<i32> = spec.ports.iter().map(|p| p.node_port).collect();
        let health_ports = match spec.health.port.parse::<i32>() {
            Ok(port) => [port].into(),
            Err(_) => client_ports.clone(),
        };
        let udp = spec.ports.iter().any(|p| p.protocol == "UDP");
        Self {
            lb_name: lb_name.to_owned(),
            client_protocol: if udp { "udp" } else { "tcp" }.to_owned(),
            client_ports,
            client_cidrs: spec.source_ranges.clone(),
            health_ports,
            health_cidrs,
        }
    }

    /// A load balancer's rule descriptions, for removal when nothing else is known of it.
    pub(crate) fn for_removal(lb_name: &str) -> Self {
        Self {
            lb_name: lb_name.to_owned(),
            client_protocol: "tcp".to_owned(),
            client_ports: BTreeSet::new(),
            client_cidrs: BTreeSet::new(),
            health_ports: BTreeSet::new(),
            health_cidrs: BTreeSet::new(),
        }
    }

    pub(crate) fn client_description(&self) -> String {
        format!("{NLB_CLIENT_RULE}={}", self.lb_name)
    }

    pub(crate) fn health_description(&self) -> String {
        format!("{NLB_HEALTH_RULE}={}", self.lb_name)
    }

    /// True when `rule` is one of this load balancer's.
    pub(crate) fn owns(&self, rule: &Rule) -> bool {
        rule.has_description(&self.client_description())
            || rule.has_description(&self.health_description())
    }

    /// The rules a group of the load balancer's instances needs: client rules, then health rules for traffic the
    /// client rules do not already admit (none when clients are `0.0.0.0/0` on the same TCP ports, as upstream).
    fn wanted(&self) -> Vec<Rule> {
        let client = self.client_description();
        let health = self.health_description();
        let mut rules: Vec<Rule> = Vec::new();
        for port in &self.client_ports {
            for cidr in &self.client_cidrs {
                rules.push(Rule::new(
                    &self.client_protocol,
                    *port,
                    *port,
                    cidr,
                    &client,
                ));
            }
        }
        let clients = rules.clone();
        for port in &self.health_ports {
            for cidr in &self.health_cidrs {
                let rule = Rule::new("tcp", *port, *port, cidr, &health);
                if !clients.iter().any(|c| c.covers(&rule)) {
                    rules.push(rule);
                }
            }
        }
        rules
    }
}

/// The rules to revoke from one security group and then to grant to it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct GroupChange {
    /// Revoked first.
    pub(crate) revoke: Vec<Rule>,
    /// Then granted.
    pub(crate) grant: Vec<Rule>,
}

impl GroupChange {
    /// True when the group is already as wanted.
    pub(crate) fn is_empty(&self) -> bool {
        self.revoke.is_empty() && self.grant.is_empty()
    }
}

/// The change one security group needs for `lb`: its rules exactly as wanted when `targets_use_it` (the group of
/// one of the load balancer's instances), none of its rules otherwise; then the shared MTU rules matching the
/// client rules the group ends up with.
pub(crate) fn plan_group(
    current: &BTreeSet<Rule>,
    lb: &NlbIngress,
    targets_use_it: bool,
) -> GroupChange {
    let wanted = if targets_use_it {
        lb.wanted()
    } else {
        Vec::new()
    };
    let mut change = GroupChange::default();
    let mut after: BTreeSet<Rule> = current.clone();
    for rule in current.iter().filter(|r| lb.owns(r)) {
        if !wanted.contains(rule) {
            change.revoke.push(rule.clone());
            after.remove(rule);
        }
    }
    grant_missing(&mut change, &mut after, wanted);
    // Path-MTU discovery: ICMP type 3 code 4 from every CIDR an NLB client rule admits (IPv4; ICMPv6 "packet too
    // big" is not filtered by security groups' defaults and upstream adds none).
    let mtu: Vec<Rule> = after
        .iter()
        .filter(|r| {
            r.description
                .as_deref()
                .is_some_and(|d| d.starts_with(NLB_CLIENT_RULE))
                && !r.cidr.contains(':')
        })
        .map(|r| Rule::new("icmp", 3, 4, &r.cidr, NLB_MTU_RULE))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    for rule in after.iter().filter(|r| r.has_description(NLB_MTU_RULE)) {
        if !mtu.contains(rule) {
            change.revoke.push(rule.clone());
        }
    }
    after.retain(|r| !r.has_description(NLB_MTU_RULE) || mtu.contains(r));
    grant_missing(&mut change, &mut after, mtu);
    change
}

/// Grants what `after` lacks, unless a rule of another description already admits that traffic.
fn grant_missing(change: &mut GroupChange, after: &mut BTreeSet<Rule>, wanted: Vec<Rule>) {
    for rule in wanted {
        if !after.iter().any(|r| r.same_traffic(&rule)) {
            after.insert(rule.clone());
            change.grant.push(rule);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lb() -> NlbIngress {
        NlbIngress {
            lb_name: "a123".to_owned(),
            client_protocol: "tcp".to_owned(),
            client_ports: [30080].into(),
            client_cidrs: ["203.0.113.0/24".to_owned()].into(),
            health_ports: [30080].into(),
            health_cidrs: ["10.0.1.0/24".to_owned()].into(),
        }
    }

    fn client(cidr: &str) -> Rule {
        Rule::new(
            "tcp",
            30080,
            30080,
            cidr,
            "kubernetes.io/rule/nlb/client=a123",
        )
    }

    fn health(cidr: &str) -> Rule {
        Rule::new(
            "tcp",
            30080,
            30080,
            cidr,
            "kubernetes.io/rule/nlb/health=a123",
        )
    }

    fn mtu(cidr: &str) -> Rule {
        Rule::new("icmp", 3, 4, cidr, NLB_MTU_RULE)
    }

    #[test]
    fn a_new_group_gets_client_health_and_mtu_rules() {
        let change = plan_group(&BTreeSet::new(), &lb(), true);
        assert_eq!(change.revoke, vec![]);
        assert_eq!(
            change.grant,
            vec![
                client("203.0.113.0/24"),
                health("10.0.1.0/24"),
                mtu("203.0.113.0/24")
            ]
        );
    }

    #[test]
    fn a_group_as_wanted_needs_nothing() {
        let current: BTreeSet<Rule> = [
            client("203.0.113.0/24"),
            health("10.0.1.0/24"),
            mtu("203.0.113.0/24"),
        ]
        .into();
        assert!(plan_group(&current, &lb(), true).is_empty());
    }

    #[test]
    fn changed_source_ranges_swap_the_client_and_mtu_rules() {
        let current: BTreeSet<Rule> = [
            client("198.51.100.0/24"),
            health("10.0.1.0/24"),
            mtu("198.51.100.0/24"),
        ]
        .into();
        let change = plan_group(&current, &lb(), true);
        assert_eq!(
            change.revoke,
            vec![client("198.51.100.0/24"), mtu("198.51.100.0/24")]
        );
        assert_eq!(
            change.grant,
            vec![client("203.0.113.0/24"), mtu("203.0.113.0/24")]
        );
    }

    #[test]
    fn open_clients_on_the_traffic_port_cover_the_health_check() {
        let mut open = lb();
        open.client_cidrs = ["0.0.0.0/0".to_owned()].into();
        let change = plan_group(&BTreeSet::new(), &open, true);
        assert_eq!(change.grant, vec![client("0.0.0.0/0"), mtu("0.0.0.0/0")]);
        // Another health-check port is not covered.
        open.health_ports = [31999].into();
        let change = plan_group(&BTreeSet::new(), &open, true);
        assert!(change.grant.contains(&Rule::new(
            "tcp",
            31999,
            31999,
            "10.0.1.0/24",
            "kubernetes.io/rule/nlb/health=a123"
        )));
    }

    #[test]
    fn a_group_no_target_uses_loses_only_this_load_balancers_rules() {
        let other_lb = Rule::new(
            "tcp",
            31000,
            31000,
            "0.0.0.0/0",
            "kubernetes.io/rule/nlb/client=b456",
        );
        let users = Rule::new("tcp", 22, 22, "10.0.0.0/8", "ssh");
        let current: BTreeSet<Rule> = [
            client("203.0.113.0/24"),
            health("10.0.1.0/24"),
            mtu("203.0.113.0/24"),
            other_lb.clone(),
            mtu("0.0.0.0/0"),
            users,
        ]
        .into();
        let change = plan_group(&current, &NlbIngress::for_removal("a123"), false);
        // The other NLB keeps its client rule and the MTU rule its CIDR needs.
        assert_eq!(
            change.revoke,
            vec![
                health("10.0.1.0/24"),
                client("203.0.113.0/24"),
                mtu("203.0.113.0/24")
            ]
        );
        assert_eq!(change.grant, vec![]);
    }

    #[test]
    fn traffic_someone_else_admits_is_not_duplicated_or_revoked() {
        let theirs = Rule::new("tcp", 30080, 30080, "203.0.113.0/24", "hand-made");
        let current: BTreeSet<Rule> = [theirs.clone()].into();
        let change = plan_group(&current, &lb(), true);
        assert_eq!(change.grant, vec![health("10.0.1.0/24")]);
        let gone = plan_group(&current, &NlbIngress::for_removal("a123"), false);
        assert!(gone.is_empty(), "{gone:?}");
    }

    #[test]
    fn permissions_round_trip_through_the_api_types() {
        let rules: BTreeSet<Rule> = [
            client("203.0.113.0/24"),
            Rule::new("udp", 1, 2, "2001:db8::/64", "x"),
        ]
        .into();
        let permissions: Vec<IpPermission> = rules.iter().map(Rule::to_permission).collect();
        assert_eq!(ungroup(&permissions), rules);
    }
}
