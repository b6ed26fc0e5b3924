//! What the runner tells every step about its job: repository, run, attempt, servers.

use crate::env::Env;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ContextError {
    #[error("{var} is not set")]
    Missing { var: &'static str },
    #[error("{var} is \"{value}\", which is not {expected}")]
    Invalid {
        var: &'static str,
        value: String,
        expected: &'static str,
    },
}

impl ContextError {
    pub fn hint(&self) -> String {
        "gpu-runner runs as a step of a GitHub Actions job, where the runner sets GITHUB_REPOSITORY, \
         GITHUB_RUN_ID and GITHUB_RUN_ATTEMPT. To try it by hand, set them yourself, such as \
         GITHUB_REPOSITORY=octo/ml GITHUB_RUN_ID=1 GITHUB_RUN_ATTEMPT=1."
            .to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    pub owner: String,
    pub repo: String,
    pub run_id: u64,
    pub run_attempt: u32,
    pub job: Option<String>,
    /// `owner/repo/.github/workflows/FILE@REF` (`GITHUB_WORKFLOW_REF`): every job of the run has
    /// the same, a reusable workflow's jobs too. Older GitHub Enterprise Server versions lack it.
    pub workflow_ref: Option<String>,
    /// `https://github.com` or a GitHub Enterprise Server.
    pub server_url: String,
    pub api_url: String,
}

impl Context {
    pub fn from_env(env: &Env) -> Result<Self, ContextError> {
        let need = |var: &'static str| env.non_empty(var).ok_or(ContextError::Missing { var });
        let invalid = |var, value: &str, expected| ContextError::Invalid {
            var,
            value: value.to_owned(),
            expected,
        };
        let repository = need("GITHUB_REPOSITORY")?;
        let (owner, repo) = repository
            .split_once('/')
            .filter(|(o, r)| !o.is_empty() && !r.is_empty() && !r.contains('/'))
            .ok_or_else(|| invalid("GITHUB_REPOSITORY", repository, "OWNER/REPO"))?;
        let run_id = need("GITHUB_RUN_ID")?;
        let run_id = run_id
            .parse()
            .map_err(|_| invalid("GITHUB_RUN_ID", run_id, "a number"))?;
        let run_attempt = match env.non_empty("GITHUB_RUN_ATTEMPT") {
            None => 1,
            Some(a) => a
                .parse()
                .map_err(|_| invalid("GITHUB_RUN_ATTEMPT", a, "a number"))?,
        };
        let server_url = env
            .non_empty("GITHUB_SERVER_URL")
            .unwrap_or("https://github.com")
            .trim_end_matches('/')
            .to_owned();
        let api_url = env
            .non_empty("GITHUB_API_URL")
            .unwrap_or("https://api.github.com")
            .trim_end_matches('/')
            .to_owned();
        Ok(Self {
            owner: owner.to_owned(),
            repo: repo.to_owned(),
            run_id,
            run_attempt,
            job: env.non_empty("GITHUB_JOB").map(str::to_owned),
            workflow_ref: env.non_empty("GITHUB_WORKFLOW_REF").map(str::to_owned),
            server_url,
            api_url,
        })
    }

    pub fn repository(&self) -> String {
        format!("{}/{}", self.owner, self.repo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_runner_variables_with_defaults() {
        let env: Env = [
            ("GITHUB_REPOSITORY", "octo/ml"),
            ("GITHUB_RUN_ID", "42"),
            ("GITHUB_API_URL", "https://ghe.example/api/v3/"),
        ]
        .into_iter()
        .collect();
        let ctx = Context::from_env(&env).unwrap();
        assert_eq!(ctx.repository(), "octo/ml");
        assert_eq!((ctx.run_id, ctx.run_attempt), (42, 1));
        assert_eq!(ctx.server_url, "https://github.com");
        assert_eq!(ctx.api_url, "https://ghe.example/api/v3");
    }

    #[test]
    fn missing_or_malformed_variables_are_named() {
        let env: Env = [("GITHUB_REPOSITORY", "octo")].into_iter().collect();
        assert_eq!(
            Context::from_env(&env).unwrap_err().to_string(),
            "GITHUB_REPOSITORY is \"octo\", which is not OWNER/REPO"
        );
        let env: Env = [("GITHUB_REPOSITORY", "o/r"), ("GITHUB_RUN_ID", "x")]
            .into_iter()
            .collect();
        assert_eq!(
            Context::from_env(&env).unwrap_err().to_string(),
            "GITHUB_RUN_ID is \"x\", which is not a number"
        );
        assert_eq!(
            Context::from_env(&Env::default()).unwrap_err(),
            ContextError::Missing {
                var: "GITHUB_REPOSITORY"
            }
        );
    }
}
