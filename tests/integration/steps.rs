//! The action's steps as a workflow runs them: inputs in, annotations, outputs, state and summary
//! out, and an exit code the runner turns into a green or red step.

use crate::support::{Step, TOKEN};

#[test]
fn stop_with_nothing_to_stop_writes_a_summary_and_succeeds() {
    let out = Step::stop().run();
    out.success();
    assert!(out.errors().is_empty(), "{out:#?}");
    assert!(out.summary.starts_with(
        "### GPU runner: stop\n\nNothing to stop: neither `label` nor `instance-ids` was given, and no \
         region to look in."
    ));
    assert!(out.stdout.contains("Nothing to stop"));
    assert!(out.outputs().is_empty() && out.state().is_empty());
}

#[test]
fn stop_when_the_start_job_produced_no_outputs_succeeds() {
    // What `${{ needs.start.outputs.* }}` gives when start failed: empty strings.
    let out = Step::stop()
        .input("label", "")
        .input("instance-ids", "")
        .input("region", "")
        .run();
    out.success();
}

#[test]
fn a_bad_instance_type_list_fails_naming_instance_type() {
    let out = Step::start()
        .input("instance-types", "g5.xlarge,,g4dn.xlarge")
        .run();
    out.failure();
    assert_eq!(
        out.errors(),
        [
            "::error title=Invalid input%3A instance-types::instance-types has an empty entry (entry 2 of \"g5.xlarge,,g4dn.xlarge\"). Remove the extra comma or blank line: entries of instance-types are separated by commas or newlines, and none may be empty.%0ATroubleshooting: https://github.com/gpu-runner/gpu-runner/blob/v1/docs/troubleshooting.md#invalid-input"
        ]
    );
    assert!(out.output_file.is_empty() && out.state_file.is_empty());
}

#[test]
fn every_bad_input_is_reported_in_one_run() {
    let out = Step::start()
        .input("aws-region", "")
        .input("dry-run", "yes")
        .input("max-lifetime-minutes", "forever")
        .input("tags", "team=ml\nteam=ai")
        .run();
    out.failure();
    let titles: Vec<&str> = out
        .errors()
        .iter()
        .map(|e| e.split("::").nth(1).unwrap())
        .collect();
    assert_eq!(
        titles,
        [
            "error title=Missing input%3A aws-region",
            "error title=Invalid input%3A tags",
            "error title=Invalid input%3A max-lifetime-minutes",
            "error title=Invalid input%3A dry-run",
        ]
    );
}

#[test]
fn a_wrong_mode_lists_the_valid_ones() {
    let out = Step::mode("Start").input("github-token", TOKEN).run();
    out.failure();
    assert_eq!(
        out.errors(),
        [
            "::error title=Invalid input%3A mode::mode \"Start\" is not a mode of gpu-runner. Use one of: start, stop, cleanup, retry. Did you mean \"start\"?%0ATroubleshooting: https://github.com/gpu-runner/gpu-runner/blob/v1/docs/troubleshooting.md#invalid-input"
        ]
    );
}

#[test]
fn secrets_are_masked_before_anything_else_and_never_printed() {
    let key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEsecretkeylineone\nsecretkeylinetwo==\n-----END RSA PRIVATE KEY-----";
    let out = Step::start()
        .unset("INPUT_GITHUB-TOKEN")
        .input("github-app-id", "12345")
        .input("github-app-private-key", key)
        .env("RUNNER_DEBUG", "1")
        .run();
    // The key is no real RSA key, so signing fails; the masks must come first all the same.
    out.failure();
    assert!(
        out.errors()[0].contains("is not an RSA private key in PEM form"),
        "{:?}",
        out.errors()
    );
    let first: Vec<&str> = out.stdout.lines().take(4).collect();
    assert_eq!(
        first,
        [
            "::add-mask::-----BEGIN RSA PRIVATE KEY-----",
            "::add-mask::MIIEsecretkeylineone",
            "::add-mask::secretkeylinetwo==",
            "::add-mask::-----END RSA PRIVATE KEY-----",
        ]
    );
    let rest = out.everything().replace(&first.join("\n"), "");
    for secret in ["MIIEsecretkeylineone", "secretkeylinetwo"] {
        assert!(!rest.contains(secret), "{secret} leaked:\n{rest}");
    }
}

