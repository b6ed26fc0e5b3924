//! The untrusted-trigger guard. A self-hosted runner runs whatever the workflow hands it, with the
//! repository's credentials around it, and every start spends money; start refuses, before it asks
//! for any credential, what it does not know to be safe. It denies by default: only events whose
//! code is already in the repository and that only its maintainers can set off pass as they are;
//! pull requests, reviews and comments pass by their author's association (a comment's author must
//! also have write access, which GitHub is asked); `workflow_run` passes when it was not set off
//! by a fork. Pure: the event in, a verdict out.

use serde_json::Value;

/// Events whose code is the repository's own and that only people with write access (or the
/// repository's own schedule) set off.
pub const REPOSITORY_EVENTS: &[&str] = &[
    "push",
    "schedule",
    "workflow_dispatch",
    "release",
    "merge_group",
    "repository_dispatch",
    "create",
    "delete",
    "workflow_call",
];

/// Events that carry someone's pull request: who set them off, in the payload.
const PULL_REQUEST_EVENTS: &[(&str, &str)] = &[
    ("pull_request", "pull_request"),
    ("pull_request_target", "pull_request"),
    ("pull_request_review", "review"),
    ("pull_request_review_comment", "comment"),
];

/// Runs set off by these may be about a fork's pull request while running with the base
/// repository's rights: a `workflow_run` after one must show it was not.
const FORK_PRONE_EVENTS: &[&str] = &["pull_request_target", "issue_comment"];

/// Why a run is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Untrusted(pub String);

/// A pull request the run is about, and its head commit when the event names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    pub number: u64,
    pub head_sha: Option<String>,
}

/// What the guard let through, and on what condition.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Judgment {
    /// A comment's author whose approval counts only with write access or more to the
    /// repository; start asks GitHub before it asks for any credential.
    pub approver: Option<String>,
    /// The commits the approving comment names (its words of 7 to 40 hexadecimal digits): the
    /// pull request's head must still be one of them when start reads it.
    pub approves: Vec<String>,
}

/// The words of a comment that can name a commit: 7 to 40 hexadecimal digits.
fn commits_named(body: &str) -> Vec<String> {
    body.split(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | '`' | '(' | ')' | '.'))
        .filter(|w| (7..=40).contains(&w.len()) && w.chars().all(|c| c.is_ascii_hexdigit()))
        .map(str::to_ascii_lowercase)
        .collect()
}

/// A comment approves the commit it names, not whatever the pull request's head is when start
/// runs: a push after the comment would otherwise run unreviewed code with the comment's
/// approval. `head` is the pull request's head as GitHub gives it now.
pub fn check_approved_commit(
    judgment: &Judgment,
    number: u64,
    head: &str,
) -> Result<(), Untrusted> {
    if judgment.approver.is_none() {
        return Ok(());
    }
    let short = head.get(..7).unwrap_or(head);
    if judgment
        .approves
        .iter()
        .any(|c| head.to_ascii_lowercase().starts_with(c.as_str()))
    {
        return Ok(());
    }
    Err(Untrusted(match judgment.approves.as_slice() {
        [] => format!(
            "the comment names no commit, so gpu-runner cannot tell which code of pull request \
             #{number} it approves: comment again with the head commit you reviewed, such as \
             `/gpu {short}` for its head now"
        ),
        named => format!(
            "the comment approves {}, but the head of pull request #{number} is now {head}: a \
             push came after the approval. Review it and comment again, such as `/gpu {short}`",
            named.join(", ")
        ),
    }))
}

fn text<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, key| v.get(key))?.as_str()
}

