//! The node conditions a heartbeat reports, and when they are worth a status post.

use k8s_openapi::api::core::v1::NodeCondition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// The kubelet's conditions of a healthy node: `Ready=True` (`KubeletReady`) and no memory, disk or PID
/// pressure. Timestamps are filled in when posted.
pub fn default_conditions() -> Vec<NodeCondition> {
    let condition = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        ..NodeCondition::default()
    };
    vec![
        condition(
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status",
        ),
        condition(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        condition(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
        ),
        condition(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
    ]
}

/// `base` with the conditions of `overrides` replacing those of the same type (new types appended).
pub(crate) fn merged(base: &[NodeCondition], overrides: &[NodeCondition]) -> Vec<NodeCondition> {
    let mut out: Vec<NodeCondition> = base.to_vec();
    for o in overrides {
        match out.iter_mut().find(|c| c.type_ == o.type_) {
            Some(c) => *c = o.clone(),
            None => out.push(o.clone()),
        }
    }
    out
}

/// Whether two condition lists differ in anything but timestamps.
pub(crate) fn changed(posted: &[NodeCondition], desired: &[NodeCondition]) -> bool {
    let key = |c: &NodeCondition| {
        (
            c.type_.clone(),
            c.status.clone(),
            c.reason.clone(),
            c.message.clone(),
        )
    };
    posted.len() != desired.len() || posted.iter().zip(desired).any(|(a, b)| key(a) != key(b))
}

/// `desired` stamped for a post at `now`: heartbeat time now; transition time kept from `posted` when the
/// status of that type did not change.
pub(crate) fn stamped(
    posted: &[NodeCondition],
    desired: &[NodeCondition],
    now: Timestamp,
) -> Vec<NodeCondition> {
    desired
        .iter()
        .map(|c| {
            let transition = posted
                .iter()
                .find(|p| p.type_ == c.type_ && p.status == c.status)
                .and_then(|p| p.last_transition_time.clone())
                .unwrap_or(Time(now));
            NodeCondition {
                last_heartbeat_time: Some(Time(now)),
                last_transition_time: Some(transition),
                ..c.clone()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_by_type_and_transition_time_is_kept_while_status_holds() {
        let base = default_conditions();
        let not_ready = NodeCondition {
            type_: "Ready".into(),
            status: "False".into(),
            reason: Some("ProviderDown".into()),
            ..NodeCondition::default()
        };
        let desired = merged(&base, std::slice::from_ref(&not_ready));
        assert_eq!(desired.len(), 4);
        assert_eq!(desired[0].status, "False");
        assert!(changed(&base, &desired));
        assert!(!changed(&base, &base));

        let t0 = Timestamp::from_second(1_000).unwrap_or(Timestamp::UNIX_EPOCH);
        let t1 = Timestamp::from_second(2_000).unwrap_or(Timestamp::UNIX_EPOCH);
        let first = stamped(&[], &base, t0);
        let second = stamped(&first, &desired, t1);
        // Ready flipped: new transition time; MemoryPressure did not: the old one stays.
        assert_eq!(second[0].last_transition_time, Some(Time(t1)));
        assert_eq!(second[1].last_transition_time, Some(Time(t0)));
        assert_eq!(second[1].last_heartbeat_time, Some(Time(t1)));
    }
}
