//! A stateful fake of the GitHub REST API for self-hosted runners and the jobs of a run, plus the
//! side the stand-in runner speaks (`/_runner/...`). Checks `Authorization` like GitHub: 401 for an
//! unknown token, 403 for one without admin rights.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde::Deserialize;
use serde_json::json;

use crate::faults::{self, Fault, Faults, Service};

/// The labels GitHub gives every self-hosted Linux x64 runner, read-only, beside its custom ones
/// (a JIT runner too); a job whose `runs-on` they cover can be handed the runner.
pub const DEFAULT_LABELS: [&str; 3] = ["self-hosted", "Linux", "X64"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeRunner {
    pub id: u64,
    pub name: String,
    /// The custom labels it was registered with; `all_labels` adds GitHub's defaults.
    pub labels: Vec<String>,
    pub status: &'static str,
    pub busy: bool,
    /// When it first went online.
    pub online_at: Option<std::time::Instant>,
    /// Registered in the organization (in `group`), not the repository.
    pub org: bool,
    pub group: u64,
    secret: String,
}

impl FakeRunner {
    /// Every label GitHub shows and routes jobs by: the defaults, then the custom ones.
    pub fn all_labels(&self) -> Vec<String> {
        DEFAULT_LABELS
            .iter()
            .map(|l| (*l).to_owned())
            .chain(self.labels.iter().cloned())
            .collect()
    }

    /// Whether GitHub would hand this runner a job with these `runs-on` labels: it has every one
    /// of them (GitHub compares labels without regard to case).
    pub fn covers(&self, runs_on: &[String]) -> bool {
        let all = self.all_labels();
        runs_on
            .iter()
            .all(|l| all.iter().any(|r| r.eq_ignore_ascii_case(l)))
    }

    /// A registered runner that never connected.
    pub fn offline(id: u64, name: &str) -> Self {
        Self {
            id,
            name: name.to_owned(),
            labels: vec![name.to_owned()],
            status: "offline",
            busy: false,
            online_at: None,
            org: false,
            group: 1,
            secret: uuid::Uuid::new_v4().simple().to_string(),
        }
    }
}

/// An organization's runner group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeGroup {
    pub id: u64,
    pub name: String,
    /// `all`, `selected` or `private` (every private repository).
    pub visibility: &'static str,
    pub allows_public_repositories: bool,
    /// `owner/repo` of the repositories a `selected` group serves.
    pub repositories: Vec<String>,
}

impl FakeGroup {
    /// Whether GitHub would hand this group's runners a job of `repository`.
    pub fn serves(&self, repository: &str, public: bool) -> bool {
        let visible = match self.visibility {
            "all" => true,
            "selected" => self.repositories.iter().any(|r| r == repository),
            "private" => !public,
            _ => false,
        };
        visible && (!public || self.allows_public_repositories)
    }
}

/// The runner groups a new organization has: only the default one, which (as on GitHub) does not
/// serve public repositories until told to.
pub fn default_groups() -> Vec<FakeGroup> {
    vec![FakeGroup {
        id: 1,
        name: "Default".to_owned(),
        visibility: "all",
        allows_public_repositories: false,
        repositories: Vec::new(),
    }]
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: u64,
    pub run_id: u64,
    pub name: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub labels: Vec<String>,
    /// The job's steps in order, each with its `if:` condition, as the workflow file gives them.
    pub steps: Vec<JobStep>,
    /// The job was cancelled while it ran: GitHub tells the runner, whose worker cancels the
    /// running step and then runs the steps whose condition still holds (`always()`,
    /// `cancelled()`), as actions/runner's `StepsRunner` does.
    pub cancel_requested: bool,
    /// `owner/repo` of the run the job is in, and the ref its workflow ran at: a fork's pull
    /// request runs in the base repository at `refs/pull/N/merge`.
    pub repository: String,
    pub git_ref: String,
    /// The workflow file the job is in, and its `container:` image, if any.
    pub workflow: String,
    pub container: Option<String>,
    /// The event that started the run, and its webhook payload: the runner writes the payload to
    /// the file `GITHUB_EVENT_PATH` names, for the job-started hook and every step.
    pub event: String,
    pub payload: serde_json::Value,
    pub status: &'static str,
    pub conclusion: Option<String>,
    /// The job's summary: what its steps (and the job-completed hook) wrote to
    /// `GITHUB_STEP_SUMMARY`.
    pub summary: String,
    pub runner_name: Option<String>,
    pub output: String,
}

/// One step of a job: its `run:` script and its `if:` condition. actions/runner's `StepsRunner`
/// gives a step without `if:` the condition `success()`, and evaluates each step's condition
/// against the job's status so far: `always()` runs after a failed or cancelled step,
/// `failure()` after a failed one, `cancelled()` after a cancel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobStep {
    pub condition: &'static str,
    pub run: String,
}

impl JobStep {
    pub fn run(script: &str) -> Self {
        Self {
            condition: "success()",
            run: script.to_owned(),
        }
    }

    pub fn always(script: &str) -> Self {
        Self {
            condition: "always()",
            run: script.to_owned(),
        }
    }

    pub fn on_failure(script: &str) -> Self {
        Self {
            condition: "failure()",
            run: script.to_owned(),
        }
    }

    pub fn on_cancel(script: &str) -> Self {
        Self {
            condition: "cancelled()",
            run: script.to_owned(),
        }
    }
}

