//! What an instance costs, for the summaries: on-demand from a list of common GPU types' public
//! list prices, spot from EC2's current spot price. A price is information, never a reason to
//! fail: when none is known, the summary says so.

use super::api::Api;
use crate::boot::HourlyPrice;
use crate::machine::{Machine, Price};
use crate::plan::Market;

/// On-demand list prices in us-east-1, Linux, USD per hour, as AWS published them (2025). Other
/// regions differ by a few tens of percent; the summary says which this is.
const ON_DEMAND_US_EAST_1: &[(&str, f64)] = &[
    ("g4dn.xlarge", 0.526),
    ("g4dn.2xlarge", 0.752),
    ("g4dn.4xlarge", 1.204),
    ("g4dn.8xlarge", 2.176),
    ("g4dn.12xlarge", 3.912),
    ("g4dn.16xlarge", 4.352),
    ("g4dn.metal", 7.824),
    ("g5.xlarge", 1.006),
    ("g5.2xlarge", 1.212),
    ("g5.4xlarge", 1.624),
    ("g5.8xlarge", 2.448),
    ("g5.12xlarge", 5.672),
    ("g5.16xlarge", 4.096),
    ("g5.24xlarge", 8.144),
    ("g5.48xlarge", 16.288),
    ("g6.xlarge", 0.8048),
    ("g6.2xlarge", 0.9776),
    ("g6.4xlarge", 1.3232),
    ("g6.8xlarge", 2.0144),
    ("g6.12xlarge", 4.6016),
    ("g6.16xlarge", 3.3968),
    ("g6.24xlarge", 6.6752),
    ("g6.48xlarge", 13.3504),
    ("p3.2xlarge", 3.06),
    ("p3.8xlarge", 12.24),
    ("p3.16xlarge", 24.48),
];

pub fn on_demand_list_price(instance_type: &str) -> Option<Price> {
    ON_DEMAND_US_EAST_1
        .iter()
        .find(|(t, _)| *t == instance_type)
        .map(|(_, usd)| Price {
            usd_per_hour: *usd,
            source: "on-demand list price in us-east-1".to_owned(),
        })
}

/// What a new instance's boot script is told it costs: the list price of an on-demand type, or
/// the spot price of each zone (`spot_prices`) for spot, since EC2 picks the zone.
pub fn for_boot(
    instance_type: &str,
    market: Market,
    spot_prices: Vec<(String, f64)>,
) -> HourlyPrice {
    match market {
        Market::OnDemand => on_demand_list_price(instance_type)
            .map_or(HourlyPrice::Unknown, |p| HourlyPrice::List(p.usd_per_hour)),
        Market::Spot if spot_prices.is_empty() => HourlyPrice::Unknown,
        Market::Spot => HourlyPrice::SpotByZone(spot_prices),
    }
}

/// The price of this instance: of its type and market, in its zone.
pub async fn of(api: &Api, instance: &Machine) -> Option<Price> {
    price(
        api,
        &instance.instance_type,
        instance.market,
        instance.availability_zone.as_deref(),
    )
    .await
}

/// The price of an instance of this type and market, in this zone.
pub async fn price(
    api: &Api,
    instance_type: &str,
    market: Market,
    zone: Option<&str>,
) -> Option<Price> {
    match market {
        Market::OnDemand => on_demand_list_price(instance_type),
        Market::Spot => {
            let (_, usd) = api
                .spot_prices(instance_type, Some(zone?))
                .await
                .into_iter()
                .next()?;
            Some(Price {
                usd_per_hour: usd,
                source: format!("current spot price in {}", zone.unwrap_or_default()),
            })
        }
    }
}

/// Each zone's latest price, by zone name, from a history of (zone, time, USD an hour).
pub fn latest_by_zone(history: impl Iterator<Item = (String, i64, f64)>) -> Vec<(String, f64)> {
    let mut latest: std::collections::BTreeMap<String, (i64, f64)> = Default::default();
    for (zone, at, usd) in history {
        let entry = latest.entry(zone).or_insert((at, usd));
        if at >= entry.0 {
            *entry = (at, usd);
        }
    }
    latest.into_iter().map(|(z, (_, usd))| (z, usd)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_prices_and_costs_read_plainly() {
        let p = on_demand_list_price("g4dn.xlarge").unwrap_or_else(|| panic!("priced"));
        assert_eq!(p.describe(), "$0.526/h (on-demand list price in us-east-1)");
        assert_eq!(
            p.cost(90 * 60),
            "≈ $0.79 at $0.526/h (on-demand list price in us-east-1)"
        );
        // By the second, and a minute at least each time it starts.
        assert_eq!(p.cost(10), p.cost(60));
        assert_eq!(
            p.cost(125),
            "≈ $0.02 at $0.526/h (on-demand list price in us-east-1)"
        );
        assert_eq!(on_demand_list_price("x9.unknown"), None);
    }

    #[test]
    fn each_zone_has_its_latest_spot_price() {
        let history = [
            ("us-east-1b".to_owned(), 200, 0.52),
            ("us-east-1a".to_owned(), 100, 0.40),
            ("us-east-1b".to_owned(), 100, 0.50),
            ("us-east-1a".to_owned(), 300, 0.41),
        ];
        assert_eq!(
            latest_by_zone(history.into_iter()),
            [
                ("us-east-1a".to_owned(), 0.41),
                ("us-east-1b".to_owned(), 0.52)
            ]
        );
    }
}
