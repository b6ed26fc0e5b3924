//! IAM's resource and condition checks for the calls gpu-runner's role makes that the documented
//! policy narrows: moto matches a statement's actions only (every `Resource` as `*`, no condition
//! keys), so the world's AWS front evaluates the rest of `docs/iam/permissions-policy.json` as IAM
//! does: every resource a request names must be allowed by a statement whose resource pattern and
//! conditions match it, and no `Deny` may match. It knows the condition operators and keys that
//! document uses and refuses to guess at others.

use std::collections::BTreeMap;

use serde_json::Value;

/// One resource a request names, with the condition keys IAM evaluates for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resource {
    pub arn: String,
    /// Condition keys (`ec2:InstanceType`, `aws:RequestTag/gpu-runner:label`, ...) and their
    /// values; a key that is absent is absent from the request context.
    pub keys: BTreeMap<String, Vec<String>>,
}

impl Resource {
    pub fn new(arn: impl Into<String>) -> Self {
        Self {
            arn: arn.into(),
            keys: BTreeMap::new(),
        }
    }

    pub fn key(mut self, key: &str, value: impl Into<String>) -> Self {
        self.keys
            .entry(key.to_owned())
            .or_default()
            .push(value.into());
        self
    }
}

/// IAM's wildcards: `*` any run of characters, `?` any one.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// `text` with each `${key}` replaced by the request's value of that key; `None` when the request
/// has no such key.
fn substitute(text: &str, resource: &Resource) -> Option<String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let end = rest[start..].find('}')? + start;
        out.push_str(&rest[..start]);
        let key = &rest[start + 2..end];
        out.push_str(resource.keys.get(key)?.first()?);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a.iter().flat_map(strings).collect(),
        Value::String(s) => vec![s.clone()],
        Value::Number(n) => vec![n.to_string()],
        Value::Bool(b) => vec![b.to_string()],
        _ => Vec::new(),
    }
}

/// Whether one condition operator's block holds for `resource` (every key of it must).
fn condition_holds(op: &str, block: &Value, resource: &Resource) -> Result<bool, String> {
    let Some(block) = block.as_object() else {
        return Err(format!("condition {op} is not an object"));
    };
    // `ForAllValues:`: every value the request has for the key must match (IAM: and it holds
    // when the key is absent).
    if let Some(op) = op.strip_prefix("ForAllValues:") {
        for (key, wanted) in block.iter() {
            let got = resource.keys.get(key).cloned().unwrap_or_default();
            for value in got {
                let one = Resource::new("").key(key, value);
                let single = serde_json::json!({ key.as_str(): wanted });
                if !condition_holds(op, &single, &one)? {
                    return Ok(false);
                }
            }
        }
        return Ok(true);
    }
    for (key, wanted) in block {
        // Policy variables (`${ec2:SourceInstanceARN}`) take the request's value of that key; IAM:
        // a variable whose key the request lacks matches nothing.
        let wanted: Vec<String> = strings(wanted)
            .into_iter()
            .filter_map(|w| substitute(&w, resource))
            .collect();
        let got = resource.keys.get(key);
        let any = |f: &dyn Fn(&str, &str) -> bool| {
            got.is_some_and(|g| g.iter().any(|g| wanted.iter().any(|w| f(w, g))))
        };
        let holds = match op {
            "StringEquals" | "ArnEquals" => any(&|w, g| w == g),
            "StringLike" | "ArnLike" => any(&|w, g| glob(w, g)),
            // Negated operators hold when the key is absent.
            "StringNotEquals" => !any(&|w, g| w == g),
            "StringNotLike" | "ArnNotLike" => !any(&|w, g| glob(w, g)),
            "NumericLessThanEquals" => any(
                &|w, g| matches!((w.parse::<f64>(), g.parse::<f64>()), (Ok(w), Ok(g)) if g <= w),
            ),
            "NumericGreaterThan" => {
                any(&|w, g| matches!((w.parse::<f64>(), g.parse::<f64>()), (Ok(w), Ok(g)) if g > w))
            }
            "Bool" => any(&|w, g| w.eq_ignore_ascii_case(g)),
            other => return Err(format!("the world does not know the operator {other}")),
        };
        if !holds {
            return Ok(false);
        }
    }
    Ok(true)
}

