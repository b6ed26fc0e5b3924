//! The inputs every mode shares: GitHub's credentials, the region and role, and the
//! untrusted-trigger guard's.

use super::*;

impl Reader<'_> {
    pub(super) fn common(&mut self, kubernetes: bool) -> Option<Common> {
        let github = self.github_auth();
        let cluster = if kubernetes {
            Some(self.cluster())
        } else {
            None
        };
        let role_to_assume = self.one(&spec::ROLE_TO_ASSUME, values::role_arn);
        let audience = self.one(&spec::AUDIENCE, values::audience);
        let scope_given = self.given(&spec::RUNNER_SCOPE).is_some();
        // Validated to be one of the names; the default is repo.
        let runner_scope =
            RunnerScope::from_name(&self.one(&spec::RUNNER_SCOPE, values::runner_scope)?)
                .unwrap_or(RunnerScope::Repo);
        let cluster = match cluster {
            Some(c) => Some(c?),
            None => None,
        };
        Some(Common {
            github: github?,
            role_to_assume,
            audience: audience?,
            runner_scope: scope_given.then_some(runner_scope),
            cluster,
        })
    }

    pub(super) fn github_auth(&mut self) -> Option<GithubAuth> {
        let token = self.raw(&spec::GITHUB_TOKEN);
        let app_id = self.raw(&spec::GITHUB_APP_ID);
        let key = self.raw(&spec::GITHUB_APP_PRIVATE_KEY);
        match (token, app_id, key) {
            (Some(_), Some(app_id), _) => {
                self.fail(
                    &spec::GITHUB_APP_ID,
                    Some(&app_id),
                    Problem::Conflict {
                        other: spec::GITHUB_TOKEN.name,
                        fix: "Use either github-token, or github-app-id with \
                              github-app-private-key, not both.",
                    },
                );
                None
            }
            (Some(token), None, key) => {
                if key.is_some() {
                    self.fail(
                        &spec::GITHUB_APP_PRIVATE_KEY,
                        None,
                        Problem::Requires {
                            other: spec::GITHUB_APP_ID.name,
                        },
                    );
                }
                match values::token(&token) {
                    Ok(()) => key.is_none().then(|| GithubAuth::Token(Secret::new(token))),
                    Err(e) => {
                        self.invalid(&spec::GITHUB_TOKEN, &token, None, e);
                        None
                    }
                }
            }
            (None, Some(app_id), key) => {
                let id_ok = match values::app_id(&app_id) {
                    Ok(()) => true,
                    Err(e) => {
                        self.invalid(&spec::GITHUB_APP_ID, &app_id, None, e);
                        false
                    }
                };
                let Some(key) = key else {
                    self.missing(
                        &spec::GITHUB_APP_PRIVATE_KEY,
                        "With github-app-id, also set github-app-private-key: \
                         ${{ secrets.YOUR_APP_PRIVATE_KEY }} (the App's .pem file)."
                            .to_owned(),
                    );
                    return None;
                };
                match values::private_key(&key) {
                    Ok(key) if id_ok => Some(GithubAuth::App {
                        app_id,
                        private_key: Secret::new(key),
                    }),
                    Ok(_) => None,
                    Err(e) => {
                        self.invalid(&spec::GITHUB_APP_PRIVATE_KEY, &key, None, e);
                        None
                    }
                }
            }
            (None, None, Some(_)) => {
                self.fail(
                    &spec::GITHUB_APP_PRIVATE_KEY,
                    None,
                    Problem::Requires {
                        other: spec::GITHUB_APP_ID.name,
                    },
                );
                None
            }
            (None, None, None) => {
                self.missing(
                    &spec::GITHUB_TOKEN,
                    "gpu-runner registers and removes self-hosted runners, which takes a token \
                     with Administration: write on the repository (the workflow's own GITHUB_TOKEN \
                     cannot do that). Set github-token: ${{ secrets.RUNNER_ADMIN_TOKEN }}, or use a \
                     GitHub App with github-app-id and github-app-private-key."
                        .to_owned(),
                );
                None
            }
        }
    }

    /// `aws-region`, else the `AWS_REGION` / `AWS_DEFAULT_REGION` environment. `Err` when the value
    /// is invalid (the error is recorded), `Ok(None)` when no region is set anywhere.
    pub(super) fn aws_region(&mut self) -> Result<Option<String>, ()> {
        let spec = &spec::AWS_REGION;
        let Some(v) = self.raw(spec).or_else(|| {
            ["AWS_REGION", "AWS_DEFAULT_REGION"]
                .iter()
                .find_map(|var| self.env.non_empty(var).map(str::to_owned))
        }) else {
            return Ok(None);
        };
        match values::region(&v) {
            Ok(()) => Ok(Some(v)),
            Err(e) => {
                self.invalid(spec, &v, None, e);
                Err(())
            }
        }
    }

    /// `aws-region` (or `AWS_REGION`), which the mode cannot do without.
    pub(super) fn required_region(&mut self, what: &str) -> Option<String> {
        match self.aws_region() {
            Ok(Some(region)) => Some(region),
            Ok(None) => {
                self.missing(
                    &spec::AWS_REGION,
                    format!(
                        "Set aws-region: us-east-1 (the region {what}), or set AWS_REGION in the \
                         workflow's env."
                    ),
                );
                None
            }
            Err(()) => None,
        }
    }

    /// Whose pull requests and comments may run code on the machine.
    pub(super) fn trust(&mut self) -> TrustInputs {
        let allowed_associations: Vec<String> = self
            .list(&spec::ALLOWED_ASSOCIATIONS, 8, values::association)
            .iter()
            .map(|a| a.to_ascii_uppercase())
            .collect();
        TrustInputs {
            allowed_associations,
            allow_untrusted: self.boolean(&spec::ALLOW_UNTRUSTED),
            skip_untrusted: self
                .one(&spec::ON_UNTRUSTED, values::on_untrusted)
                .is_none_or(|v| v == "skip"),
        }
    }
}