#[derive(Debug, Default)]
pub struct GithubState {
    pub owner: String,
    pub repo: String,
    /// Tokens with Administration: write.
    pub admin_tokens: Vec<String>,
    /// Tokens with the organization's Self-hosted runners: write (admin:org).
    pub org_admin_tokens: Vec<String>,
    /// The organization `owner`'s runner groups.
    pub groups: Vec<FakeGroup>,
    /// Whether the repository is public.
    pub public: bool,
    /// Valid tokens without it (the workflow's GITHUB_TOKEN, a read-only PAT).
    pub weak_tokens: Vec<String>,
    /// Tokens with the repository's Actions permission (workflow runs and jobs).
    pub actions_tokens: Vec<String>,
    /// Deletes refused because the runner was running a job (GitHub's 422).
    pub refused_busy_deletes: usize,
    /// How fast the world's clock runs: GitHub's rate-limit windows pass that much faster.
    pub clock_scale: f64,
    /// What each token spent, for GitHub's rate limits.
    pub usage: std::collections::HashMap<String, TokenUsage>,
    /// Requests GitHub refused for a rate limit, primary or secondary.
    pub rate_limited: usize,
    /// The most points one token spent in any minute, for tests to compare with the limit.
    pub peak_points_per_minute: u32,
    pub runners: BTreeMap<u64, FakeRunner>,
    pub jobs: Vec<Job>,
    /// Every runner ever registered, with its JIT config: what a secret scan looks for.
    pub issued_jit_configs: Vec<String>,
    pub next_id: u64,
    pub server_url: String,
    /// The GitHub App: its id, whether it is installed on the repository, what it was sent.
    pub app_id: String,
    pub app_installed: bool,
    /// Installed on the organization, with its Self-hosted runners permission.
    pub app_installed_on_org: bool,
    pub seen_app_jwts: Vec<String>,
    pub issued_installation_tokens: Vec<String>,
    /// What each installation token request asked for (its JSON body, `{}` without one).
    pub token_requests: Vec<serde_json::Value>,
    /// Runs cancelled through the API.
    pub cancelled_runs: Vec<u64>,
    /// The runs re-run through the API (`POST …/runs/{id}/rerun`), in order: each is a new
    /// attempt of every job of the run.
    pub reruns: Vec<u64>,
    /// The repository's approval policy for fork pull requests' workflows, as GitHub names it.
    pub fork_pr_approval: String,
    /// The repository's collaborators and their permission (`admin`, `write`, `read`); anyone
    /// else has `read` on a public repository and `none` on a private one.
    pub collaborators: BTreeMap<String, String>,
    /// Open pull requests: number → head commit.
    pub pulls: BTreeMap<u64, String>,
    /// REST API calls (the stand-in runner's `/_runner` ones aside) that came through the GitHub
    /// Enterprise Server path, `/api/v3`, and through github.com's, `/`.
    pub enterprise_calls: usize,
    pub dotcom_calls: usize,
}

pub type Shared = Arc<Mutex<GithubState>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, GithubState> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"message": message, "documentation_url": "https://docs.github.com/rest"})),
    )
        .into_response()
}

fn bearer(headers: &HeaderMap) -> &str {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("token "))
        })
        .unwrap_or("")
}

fn not_accessible(token: &str) -> Response {
    let message = if token.starts_with("ghs_") {
        "Resource not accessible by integration"
    } else {
        "Resource not accessible by personal access token"
    };
    error(StatusCode::FORBIDDEN, message)
}

/// GitHub's answer to the `Authorization` header for the organization's runners, or `None` when
/// the caller may proceed: a repository admin's token is not enough.
fn check_org_admin(state: &GithubState, headers: &HeaderMap, org: &str) -> Option<Response> {
    let token = bearer(headers);
    if state.org_admin_tokens.iter().any(|t| t == token) {
        return (org != state.owner).then(|| error(StatusCode::NOT_FOUND, "Not Found"));
    }
    if state
        .admin_tokens
        .iter()
        .chain(&state.weak_tokens)
        .any(|t| t == token)
    {
        return Some(not_accessible(token));
    }
    Some(error(StatusCode::UNAUTHORIZED, "Bad credentials"))
}

/// Whether GitHub knows the token at all (whatever it may do).
fn known_token(state: &GithubState, token: &str) -> bool {
    state
        .admin_tokens
        .iter()
        .chain(&state.org_admin_tokens)
        .chain(&state.weak_tokens)
        .chain(&state.actions_tokens)
        .any(|t| t == token)
}

/// GitHub's answer to the `Authorization` header for a call on the repository that needs a
/// permission the tokens in `holders` have, or `None` when the caller may proceed: 404 for
/// another repository, 403 for a known token without the permission, 401 for an unknown one.
fn check_permission(
    state: &GithubState,
    headers: &HeaderMap,
    (owner, repo): (&str, &str),
    holders: &[String],
) -> Option<Response> {
    let token = bearer(headers);
    if holders.iter().any(|t| t == token) {
        return (owner != state.owner || repo != state.repo)
            .then(|| error(StatusCode::NOT_FOUND, "Not Found"));
    }
    if known_token(state, token) {
        return Some(not_accessible(token));
    }
    Some(error(StatusCode::UNAUTHORIZED, "Bad credentials"))
}

/// For the repository's workflow runs and jobs, which need the Actions permission (read to
/// list, write to cancel), not Administration.
fn check_actions(
    state: &GithubState,
    headers: &HeaderMap,
    owner: &str,
    repo: &str,
) -> Option<Response> {
    check_permission(state, headers, (owner, repo), &state.actions_tokens)
}

/// For the repository's runners, which need Administration.
fn check_admin(
    state: &GithubState,
    headers: &HeaderMap,
    owner: &str,
    repo: &str,
) -> Option<Response> {
    check_permission(state, headers, (owner, repo), &state.admin_tokens)
}

fn runner_json(r: &FakeRunner) -> serde_json::Value {
    json!({
        "id": r.id,
        "name": r.name,
        "os": "linux",
        "status": r.status,
        "busy": r.busy,
        "ephemeral": true,
        "runner_group_id": r.group,
        "labels": DEFAULT_LABELS.iter().map(|l| (*l, "read-only"))
            .chain(r.labels.iter().map(|l| (l.as_str(), "custom")))
            .enumerate()
            .map(|(i, (l, kind))| json!({"id": i + 1, "name": l, "type": kind}))
            .collect::<Vec<_>>(),
    })
}

#[derive(Deserialize)]
struct JitRequest {
    name: String,
    runner_group_id: u64,
    labels: Vec<String>,
}

