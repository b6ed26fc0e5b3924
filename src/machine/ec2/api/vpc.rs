//! The VPC reads behind dry-run's network check: a subnet's route to the internet and its
//! public addresses.

use super::*;

impl Api {
    /// How the subnets reach the internet: the named ones, or without any the default VPC's
    /// default subnets (`None`: the region has no default VPC).
    pub async fn reach(
        &self,
        subnet_ids: &[String],
    ) -> Result<Option<Vec<crate::machine::ec2::network::Subnet>>, MachineError> {
        if subnet_ids.is_empty() {
            let vpcs = self
                .ec2
                .describe_vpcs()
                .filters(filter("is-default", "true"))
                .send()
                .await
                .map_err(|e| cloud_error("DescribeVpcs", e))?;
            let Some(vpc) = vpcs.vpcs().first().and_then(|v| v.vpc_id()) else {
                return Ok(None);
            };
            let subnets = self
                .ec2
                .describe_subnets()
                .filters(filter("vpc-id", vpc))
                .filters(filter("default-for-az", "true"))
                .send()
                .await
                .map_err(|e| cloud_error("DescribeSubnets", e))?;
            let public = subnets
                .subnets()
                .iter()
                .all(|s| s.map_public_ip_on_launch() == Some(true));
            let (table, route) = self.default_route(vpc, None).await?;
            return Ok(Some(vec![crate::machine::ec2::network::judge(
                format!("the default VPC {vpc}"),
                &table,
                route,
                public,
            )]));
        }
        let subnets = self
            .ec2
            .describe_subnets()
            .set_subnet_ids(Some(subnet_ids.to_vec()))
            .send()
            .await
            .map_err(|e| cloud_error("DescribeSubnets", e))?;
        let mut judged = Vec::new();
        for s in subnets.subnets() {
            let (Some(id), Some(vpc)) = (s.subnet_id(), s.vpc_id()) else {
                continue;
            };
            let (table, route) = self.default_route(vpc, Some(id)).await?;
            judged.push(crate::machine::ec2::network::judge(
                id.to_owned(),
                &table,
                route,
                s.map_public_ip_on_launch() == Some(true),
            ));
        }
        Ok(Some(judged))
    }

    /// The route table a subnet uses (its own, else the VPC's main one) and where it sends
    /// 0.0.0.0/0.
    async fn default_route(
        &self,
        vpc: &str,
        subnet: Option<&str>,
    ) -> Result<(String, Option<crate::machine::ec2::network::Target>), MachineError> {
        use crate::machine::ec2::network::Target;
        let read = |filters: Vec<Filter>| async move {
            self.ec2
                .describe_route_tables()
                .set_filters(Some(filters))
                .send()
                .await
                .map_err(|e| cloud_error("DescribeRouteTables", e))
        };
        let mut tables = match subnet {
            Some(id) => read(vec![filter("association.subnet-id", id)]).await?,
            None => {
                read(vec![
                    filter("vpc-id", vpc),
                    filter("association.main", "true"),
                ])
                .await?
            }
        };
        if tables.route_tables().is_empty() {
            tables = read(vec![
                filter("vpc-id", vpc),
                filter("association.main", "true"),
            ])
            .await?;
        }
        let Some(table) = tables.route_tables().first() else {
            return Ok(("no route table".to_owned(), None));
        };
        let route = table
            .routes()
            .iter()
            .filter(|r| r.destination_cidr_block() == Some("0.0.0.0/0"))
            .find(|r| r.state().is_none_or(|s| s.as_str() != "blackhole"))
            .map(|r| {
                if let Some(g) = r.gateway_id().filter(|g| g.starts_with("igw-")) {
                    Target::InternetGateway(g.to_owned())
                } else if let Some(n) = r.nat_gateway_id() {
                    Target::NatGateway(n.to_owned())
                } else {
                    Target::Other(
                        [
                            r.transit_gateway_id(),
                            r.gateway_id(),
                            r.network_interface_id(),
                            r.instance_id(),
                            r.vpc_peering_connection_id(),
                        ]
                        .into_iter()
                        .flatten()
                        .next()
                        .unwrap_or("an unknown target")
                        .to_owned(),
                    )
                }
            });
        Ok((table.route_table_id().unwrap_or_default().to_owned(), route))
    }
}