fn flag(v: &Value, path: &[&str]) -> bool {
    path.iter()
        .try_fold(v, |v, key| v.get(key))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// The pull request the event is about, if any: a pull request event's, or the one an
/// `issue_comment` was written on (its head commit is not in that payload).
pub fn pull_request_of(event: &str, payload: Option<&Value>) -> Option<PullRequest> {
    let payload = payload?;
    if PULL_REQUEST_EVENTS.iter().any(|(e, _)| *e == event) {
        let pr = payload.get("pull_request")?;
        return Some(PullRequest {
            number: pr.get("number")?.as_u64()?,
            head_sha: text(pr, &["head", "sha"]).map(str::to_owned),
        });
    }
    if event == "issue_comment" {
        let issue = payload.get("issue")?;
        issue.get("pull_request")?;
        return Some(PullRequest {
            number: issue.get("number")?.as_u64()?,
            head_sha: None,
        });
    }
    None
}

/// The event that started the run and its webhook payload, as the runner gives them to a step
/// (`GITHUB_EVENT_NAME`, the file at `GITHUB_EVENT_PATH`); the payload is `None` when it cannot be
/// read.
pub fn event_of(env: &crate::env::Env) -> (&str, Option<Value>) {
    let event = env.non_empty("GITHUB_EVENT_NAME").unwrap_or_default();
    let payload = env
        .non_empty("GITHUB_EVENT_PATH")
        .and_then(|path| std::fs::read(path).ok())
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok());
    (event, payload)
}

/// Checks the event that started the run. `payload` is the webhook payload at
/// `GITHUB_EVENT_PATH` (`None` when there is none to read), `repository` is `owner/repo`.
pub fn check(
    event: &str,
    payload: Option<&Value>,
    repository: &str,
    allowed: &[String],
) -> Result<Judgment, Untrusted> {
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
    if REPOSITORY_EVENTS.contains(&event) {
        return Ok(Judgment::default());
    }
    if let Some((_, actor)) = PULL_REQUEST_EVENTS.iter().find(|(e, _)| *e == event) {
        let payload = payload.ok_or_else(needs_payload)?;
        if let Some(fork) = fork_of(payload, repository) {
            return Err(Untrusted(format!(
                "the {event} event carries a pull request from the fork {fork}: its code would \
                 run on the GPU instance"
            )));
        }
        // The author of a pull request, or the reviewer or commenter who set the event off.
        let who = text(payload, &[actor, "user", "login"]).unwrap_or("an unknown user");
        association_ok(who, text(payload, &[actor, "author_association"]))?;
        return Ok(Judgment::default());
    }
    match event {
        "workflow_run" => {
            let payload = payload.ok_or_else(needs_payload)?;
            let run = payload.get("workflow_run").unwrap_or(&Value::Null);
            let Some(head) = text(run, &["head_repository", "full_name"]) else {
                return Err(Untrusted(
                    "the workflow_run event names no head repository (a fork that was deleted, \
                     say), so gpu-runner cannot tell whose code the triggering run had"
                        .to_owned(),
                ));
            };
            if !head.eq_ignore_ascii_case(repository) || flag(run, &["head_repository", "fork"]) {
                return Err(Untrusted(format!(
                    "the workflow_run event was started by a run on the fork {head}: its code \
                     would run on the GPU instance"
                )));
            }
            let triggered_by = text(run, &["event"]).unwrap_or_default();
            // The triggering run's event is judged as a direct one would be: a run set off by
            // anyone (an issue, a star, a fork) must not buy a GPU through a workflow_run after it.
            let same_repository_pull_request = PULL_REQUEST_EVENTS
                .iter()
                .any(|(e, _)| *e == triggered_by && !FORK_PRONE_EVENTS.contains(e));
            if !REPOSITORY_EVENTS.contains(&triggered_by)
                && !same_repository_pull_request
                && !FORK_PRONE_EVENTS.contains(&triggered_by)
            {
                return Err(Untrusted(format!(
                    "the workflow_run event follows a {} run, and that event is not one \
                     gpu-runner knows to be safe: a workflow_run starts a GPU runner only after \
                     a run of {}, of a pull request from this repository's own branches, or of \
                     pull_request_target or issue_comment about one",
                    if triggered_by.is_empty() {
                        "(unnamed event)"
                    } else {
                        triggered_by
                    },
                    REPOSITORY_EVENTS.join(", ")
                )));
            }
            if FORK_PRONE_EVENTS.contains(&triggered_by) {
                let prs = run
                    .get("pull_requests")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let from_fork = |pr: &Value| {
                    let head = pr.pointer("/head/repo/id");
                    head.is_none() || head != pr.pointer("/base/repo/id")
                };
                // GitHub lists no pull requests for a fork's: an empty list tells nothing.
                if prs.is_empty() || prs.iter().any(from_fork) {
                    return Err(Untrusted(format!(
                        "the workflow_run event follows a {triggered_by} run that may be about a \
                         fork's pull request (GitHub lists no pull request of this repository \
                         for it), which runs with this repository's rights"
                    )));
                }
            }
            Ok(Judgment::default())
        }
        // A comment can ask a workflow to check out and run a pull request's code: its author
        // must be allowed, and have write access (an association alone is not a permission).
        "issue_comment" => {
            let payload = payload.ok_or_else(needs_payload)?;
            let author = text(payload, &["comment", "user", "login"]);
            association_ok(
                author.unwrap_or("an unknown user"),
                text(payload, &["comment", "author_association"]),
            )?;
            let approver = author.ok_or_else(|| {
                Untrusted("the issue_comment event names no comment author".to_owned())
            })?;
            Ok(Judgment {
                approver: Some(approver.to_owned()),
                approves: commits_named(text(payload, &["comment", "body"]).unwrap_or_default()),
            })
        }
        "" => Err(Untrusted(
            "GITHUB_EVENT_NAME is not set, so gpu-runner cannot tell what started the run"
                .to_owned(),
        )),
        other => Err(Untrusted(format!(
            "the {other} event is not one gpu-runner knows to be safe: a GPU runner starts \
             without review only for {}, and for pull requests, reviews and comments by \
             allowed-associations. Anyone can set off some events (issues, watch, fork, \
             discussion), and each start costs money",
            REPOSITORY_EVENTS.join(", ")
        ))),
    }
}