/// 64 × 32 characters, about 2.7 KB once encoded, as GitHub's JIT configs are.
const JIT_PADDING_UUIDS: usize = 64;

/// Registers a runner, in the repository or (with `org`) in the organization.
fn register(st: &mut GithubState, body: JitRequest, org: bool) -> Response {
    if body.labels.is_empty() || body.labels.len() > 100 {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "labels must have 1 to 100 entries",
        );
    }
    let group_known = if org {
        st.groups.iter().any(|g| g.id == body.runner_group_id)
    } else {
        body.runner_group_id == 1
    };
    if !group_known {
        return error(StatusCode::NOT_FOUND, "Runner group not found");
    }
    if st
        .runners
        .values()
        .any(|r| r.name == body.name && r.org == org)
    {
        return error(
            StatusCode::CONFLICT,
            "Already exists - A runner with the same name already exists.",
        );
    }
    let (id, encoded) = st.add_jit_runner(body.name, body.labels, body.runner_group_id, org);
    let answer = json!({"runner": runner_json(&st.runners[&id]), "encoded_jit_config": encoded});
    (StatusCode::CREATED, Json(answer)).into_response()
}

impl GithubState {
    /// Registers a just-in-time runner: its id and its encoded JIT config.
    pub fn add_jit_runner(
        &mut self,
        name: String,
        labels: Vec<String>,
        group: u64,
        org: bool,
    ) -> (u64, String) {
        self.next_id += 1;
        let id = self.next_id;
        let secret = uuid::Uuid::new_v4().simple().to_string();
        // GitHub's encoded config carries the runner's settings, credentials and RSA key: a
        // few KB. The world's keeps its own two fields first and pads to the same size.
        let padding: String = (0..JIT_PADDING_UUIDS)
            .map(|_| uuid::Uuid::new_v4().simple().to_string())
            .collect();
        let encoded = base64::engine::general_purpose::STANDARD
            .encode(format!("{} {secret} {padding}", self.server_url));
        self.issued_jit_configs.push(encoded.clone());
        self.runners.insert(
            id,
            FakeRunner {
                id,
                name,
                labels,
                status: "offline",
                busy: false,
                online_at: None,
                org,
                group,
                secret,
            },
        );
        (id, encoded)
    }
}

async fn generate_jitconfig(
    State(s): State<Shared>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<JitRequest>,
) -> Response {
    let mut st = lock(&s);
    if let Some(denied) = check_admin(&st, &headers, &owner, &repo) {
        return denied;
    }
    register(&mut st, body, false)
}

async fn org_generate_jitconfig(
    State(s): State<Shared>,
    Path(org): Path<String>,
    headers: HeaderMap,
    Json(body): Json<JitRequest>,
) -> Response {
    let mut st = lock(&s);
    if let Some(denied) = check_org_admin(&st, &headers, &org) {
        return denied;
    }
    register(&mut st, body, true)
}

#[derive(Deserialize)]
struct PageQuery {
    per_page: Option<usize>,
    page: Option<usize>,
}

/// One page of the repository's (or the organization's) runners, with GitHub's `Link` header.
fn runners_page(st: &GithubState, q: &PageQuery, org: bool, path: &str) -> Response {
    let per_page = q.per_page.unwrap_or(30).clamp(1, 100);
    let page = q.page.unwrap_or(1).max(1);
    let all: Vec<&FakeRunner> = st.runners.values().filter(|r| r.org == org).collect();
    let items: Vec<_> = all
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|r| runner_json(r))
        .collect();
    let mut response = Json(json!({"total_count": all.len(), "runners": items})).into_response();
    if page * per_page < all.len() {
        let next = format!(
            "<{}{path}?per_page={per_page}&page={}>; rel=\"next\"",
            st.server_url,
            page + 1
        );
        if let Ok(v) = next.parse() {
            response.headers_mut().insert("link", v);
        }
    }
    response
}

