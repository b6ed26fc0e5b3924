//! A client of the user's cluster: from a kubeconfig, or for an EKS cluster from the AWS
//! credentials the job's OIDC token brings (see [`super::eks`]).

use std::time::Duration;

use super::errors::{BAD_CONFIG, chain};
use crate::actions::Actions;
use crate::context::Context;
use crate::env::Env;
use crate::inputs::{ClusterAccess, ClusterInputs, Common};
use crate::machine::failure::Failure as Error;
use crate::machine::{Kind, MachineError};

/// What reaching an EKS cluster needs of the job: its environment and OIDC token, for AWS
/// credentials, and the log, for masks.
pub struct Access<'a> {
    pub common: &'a Common,
    pub env: &'a Env,
    pub ctx: &'a Context,
    pub actions: &'a Actions,
    pub judged_event: Option<&'a str>,
}

fn bad_config(message: String) -> MachineError {
    MachineError {
        provider: Kind::Kubernetes,
        operation: "ReadKubeconfig",
        code: Some(BAD_CONFIG.to_owned()),
        message,
    }
}

/// Calls that hang are failed rather than waited for: a start has a deadline.
fn with_timeouts(mut config: kube::Config) -> kube::Config {
    config.connect_timeout = Some(Duration::from_secs(10));
    config.read_timeout = Some(Duration::from_secs(30));
    config.write_timeout = Some(Duration::from_secs(30));
    config
}

/// A client for the cluster the inputs name.
pub async fn client(cluster: &ClusterInputs, access: &Access<'_>) -> Result<kube::Client, Error> {
    let config = match &cluster.access {
        ClusterAccess::Kubeconfig(text) => {
            let kubeconfig = kube::config::Kubeconfig::from_yaml(text.expose())
                .map_err(|e| bad_config(chain(&e)))?;
            // Whatever the kubeconfig carries is a secret: tokens, keys, passwords.
            for user in &kubeconfig.auth_infos {
                if let Some(auth) = &user.auth_info {
                    for secret in [&auth.token, &auth.client_key_data, &auth.password]
                        .into_iter()
                        .flatten()
                    {
                        access.actions.add_mask(secret.expose_secret_str());
                    }
                }
            }
            let options = kube::config::KubeConfigOptions::default();
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| bad_config(chain(&e)))?
        }
        ClusterAccess::Eks { name, region } => super::eks::config(name, region, access).await?,
    };
    let mut config = with_timeouts(config);
    config.default_namespace = cluster.namespace.clone();
    kube::Client::try_from(config).map_err(|e| Error::Machine(bad_config(chain(&e))))
}

/// A secret string of the kubeconfig, as text.
trait ExposeStr {
    fn expose_secret_str(&self) -> &str;
}

impl ExposeStr for secrecy::SecretString {
    fn expose_secret_str(&self) -> &str {
        secrecy::ExposeSecret::expose_secret(self)
    }
}