/// Events for which GitHub gives a fork's run no secrets but `GITHUB_TOKEN` ("Using secrets in
/// GitHub Actions": secrets are not passed to the runner when a workflow is triggered from a
/// forked repository). `pull_request_target` runs in the base repository and gets them.
const WITHHOLDING_EVENTS: &[&str] = &[
    "pull_request",
    "pull_request_review",
    "pull_request_review_comment",
];

/// Why this run has no secrets to give gpu-runner, when it is a fork's pull request event that
/// GitHub gives none: start can have launched nothing, and nothing can be launched. `None` for any
/// other run.
pub fn secrets_withheld(event: &str, payload: Option<&Value>, repository: &str) -> Option<String> {
    if !WITHHOLDING_EVENTS.contains(&event) {
        return None;
    }
    let fork = fork_of(payload?, repository)?;
    Some(format!(
        "the {event} event carries a pull request from the fork {fork}, and GitHub gives such a \
         run no secrets, so it has no github-token or GitHub App key"
    ))
}

/// The fork a pull request event's pull request comes from, by name; `None` when its head is
/// this repository's own.
fn fork_of<'a>(payload: &'a Value, repository: &str) -> Option<&'a str> {
    let head = text(payload, &["pull_request", "head", "repo", "full_name"]);
    let fork = flag(payload, &["pull_request", "head", "repo", "fork"]);
    (fork || head.is_none_or(|h| !h.eq_ignore_ascii_case(repository)))
        .then(|| head.unwrap_or("(a deleted repository)"))
}