async fn list_runners(
    State(s): State<Shared>,
    Path((owner, repo)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    let st = lock(&s);
    if let Some(denied) = check_admin(&st, &headers, &owner, &repo) {
        return denied;
    }
    runners_page(
        &st,
        &q,
        false,
        &format!("/repos/{owner}/{repo}/actions/runners"),
    )
}

async fn org_list_runners(
    State(s): State<Shared>,
    Path(org): Path<String>,
    Query(q): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    let st = lock(&s);
    if let Some(denied) = check_org_admin(&st, &headers, &org) {
        return denied;
    }
    runners_page(&st, &q, true, &format!("/orgs/{org}/actions/runners"))
}

async fn org_get_runner(
    State(s): State<Shared>,
    Path((org, id)): Path<(String, u64)>,
    headers: HeaderMap,
) -> Response {
    let st = lock(&s);
    if let Some(denied) = check_org_admin(&st, &headers, &org) {
        return denied;
    }
    one_runner(&st, id, true)
}

async fn org_delete_runner(
    State(s): State<Shared>,
    Path((org, id)): Path<(String, u64)>,
    headers: HeaderMap,
) -> Response {
    let mut st = lock(&s);
    if let Some(denied) = check_org_admin(&st, &headers, &org) {
        return denied;
    }
    remove_runner(&mut st, id, true)
}

async fn org_runner_groups(
    State(s): State<Shared>,
    Path(org): Path<String>,
    headers: HeaderMap,
) -> Response {
    let st = lock(&s);
    if let Some(denied) = check_org_admin(&st, &headers, &org) {
        return denied;
    }
    let groups: Vec<_> = st
        .groups
        .iter()
        .map(|g| {
            json!({
                "id": g.id, "name": g.name, "visibility": g.visibility, "default": g.id == 1,
                "allows_public_repositories": g.allows_public_repositories, "inherited": false,
                "runners_url": format!("{}/orgs/{org}/actions/runner-groups/{}/runners", st.server_url, g.id),
            })
        })
        .collect();
    Json(json!({"total_count": groups.len(), "runner_groups": groups})).into_response()
}

async fn org_group_repositories(
    State(s): State<Shared>,
    Path((org, id)): Path<(String, u64)>,
    headers: HeaderMap,
) -> Response {
    let st = lock(&s);
    if let Some(denied) = check_org_admin(&st, &headers, &org) {
        return denied;
    }
    let Some(group) = st.groups.iter().find(|g| g.id == id) else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    let repos: Vec<_> = group
        .repositories
        .iter()
        .map(|r| json!({"full_name": r, "private": !st.public}))
        .collect();
    Json(json!({"total_count": repos.len(), "repositories": repos})).into_response()
}

/// GitHub's answer to a read of the repository (Metadata, which every token that can see it
/// has), or `None` when the caller may proceed: 401 for an unknown token, 404 for another
/// repository.
fn check_readable(
    state: &GithubState,
    headers: &HeaderMap,
    (owner, repo): (&str, &str),
) -> Option<Response> {
    if !known_token(state, bearer(headers)) {
        return Some(error(StatusCode::UNAUTHORIZED, "Bad credentials"));
    }
    (owner != state.owner || repo != state.repo).then(|| error(StatusCode::NOT_FOUND, "Not Found"))
}

/// The repository itself, as far as a token with access to it can see it.
async fn get_repository(
    State(s): State<Shared>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let st = lock(&s);
    if let Some(denied) = check_readable(&st, &headers, (&owner, &repo)) {
        return denied;
    }
    Json(json!({
        "full_name": format!("{owner}/{repo}"), "private": !st.public,
        "visibility": if st.public { "public" } else { "private" },
    }))
    .into_response()
}

/// `GET /repos/{o}/{r}/actions/permissions/fork-pr-contributor-approval`: Administration: read.
async fn fork_pr_approval(
    State(s): State<Shared>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let st = lock(&s);
    if let Some(denied) = check_admin(&st, &headers, &owner, &repo) {
        return denied;
    }
    Json(json!({"approval_policy": st.fork_pr_approval})).into_response()
}

/// `GET /repos/{o}/{r}/collaborators/{user}/permission`: any token that can read the repository.
async fn collaborator_permission(
    State(s): State<Shared>,
    Path((owner, repo, user)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let st = lock(&s);
    if let Some(denied) = check_readable(&st, &headers, (&owner, &repo)) {
        return denied;
    }
    let permission = st
        .collaborators
        .get(&user)
        .cloned()
        .unwrap_or_else(|| if st.public { "read" } else { "none" }.to_owned());
    Json(json!({"permission": permission, "role_name": permission, "user": {"login": user}}))
        .into_response()
}

/// `GET /repos/{o}/{r}/pulls/{n}`: the pull request as it is now.
async fn get_pull(
    State(s): State<Shared>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
    headers: HeaderMap,
) -> Response {
    let st = lock(&s);
    if let Some(denied) = check_readable(&st, &headers, (&owner, &repo)) {
        return denied;
    }
    match st.pulls.get(&number) {
        Some(sha) => Json(json!({
            "number": number, "state": "open",
            "head": {"sha": sha, "ref": "feature"},
        }))
        .into_response(),
        _ => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

async fn get_runner(
    State(s): State<Shared>,
    Path((owner, repo, id)): Path<(String, String, u64)>,
    headers: HeaderMap,
) -> Response {
    let st = lock(&s);
    if let Some(denied) = check_admin(&st, &headers, &owner, &repo) {
        return denied;
    }
    one_runner(&st, id, false)
}

/// A runner of the repository (or, with `org`, of the organization): each sees only its own.
fn one_runner(st: &GithubState, id: u64, org: bool) -> Response {
    match st.runners.get(&id).filter(|r| r.org == org) {
        Some(r) => Json(runner_json(r)).into_response(),
        None => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

fn remove_runner(st: &mut GithubState, id: u64, org: bool) -> Response {
    let Some(runner) = st.runners.get(&id).filter(|r| r.org == org) else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    if runner.busy {
        st.refused_busy_deletes += 1;
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!(
                "Bad request - Runner \"{}\" is still running a job\"",
                runner.name
            ),
        );
    }
    st.runners.remove(&id);
    StatusCode::NO_CONTENT.into_response()
}

async fn delete_runner(
    State(s): State<Shared>,
    Path((owner, repo, id)): Path<(String, String, u64)>,
    headers: HeaderMap,
) -> Response {
    let mut st = lock(&s);
    if let Some(denied) = check_admin(&st, &headers, &owner, &repo) {
        return denied;
    }
    remove_runner(&mut st, id, false)
}

async fn run_jobs(
    State(s): State<Shared>,
    Path((owner, repo, run_id)): Path<(String, String, u64)>,
    headers: HeaderMap,
) -> Response {
    let st = lock(&s);
    if let Some(denied) = check_actions(&st, &headers, &owner, &repo) {
        return denied;
    }
    let jobs: Vec<_> = st
        .jobs
        .iter()
        .filter(|j| j.run_id == run_id && j.repository == format!("{owner}/{repo}"))
        .map(|j| {
            json!({
                "id": j.id, "run_id": j.run_id, "name": j.name, "status": j.status,
                "conclusion": j.conclusion, "labels": j.labels, "runner_name": j.runner_name,
                "created_at": j.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            })
        })
        .collect();
    Json(json!({"total_count": jobs.len(), "jobs": jobs})).into_response()
}

/// A run's status, from its jobs: queued while all wait, completed when all are done.
fn run_status(jobs: &[&Job]) -> &'static str {
    if jobs.iter().all(|j| j.status == "completed") {
        "completed"
    } else if jobs.iter().all(|j| j.status == "queued") {
        "queued"
    } else {
        "in_progress"
    }
}

/// The status of run `run_id` of `owner/repo`, from its jobs; `None` when it has none there.
fn status_of_run(st: &GithubState, owner: &str, repo: &str, run_id: u64) -> Option<&'static str> {
    let jobs: Vec<&Job> = st
        .jobs
        .iter()
        .filter(|j| j.run_id == run_id && j.repository == format!("{owner}/{repo}"))
        .collect();
    (!jobs.is_empty()).then(|| run_status(&jobs))
}

#[derive(Deserialize)]
struct RunsQuery {
    status: Option<String>,
}

async fn list_runs(
    State(s): State<Shared>,
    Path((owner, repo)): Path<(String, String)>,
    Query(q): Query<RunsQuery>,
    headers: HeaderMap,
) -> Response {
    let st = lock(&s);
    if let Some(denied) = check_actions(&st, &headers, &owner, &repo) {
        return denied;
    }
    let repository = format!("{owner}/{repo}");
    let mut ids: Vec<u64> = st
        .jobs
        .iter()
        .filter(|j| j.repository == repository)
        .map(|j| j.run_id)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let runs: Vec<_> = ids
        .into_iter()
        .filter_map(|id| {
            let jobs: Vec<&Job> = st.jobs.iter().filter(|j| j.run_id == id).collect();
            let status = run_status(&jobs);
            q.status
                .as_deref()
                .is_none_or(|want| want == status)
                .then(|| json!({"id": id, "status": status}))
        })
        .collect();
    Json(json!({"total_count": runs.len(), "workflow_runs": runs})).into_response()
}

/// A run of the repository: 404 for any other (run ids are unique across GitHub).
async fn get_run(
    State(s): State<Shared>,
    Path((owner, repo, run_id)): Path<(String, String, u64)>,
    headers: HeaderMap,
) -> Response {
    let st = lock(&s);
    if let Some(denied) = check_actions(&st, &headers, &owner, &repo) {
        return denied;
    }
    let Some(status) = status_of_run(&st, &owner, &repo, run_id) else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    Json(json!({"id": run_id, "status": status})).into_response()
}

async fn cancel_run(
    State(s): State<Shared>,
    Path((owner, repo, run_id)): Path<(String, String, u64)>,
    headers: HeaderMap,
) -> Response {
    let mut st = lock(&s);
    if let Some(denied) = check_actions(&st, &headers, &owner, &repo) {
        return denied;
    }
    let Some(status) = status_of_run(&st, &owner, &repo, run_id) else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    if status == "completed" {
        return error(
            StatusCode::CONFLICT,
            "Cannot cancel a workflow run that is completed.",
        );
    }
    st.cancel_run(run_id);
    (StatusCode::ACCEPTED, Json(json!({}))).into_response()
}

/// "Re-run a workflow": every job of a completed run again, as its next attempt (GitHub REST
/// docs, "Re-run a workflow": 201 Created, 403 Forbidden; a fine-grained token needs Actions:
/// write). GitHub refuses a run that is still going with a 403 (the docs give no text: this one
/// is the world's). The test plays the new attempt's jobs, as a workflow would.
async fn rerun_run(
    State(s): State<Shared>,
    Path((owner, repo, run_id)): Path<(String, String, u64)>,
    headers: HeaderMap,
) -> Response {
    let mut st = lock(&s);
    if let Some(denied) = check_actions(&st, &headers, &owner, &repo) {
        return denied;
    }
    let Some(status) = status_of_run(&st, &owner, &repo, run_id) else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    if status != "completed" {
        return error(
            StatusCode::FORBIDDEN,
            "This workflow run is not completed and cannot be re-run.",
        );
    }
    st.reruns.push(run_id);
    (StatusCode::CREATED, Json(json!({}))).into_response()
}

/// Counts a REST API call, under `/api/v3` (where GitHub Enterprise Server has its API) when
/// `enterprise`, else at the root as on github.com. Nested routers see the path without `/api/v3`.
pub async fn count_api_call(
    State((s, enterprise)): State<(Shared, bool)>,
    request: Request,
    next: Next,
) -> Response {
    if !request.uri().path().starts_with("/_") {
        let mut st = lock(&s);
        if enterprise {
            st.enterprise_calls += 1;
        } else {
            st.dotcom_calls += 1;
        }
    }
    next.run(request).await
}

/// GitHub's primary limit: requests per token per hour.
pub const REQUESTS_PER_HOUR: u32 = 5000;
/// GitHub's secondary limit across REST endpoints: points per token per minute; a GET or HEAD
/// costs 1, any other method 5.
pub const POINTS_PER_MINUTE: u32 = 900;

/// What one token spent: its requests of the last hour and points of the last minute, on the
/// world's clock.
#[derive(Debug, Default)]
pub struct TokenUsage {
    hour: std::collections::VecDeque<std::time::Instant>,
    minute: std::collections::VecDeque<(std::time::Instant, u32)>,
}

/// Counts every REST request against its token's limits and answers as GitHub does once one is
/// exceeded: 403 with `x-ratelimit-remaining: 0` and `x-ratelimit-reset` for the hourly limit,
/// 403 with `retry-after` for the secondary one.
async fn rate_limit_layer(State(s): State<Shared>, request: Request, next: Next) -> Response {
    if request.uri().path().starts_with("/_") {
        return next.run(request).await;
    }
    let token = bearer(request.headers()).to_owned();
    let points = if matches!(request.method().as_str(), "GET" | "HEAD") {
        1
    } else {
        5
    };
    {
        let mut st = lock(&s);
        let scale = if st.clock_scale >= 1.0 {
            st.clock_scale
        } else {
            1.0
        };
        let minute = std::time::Duration::from_secs(60).div_f64(scale);
        let hour = std::time::Duration::from_secs(3600).div_f64(scale);
        let now = std::time::Instant::now();
        let usage = st.usage.entry(token).or_default();
        while usage.hour.front().is_some_and(|t| now - *t >= hour) {
            usage.hour.pop_front();
        }
        while usage
            .minute
            .front()
            .is_some_and(|(t, _)| now - *t >= minute)
        {
            usage.minute.pop_front();
        }
        let spent: u32 = usage.minute.iter().map(|(_, p)| p).sum();
        let refusal = if usage.hour.len() >= REQUESTS_PER_HOUR as usize {
            let reset = chrono::Utc::now().timestamp() + hour.as_secs().max(1) as i64;
            let mut r = error(
                StatusCode::FORBIDDEN,
                "API rate limit exceeded for this token. (But here's the good news: \
                 Authenticated requests get a higher rate limit. Check out the documentation \
                 for more details.)",
            );
            for (k, v) in [
                ("x-ratelimit-limit", REQUESTS_PER_HOUR.to_string()),
                ("x-ratelimit-remaining", "0".to_owned()),
                ("x-ratelimit-reset", reset.to_string()),
            ] {
                if let Ok(v) = v.parse() {
                    r.headers_mut().insert(k, v);
                }
            }
            Some(r)
        } else if spent + points > POINTS_PER_MINUTE {
            let mut r = error(
                StatusCode::FORBIDDEN,
                "You have exceeded a secondary rate limit. Please wait a few minutes before you \
                 try again.",
            );
            let wait = minute.as_secs_f64().ceil().max(1.0).to_string();
            if let Ok(v) = wait.parse() {
                r.headers_mut().insert("retry-after", v);
            }
            Some(r)
        } else {
            usage.hour.push_back(now);
            usage.minute.push_back((now, points));
            let spent = spent + points;
            st.peak_points_per_minute = st.peak_points_per_minute.max(spent);
            None
        };
        if let Some(refusal) = refusal {
            st.rate_limited += 1;
            return refusal;
        }
    }
    next.run(request).await
}

/// Answers with the programmed fault, if the call has one.
async fn fault_layer(State(faults): State<Faults>, request: Request, next: Next) -> Response {
    let call = faults::github_call(request.method().as_str(), request.uri().path());
    if let Some(fault) = call.and_then(|c| faults.take(Service::Github, c)) {
        match faults::github_answer(fault) {
            Some(answer) => return answer,
            None => {
                if let Fault::Slow(d) = fault {
                    tokio::time::sleep(d).await;
                }
            }
        }
    }
    next.run(request).await
}

/// The runner the stand-in speaks for, by the secret in its JIT config.
fn runner_by_secret(st: &mut GithubState, headers: &HeaderMap) -> Option<u64> {
    let secret = headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("RunnerJit ")?;
    st.runners
        .values()
        .find(|r| r.secret == secret)
        .map(|r| r.id)
}

async fn runner_online(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let mut st = lock(&s);
    let Some(id) = runner_by_secret(&mut st, &headers) else {
        return error(StatusCode::UNAUTHORIZED, "unknown runner");
    };
    if let Some(r) = st.runners.get_mut(&id) {
        r.status = "online";
        r.online_at.get_or_insert_with(std::time::Instant::now);
    }
    StatusCode::NO_CONTENT.into_response()
}

/// Hands the runner the first queued job whose labels it all has: a line with the job's id, run,
/// repository, workflow, container and event, a line with the event's payload, then a line per
/// step: its condition and its script in base64.
async fn runner_acquire(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let mut st = lock(&s);
    let Some(id) = runner_by_secret(&mut st, &headers) else {
        return error(StatusCode::UNAUTHORIZED, "unknown runner");
    };
    let Some(runner) = st.runners.get(&id).cloned() else {
        return error(StatusCode::UNAUTHORIZED, "unknown runner");
    };
    let ours = format!("{}/{}", st.owner, st.repo);
    let public = st.public;
    // A repository's runner serves that repository's jobs; an organization's runner the jobs of
    // every repository its group serves.
    let groups = st.groups.clone();
    let serves = |repository: &str| {
        if runner.org {
            groups
                .iter()
                .any(|g| g.id == runner.group && g.serves(repository, public))
        } else {
            repository == ours
        }
    };
    // The oldest queued job (jobs are kept in the order they were queued) whose labels the
    // runner covers, GitHub's defaults included.
    let Some(job) = st
        .jobs
        .iter_mut()
        .find(|j| j.status == "queued" && runner.covers(&j.labels) && serves(&j.repository))
    else {
        return StatusCode::NO_CONTENT.into_response();
    };
    job.status = "in_progress";
    job.runner_name = Some(runner.name.clone());
    let mut text = format!(
        "{} {} {repository} {repository}/.github/workflows/{}@{} {} {}\n{}\n",
        job.id,
        job.run_id,
        job.workflow,
        job.git_ref,
        job.container.as_deref().unwrap_or("-"),
        job.event,
        job.payload,
        repository = job.repository,
    );
    for step in &job.steps {
        text.push_str(&format!(
            "{} {}\n",
            step.condition,
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &step.run)
        ));
    }
    if let Some(r) = st.runners.get_mut(&id) {
        r.busy = true;
    }
    text.into_response()
}

async fn runner_complete(
    State(s): State<Shared>,
    Path(job_id): Path<u64>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let mut st = lock(&s);
    let Some(id) = runner_by_secret(&mut st, &headers) else {
        return error(StatusCode::UNAUTHORIZED, "unknown runner");
    };
    let conclusion = headers
        .get("x-conclusion")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("success")
        .to_owned();
    if let Some(job) = st.jobs.iter_mut().find(|j| j.id == job_id) {
        job.status = "completed";
        job.conclusion = Some(conclusion);
        job.output = body;
    }
    if let Some(r) = st.runners.get_mut(&id) {
        r.busy = false;
    }
    StatusCode::NO_CONTENT.into_response()
}

/// A step's summary, appended to its job's (the real runner uploads each step's
/// `GITHUB_STEP_SUMMARY` file once the step ends).
async fn runner_summary(
    State(s): State<Shared>,
    Path(job_id): Path<u64>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let mut st = lock(&s);
    if runner_by_secret(&mut st, &headers).is_none() {
        return error(StatusCode::UNAUTHORIZED, "unknown runner");
    }
    if let Some(job) = st.jobs.iter_mut().find(|j| j.id == job_id) {
        job.summary.push_str(&body);
    }
    StatusCode::NO_CONTENT.into_response()
}

/// Whether the job the runner runs was cancelled: the real listener gets a cancel message from
/// GitHub and hands it to its worker (actions/runner `JobDispatcher`); the stand-in worker asks.
async fn runner_job_cancelled(
    State(s): State<Shared>,
    Path(job_id): Path<u64>,
    headers: HeaderMap,
) -> Response {
    let mut st = lock(&s);
    if runner_by_secret(&mut st, &headers).is_none() {
        return error(StatusCode::UNAUTHORIZED, "unknown runner");
    }
    match st.jobs.iter().find(|j| j.id == job_id) {
        Some(j) if j.cancel_requested => (StatusCode::OK, "cancelled").into_response(),
        _ => StatusCode::NO_CONTENT.into_response(),
    }
}

/// The listener was stopped (SIGINT, SIGTERM) and ended its session: GitHub shows the runner
/// offline and keeps its registration until someone deletes it.
async fn runner_session_end(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let mut st = lock(&s);
    if let Some(id) = runner_by_secret(&mut st, &headers)
        && let Some(r) = st.runners.get_mut(&id)
    {
        r.status = "offline";
        r.busy = false;
    }
    StatusCode::NO_CONTENT.into_response()
}

/// An ephemeral runner is removed by GitHub once it has run its job and disconnects.
async fn runner_offline(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let mut st = lock(&s);
    if let Some(id) = runner_by_secret(&mut st, &headers) {
        st.runners.remove(&id);
    }
    StatusCode::NO_CONTENT.into_response()
}

const APP_PUBLIC_KEY: &str = include_str!("keys/test-key.pub.pem");
const INSTALLATION_ID: u64 = 77;
const ORG_INSTALLATION_ID: u64 = 78;

/// Checks an app JWT like GitHub: RS256 signed by the App's key, issued by the App, at most ten
/// minutes long (a minute of skew allowed), not expired. `None` when GitHub would accept it.
fn check_app_jwt(st: &mut GithubState, headers: &HeaderMap) -> Option<Response> {
    let jwt = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_owned();
    st.seen_app_jwts.push(jwt.clone());
    let refuse = |why: &str| {
        Some(error(
            StatusCode::UNAUTHORIZED,
            &format!("A JSON web token could not be decoded: {why}"),
        ))
    };
    let Ok(key) = jsonwebtoken::DecodingKey::from_rsa_pem(APP_PUBLIC_KEY.as_bytes()) else {
        return refuse("no key");
    };
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_required_spec_claims(&["exp", "iat", "iss"]);
    validation.validate_aud = false;
    let Ok(data) = jsonwebtoken::decode::<serde_json::Value>(&jwt, &key, &validation) else {
        return refuse("bad signature, algorithm or expiry");
    };
    let claims = data.claims;
    let iss = match &claims["iss"] {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if iss != st.app_id {
        return refuse("the issuer is not this App");
    }
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap_or(0),
        claims["exp"].as_i64().unwrap_or(0),
    );
    let now = chrono::Utc::now().timestamp();
    if exp - iat > 660 || iat > now + 60 {
        return refuse("'Expiration time' claim ('exp') is too far in the future");
    }
    None
}

async fn repo_installation(
    State(s): State<Shared>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let mut st = lock(&s);
    if let Some(denied) = check_app_jwt(&mut st, &headers) {
        return denied;
    }
    if !st.app_installed || owner != st.owner || repo != st.repo {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    Json(json!({"id": INSTALLATION_ID, "app_id": st.app_id, "account": {"login": st.owner}}))
        .into_response()
}

async fn org_installation(
    State(s): State<Shared>,
    Path(org): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut st = lock(&s);
    if let Some(denied) = check_app_jwt(&mut st, &headers) {
        return denied;
    }
    if !st.app_installed_on_org || org != st.owner {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    Json(json!({"id": ORG_INSTALLATION_ID, "app_id": st.app_id, "account": {"login": st.owner}}))
        .into_response()
}

/// `POST /app/installations/{id}/access_tokens`. As on GitHub, a body may narrow the token to
/// some of the installation's `repositories` (by name) and `permissions`; one that asks for a
/// repository or a permission the installation does not have is refused with 422. Without a
/// body the token has everything the installation has, on every repository it covers.
async fn installation_token(
    State(s): State<Shared>,
    Path(id): Path<u64>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut st = lock(&s);
    if let Some(denied) = check_app_jwt(&mut st, &headers) {
        return denied;
    }
    let on_org = id == ORG_INSTALLATION_ID && st.app_installed_on_org;
    if !on_org && (id != INSTALLATION_ID || !st.app_installed) {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or(json!({}));
    st.token_requests.push(request.clone());
    // What the installation was granted when it was installed.
    let mut granted = vec![
        ("administration", "write"),
        ("actions", "write"),
        ("pull_requests", "read"),
        ("metadata", "read"),
    ];
    if on_org {
        granted.push(("organization_self_hosted_runners", "write"));
    }
    if let Some(repos) = request.get("repositories").and_then(|r| r.as_array())
        && repos.iter().any(|r| r.as_str() != Some(st.repo.as_str()))
    {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "There is at least one repository that does not exist or is not accessible to the \
             parent installation.",
        );
    }
    let asked: Vec<(String, String)> = match request.get("permissions").and_then(|p| p.as_object())
    {
        Some(p) => p
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect(),
        None => granted
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    };
    let level = |l: &str| match l {
        "write" => 2,
        "read" => 1,
        _ => 0,
    };
    for (name, wanted) in &asked {
        let has = granted
            .iter()
            .find(|(g, _)| g == name)
            .map(|(_, l)| level(l));
        if has.is_none_or(|has| has < level(wanted)) {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "The permissions requested are not granted to this installation.",
            );
        }
    }
    let gets = |name: &str| asked.iter().any(|(k, _)| k == name);
    let token = format!("ghs_inst{}", uuid::Uuid::new_v4().simple());
    if gets("administration") {
        st.admin_tokens.push(token.clone());
    } else {
        // Metadata alone: it can read the repository, nothing more.
        st.weak_tokens.push(token.clone());
    }
    if gets("actions") {
        st.actions_tokens.push(token.clone());
    }
    if gets("organization_self_hosted_runners") {
        st.org_admin_tokens.push(token.clone());
    }
    st.issued_installation_tokens.push(token.clone());
    let expires = (chrono::Utc::now() + chrono::TimeDelta::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let permissions: serde_json::Map<String, serde_json::Value> = asked
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    (
        StatusCode::CREATED,
        Json(json!({"token": token, "expires_at": expires, "permissions": permissions})),
    )
        .into_response()
}

pub fn router(state: Shared, faults: Faults) -> axum::Router {
    axum::Router::new()
        .route("/repos/{owner}/{repo}/installation", get(repo_installation))
        .route(
            "/app/installations/{id}/access_tokens",
            post(installation_token),
        )
        .route(
            "/repos/{owner}/{repo}/actions/runners/generate-jitconfig",
            post(generate_jitconfig),
        )
        .route("/repos/{owner}/{repo}/actions/runners", get(list_runners))
        .route(
            "/repos/{owner}/{repo}/actions/runners/{id}",
            get(get_runner).delete(delete_runner),
        )
        .route(
            "/repos/{owner}/{repo}/actions/runs/{run_id}/jobs",
            get(run_jobs),
        )
        .route("/repos/{owner}/{repo}/actions/runs", get(list_runs))
        .route(
            "/repos/{owner}/{repo}/actions/runs/{run_id}/cancel",
            post(cancel_run),
        )
        .route(
            "/repos/{owner}/{repo}/actions/runs/{run_id}/rerun",
            post(rerun_run),
        )
        .route("/repos/{owner}/{repo}/actions/runs/{run_id}", get(get_run))
        .route("/repos/{owner}/{repo}", get(get_repository))
        .route(
            "/repos/{owner}/{repo}/actions/permissions/fork-pr-contributor-approval",
            get(fork_pr_approval),
        )
        .route(
            "/repos/{owner}/{repo}/collaborators/{user}/permission",
            get(collaborator_permission),
        )
        .route("/repos/{owner}/{repo}/pulls/{number}", get(get_pull))
        .route("/orgs/{org}/installation", get(org_installation))
        .route(
            "/orgs/{org}/actions/runners/generate-jitconfig",
            post(org_generate_jitconfig),
        )
        .route("/orgs/{org}/actions/runners", get(org_list_runners))
        .route(
            "/orgs/{org}/actions/runners/{id}",
            get(org_get_runner).delete(org_delete_runner),
        )
        .route("/orgs/{org}/actions/runner-groups", get(org_runner_groups))
        .route(
            "/orgs/{org}/actions/runner-groups/{id}/repositories",
            get(org_group_repositories),
        )
        .route("/_runner/online", post(runner_online))
        .route("/_runner/acquire", post(runner_acquire))
        .route("/_runner/jobs/{id}/complete", post(runner_complete))
        .route("/_runner/jobs/{id}/summary", post(runner_summary))
        .route("/_runner/offline", post(runner_offline))
        .route("/_runner/session-end", post(runner_session_end))
        .route("/_runner/jobs/{id}/cancelled", post(runner_job_cancelled))
        .with_state(state.clone())
        .layer(axum::middleware::from_fn_with_state(
            state,
            rate_limit_layer,
        ))
        .layer(axum::middleware::from_fn_with_state(faults, fault_layer))
}

impl GithubState {
    pub fn queue_job(&mut self, run_id: u64, labels: Vec<String>, script: &str) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.jobs.push(Job {
            id,
            run_id,
            name: "test".to_owned(),
            created_at: chrono::Utc::now(),
            labels,
            steps: vec![JobStep::run(script)],
            cancel_requested: false,
            repository: format!("{}/{}", self.owner, self.repo),
            git_ref: "refs/heads/main".to_owned(),
            workflow: "gpu.yml".to_owned(),
            container: None,
            event: "push".to_owned(),
            payload: json!({
                "ref": "refs/heads/main",
                "repository": {
                    "full_name": format!("{}/{}", self.owner, self.repo),
                    "private": !self.public,
                },
            }),
            status: "queued",
            conclusion: None,
            summary: String::new(),
            runner_name: None,
            output: String::new(),
        });
        id
    }
}

impl GithubState {
    /// Cancels a run as a user's click does: its unfinished jobs end as cancelled.
    pub fn cancel_run(&mut self, run_id: u64) {
        for j in self.jobs.iter_mut().filter(|j| j.run_id == run_id) {
            if j.status != "completed" {
                j.status = "completed";
                j.conclusion = Some("cancelled".to_owned());
            }
        }
        self.cancelled_runs.push(run_id);
    }

    /// Cancels one job as the run's Cancel button does: a queued job ends cancelled at once; a
    /// running one is cancelled by its runner, which still runs its `always()` and `cancelled()`
    /// steps and then reports it.
    pub fn cancel_job(&mut self, job_id: u64) {
        if let Some(j) = self.jobs.iter_mut().find(|j| j.id == job_id) {
            match j.status {
                "queued" => {
                    j.status = "completed";
                    j.conclusion = Some("cancelled".to_owned());
                }
                "in_progress" => j.cancel_requested = true,
                _ => {}
            }
        }
    }

    /// The machine of the runner named `name` is gone: GitHub stops hearing from the runner, shows
    /// it offline, and fails the job it had (as "lost communication with the server").
    pub fn machine_gone(&mut self, name: &str) {
        for r in self.runners.values_mut().filter(|r| r.name == name) {
            r.status = "offline";
            r.busy = false;
        }
        for j in self
            .jobs
            .iter_mut()
            .filter(|j| j.status == "in_progress" && j.runner_name.as_deref() == Some(name))
        {
            j.status = "completed";
            j.conclusion = Some("failure".to_owned());
            j.output
                .push_str("The self-hosted runner lost communication with the server.\n");
        }
    }
}
