//! A real Kubernetes control plane for the world: etcd, `kube-apiserver` and `kube-scheduler`,
//! built from the Kubernetes Go modules by `k8s/build.sh` (once, into `target/k8s-world`), run on
//! free loopback ports with RBAC on, and nodes registered as a kubelet registers itself: with
//! their capacity (`nvidia.com/gpu` among it, as NVIDIA's device plugin advertises it) and
//! `Ready`. What kube-controller-manager would do for these tests (a namespace's `default`
//! ServiceAccount, lifting the `not-ready` taint of a node that reports `Ready`) the cluster does
//! itself; it runs no controller-manager and no kubelet.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The version `k8s/go.mod` pins.
pub fn version() -> String {
    include_str!("../k8s/go.mod")
        .lines()
        .find_map(|l| l.trim().strip_prefix("k8s.io/kubernetes "))
        .unwrap_or("unknown")
        .to_owned()
}

fn bin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/k8s-world/bin")
}

/// Builds the control plane unless it is built: `k8s/build.sh` (parallel callers wait for one
/// build).
fn build() -> Result<PathBuf, String> {
    let bin = bin_dir();
    if bin.join(format!(".built-{}", version())).exists() {
        return Ok(bin);
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("k8s/build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .map_err(|e| format!("{}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "building the world's Kubernetes control plane failed (needs Go and its module \
             proxy):\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(bin)
}

/// A node to register: its name and how many GPUs it advertises.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub name: String,
    pub gpus: u32,
}

impl NodeSpec {
    pub fn new(name: &str, gpus: u32) -> Self {
        Self {
            name: name.to_owned(),
            gpus,
        }
    }
}

/// Calls to the API server, as the world's admin or with a given token.
pub struct Client {
    /// `https://127.0.0.1:PORT`
    pub url: String,
    /// A token of `system:masters`, for the world's own bookkeeping.
    pub admin_token: String,
    /// The API server's serving certificate and its authority, PEM.
    pub ca_pem: String,
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
}

impl Client {
    /// A client of the same API server, for another thread.
    pub fn another(&self) -> Result<Client, String> {
        let mut client = Client::new(&self.url, &self.admin_token)?;
        client.ca_pem = self.ca_pem.clone();
        Ok(client)
    }

    fn new(url: &str, admin_token: &str) -> Result<Client, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let http = reqwest::Client::builder()
            // The API server's self-signed serving certificate: the world's own client only.
            .danger_accept_invalid_certs(true)
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Client {
            url: url.to_owned(),
            admin_token: admin_token.to_owned(),
            ca_pem: String::new(),
            rt,
            http,
        })
    }
}

pub struct Cluster {
    children: Vec<Child>,
    client: Client,
    pub dir: tempfile::TempDir,
}

impl std::ops::Deref for Cluster {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A namespace every cluster has, for gpu-runner's pods.
pub const NAMESPACE: &str = "gpu-ci";

impl Cluster {
    /// etcd, the API server and the scheduler, ready, with the namespace [`NAMESPACE`] and these
    /// nodes registered and `Ready`.
    pub fn start(nodes: &[NodeSpec]) -> Result<Cluster, String> {
        Self::start_with(nodes, &[])
    }

    /// [`Cluster::start`], the API server given `apiserver_args` too (an authenticator, say).
    pub fn start_with(nodes: &[NodeSpec], apiserver_args: &[String]) -> Result<Cluster, String> {
        // A free port is free when it is picked, not always when it is bound: tests running
        // beside each other can take one in between. A control plane that lost that race is
        // started again on other ports.
        let mut attempt = 1;
        loop {
            match Self::start_once(nodes, apiserver_args) {
                Err(e) if attempt < 3 && e.contains("address already in use") => attempt += 1,
                other => return other,
            }
        }
    }