#[test]
fn a_bad_secret_is_reported_without_its_value() {
    let token = "ghp_pasted with a space";
    let out = Step::start().input("github-token", token).run();
    out.failure();
    assert_eq!(
        out.stdout.lines().next(),
        Some(format!("::add-mask::{token}").as_str())
    );
    let rest = out
        .everything()
        .replacen(&format!("::add-mask::{token}"), "", 1);
    assert!(!rest.contains("pasted with"), "{rest}");
    assert!(out.errors()[0].starts_with(
        "::error title=Invalid input%3A github-token::github-token is not a single token."
    ));
}

#[test]
fn misspelt_and_misplaced_inputs_are_warned_about() {
    let out = Step::stop()
        .input("instance_ids", "i-1234abcd")
        .input("instance-types", "g5.xlarge")
        .run();
    out.success();
    assert_eq!(
        out.commands("warning"),
        [
            "::warning title=gpu-runner input::instance-types is only used with mode: start; it has no effect with mode: stop.",
            "::warning title=gpu-runner input::gpu-runner has no input named instance_ids; it is ignored. Did you mean instance-ids?",
        ]
    );
}

#[test]
fn run_by_hand_errors_read_plainly() {
    let out = Step::start().input("dry-run", "maybe").by_hand().run();
    out.failure();
    assert_eq!(
        out.stdout.trim_end(),
        "Error: Invalid input: dry-run: dry-run is \"maybe\", which is not a boolean. Use true or false (True, TRUE, False and FALSE work too).\nTroubleshooting: https://github.com/gpu-runner/gpu-runner/blob/v1/docs/troubleshooting.md#invalid-input"
    );
}

#[test]
fn outside_a_job_the_missing_context_is_named() {
    let out = Step::start()
        .input("dry-run", "true")
        .unset("GITHUB_REPOSITORY")
        .run();
    out.failure();
    assert_eq!(
        out.errors(),
        [
            "::error title=Not in a GitHub Actions job::GITHUB_REPOSITORY is not set. gpu-runner runs as a step of a GitHub Actions job, where the runner sets GITHUB_REPOSITORY, GITHUB_RUN_ID and GITHUB_RUN_ATTEMPT. To try it by hand, set them yourself, such as GITHUB_REPOSITORY=octo/ml GITHUB_RUN_ID=1 GITHUB_RUN_ATTEMPT=1.%0ATroubleshooting: https://github.com/gpu-runner/gpu-runner/blob/v1/docs/troubleshooting.md#not-in-a-github-actions-job"
        ]
    );
}

#[test]
fn the_post_step_after_a_stop_or_a_clean_start_does_nothing() {
    let out = Step::stop().post().run();
    out.success();
    assert!(out.errors().is_empty() && out.summary.is_empty());
    let out = Step::start()
        .post()
        .env("STATE_label", "gpu-runner-4242-1-abc")
        .env("STATE_online", "true")
        .run();
    out.success();
    assert!(out.errors().is_empty());
}

#[test]
fn an_unwritable_summary_is_an_error_naming_the_file() {
    let out = Step::stop()
        .env("GITHUB_STEP_SUMMARY", "/nonexistent/summary")
        .by_hand()
        .env("GITHUB_ACTIONS", "true")
        .run();
    out.failure();
    assert!(out.errors()[0].starts_with(
        "::error title=Could not talk to the runner::could not write to GITHUB_STEP_SUMMARY (/nonexistent/summary)"
    ));
}

/// A real-shaped `pull_request_target` payload from a fork.
const FORK_PULL_REQUEST: &str = r#"{
  "action": "synchronize",
  "number": 12,
  "pull_request": {
    "number": 12,
    "user": {"login": "stranger", "type": "User"},
    "author_association": "FIRST_TIME_CONTRIBUTOR",
    "head": {"ref": "patch-1", "sha": "9f8e7d6c", "repo": {"full_name": "stranger/ml", "fork": true}},
    "base": {"ref": "main", "sha": "1a2b3c4d", "repo": {"full_name": "octo/ml", "fork": false}}
  },
  "repository": {"full_name": "octo/ml", "fork": false, "private": false},
  "sender": {"login": "stranger"}
}"#;

