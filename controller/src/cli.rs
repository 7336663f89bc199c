//! The `flotilla` command line (definitions; the commands are in [`crate::commands`]).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

/// Flotilla: a container orchestrator for fleets of ARM and bare-metal edge devices.
///
/// One binary, like k3s: `flotilla server` runs the control plane (store,
/// API, reconcilers, scheduler); the other subcommands talk to it with
/// kubectl's habits. They find the server with --server / FLOTILLA_SERVER
/// and authenticate with the token the server wrote to its data directory
/// (--token-file, or the token itself in FLOTILLA_TOKEN). As with kubectl,
/// --server, --token-file, -n and -o may come before the verb as well as
/// after it: `flotilla --server URL -n line-3 get pods`.
#[derive(Debug, Parser)]
#[command(name = "flotilla", version, about, long_about)]
pub struct Cli {
    /// Client options given before the verb.
    #[command(flatten)]
    pub leading: LeadingArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the process's arguments like [`Parser::parse`] (on an error,
    /// prints clap's message and exits), by [`Cli::try_parse_args`]' rules.
    pub fn parse_args() -> Cli {
        Cli::try_parse_args(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }

    /// Parses a command line. Client options given before the verb go to it
    /// (see [`LeadingArgs`]; the same option after the verb wins), and a
    /// client option the verb has no use for is refused.
    pub fn try_parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let mut command = Cli::command();
        let matches = command.try_get_matches_from_mut(args)?;
        let mut cli = Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut command))?;
        let verb = verb_of(&matches);
        // clap copies a global option's value to every level of the
        // matches: one given before or after the verb shows here.
        let given = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
        let (talks_to_server, takes_namespace) = cli.command.client_options();
        let misplaced = [
            ("--server", "server", talks_to_server),
            ("--token-file", "token_file", talks_to_server),
            ("--ca-file", "ca_file", talks_to_server),
            ("-n/--namespace", "namespace", takes_namespace),
        ]
        .into_iter()
        .find(|&(_, id, wanted)| !wanted && given(id));
        if let Some((flag, _, _)) = misplaced {
            let hint = match (verb.as_str(), flag) {
                ("server", "--server") => " (the server listens on --api-addr)",
                ("apply", "-n/--namespace") => " (manifests name their namespace in metadata.namespace)",
                _ => "",
            };
            let message = format!("{flag} is not an option of `flotilla {verb}`{hint}");
            return Err(command.error(ErrorKind::ArgumentConflict, message));
        }
        // clap checks `-A` against a `-n` after the verb only.
        if let Command::Get(get) = &cli.command
            && get.all_namespaces
            && given("namespace")
        {
            let message = "-n/--namespace and -A/--all-namespaces exclude each other";
            return Err(command.error(ErrorKind::ArgumentConflict, message));
        }
        if let Some(format) = cli.leading.output {
            match &mut cli.command {
                Command::Get(get) => _ = get.output.get_or_insert(format),
                Command::Apply(ApplyArgs { output, .. })
                | Command::Node(NodeArgs {
                    command:
                        NodeCommand::Token(NodeTokenArgs { command: NodeTokenCommand::Ls(TokenLsArgs { output, .. }) }),
                }) => {
                    if format != OutputFormat::Json {
                        let message = format!("`flotilla {verb}` has -o json only");
                        return Err(command.error(ErrorKind::InvalidValue, message));
                    }
                    _ = output.get_or_insert(ApplyOutput::Json);
                }
                _ => {
                    let message = format!("-o/--output is not an option of `flotilla {verb}`");
                    return Err(command.error(ErrorKind::ArgumentConflict, message));
                }
            }
        }
        Ok(cli)
    }
}

/// The subcommands a command line chose, e.g. `node token ls`.
fn verb_of(matches: &ArgMatches) -> String {
    let mut words = Vec::new();
    let mut at = matches;
    while let Some((name, sub)) = at.subcommand() {
        words.push(name);
        at = sub;
    }
    words.join(" ")
}

