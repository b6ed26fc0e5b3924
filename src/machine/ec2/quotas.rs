//! EC2's vCPU quotas: the Service Quotas quota an instance type counts against in a market, what a
//! start needs of it, and the words and command for raising it. EC2 counts the vCPUs of running
//! instances per group of families and per market (EC2 User Guide, "Amazon EC2 service quotas";
//! the codes are those of `aws service-quotas list-service-quotas --service-code ec2`). A new
//! account's G and VT quota is often 0, and an increase can take a day: no re-run helps.

use crate::plan::Market;

/// A vCPU quota: its Service Quotas name, and its code where gpu-runner knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    pub name: String,
    pub code: Option<&'static str>,
}

/// The quota `instance_type` counts against in `market`.
pub fn of(instance_type: &str, market: Market) -> Quota {
    let family = instance_type.split('.').next().unwrap_or_default();
    let (group, codes) = match family.chars().next() {
        Some('g') => ("G and VT", Some(("L-DB2E81BA", "L-3819A6DF"))),
        Some('v') if family.starts_with("vt") => ("G and VT", Some(("L-DB2E81BA", "L-3819A6DF"))),
        Some('p') => ("P", Some(("L-417A185B", "L-7212CCBC"))),
        Some('f') => ("F", None),
        Some('i') if family.starts_with("inf") => ("Inf", None),
        Some('t') if family.starts_with("trn") => ("Trn", None),
        _ => (
            "Standard (A, C, D, H, I, M, R, T, Z)",
            Some(("L-1216C47A", "L-34B43A08")),
        ),
    };
    match market {
        Market::OnDemand => Quota {
            name: format!("Running On-Demand {group} instances"),
            code: codes.map(|(on_demand, _)| on_demand),
        },
        Market::Spot => Quota {
            name: format!("All {group} Spot Instance Requests"),
            code: codes.map(|(_, spot)| spot),
        },
    }
}

/// A candidate the quota stops: the quota, its value (when Service Quotas said), what the start
/// needs of it, and the region it is counted in.
#[derive(Debug, Clone, PartialEq)]
pub struct Shortfall {
    pub quota: Quota,
    pub value: Option<f64>,
    pub needed: u32,
    pub region: String,
}

impl Shortfall {
    /// Whether the quota, as read, is below what the start needs: no launch of this candidate
    /// can succeed.
    pub fn too_low(&self) -> bool {
        self.value.is_some_and(|v| v < f64::from(self.needed))
    }

    /// This candidate refused before any launch, for the quota.
    pub fn refusal(self, candidate: String) -> crate::machine::failure::Refusal {
        crate::machine::failure::Refusal {
            candidate,
            code: "vCPU quota".to_owned(),
            advice: format!("{}, and this start needs {}", self.describe(), self.needed),
            quota: Some(self),
        }
    }

    /// The value to ask for: what the start needs, or when the quota already covers that (other
    /// instances use it), that much more.
    pub fn desired(&self) -> u32 {
        match self.value {
            Some(v) if v >= f64::from(self.needed) => v as u32 + self.needed,
            _ => self.needed,
        }
    }

    /// `"Running On-Demand G and VT instances" (L-DB2E81BA) is 0 vCPUs in us-east-1`.
    pub fn describe(&self) -> String {
        let code = self
            .quota
            .code
            .map(|c| format!(" ({c})"))
            .unwrap_or_default();
        match self.value {
            Some(v) => format!(
                "\"{}\"{code} is {v} vCPUs in {}",
                self.quota.name, self.region
            ),
            None => format!("\"{}\"{code} in {}", self.quota.name, self.region),
        }
    }

    /// How to ask for more: the command when the code is known, the console otherwise.
    pub fn request(&self) -> String {
        match self.quota.code {
            Some(code) => format!(
                "aws service-quotas request-service-quota-increase --service-code ec2 \
                 --quota-code {code} --desired-value {} --region {}",
                self.desired(),
                self.region
            ),
            None => format!(
                "in the Service Quotas console (Amazon EC2, \"{}\", region {}), ask for {} vCPUs",
                self.quota.name,
                self.region,
                self.desired()
            ),
        }
    }
}

/// The closing words when every candidate was stopped by a quota: which quotas, their values,
/// what is needed, and the request for each (spot and on-demand apart).
pub fn fix(shortfalls: &[&Shortfall]) -> String {
    let mut requests: Vec<String> = Vec::new();
    for s in shortfalls {
        let line = format!(
            "{} and this start needs {}: {}",
            s.describe(),
            s.needed,
            s.request()
        );
        if !requests.iter().any(|r| r == &line) {
            requests.push(line);
        }
    }
    format!(
        "This is the account's vCPU quota, which no re-run changes. Ask AWS for more (an increase \
         can take a day; a new account's GPU quotas are often 0):\n{}",
        requests
            .iter()
            .map(|r| format!("- {r}"))
            .collect::<Vec<_>>()
            .join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_families_count_against_their_groups_quota_in_each_market() {
        assert_eq!(
            of("g5.xlarge", Market::OnDemand),
            Quota {
                name: "Running On-Demand G and VT instances".into(),
                code: Some("L-DB2E81BA")
            }
        );
        assert_eq!(of("g6e.2xlarge", Market::Spot).code, Some("L-3819A6DF"));
        assert_eq!(of("p5.48xlarge", Market::OnDemand).code, Some("L-417A185B"));
        assert_eq!(
            of("p4d.24xlarge", Market::Spot).name,
            "All P Spot Instance Requests"
        );
        assert_eq!(of("inf2.xlarge", Market::OnDemand).code, None);
    }

    #[test]
    fn the_fix_names_each_quota_once_with_the_command_that_raises_it() {
        let zero = Shortfall {
            quota: of("g5.xlarge", Market::OnDemand),
            value: Some(0.0),
            needed: 8,
            region: "us-east-1".into(),
        };
        let used_up = Shortfall {
            quota: of("g5.xlarge", Market::Spot),
            value: Some(16.0),
            needed: 4,
            region: "us-east-1".into(),
        };
        let fix = fix(&[&zero, &zero.clone(), &used_up]);
        assert_eq!(
            fix.matches("L-DB2E81BA --desired-value 8 --region us-east-1")
                .count(),
            1,
            "{fix}"
        );
        assert!(fix.contains("\"All G and VT Spot Instance Requests\" (L-3819A6DF) is 16 vCPUs in us-east-1 and this start needs 4"), "{fix}");
        assert!(
            fix.contains("--quota-code L-3819A6DF --desired-value 20"),
            "{fix}"
        );
        assert!(fix.contains("no re-run changes"));
    }
}
