//! The Kubernetes API's errors in words: what its status reasons mean for gpu-runner, and what to
//! do.

use crate::machine::{Kind, MachineError};

/// Reached no API server (or no answer from it): no status reason to go by.
pub const UNREACHABLE: &str = "Unreachable";
/// The kubeconfig could not be turned into a client.
pub const BAD_CONFIG: &str = "BadConfig";
/// The EKS cluster's description or token could not be had.
pub const EKS_ACCESS: &str = "EksAccess";

/// A failed call of `operation`, from kube's error.
pub fn api_error(operation: &'static str, err: kube::Error) -> MachineError {
    let (code, message) = match &err {
        kube::Error::Api(status) => (
            if status.reason.is_empty() {
                format!("HTTP {}", status.code)
            } else {
                status.reason.clone()
            },
            if status.message.is_empty() {
                format!("HTTP {}", status.code)
            } else {
                status.message.clone()
            },
        ),
        other => (UNREACHABLE.to_owned(), chain(other)),
    };
    MachineError {
        provider: Kind::Kubernetes,
        operation,
        code: Some(code),
        message,
    }
}

/// An error and its causes, on one line.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cause = err.source();
    while let Some(e) = cause {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = e.source();
    }
    out
}

/// What to do about it, by the API's status reason.
pub fn hint(e: &MachineError) -> String {
    match e.code() {
        "Unauthorized" => "The API server did not accept the credentials: the kubeconfig's token \
            expired or was revoked, or belongs to another cluster. Make a new one for the \
            ServiceAccount bound to gpu-runner's Role (docs/kubernetes.md) and update the \
            kubeconfig secret; with eks-cluster, check that the role is mapped in the cluster \
            (an access entry)."
            .to_owned(),
        "Forbidden" => format!(
            "The cluster's RBAC does not let gpu-runner's user {}: bind it to the Role that \
             docs/kubernetes.md gives, in the namespace the namespace input names. If \
             the message names a quota or an admission policy instead, the pod asks for more \
             than the namespace allows.",
            e.operation
        ),
        "NotFound" => "The namespace does not exist in this cluster: create it, or set \
            namespace to the one gpu-runner's Role is bound in."
            .to_owned(),
        "Invalid" | "BadRequest" => "The cluster rejected the pod as written: the message names \
            the field. Check pod-template, node-selector, tolerations, runtime-class and the \
            requests."
            .to_owned(),
        "AlreadyExists" => "A pod or secret of this name exists already: a start of the same \
            run and nonce ran before. Re-run the job."
            .to_owned(),
        UNREACHABLE => "gpu-runner could not reach the cluster's API server: check the server \
            address in the kubeconfig, that it is reachable from GitHub's runners (or this \
            runner's network), and that its certificate matches certificate-authority-data."
            .to_owned(),
        BAD_CONFIG => "Check the kubeconfig: its current-context must name a cluster with a \
            server address and a user with a token or client certificate. An exec plugin (such \
            as aws eks get-token) does not run inside the action: use eks-cluster for EKS."
            .to_owned(),
        EKS_ACCESS => "Check that the EKS cluster is ACTIVE (aws eks describe-cluster) and that \
            the role's credentials work: role-to-assume, aws-region, and permissions: id-token: \
            write on the job."
            .to_owned(),
        _ => "See the Kubernetes API's message above.".to_owned(),
    }
}
