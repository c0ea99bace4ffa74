use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tempfile::TempDir;

use crate::error::{Error, Result};
use crate::net::{free_port, http};
use crate::process::{Proc, keep_dir, owned_temp_dir, stop_all, tail};
use crate::tools::{Tools, pki};
use crate::{KWOK_NODE_ANNOTATION, KWOK_NODE_ANNOTATION_VALUE};

/// How many times a start is tried when a port was taken between choosing and binding it.
const START_ATTEMPTS: usize = 3;

/// A process of the control plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Component {
    /// etcd.
    Etcd,
    /// kube-apiserver.
    ApiServer,
    /// kube-scheduler.
    Scheduler,
    /// kube-controller-manager (only the controllers asked for).
    ControllerManager,
    /// kwok (fake kubelets).
    Kwok,
}

impl Component {
    /// The binary's name, which is also the base name of its log file.
    pub fn binary(self) -> &'static str {
        match self {
            Component::Etcd => "etcd",
            Component::ApiServer => "kube-apiserver",
            Component::Scheduler => "kube-scheduler",
            Component::ControllerManager => "kube-controller-manager",
            Component::Kwok => "kwok",
        }
    }
}

/// Which Nodes kwok manages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KwokNodes {
    /// Nodes matching this annotation selector (default: `kwok.x-k8s.io/node=fake`, see [`kwok_node`]).
    AnnotationSelector(String),
    /// Nodes matching this label selector.
    LabelSelector(String),
    /// Every Node.
    All,
}

/// How kwok runs. The default manages Nodes annotated `kwok.x-k8s.io/node=fake` and keeps their Leases
/// with a 40 s duration.
#[derive(Clone, Debug)]
pub struct KwokOptions {
    nodes: KwokNodes,
    node_lease_duration_seconds: u32,
    extra_args: Vec<String>,
}

impl Default for KwokOptions {
    fn default() -> Self {
        KwokOptions {
            nodes: KwokNodes::AnnotationSelector(format!(
                "{KWOK_NODE_ANNOTATION}={KWOK_NODE_ANNOTATION_VALUE}"
            )),
            node_lease_duration_seconds: 40,
            extra_args: Vec::new(),
        }
    }
}

impl KwokOptions {
    /// The default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// Chooses which Nodes kwok manages.
    pub fn nodes(mut self, nodes: KwokNodes) -> Self {
        self.nodes = nodes;
        self
    }

    /// kwok manages every Node.
    pub fn manage_all_nodes(self) -> Self {
        self.nodes(KwokNodes::All)
    }

    /// Duration of the node Leases kwok keeps in `kube-node-lease`; 0 turns Leases off.
    pub fn node_lease_duration_seconds(mut self, seconds: u32) -> Self {
        self.node_lease_duration_seconds = seconds;
        self
    }

    /// An extra command-line argument for kwok.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }
}

/// A Node that kwok (with default [`KwokOptions`]) manages: it becomes Ready within a second or two.
pub fn kwok_node(name: &str) -> Node {
    crate::NodeBuilder::new(name).kwok().build()
}

/// Options for [`ControlPlane`]; made by [`ControlPlane::builder`].
#[derive(Clone, Debug)]
#[must_use]
pub struct ControlPlaneBuilder {
    scheduler: bool,
    controllers: Vec<String>,
    kwok: Option<KwokOptions>,
    timeout: Duration,
    apiserver_args: Vec<String>,
}

impl Default for ControlPlaneBuilder {
    fn default() -> Self {
        ControlPlaneBuilder {
            scheduler: false,
            controllers: Vec::new(),
            kwok: None,
            timeout: Duration::from_secs(120),
            apiserver_args: Vec::new(),
        }
    }
}

impl ControlPlaneBuilder {
    /// Also run kube-scheduler (default: no).
    pub fn scheduler(mut self, enabled: bool) -> Self {
        self.scheduler = enabled;
        self
    }