/// The client options as they may come before the verb, kubectl style:
/// `flotilla --server URL -n line-3 get pods` is `flotilla get pods
/// --server URL -n line-3`.
///
/// `--server`, `--token-file` and `-n` are global and have the ids of the
/// verbs' own options ([`ClientArgs`] and each verb's `namespace`): clap
/// does not add a global option to a subcommand that has one of its id, and
/// it hands a value given on the command line to that option unless the
/// same option is given after the verb too. Being global, they also parse
/// after verbs that have no use for them (`flotilla server --server URL`);
/// they are hidden from those verbs' help, and [`Cli::try_parse_args`]
/// refuses them. `-o` is not global, because `image build -o DIR` is
/// another option: [`Cli::try_parse_args`] hands it to `get`, `apply` and
/// `node token ls`.
#[derive(Debug, Clone, clap::Args)]
pub struct LeadingArgs {
    /// The server's API URL (`--server` of the verb).
    #[arg(long, global = true, hide = true)]
    pub server: Option<String>,
    /// File holding the API token (`--token-file` of the verb).
    #[arg(long, global = true, hide = true)]
    pub token_file: Option<PathBuf>,
    /// The fleet CA certificate (`--ca-file` of the verb).
    #[arg(long, global = true, hide = true)]
    pub ca_file: Option<PathBuf>,
    /// Namespace (`-n` of the verb).
    #[arg(short = 'n', long, global = true, hide = true)]
    pub namespace: Option<String>,
    /// Output format (`-o` of get, apply and node token ls).
    #[arg(short = 'o', long = "output", value_enum, hide = true)]
    pub output: Option<OutputFormat>,
}

/// The subcommands of `flotilla`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller: store, API, scheduler and reconcilers.
    Server(Box<ServerArgs>),
    /// Apply manifests (Kubernetes-style YAML or JSON), atomically.
    ///
    /// Every document is checked first; fields Flotilla does not support are
    /// listed as warnings, and one invalid document refuses the whole apply.
    Apply(ApplyArgs),
    /// List objects, or show one, as a table, YAML or JSON.
    ///
    /// Examples: `flotilla get pods -A`, `flotilla get nodes -o wide`,
    /// `flotilla get deploy web -o yaml`, `flotilla get pods -l app=web -w`.
    Get(GetArgs),
    /// Show one object in detail, with its scheduling reason and conditions.
    Describe(DescribeArgs),
    /// Delete objects by name, or those of manifest files.
    Delete(DeleteArgs),
    /// Print a pod's container output (stdout and stderr), fetched from its device.
    ///
    /// Output stays on the device (bounded, rotated files) until asked for, so
    /// the device must be connected. Examples: `flotilla logs web-7f3a-0`,
    /// `flotilla logs sensor-bc97-1 --tail 20 -f`.
    Logs(LogsArgs),
    /// Follow and steer Deployment rollouts: status, history, undo, pause, resume, restart.
    ///
    /// A template change rolls out within maxSurge/maxUnavailable; a revision
    /// that crash-loops or misses progressDeadlineSeconds is rolled back by
    /// itself, and `rollout status` exits non-zero saying why.
    Rollout(RolloutArgs),
    /// Enrol devices: `flotilla node token create|ls|revoke`, `flotilla node revoke`.
    Node(NodeArgs),
    /// OCI images: build them, push them into a registry, list a registry.
    Image(ImageArgs),
    /// Write password, ACL and config files for an external Mosquitto broker
    /// (`flotilla server --mqtt-url`); run it again after enrolling nodes, then reload
    /// Mosquitto (SIGHUP).
    MosquittoConfig(MosquittoConfigArgs),
    /// Print a shell completion script (e.g. `flotilla completion bash > /etc/bash_completion.d/flotilla`).
    Completion(CompletionArgs),
}