/// A comment approves a run only when its author can write to the repository: `permission` is
/// what GitHub's collaborator permission endpoint answered (`admin`, `write`, `read`, `none`).
pub fn check_approval(login: &str, permission: &str, repository: &str) -> Result<(), Untrusted> {
    if matches!(permission, "admin" | "maintain" | "write") {
        return Ok(());
    }
    Err(Untrusted(format!(
        "the comment's author {login} has {permission} permission on {repository}; only a \
         comment by someone with write access or more starts a GPU runner"
    )))
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
        check(event, Some(payload), REPO, &allowed())
            .map(|_| ())
            .map_err(|e| e.0)
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
            Ok(Judgment::default())
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
        let ours = json!({"workflow_run": {"event": "push", "head_repository": {"full_name": REPO, "fork": false}}});
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
            assert_eq!(
                check(event, None, REPO, &allowed()),
                Ok(Judgment::default()),
                "{event}"
            );
        }
        assert!(
            check("pull_request_target", None, REPO, &allowed())
                .is_err_and(|e| e.0.contains("could not be read"))
        );
    }

    /// Every event GitHub documents as a workflow trigger ("Events that trigger workflows").
    const DOCUMENTED_EVENTS: &[&str] = &[
        "branch_protection_rule",
        "check_run",
        "check_suite",
        "create",
        "delete",
        "deployment",
        "deployment_status",
        "discussion",
        "discussion_comment",
        "fork",
        "gollum",
        "issue_comment",
        "issues",
        "label",
        "merge_group",
        "milestone",
        "page_build",
        "public",
        "pull_request",
        "pull_request_review",
        "pull_request_review_comment",
        "pull_request_target",
        "push",
        "registry_package",
        "release",
        "repository_dispatch",
        "schedule",
        "status",
        "watch",
        "workflow_call",
        "workflow_dispatch",
        "workflow_run",
    ];

    /// One payload with every part an event may carry, all of it from `login` with
    /// `association`: their pull request (from `head`), review, comment, and a run of theirs.
    fn payload_of(login: &str, association: &str, head: &str, fork: bool) -> Value {
        let mut p = pull_request(head, fork, login, association);
        let who = json!({"login": login});
        p["review"] = json!({"user": who, "author_association": association, "state": "approved"});
        p["comment"] = json!({"user": who, "author_association": association, "body": "/gpu"});
        p["issue"] = json!({"number": 7, "pull_request": {"url": "https://api.github.com/repos/octo/ml/pulls/7"}});
        p["workflow_run"] = json!({
            "event": "pull_request",
            "head_branch": "feature",
            "head_repository": {"full_name": head, "fork": fork},
        });
        p
    }

    #[test]
    fn every_documented_event_is_judged_with_a_strangers_and_a_members_payload() {
        let stranger = payload_of("mallory", "NONE", "mallory/ml", true);
        let member = payload_of("alice", "MEMBER", REPO, false);
        for event in DOCUMENTED_EVENTS {
            let theirs = check(event, Some(&stranger), REPO, &allowed());
            let ours = check(event, Some(&member), REPO, &allowed());
            if REPOSITORY_EVENTS.contains(event) {
                // Only maintainers can set these off, and the code is the repository's.
                assert_eq!(theirs, Ok(Judgment::default()), "{event}");
                assert_eq!(ours, Ok(Judgment::default()), "{event}");
            } else if PULL_REQUEST_EVENTS.iter().any(|(e, _)| e == event)
                || *event == "workflow_run"
            {
                assert!(theirs.is_err(), "{event}: a stranger's passed");
                assert_eq!(ours, Ok(Judgment::default()), "{event}");
            } else if *event == "issue_comment" {
                assert!(theirs.unwrap_err().0.contains("mallory"));
                assert_eq!(
                    ours,
                    Ok(Judgment {
                        approver: Some("alice".to_owned()),
                        approves: Vec::new(),
                    })
                );
            } else {
                // Denied by default, whoever set it off: a message that names the event.
                for verdict in [theirs, ours] {
                    let why = verdict.expect_err(event).0;
                    assert!(
                        why.starts_with(&format!("the {event} event is not one gpu-runner knows")),
                        "{why}"
                    );
                }
            }
        }
        // An event GitHub adds later is refused too.
        assert!(check("sponsorship", Some(&member), REPO, &allowed()).is_err());
        assert!(
            check("", Some(&member), REPO, &allowed())
                .is_err_and(|e| e.0.contains("GITHUB_EVENT_NAME is not set"))
        );
    }

    #[test]
    fn reviews_and_review_comments_judge_who_wrote_them() {
        // A member's same-repository pull request, reviewed by a stranger: the review is theirs.
        let mut p = payload_of("alice", "MEMBER", REPO, false);
        p["review"] = json!({"user": {"login": "mallory"}, "author_association": "NONE"});
        p["comment"] = json!({"user": {"login": "mallory"}, "author_association": "NONE"});
        for event in ["pull_request_review", "pull_request_review_comment"] {
            let why = verdict(event, &p).unwrap_err();
            assert!(why.contains("comes from mallory"), "{event}: {why}");
        }
        assert_eq!(verdict("pull_request", &p), Ok(()));
    }

    #[test]
    fn a_comment_approves_only_with_write_access() {
        assert_eq!(check_approval("alice", "admin", REPO), Ok(()));
        assert_eq!(check_approval("alice", "write", REPO), Ok(()));
        assert_eq!(
            check_approval("carol", "read", REPO).unwrap_err().0,
            "the comment's author carol has read permission on octo/ml; only a comment by \
             someone with write access or more starts a GPU runner"
        );
        assert!(check_approval("carol", "none", REPO).is_err());
    }

    #[test]
    fn workflow_run_needs_a_head_repository_and_no_fork_behind_a_privileged_run() {
        let run = |run: Value| verdict("workflow_run", &json!({"workflow_run": run}));
        assert!(
            run(json!({"event": "push", "head_repository": null}))
                .is_err_and(|e| e.contains("names no head repository"))
        );
        let pr = |head_id: u64| json!({"number": 7, "head": {"repo": {"id": head_id}}, "base": {"repo": {"id": 1}}});
        for event in ["pull_request_target", "issue_comment"] {
            let ours = |prs: Value| {
                run(
                    json!({"event": event, "head_repository": {"full_name": REPO},
                           "pull_requests": prs}),
                )
            };
            // GitHub lists no pull request for a fork's: an empty list may hide one.
            assert!(ours(json!([])).is_err_and(|e| e.contains("may be about a fork")));
            assert!(ours(json!([pr(99)])).is_err(), "{event}");
            assert_eq!(ours(json!([pr(1)])), Ok(()), "{event}");
        }
        assert_eq!(
            run(json!({"event": "pull_request", "head_repository": {"full_name": REPO}})),
            Ok(())
        );
        assert_eq!(
            run(json!({"event": "push", "head_repository": {"full_name": REPO}})),
            Ok(())
        );
        // Anyone can open an issue, star or fork the repository: a run they set off passes on
        // no more than they could start directly. A chained workflow_run hides its first event.
        for event in ["watch", "issues", "fork", "discussion", "workflow_run", ""] {
            let verdict = run(json!({"event": event, "head_repository": {"full_name": REPO}}));
            assert!(
                verdict
                    .as_ref()
                    .is_err_and(|e| e.contains("is not one gpu-runner knows to be safe")),
                "{event}: {verdict:?}"
            );
        }
    }

    #[test]
    fn a_comment_approves_only_the_commit_it_names() {
        let head = "9f8e7d6c5b4a39281706f5e4d3c2b1a098765432";
        let judged = |body: &str| {
            let mut p = payload_of("alice", "MEMBER", REPO, false);
            p["comment"]["body"] = json!(body);
            check("issue_comment", Some(&p), REPO, &allowed()).unwrap()
        };
        assert_eq!(judged("/gpu 9F8E7D6").approves, ["9f8e7d6"]);
        assert_eq!(
            check_approved_commit(&judged("/gpu 9f8e7d6"), 7, head),
            Ok(())
        );
        assert_eq!(
            check_approved_commit(&judged(&format!("/gpu {head}")), 7, head),
            Ok(())
        );
        assert_eq!(
            check_approved_commit(&judged("Looks good.\n/gpu (9f8e7d6c)"), 7, head),
            Ok(())
        );
        let pushed = check_approved_commit(&judged("/gpu 0123abc"), 7, head)
            .unwrap_err()
            .0;
        assert!(
            pushed.contains(
                "the comment approves 0123abc, but the head of pull request #7 is now 9f8e7d6c"
            ) && pushed.contains("`/gpu 9f8e7d6`"),
            "{pushed}"
        );
        let unnamed = check_approved_commit(&judged("/gpu"), 7, head)
            .unwrap_err()
            .0;
        assert!(unnamed.contains("the comment names no commit"), "{unnamed}");
        // Words that are not commits: too short, not hexadecimal.
        assert_eq!(
            judged("/gpu please add cafe beef deadbee!").approves,
            Vec::<String>::new()
        );
        // Other events carry no approver, and so nothing to pin.
        assert_eq!(check_approved_commit(&Judgment::default(), 7, head), Ok(()));
    }

    #[test]
    fn the_pull_request_of_an_event_and_its_head_commit() {
        let p = pull_request(REPO, false, "alice", "MEMBER");
        assert_eq!(
            pull_request_of("pull_request_target", Some(&p)),
            Some(PullRequest {
                number: 7,
                head_sha: Some("0123abcd".to_owned())
            })
        );
        let comment = payload_of("alice", "MEMBER", REPO, false);
        assert_eq!(
            pull_request_of("issue_comment", Some(&comment)),
            Some(PullRequest {
                number: 7,
                head_sha: None
            })
        );
        let on_an_issue = json!({"issue": {"number": 3}, "comment": {}});
        assert_eq!(pull_request_of("issue_comment", Some(&on_an_issue)), None);
        assert_eq!(pull_request_of("push", Some(&p)), None);
    }
}
