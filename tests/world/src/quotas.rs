//! EC2's vCPU quotas, as EC2 and Service Quotas keep them (moto has neither: its Service Quotas
//! knows only VPC quotas, and its RunInstances launches without a limit).
//!
//! - EC2 counts the vCPUs of an account's running and pending instances per quota group and
//!   market (EC2 User Guide, "Amazon EC2 service quotas" and "On-Demand Instance quotas"): a
//!   RunInstances that would go over the group's value fails with `VcpuLimitExceeded` (on-demand)
//!   or `MaxSpotInstanceCountExceeded` (spot), in EC2's words below.
//! - Service Quotas' `GetServiceQuota` (service code `ec2`) answers the same values, by the
//!   quota codes its console and `aws service-quotas list-service-quotas --service-code ec2` show.
//!
//! A test sets a quota to what a new account has (often 0 for G and VT); by default each is
//! large, as for an account that has run GPU instances before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What every quota is until a test says otherwise.
pub const DEFAULT_VCPUS: f64 = 1024.0;

/// A quota group: its codes and names for both markets.
pub struct Group {
    pub on_demand: (&'static str, &'static str),
    pub spot: (&'static str, &'static str),
}

const G_AND_VT: Group = Group {
    on_demand: ("L-DB2E81BA", "Running On-Demand G and VT instances"),
    spot: ("L-3819A6DF", "All G and VT Spot Instance Requests"),
};
const P: Group = Group {
    on_demand: ("L-417A185B", "Running On-Demand P instances"),
    spot: ("L-7212CCBC", "All P Spot Instance Requests"),
};
const STANDARD: Group = Group {
    on_demand: (
        "L-1216C47A",
        "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances",
    ),
    spot: (
        "L-34B43A08",
        "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests",
    ),
};

/// The group an instance type's vCPUs count against, by its family's letters.
pub fn group(instance_type: &str) -> &'static Group {
    let family = instance_type.split('.').next().unwrap_or_default();
    if family.starts_with('g') || family.starts_with("vt") {
        &G_AND_VT
    } else if family.starts_with('p') {
        &P
    } else {
        &STANDARD
    }
}

/// The code and name of the quota an instance type counts against in a market.
pub fn quota(instance_type: &str, spot: bool) -> (&'static str, &'static str) {
    let group = group(instance_type);
    if spot { group.spot } else { group.on_demand }
}

/// The account's vCPU quotas, by quota code.
#[derive(Clone, Default)]
pub struct Quotas(Arc<Mutex<HashMap<String, f64>>>);

impl Quotas {
    pub fn value(&self, code: &str) -> f64 {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(code)
            .copied()
            .unwrap_or(DEFAULT_VCPUS)
    }

    pub fn set(&self, code: &str, vcpus: f64) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(code.to_owned(), vcpus);
    }

    /// The name of a quota code of the groups above.
    pub fn name(code: &str) -> Option<&'static str> {
        [G_AND_VT, P, STANDARD]
            .iter()
            .flat_map(|g| [g.on_demand, g.spot])
            .find(|(c, _)| *c == code)
            .map(|(_, name)| name)
    }
}

/// EC2's refusal of a launch over the quota, in its words (as users quote them in
/// aws/aws-cli and hashicorp/terraform-provider-aws issues).
pub fn refusal_message(spot: bool, limit: f64) -> (&'static str, String) {
    if spot {
        (
            "MaxSpotInstanceCountExceeded",
            "Max spot instance count exceeded".to_owned(),
        )
    } else {
        (
            "VcpuLimitExceeded",
            format!(
                "You have requested more vCPU capacity than your current vCPU limit of {limit} \
                 allows for the instance bucket that the specified instance type belongs to. \
                 Please visit http://aws.amazon.com/contact-us/ec2-request to request an \
                 adjustment to this limit."
            ),
        )
    }
}