fn statement_matches(s: &Value, action: &str, resource: &Resource) -> Result<bool, String> {
    let actions = strings(&s["Action"]);
    if !actions
        .iter()
        .any(|a| glob(&a.to_lowercase(), &action.to_lowercase()))
    {
        return Ok(false);
    }
    if !strings(&s["Resource"])
        .iter()
        .any(|r| glob(r, &resource.arn))
    {
        return Ok(false);
    }
    if let Some(conditions) = s.get("Condition").and_then(Value::as_object) {
        for (op, block) in conditions {
            if !condition_holds(op, block, resource)? {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// STS's verdict on a trust policy for `action` by the identity provider `provider` with the
/// token's condition keys (`token.actions.githubusercontent.com:sub`, `:aud`): a statement must
/// allow the action to that federated principal with all its conditions holding, and no `Deny`
/// may match (IAM User Guide, "Creating a role for OpenID Connect federation").
pub fn trusts(policy: &Value, action: &str, provider: &str, keys: &Resource) -> Result<(), String> {
    let mut allowed = false;
    for s in policy["Statement"].as_array().into_iter().flatten() {
        let federated = strings(&s["Principal"]["Federated"]);
        if !federated.iter().any(|f| f == provider)
            || !strings(&s["Action"]).iter().any(|a| glob(a, action))
        {
            continue;
        }
        let mut holds = true;
        if let Some(conditions) = s.get("Condition").and_then(Value::as_object) {
            for (op, block) in conditions {
                holds &= condition_holds(op, block, keys)?;
            }
        }
        if !holds {
            continue;
        }
        if s["Effect"] == "Deny" {
            return Err(format!("{action} is denied by {}", s["Sid"]));
        }
        allowed = true;
    }
    if allowed {
        Ok(())
    } else {
        Err(format!(
            "no statement of the trust policy allows {action} for this token"
        ))
    }
}

/// IAM's verdict on `action` over every resource of a request: `Err` names what refused (a
/// `Deny` statement's Sid, or the resource no statement allows).
pub fn evaluate(policy: &Value, action: &str, resources: &[Resource]) -> Result<(), String> {
    let statements = policy["Statement"].as_array().cloned().unwrap_or_default();
    for resource in resources {
        let mut allowed = false;
        for s in &statements {
            if !statement_matches(s, action, resource)? {
                continue;
            }
            if s["Effect"] == "Deny" {
                return Err(format!(
                    "{action} on resource: {} is denied by {}",
                    resource.arn,
                    s["Sid"].as_str().unwrap_or("a Deny statement"),
                ));
            }
            allowed = true;
        }
        if !allowed {
            return Err(format!(
                "no statement allows {action} on resource: {}",
                resource.arn
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_as_iam_does() {
        assert!(glob("g5.*", "g5.xlarge"));
        assert!(!glob("g5.*", "g5g.xlarge"));
        assert!(glob(
            "arn:aws:ec2:*:1:instance/*",
            "arn:aws:ec2:us-east-1:1:instance/i-1"
        ));
        assert!(glob("gpu-runner-*", "gpu-runner-1-1-a"));
        assert!(!glob("gpu-runner-*", "build-box"));
        assert!(glob("a?c", "abc") && !glob("a?c", "ac"));
    }

    #[test]
    fn negated_operators_hold_for_an_absent_key_and_others_do_not() {
        let r = Resource::new("x");
        let block = serde_json::json!({"k": "v"});
        assert!(condition_holds("StringNotEquals", &block, &r).unwrap());
        assert!(!condition_holds("StringEquals", &block, &r).unwrap());
        assert!(condition_holds("ForAnyValue:StringEquals", &block, &r).is_err());
    }

    #[test]
    fn a_policy_variable_takes_the_requests_value_and_matches_nothing_without_it() {
        let block = serde_json::json!({"aws:ResourceTag/owner": "${ec2:SourceInstanceARN}"});
        let mine = Resource::new("p")
            .key("aws:ResourceTag/owner", "arn:i-1")
            .key("ec2:SourceInstanceARN", "arn:i-1");
        assert!(condition_holds("StringEquals", &block, &mine).unwrap());
        let other = Resource::new("p")
            .key("aws:ResourceTag/owner", "arn:i-1")
            .key("ec2:SourceInstanceARN", "arn:i-2");
        assert!(!condition_holds("StringEquals", &block, &other).unwrap());
        let no_instance =
            Resource::new("p").key("aws:ResourceTag/owner", "${ec2:SourceInstanceARN}");
        assert!(!condition_holds("StringEquals", &block, &no_instance).unwrap());
    }

    #[test]
    fn for_all_values_needs_every_value_to_match_and_holds_without_the_key() {
        let block = serde_json::json!({"aws:TagKeys": ["gpu-runner:label", "gpu-runner:uses"]});
        let none = Resource::new("x");
        assert!(condition_holds("ForAllValues:StringEquals", &block, &none).unwrap());
        let ok = Resource::new("x")
            .key("aws:TagKeys", "gpu-runner:label")
            .key("aws:TagKeys", "gpu-runner:uses");
        assert!(condition_holds("ForAllValues:StringEquals", &block, &ok).unwrap());
        let sneaky = ok.clone().key("aws:TagKeys", "gpu-runner:repository");
        assert!(!condition_holds("ForAllValues:StringEquals", &block, &sneaky).unwrap());
    }
}