impl Command {
    /// Whether the command talks to the server (`--server`, `--token-file`)
    /// and whether it takes `-n`.
    fn client_options(&self) -> (bool, bool) {
        match self {
            Command::Get(_) | Command::Describe(_) | Command::Delete(_) | Command::Logs(_) | Command::Rollout(_) => {
                (true, true)
            }
            Command::Apply(_) | Command::Node(_) => (true, false),
            Command::Image(image) => (!matches!(image.command, ImageCommand::Build(_)), false),
            Command::Server(_) | Command::MosquittoConfig(_) | Command::Completion(_) => (false, false),
        }
    }
}

/// How client commands reach the server (also before the verb: see [`LeadingArgs`]).
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// The server's API URL (http:// for a server run with --plain).
    #[arg(long, env = "FLOTILLA_SERVER", default_value = "https://127.0.0.1:7440")]
    pub server: String,
    /// File holding the API token [default: <data dir>/token, see `flotilla server --help`].
    #[arg(long, env = "FLOTILLA_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The fleet CA certificate that https:// servers must be signed by (copy it from the
    /// server's <data dir>/tls/ca.pem) [default: <data dir>/tls/ca.pem if it exists, else the
    /// public roots].
    #[arg(long, env = "FLOTILLA_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

impl ClientArgs {
    /// The token file to read.
    pub fn token_file(&self) -> PathBuf {
        self.token_file.clone().unwrap_or_else(|| crate::server::default_data_dir().join(crate::server::TOKEN_FILE))
    }

    /// The CA file to trust.
    pub fn ca_file(&self) -> PathBuf {
        self.ca_file.clone().unwrap_or_else(|| crate::tls::FleetCa::cert_path(&crate::server::default_data_dir()))
    }
}

/// Options of `flotilla apply`.
#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// Manifest files, directories (their .yaml, .yml and .json files) or `-` for stdin.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Treat every warning (ignored field, skipped kind) as an error.
    #[arg(long)]
    pub strict: bool,
    /// Store nothing, only say what the apply would do. `--dry-run` (or `=server`) sends the
    /// manifests to the server, which checks them against what it stores and answers created,
    /// configured or unchanged; `--dry-run=client` only checks them here (no server needed).
    #[arg(
        long,
        value_enum,
        value_name = "WHERE",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "server"
    )]
    pub dry_run: Option<DryRun>,
    /// Print the result as JSON (warnings and one entry per object).
    #[arg(short = 'o', long = "output", value_enum)]
    pub output: Option<ApplyOutput>,
    /// Then wait until the applied Deployments, DaemonSets and StatefulSets are available and
    /// the Jobs complete, with a live line each (plain lines when stderr is not a terminal);
    /// exit non-zero if one fails (a rollout rolled back, a Job given up) or at --timeout.
    #[arg(long, conflicts_with = "dry_run")]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, requires = "wait")]
    pub timeout: std::time::Duration,
    /// Server and token.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Where `apply --dry-run` checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DryRun {
    /// The server: its checks, against what it stores; it stores nothing.
    Server,
    /// Only the checks this command makes itself; no server needed.
    Client,
}

/// Output of `apply`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ApplyOutput {
    /// The server's answer as JSON.
    Json,
}

/// Output formats of `get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// More columns.
    Wide,
    /// YAML (Secrets show base64 data).
    Yaml,
    /// JSON, stable for scripts: a `List` with `items`, or the object.
    Json,
    /// `kind/name` per line.
    Name,
}

/// Options of `flotilla get`.
#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// Resource: pods (po, replicas), nodes (no), deployments (deploy), daemonsets (ds), jobs,
    /// services (svc), configmaps (cm), secrets, namespaces (ns).
    pub resource: String,
    /// Only this object.
    pub name: Option<String>,
    /// Namespace.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// All namespaces.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    pub all_namespaces: bool,
    /// Label selector, e.g. `app=web,tier!=db`.
    #[arg(short = 'l', long, default_value = "")]
    pub selector: String,
    /// Output format (default: a table).
    #[arg(short = 'o', long = "output", value_enum)]
    pub output: Option<OutputFormat>,
    /// After listing, print changes as they happen (Ctrl-C to stop).
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Server and token.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Options of `flotilla describe`.
#[derive(Debug, clap::Args)]
pub struct DescribeArgs {
    /// Resource (as for `get`).
    pub resource: String,
    /// Name.
    pub name: String,
    /// Namespace.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Server and token.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `flotilla rollout`.
#[derive(Debug, clap::Args)]
pub struct RolloutArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: RolloutCommand,
}

