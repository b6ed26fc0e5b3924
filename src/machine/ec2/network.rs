//! Can an instance in this subnet reach GitHub? The runner needs outbound HTTPS to GitHub, and
//! gets there through the subnet's route for 0.0.0.0/0: to an internet gateway, with a public IPv4
//! address (which gpu-runner never asks for: the subnet's `MapPublicIpOnLaunch` decides), or to a
//! NAT gateway. A subnet without a route table of its own uses the VPC's main one (Amazon VPC User
//! Guide, "Route tables", "Subnet settings"). Read by dry-run, before anything is launched.

/// How a subnet's instances reach the internet, as its route table and settings say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// Through an internet gateway, with a public address.
    Internet { gateway: String },
    /// Through a NAT gateway.
    Nat { gateway: String },
    /// An internet gateway, but the subnet gives its instances no public IPv4 address.
    NoPublicAddress { gateway: String },
    /// 0.0.0.0/0 goes somewhere gpu-runner cannot judge (a transit gateway, a firewall, a proxy
    /// instance).
    Elsewhere { target: String },
    /// No route for 0.0.0.0/0 at all.
    NoRoute { route_table: String },
}

/// What gpu-runner found of one subnet (or of the default VPC's subnets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    /// `subnet-…`, or `the default VPC vpc-…` (its default subnets).
    pub name: String,
    pub reach: Reach,
}

impl Subnet {
    /// Whether the runner can be expected to reach GitHub from it.
    pub fn reaches(&self) -> Option<bool> {
        match self.reach {
            Reach::Internet { .. } | Reach::Nat { .. } => Some(true),
            Reach::NoPublicAddress { .. } | Reach::NoRoute { .. } => Some(false),
            Reach::Elsewhere { .. } => None,
        }
    }

    /// One line for the log.
    pub fn describe(&self) -> String {
        let name = &self.name;
        match &self.reach {
            Reach::Internet { gateway } => {
                format!("{name} reaches GitHub through {gateway}, with a public address")
            }
            Reach::Nat { gateway } => format!("{name} reaches GitHub through {gateway}"),
            Reach::NoPublicAddress { gateway } => format!(
                "{name} routes to {gateway} but gives its instances no public IPv4 address, so \
                 the runner cannot reach GitHub"
            ),
            Reach::Elsewhere { target } => format!(
                "{name} sends 0.0.0.0/0 to {target}: gpu-runner cannot tell whether that reaches \
                 GitHub (api.github.com, github.com and *.actions.githubusercontent.com over HTTPS)"
            ),
            Reach::NoRoute { route_table } => format!(
                "{name} has no route to the internet (0.0.0.0/0 in {route_table}), so the runner \
                 cannot reach GitHub"
            ),
        }
    }

    /// What to do about a subnet that does not reach GitHub.
    pub fn fix(&self) -> Option<String> {
        let name = &self.name;
        match &self.reach {
            Reach::NoPublicAddress { .. } if name.starts_with("subnet-") => Some(format!(
                "Give its instances public addresses (aws ec2 modify-subnet-attribute \
                 --subnet-id {name} --map-public-ip-on-launch), route it through a NAT gateway, \
                 or name a public subnet in subnet-ids."
            )),
            Reach::NoPublicAddress { .. } => Some(
                "Turn on auto-assign public IPv4 addresses for the default subnets, or name a \
                 subnet that reaches GitHub in subnet-ids."
                    .to_owned(),
            ),
            Reach::NoRoute { route_table } => Some(format!(
                "Route it through a NAT gateway (aws ec2 create-route --route-table-id \
                 {route_table} --destination-cidr-block 0.0.0.0/0 --nat-gateway-id nat-…), or \
                 name a public subnet in subnet-ids."
            )),
            _ => None,
        }
    }
}

/// The 0.0.0.0/0 route of a route table, judged with the subnet's public-address setting.
pub fn judge(
    name: String,
    route_table: &str,
    default_route: Option<Target>,
    public_address: bool,
) -> Subnet {
    let reach = match default_route {
        None => Reach::NoRoute {
            route_table: route_table.to_owned(),
        },
        Some(Target::InternetGateway(gateway)) if public_address => Reach::Internet { gateway },
        Some(Target::InternetGateway(gateway)) => Reach::NoPublicAddress { gateway },
        Some(Target::NatGateway(gateway)) => Reach::Nat { gateway },
        Some(Target::Other(target)) => Reach::Elsewhere { target },
    };
    Subnet { name, reach }
}

/// Where a route sends its traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    InternetGateway(String),
    NatGateway(String),
    Other(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_subnet_is_judged_with_its_fix() {
        let public = judge(
            "subnet-1".into(),
            "rtb-1",
            Some(Target::InternetGateway("igw-1".into())),
            true,
        );
        assert_eq!(public.reaches(), Some(true));
        let hidden = judge(
            "subnet-2".into(),
            "rtb-1",
            Some(Target::InternetGateway("igw-1".into())),
            false,
        );
        assert_eq!(hidden.reaches(), Some(false));
        assert!(hidden.fix().unwrap().contains(
            "aws ec2 modify-subnet-attribute --subnet-id subnet-2 --map-public-ip-on-launch"
        ));
        let nat = judge(
            "subnet-3".into(),
            "rtb-3",
            Some(Target::NatGateway("nat-1".into())),
            false,
        );
        assert_eq!(nat.reaches(), Some(true));
        let none = judge("subnet-4".into(), "rtb-4", None, true);
        assert_eq!(none.reaches(), Some(false));
        assert!(none.fix().unwrap().contains("--route-table-id rtb-4"));
        let other = judge(
            "subnet-5".into(),
            "rtb-5",
            Some(Target::Other("tgw-1".into())),
            false,
        );
        assert_eq!(other.reaches(), None);
        assert_eq!(other.fix(), None);
    }
}