    /// Also run kube-controller-manager with only these controllers (its `--controllers` names, e.g.
    /// `deployment-controller`, `replicaset-controller`); empty (the default) runs none. Everything else stays off
    /// so it cannot overlap the controllers under test.
    pub fn controller_manager<I, S>(mut self, controllers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.controllers = controllers.into_iter().map(Into::into).collect();
        self
    }

    /// Also run kwok with these options (default: no kwok).
    pub fn kwok(mut self, options: KwokOptions) -> Self {
        self.kwok = Some(options);
        self
    }

    /// How long starting may take in all (default: 120 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// An extra kube-apiserver flag, e.g. `--feature-gates=...`.
    pub fn apiserver_arg(mut self, arg: impl Into<String>) -> Self {
        self.apiserver_args.push(arg.into());
        self
    }

    /// Starts the control plane and waits until it is ready.
    ///
    /// Builds the tools first if needed (see [`Tools::get`]). Retries on fresh ports when a port was taken
    /// by someone else meanwhile.
    pub async fn start(self) -> Result<ControlPlane> {
        let tools = Tools::get_async().await?;
        // Made once per process (openssl); later calls return at once.
        match tokio::task::spawn_blocking(pki).await {
            Ok(r) => r.map(|_| ())?,
            Err(e) => return Err(Error::Tools(format!("PKI creation panicked: {e}"))),
        }
        let mut attempt = 1;
        loop {
            match self.start_once(tools).await {
                Ok(cp) => return Ok(cp),
                Err(Failure {
                    error,
                    port_conflict: true,
                }) if attempt < START_ATTEMPTS => {
                    eprintln!(
                        "test-support: a port was taken meanwhile, retrying on other ports: {error}"
                    );
                    attempt += 1;
                }
                Err(Failure { error, .. }) => return Err(error),
            }
        }
    }

