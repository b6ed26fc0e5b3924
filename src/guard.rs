//! The untrusted-trigger guard. A self-hosted runner runs whatever the workflow hands it, with the
//! repository's credentials around it; start refuses, before it asks for any credential, when the
//! code to run may come from a stranger: a fork's pull request (under `pull_request` or
//! `pull_request_target`), a `workflow_run` started from a fork, or a pull request or comment by an
//! author whose association is not allowed. Pure: the event in, a verdict out.

use serde_json::Value;

/// Events that carry someone's pull request, or a comment that may ask to run it.
const PULL_REQUEST_EVENTS: &[&str] = &[
    "pull_request",
    "pull_request_target",
    "pull_request_review",
    "pull_request_review_comment",
];

/// Why a run is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Untrusted(pub String);

fn text<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, key| v.get(key))?.as_str()
}

fn flag(v: &Value, path: &[&str]) -> bool {
    path.iter()
        .try_fold(v, |v, key| v.get(key))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// Checks the event that started the run. `payload` is the webhook payload at
/// `GITHUB_EVENT_PATH` (`None` when there is none to read), `repository` is `owner/repo`.
pub fn check(
    event: &str,
    payload: Option<&Value>,
    repository: &str,
    allowed: &[String],
) -> Result<(), Untrusted> {
    let association_ok = |who: &str, association: Option<&str>| match association {
        Some(a) if allowed.iter().any(|x| x.eq_ignore_ascii_case(a)) => Ok(()),
        other => Err(Untrusted(format!(
            "the {event} event comes from {who}, whose association with {repository} is {}, \
             not one of allowed-associations ({})",
            other.unwrap_or("unknown"),
            allowed.join(", ")
        ))),
    };
    let needs_payload = || {
        Untrusted(format!(
            "the run was triggered by {event}, but its event payload (GITHUB_EVENT_PATH) could not \
             be read, so gpu-runner cannot tell whose code this is"
        ))
    };
    if PULL_REQUEST_EVENTS.contains(&event) {
        let payload = payload.ok_or_else(needs_payload)?;
        let head = text(payload, &["pull_request", "head", "repo", "full_name"]);
        let fork = flag(payload, &["pull_request", "head", "repo", "fork"]);
        if fork || head.is_some_and(|h| !h.eq_ignore_ascii_case(repository)) {
            return Err(Untrusted(format!(
                "the {event} event carries a pull request from the fork {}: its code would run \
                 on the GPU instance",
                head.unwrap_or("(a deleted repository)")
            )));
        }
        let author = text(payload, &["pull_request", "user", "login"]).unwrap_or("an unknown user");
        return association_ok(
            author,
            text(payload, &["pull_request", "author_association"]),
        );
    }
    match event {
        "workflow_run" => {
            let payload = payload.ok_or_else(needs_payload)?;
            let head = text(payload, &["workflow_run", "head_repository", "full_name"]);
            if head.is_some_and(|h| !h.eq_ignore_ascii_case(repository))
                || flag(payload, &["workflow_run", "head_repository", "fork"])
            {
                return Err(Untrusted(format!(
                    "the workflow_run event was started by a run on the fork {}: its code would \
                     run on the GPU instance",
                    head.unwrap_or("(unknown)")
                )));
            }
            Ok(())
        }
        // A comment can ask a workflow to check out and run a pull request's code.
        "issue_comment" | "discussion_comment" => {
            let payload = payload.ok_or_else(needs_payload)?;
            let author = text(payload, &["comment", "user", "login"]).unwrap_or("an unknown user");
            association_ok(author, text(payload, &["comment", "author_association"]))
        }
        _ => Ok(()),
    }
}

/// Checks the job's OIDC token against what [`check`] judged. GitHub signs the token; the
/// environment a step runs in is not signed, so a token that names another event or repository
/// means the verdict rests on the wrong facts. `None` claims (older GitHub Enterprise Server
/// versions) are not held against the run.
pub fn check_claims(
    token_event: Option<&str>,
    token_repository: Option<&str>,
    event: &str,
    repository: &str,
) -> Result<(), Untrusted> {
    if let Some(theirs) = token_repository.filter(|r| !r.eq_ignore_ascii_case(repository)) {
        return Err(Untrusted(format!(
            "the job's OIDC token was issued for the repository {theirs}, not {repository}, so \
             gpu-runner cannot tell whose code this is"
        )));
    }
    if let Some(theirs) = token_event.filter(|e| *e != event) {
        let shown = if event.is_empty() { "nothing" } else { event };
        return Err(Untrusted(format!(
            "the job's OIDC token says the run was triggered by {theirs}, but GITHUB_EVENT_NAME \
             says {shown}, so gpu-runner cannot tell whose code this is"
        )));
    }
    Ok(())
}

/// What to do instead, for the error.
pub const FIX: &str = "Run GPU jobs for outside code only after a maintainer has looked at it: \
    put the start job in an environment with required reviewers (environment: gpu-review) and set \
    allow-untrusted: true there, or run the GPU workflow on push to a branch that maintainers \
    merge into. To trust more authors, list their associations in allowed-associations (OWNER, \
    MEMBER, COLLABORATOR, CONTRIBUTOR, FIRST_TIME_CONTRIBUTOR, FIRST_TIMER, NONE).";

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const REPO: &str = "octo/ml";

    fn allowed() -> Vec<String> {
        ["OWNER", "MEMBER", "COLLABORATOR"]
            .map(str::to_owned)
            .to_vec()
    }

    /// A `pull_request` payload shaped like GitHub's, trimmed to what matters here.
    fn pull_request(head: &str, fork: bool, login: &str, association: &str) -> Value {
        json!({
            "action": "opened",
            "number": 7,
            "pull_request": {
                "number": 7,
                "user": {"login": login, "type": "User"},
                "author_association": association,
                "head": {"ref": "feature", "sha": "0123abcd",
                         "repo": {"full_name": head, "fork": fork, "private": false}},
                "base": {"ref": "main", "repo": {"full_name": REPO, "fork": false}},
            },
            "repository": {"full_name": REPO, "fork": false},
            "sender": {"login": login},
        })
    }

    #[test]
    fn the_signed_token_must_name_the_event_and_repository_that_were_judged() {
        assert_eq!(
            check_claims(Some("push"), Some("octo/ml"), "push", REPO),
            Ok(())
        );
        assert_eq!(check_claims(None, None, "push", REPO), Ok(()));
        assert_eq!(
            check_claims(Some("push"), Some("Octo/ML"), "push", REPO),
            Ok(())
        );
        assert_eq!(
            check_claims(Some("pull_request_target"), Some(REPO), "push", REPO)
                .unwrap_err()
                .0,
            "the job's OIDC token says the run was triggered by pull_request_target, but \
             GITHUB_EVENT_NAME says push, so gpu-runner cannot tell whose code this is"
        );
        assert!(
            check_claims(Some("push"), Some(REPO), "", REPO)
                .unwrap_err()
                .0
                .contains("GITHUB_EVENT_NAME says nothing")
        );
        assert!(
            check_claims(Some("push"), Some("mallory/ml"), "push", REPO)
                .unwrap_err()
                .0
                .starts_with("the job's OIDC token was issued for the repository mallory/ml")
        );
    }

    fn verdict(event: &str, payload: &Value) -> Result<(), String> {
        check(event, Some(payload), REPO, &allowed()).map_err(|e| e.0)
    }

    #[test]
    fn fork_pull_requests_are_refused_under_both_pull_request_events() {
        let pr = pull_request("stranger/ml", true, "stranger", "NONE");
        for event in ["pull_request", "pull_request_target"] {
            assert_eq!(
                verdict(event, &pr),
                Err(format!(
                    "the {event} event carries a pull request from the fork stranger/ml: its \
                     code would run on the GPU instance"
                ))
            );
        }
        // Even a member's pull request from their own fork runs the fork's code.
        let member_fork = pull_request("alice/ml", true, "alice", "MEMBER");
        assert!(verdict("pull_request_target", &member_fork).is_err());
    }

    #[test]
    fn same_repository_pull_requests_depend_on_the_authors_association() {
        let member = pull_request(REPO, false, "alice", "MEMBER");
        assert_eq!(verdict("pull_request", &member), Ok(()));
        let contributor = pull_request(REPO, false, "bob", "CONTRIBUTOR");
        assert_eq!(
            verdict("pull_request", &contributor),
            Err(
                "the pull_request event comes from bob, whose association with octo/ml is \
                 CONTRIBUTOR, not one of allowed-associations (OWNER, MEMBER, COLLABORATOR)"
                    .to_owned()
            )
        );
        let more = vec!["CONTRIBUTOR".to_owned()];
        assert_eq!(
            check("pull_request", Some(&contributor), REPO, &more),
            Ok(())
        );
    }

    #[test]
    fn workflow_run_from_a_fork_is_refused() {
        let from_fork = json!({
            "action": "completed",
            "workflow_run": {
                "event": "pull_request",
                "head_branch": "feature",
                "head_repository": {"full_name": "stranger/ml", "fork": true},
                "repository": {"full_name": REPO},
            },
        });
        assert!(
            verdict("workflow_run", &from_fork)
                .is_err_and(|e| e.contains("started by a run on the fork stranger/ml"))
        );
        let ours = json!({"workflow_run": {"head_repository": {"full_name": REPO, "fork": false}}});
        assert_eq!(verdict("workflow_run", &ours), Ok(()));
    }

    #[test]
    fn comments_count_by_their_authors_association() {
        let comment = |association: &str| {
            json!({
                "action": "created",
                "issue": {"number": 7, "pull_request": {"url": "https://api.github.com/repos/octo/ml/pulls/7"}},
                "comment": {"user": {"login": "carol"}, "author_association": association, "body": "/gpu"},
            })
        };
        assert_eq!(verdict("issue_comment", &comment("OWNER")), Ok(()));
        assert!(verdict("issue_comment", &comment("NONE")).is_err_and(|e| e.contains("carol")));
    }

    #[test]
    fn pushes_schedules_and_manual_runs_pass_and_a_missing_payload_does_not_for_pull_requests() {
        for event in [
            "push",
            "schedule",
            "workflow_dispatch",
            "merge_group",
            "release",
        ] {
            assert_eq!(check(event, None, REPO, &allowed()), Ok(()), "{event}");
        }
        assert!(
            check("pull_request_target", None, REPO, &allowed())
                .is_err_and(|e| e.0.contains("could not be read"))
        );
    }
}
