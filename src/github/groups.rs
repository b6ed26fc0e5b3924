//! Which of an organization's runner groups `runner-group` means, and whether it can serve this
//! repository's jobs: a group that cannot would leave the job queued until it times out.

use super::octo::RunnerGroup;
use crate::inputs::GroupRef;

/// Why the named group will not do, in words for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupProblem {
    pub message: String,
    pub fix: String,
}

/// The group `wanted` names: by id, else by name (GitHub compares names without case).
pub fn find<'a>(
    groups: &'a [RunnerGroup],
    wanted: &GroupRef,
    org: &str,
) -> Result<&'a RunnerGroup, GroupProblem> {
    let found = match wanted {
        GroupRef::Id(id) => groups.iter().find(|g| g.id == *id),
        GroupRef::Name(name) => groups.iter().find(|g| g.name.eq_ignore_ascii_case(name)),
    };
    found.ok_or_else(|| {
        let shown = match wanted {
            GroupRef::Id(id) => format!("id {id}"),
            GroupRef::Name(name) => format!("\"{name}\""),
        };
        let names: Vec<String> = groups
            .iter()
            .map(|g| format!("{} (id {})", g.name, g.id))
            .collect();
        GroupProblem {
            message: format!("the organization {org} has no runner group {shown}"),
            fix: format!(
                "Set runner-group to one of: {}; or create the group under the organization's \
                 Settings → Actions → Runner groups.",
                names.join(", ")
            ),
        }
    })
}

/// Whether `group` may run jobs of `repository`. `selected_includes_repo` is asked only for a
/// group whose visibility is `selected`; `public` says whether the repository is public.
pub fn check_serves(
    group: &RunnerGroup,
    repository: &str,
    public: bool,
    selected_includes_repo: Option<bool>,
) -> Result<(), GroupProblem> {
    let settings = "the organization's Settings → Actions → Runner groups";
    if public && !group.allows_public_repositories {
        return Err(GroupProblem {
            message: format!(
                "the runner group \"{}\" does not allow public repositories, and {repository} is \
                 public: its job would never be picked up",
                group.name
            ),
            fix: format!(
                "In {settings} → {}, tick \"Allow public repositories\" (think of who can open \
                 pull requests first), or use another group.",
                group.name
            ),
        });
    }
    if public && group.visibility == "private" {
        return Err(GroupProblem {
            message: format!(
                "the runner group \"{}\" serves private repositories only, and {repository} is \
                 public: its job would never be picked up",
                group.name
            ),
            fix: format!(
                "In {settings} → {}, let the group serve all or selected repositories, or use \
                 another group.",
                group.name
            ),
        });
    }
    if group.visibility == "selected" && selected_includes_repo == Some(false) {
        return Err(GroupProblem {
            message: format!(
                "the runner group \"{}\" is not available to {repository}: its job would never \
                 be picked up",
                group.name
            ),
            fix: format!(
                "In {settings} → {}, add {repository} to the repositories that may use the group, \
                 or use another group.",
                group.name
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(id: u64, name: &str, visibility: &str, public: bool) -> RunnerGroup {
        RunnerGroup {
            id,
            name: name.to_owned(),
            visibility: visibility.to_owned(),
            allows_public_repositories: public,
            default: id == 1,
        }
    }

    #[test]
    fn groups_are_found_by_id_or_by_name_without_case() {
        let groups = [
            group(1, "Default", "all", false),
            group(7, "GPU", "selected", false),
        ];
        assert_eq!(find(&groups, &GroupRef::Id(7), "octo").unwrap().name, "GPU");
        assert_eq!(
            find(&groups, &GroupRef::Name("gpu".into()), "octo")
                .unwrap()
                .id,
            7
        );
        let e = find(&groups, &GroupRef::Name("GPUs".into()), "octo").unwrap_err();
        assert_eq!(
            e.message,
            "the organization octo has no runner group \"GPUs\""
        );
        assert!(
            e.fix
                .starts_with("Set runner-group to one of: Default (id 1), GPU (id 7);")
        );
    }

    #[test]
    fn a_group_that_cannot_serve_the_repository_is_refused() {
        let all = group(1, "Default", "all", false);
        assert_eq!(check_serves(&all, "octo/ml", false, None), Ok(()));
        let e = check_serves(&all, "octo/ml", true, None).unwrap_err();
        assert!(
            e.message.contains("does not allow public repositories"),
            "{e:?}"
        );
        assert!(e.fix.contains("Allow public repositories"));
        let open = group(2, "Open", "all", true);
        assert_eq!(check_serves(&open, "octo/ml", true, None), Ok(()));
        let selected = group(3, "GPU", "selected", false);
        assert_eq!(
            check_serves(&selected, "octo/ml", false, Some(true)),
            Ok(())
        );
        let private = group(4, "Private", "private", true);
        assert_eq!(check_serves(&private, "octo/ml", false, None), Ok(()));
        let e = check_serves(&private, "octo/ml", true, None).unwrap_err();
        assert!(
            e.message.contains("serves private repositories only"),
            "{e:?}"
        );
        let e = check_serves(&selected, "octo/ml", false, Some(false)).unwrap_err();
        assert_eq!(
            e.message,
            "the runner group \"GPU\" is not available to octo/ml: its job would never be picked up"
        );
    }
}