    fn start_once(nodes: &[NodeSpec], apiserver_args: &[String]) -> Result<Cluster, String> {
        let bin = build()?;
        let dir = tempfile::Builder::new()
            .prefix("gpu-runner-k8s-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let root = dir.path().to_path_buf();
        let path = |name: &str| root.join(name);
        let admin_token = format!("admin-{}", uuid::Uuid::new_v4().simple());
        let write = |name: &str, text: &str| {
            std::fs::write(path(name), text).map_err(|e| format!("{name}: {e}"))
        };
        write(
            "tokens.csv",
            &format!("{admin_token},world-admin,1,system:masters\n"),
        )?;
        // The service account tokens' signing key: the world's test key.
        write("sa.key", crate::APP_PRIVATE_KEY)?;
        write("sa.pub", include_str!("keys/test-key.pub.pem"))?;
        let (client, peer, secure) = (
            crate::ports::reserve()?,
            crate::ports::reserve()?,
            crate::ports::reserve()?,
        );
        let url = format!("https://127.0.0.1:{secure}");
        let mut cluster = Cluster {
            children: Vec::new(),
            client: Client::new(&url, &admin_token)?,
            dir,
        };
        let etcd_url = format!("http://127.0.0.1:{client}");
        cluster.spawn(
            &bin.join("etcd"),
            "etcd",
            &[
                "--data-dir".into(),
                path("etcd").display().to_string(),
                "--listen-client-urls".into(),
                etcd_url.clone(),
                "--advertise-client-urls".into(),
                etcd_url.clone(),
                "--listen-peer-urls".into(),
                format!("http://127.0.0.1:{peer}"),
                "--initial-advertise-peer-urls".into(),
                format!("http://127.0.0.1:{peer}"),
                "--initial-cluster".into(),
                format!("default=http://127.0.0.1:{peer}"),
            ],
        )?;
        cluster.spawn(
            &bin.join("kube-apiserver"),
            "kube-apiserver",
            &[
                format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={secure}"),
                format!("--cert-dir={}", path("certs").display()),
                "--service-account-issuer=https://kubernetes.default.svc".into(),
                format!("--service-account-key-file={}", path("sa.pub").display()),
                format!(
                    "--service-account-signing-key-file={}",
                    path("sa.key").display()
                ),
                format!("--token-auth-file={}", path("tokens.csv").display()),
                "--authorization-mode=RBAC".into(),
                "--service-cluster-ip-range=10.96.0.0/16".into(),
            ]
            .into_iter()
            .chain(apiserver_args.iter().cloned())
            .collect::<Vec<String>>(),
        )?;
        cluster
            .client
            .wait_ready(cluster.dir.path(), &mut cluster.children)?;
        cluster.client.ca_pem = std::fs::read_to_string(path("certs").join("apiserver.crt"))
            .map_err(|e| format!("the API server's certificate: {e}"))?;
        let kubeconfig = cluster.kubeconfig(&cluster.admin_token.clone());
        write("admin.kubeconfig", &kubeconfig)?;
        let admin = path("admin.kubeconfig").display().to_string();
        cluster.spawn(
            &bin.join("kube-scheduler"),
            "kube-scheduler",
            &[
                format!("--kubeconfig={admin}"),
                format!("--authentication-kubeconfig={admin}"),
                format!("--authorization-kubeconfig={admin}"),
                "--secure-port=0".into(),
                "--leader-elect=false".into(),
            ],
        )?;
        for ns in ["default", NAMESPACE] {
            if ns != "default" {
                cluster.create(
                    "/api/v1/namespaces",
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                )?;
            }
            // What kube-controller-manager's service account controller would create.
            cluster.create(
                &format!("/api/v1/namespaces/{ns}/serviceaccounts"),
                json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}),
            )?;
        }
        for node in nodes {
            cluster.register(node)?;
        }
        Ok(cluster)
    }

    fn spawn(&mut self, program: &Path, name: &str, args: &[String]) -> Result<(), String> {
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log")))
            .map_err(|e| e.to_string())?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(program)
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("{}: {e}", program.display()))?;
        self.children.push(child);
        Ok(())
    }

    /// A client of its own, for another thread.
    pub fn client(&self) -> Result<Client, String> {
        self.client.another()
    }

    /// The last lines a component logged, for a failure's message.
    pub fn log_tail(&self, name: &str) -> String {
        log_tail(self.dir.path(), name)
    }
}

