//! The account's network as AWS makes it, and subnets of each kind a user may name.
//!
//! AWS gives every region's default VPC an internet gateway and a main route table that sends
//! 0.0.0.0/0 to it, and its default subnets give instances a public IPv4 address (Amazon VPC User
//! Guide, "Default VPCs": "Components of a default VPC"). moto's default VPC has neither the gateway
//! nor the route, so the world adds both. A subnet a user creates gives no public address unless
//! told to (`MapPublicIpOnLaunch` false, Amazon VPC User Guide, "Subnet settings"), and reaches the
//! internet only through a route of its route table, or of the VPC's main one when it has none of
//! its own (Amazon VPC User Guide, "Route tables").

use aws_sdk_ec2::types::Filter;

/// Subnets of each kind, in the default VPC.
#[derive(Debug, Clone)]
pub struct Subnets {
    /// A default subnet: public address, the main route table's route to the internet gateway.
    pub public: String,
    /// Its own route table sends 0.0.0.0/0 to a NAT gateway (in a public subnet).
    pub nat: String,
    pub nat_gateway: String,
    /// Its own route table has the VPC's local route alone.
    pub private: String,
    pub private_route_table: String,
    /// The main route table's internet gateway, but no public address for its instances.
    pub no_public_address: String,
}

fn by(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

/// The default VPC and its main route table.
async fn default_vpc(ec2: &aws_sdk_ec2::Client) -> Result<(String, String), String> {
    let vpcs = ec2
        .describe_vpcs()
        .filters(by("is-default", "true"))
        .send()
        .await
        .map_err(|e| format!("DescribeVpcs: {e:?}"))?;
    let vpc = vpcs
        .vpcs()
        .first()
        .and_then(|v| v.vpc_id())
        .ok_or("the region has no default VPC")?
        .to_owned();
    let tables = ec2
        .describe_route_tables()
        .filters(by("vpc-id", &vpc))
        .filters(by("association.main", "true"))
        .send()
        .await
        .map_err(|e| format!("DescribeRouteTables: {e:?}"))?;
    let main = tables
        .route_tables()
        .first()
        .and_then(|t| t.route_table_id())
        .ok_or("the default VPC has no main route table")?
        .to_owned();
    Ok((vpc, main))
}

/// Gives the default VPC what AWS gives it: an internet gateway and the main route table's
/// 0.0.0.0/0 route to it.
pub async fn as_aws_makes_it(ec2: &aws_sdk_ec2::Client) -> Result<(), String> {
    let (vpc, main) = default_vpc(ec2).await?;
    let gateway = ec2
        .create_internet_gateway()
        .send()
        .await
        .map_err(|e| format!("CreateInternetGateway: {e:?}"))?;
    let gateway = gateway
        .internet_gateway()
        .and_then(|g| g.internet_gateway_id())
        .ok_or("CreateInternetGateway: no id")?
        .to_owned();
    ec2.attach_internet_gateway()
        .internet_gateway_id(&gateway)
        .vpc_id(&vpc)
        .send()
        .await
        .map_err(|e| format!("AttachInternetGateway: {e:?}"))?;
    ec2.create_route()
        .route_table_id(&main)
        .destination_cidr_block("0.0.0.0/0")
        .gateway_id(&gateway)
        .send()
        .await
        .map_err(|e| format!("CreateRoute: {e:?}"))?;
    Ok(())
}

async fn subnet(ec2: &aws_sdk_ec2::Client, vpc: &str, cidr: &str) -> Result<String, String> {
    let made = ec2
        .create_subnet()
        .vpc_id(vpc)
        .cidr_block(cidr)
        .send()
        .await
        .map_err(|e| format!("CreateSubnet {cidr}: {e:?}"))?;
    Ok(made
        .subnet()
        .and_then(|s| s.subnet_id())
        .ok_or("CreateSubnet: no id")?
        .to_owned())
}

async fn own_table(ec2: &aws_sdk_ec2::Client, vpc: &str, subnet: &str) -> Result<String, String> {
    let table = ec2
        .create_route_table()
        .vpc_id(vpc)
        .send()
        .await
        .map_err(|e| format!("CreateRouteTable: {e:?}"))?;
    let table = table
        .route_table()
        .and_then(|t| t.route_table_id())
        .ok_or("CreateRouteTable: no id")?
        .to_owned();
    ec2.associate_route_table()
        .route_table_id(&table)
        .subnet_id(subnet)
        .send()
        .await
        .map_err(|e| format!("AssociateRouteTable: {e:?}"))?;
    Ok(table)
}

/// Makes a subnet of each kind in the default VPC.
pub async fn make_subnets(ec2: &aws_sdk_ec2::Client) -> Result<Subnets, String> {
    let (vpc, _) = default_vpc(ec2).await?;
    let defaults = ec2
        .describe_subnets()
        .filters(by("vpc-id", &vpc))
        .filters(by("default-for-az", "true"))
        .send()
        .await
        .map_err(|e| format!("DescribeSubnets: {e:?}"))?;
    let public = defaults
        .subnets()
        .first()
        .and_then(|s| s.subnet_id())
        .ok_or("the default VPC has no default subnet")?
        .to_owned();
    let nat_gateway = ec2
        .create_nat_gateway()
        .subnet_id(&public)
        .send()
        .await
        .map_err(|e| format!("CreateNatGateway: {e:?}"))?;
    let nat_gateway = nat_gateway
        .nat_gateway()
        .and_then(|g| g.nat_gateway_id())
        .ok_or("CreateNatGateway: no id")?
        .to_owned();
    // The default subnets take 172.31.0.0/20 to 172.31.80.0/20.
    let nat = subnet(ec2, &vpc, "172.31.128.0/24").await?;
    let nat_table = own_table(ec2, &vpc, &nat).await?;
    ec2.create_route()
        .route_table_id(&nat_table)
        .destination_cidr_block("0.0.0.0/0")
        .nat_gateway_id(&nat_gateway)
        .send()
        .await
        .map_err(|e| format!("CreateRoute (NAT): {e:?}"))?;
    let private = subnet(ec2, &vpc, "172.31.129.0/24").await?;
    let private_route_table = own_table(ec2, &vpc, &private).await?;
    let no_public_address = subnet(ec2, &vpc, "172.31.130.0/24").await?;
    Ok(Subnets {
        public,
        nat,
        nat_gateway,
        private,
        private_route_table,
        no_public_address,
    })
}

/// Deletes the default VPC with what it holds (`aws ec2 delete-vpc` refuses a VPC with subnets or
/// an attached gateway).
pub async fn delete_default_vpc(ec2: &aws_sdk_ec2::Client) -> Result<(), String> {
    let (vpc, _) = default_vpc(ec2).await?;
    let subnets = ec2
        .describe_subnets()
        .filters(by("vpc-id", &vpc))
        .send()
        .await
        .map_err(|e| format!("DescribeSubnets: {e:?}"))?;
    for s in subnets.subnets() {
        ec2.delete_subnet()
            .subnet_id(s.subnet_id().unwrap_or_default())
            .send()
            .await
            .map_err(|e| format!("DeleteSubnet: {e:?}"))?;
    }
    let gateways = ec2
        .describe_internet_gateways()
        .filters(by("attachment.vpc-id", &vpc))
        .send()
        .await
        .map_err(|e| format!("DescribeInternetGateways: {e:?}"))?;
    for g in gateways.internet_gateways() {
        let id = g.internet_gateway_id().unwrap_or_default();
        ec2.detach_internet_gateway()
            .internet_gateway_id(id)
            .vpc_id(&vpc)
            .send()
            .await
            .map_err(|e| format!("DetachInternetGateway: {e:?}"))?;
    }
    ec2.delete_vpc()
        .vpc_id(&vpc)
        .send()
        .await
        .map_err(|e| format!("DeleteVpc: {e:?}"))?;
    Ok(())
}