#[test]
fn a_fork_pull_request_is_refused_before_any_credential_is_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let event = dir.path().join("event.json");
    std::fs::write(&event, FORK_PULL_REQUEST).unwrap();
    let fork = || {
        Step::start()
            .env("GITHUB_EVENT_NAME", "pull_request_target")
            .env("GITHUB_EVENT_PATH", event.to_str().unwrap())
            // Were a credential requested, this would fail differently: the guard comes first.
            .env("ACTIONS_ID_TOKEN_REQUEST_URL", "http://127.0.0.1:9/never")
            .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "never")
            .input("role-to-assume", "arn:aws:iam::123456789012:role/gpu-ci")
    };
    // By default the outside contributor's run is skipped, green: nothing launched, a notice.
    let skipped = fork().run();
    skipped.success();
    assert_eq!(
        skipped.outputs(),
        [("skipped".to_owned(), "true".to_owned())].into()
    );
    assert!(skipped.state().is_empty());
    let notices = skipped.commands("notice").join("\n");
    assert!(
        notices.contains(
            "title=Untrusted trigger%3A GPU job skipped::gpu-runner launched nothing because the \
             pull_request_target event carries a pull request from the fork stranger/ml: its \
             code would run on the GPU instance. A self-hosted runner would run that code with \
             access to the machine and its network, so the GPU job is skipped"
        ),
        "{notices}"
    );
    assert!(
        skipped.summary.contains("### GPU runner: skipped"),
        "{}",
        skipped.summary
    );

    let out = fork().input("on-untrusted", "fail").run();
    out.failure();
    assert_eq!(
        out.errors(),
        [
            "::error title=Untrusted trigger%3A no GPU runner started::gpu-runner refused to start \
          because the pull_request_target event carries a pull request from the fork stranger/ml: \
          its code would run on the GPU instance; a self-hosted runner runs that code with access \
          to the instance and its network. Run GPU jobs for outside code only after a maintainer \
          has looked at it: put the start job in an environment with required reviewers \
          (environment: gpu-review) and set allow-untrusted: true there, or run the GPU workflow \
          on push to a branch that maintainers merge into. To trust more authors, list their \
          associations in allowed-associations (OWNER, MEMBER, COLLABORATOR, CONTRIBUTOR, \
          FIRST_TIME_CONTRIBUTOR, FIRST_TIMER, NONE).%0ATroubleshooting: https://github.com/gpu-runner/gpu-runner/blob/v1/docs/troubleshooting.md#untrusted-trigger-no-gpu-runner-started"
        ]
    );
    assert!(out.outputs().is_empty() && out.state().is_empty());

    // With allow-untrusted the guard steps aside (and the start goes on to ask for credentials).
    let allowed = Step::start()
        .env("GITHUB_EVENT_NAME", "pull_request_target")
        .env("GITHUB_EVENT_PATH", event.to_str().unwrap())
        .env("ACTIONS_ID_TOKEN_REQUEST_URL", "http://127.0.0.1:9/never")
        .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "never")
        .input("role-to-assume", "arn:aws:iam::123456789012:role/gpu-ci")
        .input("allow-untrusted", "true")
        .run();
    allowed.failure();
    let errors = allowed.errors().join("\n");
    assert!(!errors.contains("Untrusted trigger"), "{errors}");
    assert!(errors.contains("No AWS credentials"), "{errors}");
}