fn log_tail(dir: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

impl Client {
    /// Waits until the API server answers ready; an error at once if it or etcd (`processes`)
    /// exits.
    fn wait_ready(&self, cluster_dir: &Path, processes: &mut [Child]) -> Result<(), String> {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(120) {
            if let Ok((200, _)) = self.call_raw("GET", "/readyz", None, &self.admin_token) {
                return Ok(());
            }
            if let Some(status) = processes
                .iter_mut()
                .find_map(|p| p.try_wait().ok().flatten())
            {
                return Err(format!(
                    "the control plane stopped ({status}):\n{}\n{}",
                    log_tail(cluster_dir, "etcd"),
                    log_tail(cluster_dir, "kube-apiserver")
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Err(format!(
            "the API server was not ready within two minutes:\n{}",
            log_tail(cluster_dir, "kube-apiserver")
        ))
    }

    /// A kubeconfig for this cluster with `token`, as a user would write one: the server's
    /// certificate authority (the API server's self-signed one) in it, and the namespace
    /// [`NAMESPACE`].
    pub fn kubeconfig(&self, token: &str) -> String {
        use base64::Engine;
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: world\n  cluster:\n    server: {}\n    \
             certificate-authority-data: {ca}\nusers:\n- name: user\n  user:\n    token: {token}\n\
             contexts:\n- name: world\n  context:\n    cluster: world\n    user: user\n    \
             namespace: {NAMESPACE}\ncurrent-context: world\n",
            self.url
        )
    }

    fn call_raw(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, Value)>,
        token: &str,
    ) -> Result<(u16, Value), String> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(token);
        if let Some((content_type, body)) = body {
            request = request
                .header("content-type", content_type)
                .body(body.to_string());
        }
        self.rt.block_on(async {
            let response = request.send().await.map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let text = response.text().await.map_err(|e| e.to_string())?;
            Ok((
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            ))
        })
    }

    /// A call as `token`: its HTTP status and JSON answer.
    pub fn call_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        self.call_raw(method, path, body.map(|b| ("application/json", b)), token)
    }

    /// A GET as the world's admin.
    pub fn get(&self, path: &str) -> Result<Value, String> {
        match self.call_raw("GET", path, None, &self.admin_token)? {
            (200, v) => Ok(v),
            (status, v) => Err(format!("GET {path}: {status} {v}")),
        }
    }

    /// A POST as the world's admin; the created object.
    pub fn create(&self, path: &str, body: Value) -> Result<Value, String> {
        match self.call_raw(
            "POST",
            path,
            Some(("application/json", body)),
            &self.admin_token,
        )? {
            (200 | 201, v) => Ok(v),
            (status, v) => Err(format!("POST {path}: {status} {v}")),
        }
    }

    /// A JSON merge patch as the world's admin; the HTTP status.
    pub fn call_merge_patch(&self, path: &str, body: Value) -> Result<u16, String> {
        Ok(self
            .call_raw(
                "PATCH",
                path,
                Some(("application/merge-patch+json", body)),
                &self.admin_token,
            )?
            .0)
    }

    fn merge_patch(&self, path: &str, body: Value) -> Result<Value, String> {
        match self.call_raw(
            "PATCH",
            path,
            Some(("application/merge-patch+json", body)),
            &self.admin_token,
        )? {
            (200, v) => Ok(v),
            (status, v) => Err(format!("PATCH {path}: {status} {v}")),
        }
    }

    /// Registers a node as its kubelet would (the Node, then its status: capacity and `Ready`),
    /// then lifts the `not-ready` taint the API server put on it, as the node lifecycle
    /// controller does for a node that reports `Ready`.
    pub fn register(&self, node: &NodeSpec) -> Result<(), String> {
        let name = &node.name;
        self.create(
            "/api/v1/nodes",
            json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": {
                    "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                }},
            }),
        )?;
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let mut capacity = json!({"cpu": "8", "memory": "32Gi", "pods": "110"});
        if node.gpus > 0 {
            capacity["nvidia.com/gpu"] = json!(node.gpus.to_string());
        }
        self.merge_patch(
            &format!("/api/v1/nodes/{name}/status"),
            json!({"status": {
                "capacity": capacity, "allocatable": capacity,
                "conditions": [{
                    "type": "Ready", "status": "True", "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                    "lastHeartbeatTime": now, "lastTransitionTime": now,
                }],
            }}),
        )?;
        self.merge_patch(
            &format!("/api/v1/nodes/{name}"),
            json!({"spec": {"taints": null}}),
        )?;
        Ok(())
    }

    /// A pod of [`NAMESPACE`], as the API server has it now.
    pub fn pod(&self, name: &str) -> Option<Value> {
        self.get(&format!("/api/v1/namespaces/{NAMESPACE}/pods/{name}"))
            .ok()
    }

    /// Waits up to `limit` for `done` on the pod `name`; the pod as it was last seen.
    pub fn wait_for_pod(
        &self,
        name: &str,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let started = Instant::now();
        loop {
            let pod = self.pod(name);
            if pod.as_ref().is_some_and(&done) || started.elapsed() > limit {
                return pod;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits up to `limit` until the pod `name` is gone; whether it is.
    pub fn wait_pod_gone(&self, name: &str, limit: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < limit {
            if self.pod(name).is_none() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        self.pod(name).is_none()
    }

    /// A token of the ServiceAccount `name` of [`NAMESPACE`], as the TokenRequest API issues it.
    pub fn service_account_token(&self, name: &str) -> Result<String, String> {
        let answer = self.create(
            &format!("/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{name}/token"),
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                   "spec": {"expirationSeconds": 3600}}),
        )?;
        answer["status"]["token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no token in {answer}"))
    }
}