    async fn start_once(&self, tools: &'static Tools) -> Result<ControlPlane, Failure> {
        let started = Instant::now();
        let deadline = started + self.timeout;
        let dir = owned_temp_dir("kube-cloud-rs-cp-")?;
        let mut running = Running {
            procs: Vec::new(),
            dir: Some(dir),
        };
        let root = running.path().to_path_buf();
        for sub in [
            "logs",
            "pki",
            "etcd",
            "apiserver-certs",
            "scheduler-certs",
            "controller-manager-certs",
            "kwok-home",
        ] {
            let path = root.join(sub);
            std::fs::create_dir_all(&path)
                .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        }
        let pki_dir = root.join("pki");
        for (name, bytes) in pki()? {
            let path = pki_dir.join(name);
            std::fs::write(&path, bytes)
                .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        }
        let log = |c: Component| root.join("logs").join(format!("{}.log", c.binary()));
        let p = |name: &str| pki_dir.join(name).to_string_lossy().into_owned();
        let d = |name: &str| root.join(name).to_string_lossy().into_owned();

        // etcd
        let (etcd_port, peer_port) = (free_port()?, free_port()?);
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut etcd = Command::new(tools.bin("etcd"));
        etcd.arg("--unsafe-no-fsync").args(flags(&[
            ("--name", "test"),
            ("--data-dir", &d("etcd")),
            ("--log-level", "warn"),
            ("--listen-client-urls", &etcd_url),
            ("--advertise-client-urls", &etcd_url),
            ("--listen-peer-urls", &peer_url),
            ("--initial-advertise-peer-urls", &peer_url),
            ("--initial-cluster", &format!("test={peer_url}")),
        ]));
        running.spawn(Component::Etcd, etcd, &log(Component::Etcd))?;
        running
            .wait_ready(Component::Etcd, started, deadline, || async move {
                match http(etcd_port, "GET", "/health").await {
                    Ok((200, body)) if body.contains("true") => Ok(()),
                    Ok((status, body)) => Err(format!("/health: {status} {body}")),
                    Err(e) => Err(format!("/health: {e}")),
                }
            })
            .await?;

        // kube-apiserver
        let port = free_port()?;
        let server_url = format!("https://127.0.0.1:{port}");
        let mut apiserver = Command::new(tools.bin("kube-apiserver"));
        apiserver
            .args(flags(&[
                ("--etcd-servers", &etcd_url),
                ("--bind-address", "127.0.0.1"),
                ("--advertise-address", "127.0.0.1"),
                ("--secure-port", &port.to_string()),
                ("--endpoint-reconciler-type", "none"),
                ("--cert-dir", &d("apiserver-certs")),
                ("--client-ca-file", &p("ca.crt")),
                ("--tls-cert-file", &p("apiserver.crt")),
                ("--tls-private-key-file", &p("apiserver.key")),
                (
                    "--service-account-issuer",
                    "https://kubernetes.default.svc.cluster.local",
                ),
                ("--service-account-key-file", &p("sa.pub")),
                ("--service-account-signing-key-file", &p("sa.key")),
                ("--service-cluster-ip-range", "10.96.0.0/16"),
                ("--authorization-mode", "RBAC"),
                ("--allow-privileged", "true"),
                // No kube-controller-manager runs: nothing would create service account tokens, nor lift
                // the not-ready taint TaintNodesByCondition puts on new Nodes (pods would never schedule).
                (
                    "--disable-admission-plugins",
                    "ServiceAccount,TaintNodesByCondition",
                ),
            ]))
            .args(&self.apiserver_args);
        running.spawn(Component::ApiServer, apiserver, &log(Component::ApiServer))?;

        let kubeconfig = root.join("kubeconfig");
        let (ca, cert, key) = (p("ca.crt"), p("admin.crt"), p("admin.key"));
        let kubeconfig_text = format!(
            r#"apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {{server: "{server_url}", certificate-authority: "{ca}"}}
users:
- name: admin
  user: {{client-certificate: "{cert}", client-key: "{key}"}}
contexts:
- name: test
  context: {{cluster: test, user: admin}}
current-context: test
"#
        );
        std::fs::write(&kubeconfig, kubeconfig_text)
            .map_err(|e| Error::io(format!("writing {}", kubeconfig.display()), e))?;
        let config = kube::Config::from_custom_kubeconfig(
            Kubeconfig::read_from(&kubeconfig).map_err(Error::from)?,
            &KubeConfigOptions::default(),
        )
        .await
        .map_err(Error::from)?;
        let client = kube::Client::try_from(config.clone()).map_err(Error::from)?;
        running
            .wait_ready(Component::ApiServer, started, deadline, || {
                let client = client.clone();
                async move {
                    let ready = get_text(&client, "/readyz").await?;
                    // Clients commonly assume the `default` namespace exists; it appears just after /readyz.
                    let namespaces: Api<Namespace> = Api::all(client);
                    match namespaces.get_opt("default").await {
                        Ok(Some(_)) if ready == "ok" => Ok(()),
                        Ok(_) => Err(format!("/readyz: {ready}; namespace default not there yet")),
                        Err(e) => Err(e.to_string()),
                    }
                }
            })
            .await?;
        let kubeconfig_str = kubeconfig.to_string_lossy().into_owned();

        // kube-scheduler
        if self.scheduler {
            let port = free_port()?;
            let mut scheduler = Command::new(tools.bin("kube-scheduler"));
            scheduler.args(component_flags(
                &kubeconfig_str,
                port,
                &d("scheduler-certs"),
            ));
            running.spawn(Component::Scheduler, scheduler, &log(Component::Scheduler))?;
            running
                .wait_healthz(Component::Scheduler, port, started, deadline)
                .await?;
        }

        // kube-controller-manager
        if !self.controllers.is_empty() {
            let port = free_port()?;
            let mut kcm = Command::new(tools.bin("kube-controller-manager"));
            kcm.args(component_flags(
                &kubeconfig_str,
                port,
                &d("controller-manager-certs"),
            ));
            kcm.args(flags(&[
                ("--controllers", &self.controllers.join(",")),
                ("--service-account-private-key-file", &p("sa.key")),
                ("--root-ca-file", &p("ca.crt")),
            ]));
            running.spawn(
                Component::ControllerManager,
                kcm,
                &log(Component::ControllerManager),
            )?;
            running
                .wait_healthz(Component::ControllerManager, port, started, deadline)
                .await?;
        }

        // kwok
        if let Some(options) = &self.kwok {
            let port = free_port()?;
            let mut kwok = Command::new(tools.bin("kwok"));
            kwok.env("HOME", d("kwok-home")).args(flags(&[
                ("--kubeconfig", &kubeconfig_str),
                (
                    "--node-lease-duration-seconds",
                    &options.node_lease_duration_seconds.to_string(),
                ),
                ("--server-address", &format!("127.0.0.1:{port}")),
            ]));
            for stage in tools.kwok_stages()? {
                kwok.arg("--config").arg(stage);
            }
            kwok.args(match &options.nodes {
                KwokNodes::AnnotationSelector(s) => {
                    flags(&[("--manage-nodes-with-annotation-selector", s)])
                }
                KwokNodes::LabelSelector(s) => flags(&[("--manage-nodes-with-label-selector", s)]),
                KwokNodes::All => vec!["--manage-all-nodes".to_string()],
            });
            kwok.args(&options.extra_args);
            running.spawn(Component::Kwok, kwok, &log(Component::Kwok))?;
            running
                .wait_ready(Component::Kwok, started, deadline, || async move {
                    match http(port, "GET", "/healthz").await {
                        Ok((200, _)) => Ok(()),
                        Ok((status, body)) => Err(format!("/healthz: {status} {body}")),
                        Err(e) => Err(format!("/healthz: {e}")),
                    }
                })
                .await?;
        }

        Ok(ControlPlane {
            running,
            tools,
            server_url,
            etcd_url,
            kubeconfig,
            config,
            client,
        })
    }
}