/// On `pull_request`, GitHub gives a fork's run no secrets ("Using secrets in GitHub Actions"):
/// the workflow's github-token comes empty. The outside contributor still gets a neutral result:
/// start is skipped green, and the stop after it has nothing to stop. A run of the repository's
/// own branch without a token still gets the missing-input error.
#[test]
fn a_forks_pull_request_without_secrets_is_skipped_green_and_its_stop_too() {
    let dir = tempfile::tempdir().unwrap();
    let event = dir.path().join("event.json");
    std::fs::write(&event, FORK_PULL_REQUEST).unwrap();
    let on_fork = |step: world::step::Step| {
        step.env("GITHUB_EVENT_NAME", "pull_request")
            .env("GITHUB_EVENT_PATH", event.to_str().unwrap())
            .input("github-token", "")
            .input("role-to-assume", "arn:aws:iam::123456789012:role/gpu-ci")
    };
    let start = on_fork(Step::start()).run();
    start.success();
    assert_eq!(
        start.outputs(),
        [("skipped".to_owned(), "true".to_owned())].into()
    );
    let notices = start.commands("notice").join("\n");
    assert!(
        notices.contains(
            "gpu-runner launched nothing because the pull_request event carries a pull request \
             from the fork stranger/ml, and GitHub gives such a run no secrets"
        ),
        "{notices}"
    );
    assert!(start.errors().is_empty(), "{:?}", start.errors());

    let stop = on_fork(Step::stop())
        .input("label", "")
        .input("instance-ids", "")
        .run();
    stop.success();
    assert!(
        stop.summary
            .contains("Nothing to stop: the pull_request event carries a pull request"),
        "{}",
        stop.summary
    );

    // on-untrusted: fail keeps the red X, with the reason rather than a missing input.
    let failed = on_fork(Step::start()).input("on-untrusted", "fail").run();
    failed.failure();
    let errors = failed.errors().join("\n");
    assert!(errors.contains("Untrusted trigger"), "{errors}");
    assert!(!errors.contains("Missing input"), "{errors}");

    // A stop given a label still needs its token; so does a run of the repository's own code.
    let labelled = on_fork(Step::stop())
        .input("label", "gpu-runner-1-1-abc")
        .run();
    labelled.failure();
    assert!(
        labelled
            .errors()
            .join("\n")
            .contains("Missing input%3A github-token")
    );
    let own = std::fs::read_to_string(&event)
        .unwrap()
        .replace("stranger/ml", "octo/ml")
        .replace("\"fork\": true", "\"fork\": false");
    let own_event = dir.path().join("own.json");
    std::fs::write(&own_event, own).unwrap();
    let own = Step::start()
        .env("GITHUB_EVENT_NAME", "pull_request")
        .env("GITHUB_EVENT_PATH", own_event.to_str().unwrap())
        .input("github-token", "")
        .run();
    own.failure();
    assert!(
        own.errors()
            .join("\n")
            .contains("Missing input%3A github-token")
    );
}

/// An input renamed within the major version keeps working under its old name, with a warning
/// naming the new one; a workflow that gives both names is told to keep one.
#[test]
fn an_old_input_name_still_works_with_a_warning() {
    // Outside the world the start fails later, at AWS; the inputs were read and warned about.
    let out = Step::start()
        .input("instance-type", "g5.xlarge, g4dn.xlarge")
        .run();
    let warnings = out.commands("warning").join("\n");
    assert!(
        warnings.contains(
            "title=gpu-runner input::instance-type is now called instance-types, as it takes a \
             list of instance types; the old name works until the next major version. Rename it \
             in the workflow."
        ),
        "{warnings}"
    );
    assert!(
        !out.errors().join("\n").contains("instance-type"),
        "{:?}",
        out.errors()
    );
    let renamed = Step::start()
        .input("instance-type", "g5.xlarge, G4dn.xlarge")
        .run();
    renamed.failure();
    assert!(
        renamed.errors()[0].contains("instance-types entry \"G4dn.xlarge\""),
        "the old name's value is checked as the new name's: {:?}",
        renamed.errors()
    );
    let both = Step::start()
        .input("instance-type", "g5.xlarge")
        .input("instance-types", "g6.xlarge")
        .run();
    both.failure();
    assert!(
        both.errors()[0].starts_with(
            "::error title=Invalid input%3A instance-types::instance-types and instance-type are \
             both set. Keep the new name and remove the old one"
        ),
        "{:?}",
        both.errors()
    );
}

#[test]
fn an_unknown_association_is_an_input_error() {
    let out = Step::start()
        .input("allowed-associations", "OWNER, MEMBERS")
        .run();
    out.failure();
    assert!(
        out.errors()[0].contains("allowed-associations entry \"MEMBERS\"")
            && out.errors()[0].contains("Did you mean MEMBER?"),
        "{:?}",
        out.errors()
    );
}