/// gpu-runner's ServiceAccount, Role and RoleBinding as the README gives them.
pub const DOCUMENTED_ROLE: &str = include_str!("../../../docs/kubernetes/gpu-runner.yaml");

impl Cluster {
    /// Applies `docs/kubernetes/gpu-runner.yaml` as a cluster admin would, and returns a
    /// kubeconfig whose user is its ServiceAccount: bound to exactly that Role, nothing else.
    pub fn gpu_runner_kubeconfig(&self) -> Result<String, String> {
        for doc in serde_yaml::Deserializer::from_str(DOCUMENTED_ROLE) {
            let object: Value =
                serde::Deserialize::deserialize(doc).map_err(|e| format!("the Role: {e}"))?;
            let namespace = object["metadata"]["namespace"]
                .as_str()
                .unwrap_or(NAMESPACE);
            let path = match object["kind"].as_str() {
                // The world made the namespace at start: apply its labels as `kubectl apply`
                // would, which turns on the Pod Security admission they name.
                Some("Namespace") => {
                    let name = object["metadata"]["name"].as_str().unwrap_or(NAMESPACE);
                    let status = self.call_merge_patch(
                        &format!("/api/v1/namespaces/{name}"),
                        json!({"metadata": {"labels": object["metadata"]["labels"]}}),
                    )?;
                    if status != 200 {
                        return Err(format!("labelling the namespace {name}: HTTP {status}"));
                    }
                    continue;
                }
                Some("ServiceAccount") => format!("/api/v1/namespaces/{namespace}/serviceaccounts"),
                Some("Role") => {
                    format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles")
                }
                Some("RoleBinding") => format!(
                    "/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings"
                ),
                other => return Err(format!("the Role document holds a {other:?}")),
            };
            self.create(&path, object)?;
        }
        Ok(self.kubeconfig(&self.service_account_token("gpu-runner")?))
    }

    /// The names of the objects of `resource` (`pods`, `secrets`) gpu-runner made in
    /// [`NAMESPACE`].
    pub fn gpu_runner_objects(&self, resource: &str) -> Vec<String> {
        self.get(&format!(
            "/api/v1/namespaces/{NAMESPACE}/{resource}?labelSelector=app.kubernetes.io%2Fmanaged-by%3Dgpu-runner"
        ))
        .ok()
        .and_then(|list| list["items"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_owned))
        .collect()
    }
}
