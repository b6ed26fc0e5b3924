//! Inputs renamed because their old names said less than they meant. The old name keeps working
//! for the whole major version, with a warning that names the new one; a workflow that gives both
//! is told to keep one.

use super::spec::{self, Spec};
use super::{InputError, Problem, Shown};
use crate::env::Env;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alias {
    pub old: &'static str,
    pub new: &'static Spec,
    /// Why the name changed, for the warning.
    pub why: &'static str,
}

pub const ALIASES: &[Alias] = &[
    Alias {
        old: "instance-type",
        new: &spec::INSTANCE_TYPES,
        why: "it takes a list of instance types",
    },
    Alias {
        old: "subnet-id",
        new: &spec::SUBNET_IDS,
        why: "it takes a list of subnets",
    },
    Alias {
        old: "security-group-id",
        new: &spec::SECURITY_GROUP_IDS,
        why: "it takes a list of security groups",
    },
    Alias {
        old: "instance-id",
        new: &spec::POOL_INSTANCE_ID,
        why: "it names the pool instance to resume, not the instance-id output of start or the \
              instance-ids stop takes",
    },
];

/// The environment with each old name's value moved to its new name, a warning for each old name
/// used, and an error for each input given under both names. The runner passes a declared default
/// as if the workflow had set it, so a new name that holds its default counts as not given.
pub fn resolve(env: &Env) -> (Env, Vec<String>, Vec<InputError>) {
    let mut resolved = env.clone();
    let mut warnings = Vec::new();
    let mut errors = Vec::new();
    for alias in ALIASES {
        let old_var = spec::env_var(alias.old);
        let Some(old) = env.non_empty(&old_var) else {
            continue;
        };
        let new = env
            .non_empty(&alias.new.env_var())
            .filter(|v| *v != alias.new.default);
        if let Some(new) = new {
            if new != old {
                errors.push(InputError {
                    input: alias.new.name,
                    value: Shown::Value(new.to_owned()),
                    problem: Problem::Conflict {
                        other: alias.old,
                        fix: "Keep the new name and remove the old one: both name the same \
                              input, and the old name works only until the next major version.",
                    },
                });
            }
        } else {
            resolved.set(alias.new.env_var(), old);
        }
        resolved.set(&old_var, "");
        warnings.push(format!(
            "{} is now called {}, as {}; the old name works until the next major version. \
             Rename it in the workflow.",
            alias.old, alias.new.name, alias.why
        ));
    }
    (resolved, warnings, errors)
}

/// The new name of an old one, for a message about an input the workflow named by its old name.
pub fn renamed(old: &str) -> Option<&'static Spec> {
    ALIASES.iter().find(|a| a.old == old).map(|a| a.new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Env {
        vars.iter()
            .map(|(k, v)| (spec::env_var(k), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn an_old_name_is_read_as_the_new_one_with_a_warning() {
        let (resolved, warnings, errors) = resolve(&env(&[
            ("instance-type", "g5.xlarge, g4dn.xlarge"),
            ("instance-types", "g4dn.xlarge"),
        ]));
        assert!(errors.is_empty());
        assert_eq!(
            resolved.non_empty("INPUT_INSTANCE-TYPES"),
            Some("g5.xlarge, g4dn.xlarge")
        );
        assert_eq!(resolved.non_empty("INPUT_INSTANCE-TYPE"), None);
        assert_eq!(
            warnings,
            [
                "instance-type is now called instance-types, as it takes a list of instance types; \
              the old name works until the next major version. Rename it in the workflow."
            ]
        );
    }

    #[test]
    fn both_names_with_different_values_is_an_error_naming_both() {
        let (_, _, errors) = resolve(&env(&[
            ("subnet-id", "subnet-1"),
            ("subnet-ids", "subnet-2"),
        ]));
        assert_eq!(errors.len(), 1);
        let text = errors[0].to_string();
        assert!(
            text.starts_with("subnet-ids and subnet-id are both set. Keep the new name"),
            "{text}"
        );
    }

    #[test]
    fn new_names_alone_change_nothing() {
        let given = env(&[("pool-instance-id", "i-0abc")]);
        let (resolved, warnings, errors) = resolve(&given);
        assert_eq!(resolved, given);
        assert!(warnings.is_empty() && errors.is_empty());
    }

    #[test]
    fn every_alias_is_a_name_of_its_own() {
        for alias in ALIASES {
            assert!(spec::by_name(alias.old).is_none(), "{}", alias.old);
            assert!(
                spec::by_name(alias.new.name).is_some(),
                "{}",
                alias.new.name
            );
            assert_eq!(renamed(alias.old), Some(alias.new));
        }
    }
}