/// `--flag=value` arguments.
/// The flags kube-scheduler and kube-controller-manager share: our kubeconfig for everything, no leader
/// election, serving on loopback only.
fn component_flags(kubeconfig: &str, port: u16, cert_dir: &str) -> Vec<String> {
    flags(&[
        ("--kubeconfig", kubeconfig),
        ("--authentication-kubeconfig", kubeconfig),
        ("--authorization-kubeconfig", kubeconfig),
        ("--leader-elect", "false"),
        ("--bind-address", "127.0.0.1"),
        ("--secure-port", &port.to_string()),
        ("--cert-dir", cert_dir),
    ])
}

fn flags(pairs: &[(&str, &str)]) -> Vec<String> {
    pairs
        .iter()
        .map(|(flag, value)| format!("{flag}={value}"))
        .collect()
}

async fn get_text(client: &kube::Client, path: &str) -> Result<String, String> {
    let request = http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    client
        .request_text(request)
        .await
        .map(|s| s.trim().to_string())
        .map_err(|e| e.to_string())
}

/// A start failure, and whether it was a port taken meanwhile (then a retry on other ports helps).
struct Failure {
    error: Error,
    port_conflict: bool,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure {
            error,
            port_conflict: false,
        }
    }
}

/// The processes and the directory; dropping stops the processes, then removes the directory.
struct Running {
    procs: Vec<(Component, Proc)>,
    dir: Option<TempDir>,
}

impl Running {
    fn path(&self) -> &Path {
        self.dir
            .as_ref()
            .map(TempDir::path)
            .unwrap_or(Path::new("/nonexistent"))
    }

    fn spawn(&mut self, component: Component, cmd: Command, log: &Path) -> Result<()> {
        self.procs
            .push((component, Proc::spawn(component.binary(), cmd, log)?));
        Ok(())
    }

    /// Polls `check` until it succeeds; fails early when any process exits, and at the deadline.
    /// Waits until a component's own HTTPS `/healthz` on `port` answers `ok`.
    async fn wait_healthz(
        &mut self,
        component: Component,
        port: u16,
        started: Instant,
        deadline: Instant,
    ) -> Result<(), Failure> {
        let mut health = kube::Config::new(
            format!("https://127.0.0.1:{port}")
                .parse::<http::Uri>()
                .map_err(|e| Error::from(http::Error::from(e)))?,
        );
        health.accept_invalid_certs = true; // its serving certificate is self-signed
        let health = kube::Client::try_from(health).map_err(Error::from)?;
        self.wait_ready(component, started, deadline, || {
            let health = health.clone();
            async move {
                match get_text(&health, "/healthz").await?.as_str() {
                    "ok" => Ok(()),
                    other => Err(format!("/healthz: {other}")),
                }
            }
        })
        .await
    }