/// Which Deployment.
#[derive(Debug, Clone, clap::Args)]
pub struct RolloutTarget {
    /// `deployment/NAME`, `deploy/NAME` or `NAME`.
    pub name: String,
    /// Namespace.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
}

/// The `flotilla rollout` verbs.
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Wait for the rollout to finish; exit 1 with the reason if it failed (and was rolled back).
    Status {
        /// Which Deployment.
        #[command(flatten)]
        target: RolloutTarget,
        /// Give up after this long (e.g. `5m`) [default: wait forever].
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<std::time::Duration>,
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the revisions kept (revisionHistoryLimit), with their state and why one failed.
    History {
        /// Which Deployment.
        #[command(flatten)]
        target: RolloutTarget,
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Go back to the previous complete revision (or `--to-revision N`).
    Undo {
        /// Which Deployment.
        #[command(flatten)]
        target: RolloutTarget,
        /// The revision to go back to (see `rollout history`).
        #[arg(long)]
        to_revision: Option<u64>,
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Stop replacing replicas until `resume`.
    Pause {
        /// Which Deployment.
        #[command(flatten)]
        target: RolloutTarget,
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Continue a paused rollout.
    Resume {
        /// Which Deployment.
        #[command(flatten)]
        target: RolloutTarget,
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Replace every replica with a fresh one (a new revision of the same template); also retries a failed revision.
    Restart {
        /// Which Deployment.
        #[command(flatten)]
        target: RolloutTarget,
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Options of `flotilla logs`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The pod (replica) name, as `flotilla get pods` shows it.
    pub name: String,
    /// Namespace.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Which container of the pod (default: the one its
    /// `kubectl.kubernetes.io/default-container` annotation names, else the
    /// first app container). Init containers and sidecars are named too.
    #[arg(short = 'c', long, value_name = "NAME")]
    pub container: Option<String>,
    /// Only the last N lines.
    #[arg(long, value_name = "N")]
    pub tail: Option<u32>,
    /// At most this many bytes (the device keeps about 3 MiB per replica).
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    pub limit_bytes: u32,
    /// Keep printing new output as it is written (polls the device every second; Ctrl-C stops).
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Server and token.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Options of `flotilla delete`.
#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// Resource (as for `get`), then names.
    #[arg(required_unless_present = "files")]
    pub resource: Option<String>,
    /// Names.
    pub names: Vec<String>,
    /// Delete the objects of these manifests instead.
    #[arg(short = 'f', long = "filename", conflicts_with = "resource")]
    pub files: Vec<PathBuf>,
    /// Namespace.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Server and token.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Options of `flotilla completion`.
#[derive(Debug, clap::Args)]
pub struct CompletionArgs {
    /// The shell.
    pub shell: clap_complete::Shell,
}

/// Options of `flotilla server`.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Directory for the controller's durable state: the store (store.redb), the Secret key
    /// (secrets.key), the API token (token) and the fleet's TLS CA (tls/: devices pin it, so back
    /// it up with the rest) [default: /var/lib/flotilla as root, else ~/.local/share/flotilla].
    #[arg(long, env = "FLOTILLA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where objects are stored: `redb` (the embedded store, <data dir>/store.redb) or
    /// `etcd://host1:2379,host2:2379,host3:2379[/prefix]` (etcd v3, replicated; run etcd with
    /// --max-txn-ops 4096 --max-request-bytes 33554432). Several controllers may share one
    /// etcd: one leads (runs the reconcilers, the scheduler and the publisher), the others stand
    /// by and serve the API, and one of them takes over when the leader is lost. They need the
    /// same token, secrets.key, controller.key, controller.pub and tls/ (copy them from the first
    /// controller's data directory; a controller with other keys is refused) and an external
    /// broker (--mqtt-url). The enrolment (join tokens, node credentials) is kept on etcd.
    #[arg(long, env = "FLOTILLA_STORE", default_value = "redb", value_parser = parse_store)]
    pub store: crate::server::StoreChoice,
    /// With --store etcd: how long the leader's lease lasts; a lost leader is replaced within
    /// it. Shorter fails over sooner, and makes a leader that misses etcd for two thirds of it
    /// give up leading.
    #[arg(long, env = "FLOTILLA_LEADER_LEASE", default_value = "3s", value_parser = humantime::parse_duration)]
    pub leader_lease: std::time::Duration,
    /// Where the image registry keeps its blobs and manifests [default: <data dir>/registry].
    /// With several controllers, a directory they share (NFS or similar), so any of them
    /// serves what was pushed through another.
    #[arg(long, env = "FLOTILLA_REGISTRY_DIR")]
    pub registry_dir: Option<PathBuf>,
    /// Address the API (and the image registry, /v2/) listens on, over HTTPS (HTTP with
    /// --plain). Use 0.0.0.0:7440 when devices must enrol and pull images over the network.
    #[arg(long, env = "FLOTILLA_API_ADDR", default_value = "127.0.0.1:7440")]
    pub api_addr: SocketAddr,
    /// Address the embedded MQTT broker listens on, MQTT over TLS [default: 0.0.0.0:8883, or
    /// 0.0.0.0:1883 with --plain] (ignored with --mqtt-url).
    #[arg(long, env = "FLOTILLA_MQTT_LISTEN")]
    pub mqtt_listen: Option<SocketAddr>,
    /// Serve the API, the registry and the embedded broker without TLS (http://, mqtt://).
    /// Only for a demo on one machine or a network you control: devices' broker passwords
    /// and image contents then cross it in clear. Without it the controller makes a CA at
    /// first start (<data dir>/tls/ca.pem) and serves TLS with a certificate from it.
    #[arg(long, env = "FLOTILLA_PLAIN")]
    pub plain: bool,
    /// Another name (DNS name or IP address) devices may reach this controller by, for its TLS
    /// certificate (repeatable). The certificate always names --advertise, this host's name
    /// and loopback.
    #[arg(long = "tls-name", value_name = "NAME")]
    pub tls_names: Vec<String>,
    /// Use this external MQTT broker (mqtt://host:port, e.g. Mosquitto for large fleets) instead
    /// of the embedded one. Create its password and ACL files with `flotilla mosquitto-config`.
    #[arg(long, env = "FLOTILLA_MQTT_URL")]
    pub mqtt_url: Option<String>,
    /// With --mqtt-url: the directory `flotilla mosquitto-config --out` wrote. The server keeps
    /// its passwd and acl files in step with enrolments, revocations and rotations and sends
    /// Mosquitto SIGHUP (the pid in its mosquitto.pid), so no operator step is needed.
    #[arg(long, env = "FLOTILLA_MOSQUITTO_DIR", requires = "mqtt_url")]
    pub mosquitto_dir: Option<PathBuf>,
    /// Host name or address devices use to reach this controller (broker and registry); it is
    /// handed to agents at enrolment [default: the API address, or 127.0.0.1 if that is 0.0.0.0].
    #[arg(long, env = "FLOTILLA_ADVERTISE")]
    pub advertise: Option<String>,
    /// MQTT topic prefix.
    #[arg(long, default_value = crate::fleet::DEFAULT_PREFIX)]
    pub mqtt_prefix: String,
    /// How long a node whose connection dropped (its MQTT Last Will) keeps its replicas before
    /// they are placed elsewhere. Long enough for an agent restart to reconnect, short enough
    /// that a silent partition is handled within 1.5 x keep-alive + 1 s.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    pub eviction_grace: std::time::Duration,
    /// A node that stays connected but sends no heartbeat for this long (a hung agent)
    /// counts as lost. Agents send one every --heartbeat (default 5m), so keep this above
    /// twice that. A dropped connection is noticed much sooner, by the MQTT Last Will.
    #[arg(long, default_value = "11m", value_parser = humantime::parse_duration)]
    pub lease: std::time::Duration,
    /// Embedded broker: messages a second one device login may send, sustained (ten seconds'
    /// worth may come at once). A login over this or --node-bytes-per-sec is disconnected and
    /// refused for --node-cut-off. An agent sends far fewer.
    #[arg(long, default_value_t = crate::fleet::gate::LoginLimits::default().messages_per_second)]
    pub node_messages_per_sec: std::num::NonZeroU32,
    /// Embedded broker: bytes a second one device login may send, sustained.
    #[arg(long, default_value_t = crate::fleet::gate::LoginLimits::default().bytes_per_second)]
    pub node_bytes_per_sec: std::num::NonZeroU32,
    /// Largest API request body, in MiB: an apply over it is refused (413) with this limit in
    /// the answer. Image uploads to the registry are not limited by it.
    #[arg(long, default_value_t = (crate::api::DEFAULT_MAX_BODY >> 20) as u64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub max_request_body_mib: u64,
    /// Free space, in MiB, that applies and image uploads leave on the data volume, for the
    /// controllers' own writes; past it they are refused (507) with the figures [default: 5 % of
    /// the volume, at most 256 MiB].
    #[arg(long)]
    pub disk_reserve_mib: Option<u64>,
    /// Embedded broker: how long a device login that went over its limits is refused.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub node_cut_off: std::time::Duration,
    /// How long a device's credentials (MAC key and, on the embedded broker, its broker
    /// password) live. Agents get new ones over the control channel once half of it has
    /// passed, with no restart of their workloads; a device offline for longer enrols again
    /// with a fresh join token. Judged on this controller's clock only, never the device's.
    #[arg(long, default_value = "90d", value_parser = humantime::parse_duration)]
    pub node_credential_lifetime: std::time::Duration,
}

/// `flotilla node ...`.
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: NodeCommand,
}

/// Subcommands of `flotilla node`.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Join tokens for new devices: `flotilla node token create|ls|revoke`.
    Token(NodeTokenArgs),
    /// Revoke an enrolled node: its credentials are removed and it is lost at once.
    ///
    /// Its broker login is refused from now on and, on the embedded broker,
    /// its open connections are closed; anything it still sends (through an
    /// external broker) is refused by the controller, which no longer has its
    /// key. Its Node goes `Ready=False (Revoked)` and its replicas move as for
    /// a lost node. With Mosquitto, a server run with --mosquitto-dir updates
    /// its password file and signals it; otherwise run `flotilla
    /// mosquitto-config` again and send Mosquitto SIGHUP: it then refuses the
    /// login and drops the connection. The Node object stays until `flotilla
    /// delete node NAME`, and the name may enrol again: run the agent with
    /// `--join` and a new join token (revoke the token that enrolled it too,
    /// if it has uses left).
    #[command(visible_alias = "reset")]
    Revoke(NodeResetArgs),
}

/// `flotilla node token ...`.
#[derive(Debug, clap::Args)]
pub struct NodeTokenArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: NodeTokenCommand,
}

/// Subcommands of `flotilla node token`.
#[derive(Debug, Subcommand)]
pub enum NodeTokenCommand {
    /// Print a join token (only its hash is kept; it is shown this once).
    ///
    /// On each device: `flotilla-agent run --join http://<controller>:7440 --token <token>`.
    /// With `--uses N` one token enrols a batch of N devices; every device it
    /// enrols gets the `--labels`. Example:
    /// `flotilla node token create --uses 500 --expires 24h --labels site=berlin,line=3`.
    Create(TokenCreateArgs),
    /// List join tokens (never their secrets): ID, USES (spent/allowed),
    /// EXPIRES, LABELS, STATE (active, expired, used up or revoked).
    ///
    /// Ended tokens are listed for a day after they expire.
    #[command(alias = "list")]
    Ls(TokenLsArgs),
    /// Revoke a join token by its ID (from `node token ls` or `create`): it
    /// enrols no more devices; those it enrolled keep their credentials.
    Revoke(TokenRevokeArgs),
}

/// Options of `flotilla node token create`.
#[derive(Debug, clap::Args)]
pub struct TokenCreateArgs {
    /// How many devices the token may enrol.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub uses: u32,
    /// How long the token stays valid (e.g. 10m, 24h; at most 366 days). `--ttl` is the old name.
    #[arg(long, visible_alias = "ttl", default_value = "1h", value_parser = humantime::parse_duration)]
    pub expires: std::time::Duration,
    /// Labels of every node the token enrols: `k=v,k2=v2` (repeatable).
    #[arg(long, value_delimiter = ',', value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Server and token.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Options of `flotilla node token ls`.
#[derive(Debug, clap::Args)]
pub struct TokenLsArgs {
    /// Print the server's JSON instead of a table.
    #[arg(short = 'o', long = "output", value_enum)]
    pub output: Option<ApplyOutput>,
    /// Server and token.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Options of `flotilla node token revoke`.
#[derive(Debug, clap::Args)]
pub struct TokenRevokeArgs {
    /// The token's ID.
    pub id: String,
    /// Server and token.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Options of `flotilla node revoke`.
#[derive(Debug, clap::Args)]
pub struct NodeResetArgs {
    /// The node's name.
    pub name: String,
    /// Server and token.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `key=value` -> `(key, value)`.
fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => Ok((key.trim().to_owned(), value.trim().to_owned())),
        _ => Err(format!("{text:?}: labels are key=value")),
    }
}

/// Options of `flotilla mosquitto-config`.
#[derive(Debug, clap::Args)]
pub struct MosquittoConfigArgs {
    /// The controller's data directory (its enrolled nodes and broker password).
    #[arg(long, env = "FLOTILLA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where to write passwd, acl and mosquitto.conf.
    #[arg(long, default_value = "mosquitto")]
    pub out: PathBuf,
    /// The port Mosquitto listens on.
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    /// MQTT topic prefix (as given to `flotilla server`).
    #[arg(long, default_value = crate::fleet::DEFAULT_PREFIX)]
    pub mqtt_prefix: String,
}

/// `flotilla image ...`.
#[derive(Debug, clap::Args)]
pub struct ImageArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ImageCommand,
}

/// Subcommands of `flotilla image`.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build an OCI image layout from static binaries or root filesystems, per architecture.
    Build(Box<flotilla_images::cli::BuildArgs>),
    /// Push an image from an OCI layout into a registry (the built-in one by default).
    Push(crate::image_cmd::PushArgs),
    /// List a registry's repositories, tags and digests.
    Ls(crate::image_cmd::LsArgs),
}

fn parse_store(text: &str) -> Result<crate::server::StoreChoice, String> {
    match text {
        "redb" => Ok(crate::server::StoreChoice::Redb),
        url if url.starts_with("etcd://") => crate::store::EtcdTarget::parse(url).map(crate::server::StoreChoice::Etcd),
        other => Err(format!("{other:?}: `redb` or `etcd://host1:2379,host2:2379`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_args(std::iter::once("flotilla").chain(args.iter().copied()))
    }

    fn get_args(args: &[&str]) -> GetArgs {
        match parse(args).unwrap().command {
            Command::Get(get) => get,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn client_options_may_come_before_or_after_the_verb() {
        for args in [
            &["--server", "http://pi:7440", "get", "pods"][..],
            &["get", "pods", "--server", "http://pi:7440"],
            &["get", "--server", "http://pi:7440", "pods"],
        ] {
            assert_eq!(get_args(args).client.server, "http://pi:7440", "{args:?}");
        }
        let get = get_args(&["--token-file", "/t", "-n", "kube-system", "-o", "json", "get", "pods"]);
        assert_eq!(get.client.token_file, Some(PathBuf::from("/t")));
        assert_eq!(get.namespace, "kube-system");
        assert_eq!(get.output, Some(OutputFormat::Json));
        assert_eq!(get_args(&["get", "pods"]).namespace, "default");
        // Given on both sides, the one after the verb wins.
        let get = get_args(&["-n", "a", "--server", "http://a", "-o", "json", "get", "pods", "-n", "b"]);
        assert_eq!(get.namespace, "b");
        let get =
            get_args(&["--server", "http://a", "-o", "json", "get", "pods", "--server", "http://b", "-o", "name"]);
        assert_eq!((get.client.server.as_str(), get.output), ("http://b", Some(OutputFormat::Name)));
    }

    #[test]
    fn client_options_before_the_verb_reach_nested_verbs() {
        match parse(&["--server", "http://pi:7440", "-n", "line-3", "rollout", "status", "web"]).unwrap().command {
            Command::Rollout(RolloutArgs { command: RolloutCommand::Status { target, client, .. } }) => {
                assert_eq!((target.namespace.as_str(), client.server.as_str()), ("line-3", "http://pi:7440"));
            }
            other => panic!("{other:?}"),
        }
        match parse(&["-o", "json", "--server", "http://pi:7440", "node", "token", "ls"]).unwrap().command {
            Command::Node(NodeArgs {
                command: NodeCommand::Token(NodeTokenArgs { command: NodeTokenCommand::Ls(ls) }),
            }) => {
                assert_eq!((ls.output, ls.client.server.as_str()), (Some(ApplyOutput::Json), "http://pi:7440"));
            }
            other => panic!("{other:?}"),
        }
        match parse(&["-o", "json", "apply", "-f", "web.yaml"]).unwrap().command {
            Command::Apply(apply) => assert_eq!(apply.output, Some(ApplyOutput::Json)),
            other => panic!("{other:?}"),
        }
        // `image build -o DIR` is its own option.
        match parse(&["image", "build", "--tag", "a:1", "-o", "out"]).unwrap().command {
            Command::Image(ImageArgs { command: ImageCommand::Build(build) }) => {
                assert_eq!(build.output, PathBuf::from("out"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn client_options_are_refused_where_they_mean_nothing() {
        for args in [
            &["server", "--server", "http://pi:7440"][..],
            &["--server", "http://pi:7440", "server"],
            &["-n", "x", "server"],
            &["--token-file", "/t", "completion", "bash"],
            &["apply", "-f", "web.yaml", "-n", "x"],
            &["-n", "x", "node", "token", "create"],
            &["-o", "json", "describe", "pod", "web"],
            &["-o", "yaml", "apply", "-f", "web.yaml"],
            &["-o", "json", "image", "build", "--tag", "a:1"],
            &["-n", "x", "get", "pods", "-A"],
        ] {
            assert!(parse(args).is_err(), "{args:?} was accepted");
        }
        let error = parse(&["--server", "http://pi:7440", "server"]).unwrap_err().to_string();
        assert!(error.contains("--server is not an option of `flotilla server`"), "{error}");
        assert!(matches!(parse(&["server"]).unwrap().command, Command::Server(_)));
    }

    #[test]
    fn dry_run_is_server_side_unless_client_is_asked_for() {
        let dry_run = |args: &[&str]| match parse(args).unwrap().command {
            Command::Apply(apply) => apply.dry_run,
            other => panic!("{other:?}"),
        };
        assert_eq!(dry_run(&["apply", "-f", "web.yaml"]), None);
        assert_eq!(dry_run(&["apply", "--dry-run", "-f", "web.yaml"]), Some(DryRun::Server));
        assert_eq!(dry_run(&["apply", "-f", "web.yaml", "--dry-run"]), Some(DryRun::Server));
        assert_eq!(dry_run(&["apply", "--dry-run=server", "-f", "web.yaml"]), Some(DryRun::Server));
        assert_eq!(dry_run(&["apply", "--dry-run=client", "-f", "web.yaml"]), Some(DryRun::Client));
        assert!(parse(&["apply", "--dry-run=later", "-f", "web.yaml"]).is_err());
    }
}