    async fn wait_ready<F, Fut>(
        &mut self,
        component: Component,
        started: Instant,
        deadline: Instant,
        mut check: F,
    ) -> Result<(), Failure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let log = self
            .path()
            .join("logs")
            .join(format!("{}.log", component.binary()));
        loop {
            for (_, proc) in &mut self.procs {
                if let Some(status) = proc.exit_status() {
                    return Err(Failure {
                        port_conflict: port_conflict(proc.log()),
                        error: proc.exited_error(status),
                    });
                }
            }
            let last_error = match check().await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                let error = Error::Timeout {
                    component: component.binary().to_string(),
                    waited: started.elapsed(),
                    last_error,
                    log: log.clone(),
                    log_tail: tail(&log),
                };
                return Err(Failure {
                    port_conflict: port_conflict(&log),
                    error,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn port_conflict(log: &Path) -> bool {
    std::fs::read_to_string(log).is_ok_and(|s| s.contains("address already in use"))
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut procs: Vec<Proc> = self.procs.drain(..).map(|(_, p)| p).collect();
        stop_all(&mut procs);
        if let Some(dir) = self.dir.take()
            && std::env::var_os("TEST_SUPPORT_KEEP_DIR").is_some_and(|v| !v.is_empty() && v != "0")
        {
            eprintln!("test-support: kept {}", keep_dir(dir).display());
        }
    }
}

/// A fresh etcd + kube-apiserver (and optionally kube-scheduler and kwok) on loopback, in a temporary
/// directory of its own. Dropping it stops every process and removes the directory.
pub struct ControlPlane {
    running: Running,
    tools: &'static Tools,
    server_url: String,
    etcd_url: String,
    kubeconfig: PathBuf,
    config: kube::Config,
    client: kube::Client,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("server_url", &self.server_url)
            .field("dir", &self.dir())
            .field("components", &self.components())
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// Options: kube-scheduler, kwok, timeout, extra apiserver flags.
    pub fn builder() -> ControlPlaneBuilder {
        ControlPlaneBuilder::default()
    }

    /// Starts etcd + kube-apiserver only.
    pub async fn start() -> Result<ControlPlane> {
        Self::builder().start().await
    }

    /// A client with cluster-admin rights (`system:masters`). It is bound to the async runtime that ran
    /// [`ControlPlaneBuilder::start`]; build one from [`ControlPlane::config`] for another runtime.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The client configuration behind [`ControlPlane::client`].
    pub fn config(&self) -> &kube::Config {
        &self.config
    }

    /// The kubeconfig file (admin credentials), e.g. for a binary under test or kubectl.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The apiserver's URL, `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// etcd's client URL, `http://127.0.0.1:<port>`.
    pub fn etcd_url(&self) -> &str {
        &self.etcd_url
    }

    /// The directory of the tool binaries.
    pub fn bin_dir(&self) -> PathBuf {
        self.tools.bin_dir()
    }

    /// The kubectl binary.
    pub fn kubectl_path(&self) -> PathBuf {
        self.tools.bin("kubectl")
    }

    /// A kubectl command already pointed at this control plane (`--kubeconfig`); add arguments and run it.
    pub fn kubectl(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(self.kubectl_path());
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .kill_on_drop(true);
        cmd
    }

    /// The temporary directory (kubeconfig, pki/, logs/, etcd data).
    pub fn dir(&self) -> &Path {
        self.running.path()
    }

    /// The log file of a component.
    pub fn log_path(&self, component: Component) -> PathBuf {
        self.dir()
            .join("logs")
            .join(format!("{}.log", component.binary()))
    }

    /// The components that run.
    pub fn components(&self) -> Vec<Component> {
        self.running.procs.iter().map(|(c, _)| *c).collect()
    }

    /// Stops everything and removes the directory (what dropping does).
    pub fn stop(self) {
        drop(self);
    }
}
