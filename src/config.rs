//! `Config`: everything respite can be told, from flags and an optional TOML file, validated once.
//!
//! Flags override the file; the file overrides the defaults. Keys in the file are the flag names
//! with underscores (`backend_timeout_ms = 5000`). Every error is one line a person can act on.

use crate::keymap::twemproxy::Pool;
use crate::picker::PickerKind;
use crate::resp::Limits;
use crate::tls::TlsSettings;
use clap::Parser;
use serde::Deserialize;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A configuration that cannot be used, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The validated configuration of one respite process.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address plaintext clients connect to (`None`: `--listen off`, TLS clients only).
    pub listen: Option<SocketAddr>,
    /// TLS for clients and for backends.
    pub tls: TlsSettings,
    /// Addresses given by host name (`redis.example:6380`), for TLS server names.
    pub hostnames: Vec<(SocketAddr, String)>,
    /// Equivalent endpoints that each serve the whole keyspace, in configuration order.
    pub backends: Vec<SocketAddr>,
    /// Redis instances that cluster-wide commands fan out to (masters take part; replicas are
    /// skipped by their `ROLE`). Empty: those commands go to one backend like any other.
    pub shards: Vec<SocketAddr>,
    /// Where pub/sub goes (`None`: the first healthy shard master, else the first healthy backend).
    pub pubsub: Option<SocketAddr>,
    /// The nutcracker pool the twemproxy backends run (`--twemproxy-config FILE[:POOL]`):
    /// with it, what twemproxy refuses goes to the shard master that owns its key.
    pub twemproxy: Option<Pool>,
    /// The backends are codis-proxies (`--codis`): respite follows their slot table, and their
    /// group masters are the shards unless `shards` are given.
    pub codis: bool,
    /// The shards are the nodes of a Redis Cluster, found from these seeds (`--cluster`):
    /// there are no backends, and every key goes to the master of its slot.
    pub cluster: bool,
    /// Connections of their own (transactions, blocking, pub/sub) per backend.
    pub max_session_connections: usize,
    /// Queued output over which a subscriber is disconnected.
    pub pubsub_output_limit: usize,
    /// How a backend is chosen.
    pub picker: PickerKind,
    /// Seed for the random picker (tests).
    pub seed: Option<u64>,
    /// Password clients must give (`AUTH`), if any.
    pub password: Option<String>,
    /// Password respite gives its backends, if any.
    pub backend_password: Option<String>,
    /// User name respite gives its backends with `backend_password`.
    pub backend_user: Option<String>,
    /// Multiplexed connections per backend.
    pub backend_connections: usize,
    /// Time between health probes.
    pub health_interval: Duration,
    /// Deadline for a probe's answer.
    pub health_timeout: Duration,
    /// Consecutive failures that eject a backend.
    pub fall: u32,
    /// Consecutive successes that re-admit a backend.
    pub rise: u32,
    /// A request older than this fails its backend connection.
    pub backend_timeout: Duration,
    /// Most clients connected at once (0: sized from the open-file limit when the loop starts).
    pub maxclients: usize,
    /// Idle time after which a client is closed (`None`: never).
    pub timeout: Option<Duration>,
    /// Queued output over which a client is disconnected.
    pub client_output_limit: usize,
    /// Requests a client may have waiting before respite stops reading it.
    pub client_max_pending: usize,
    /// Request size limits.
    pub limits: Limits,
    /// Time to finish in-flight requests on SIGINT/SIGTERM.
    pub shutdown_timeout: Duration,
    /// Where `/metrics` is served over HTTP, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Re-send a read-only command once on another backend when its connection breaks.
    pub retry_reads: bool,
    /// Independent event loops, each on its own thread and SO_REUSEPORT listener.
    pub workers: usize,
    /// Commands slower than this (arrival to reply ready) enter the slow log.
    pub slowlog_micros: u64,
    /// Entries the slow log keeps.
    pub slowlog_max_len: usize,
    /// The file this was read from, if any.
    pub config_file: Option<PathBuf>,
}

/// Command-line flags; every one is optional so the file and defaults can fill in.
#[derive(Parser, Debug, Default, Clone)]
#[command(
    name = "respite",
    version,
    about = "A RESP proxy that balances requests over equivalent Redis backends"
)]
pub struct Cli {
    /// TOML configuration file (keys are the flag names with underscores).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address to listen on for plaintext clients, or `off` [default: 127.0.0.1:6380].
    #[arg(long)]
    pub listen: Option<String>,
    /// Address to listen on for TLS clients (needs --tls-cert and --tls-key).
    #[arg(long)]
    pub tls_listen: Option<String>,
    /// Certificate chain served to TLS clients (PEM).
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// Private key of --tls-cert (PEM).
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) that TLS clients' certificates must be signed by (mutual TLS).
    #[arg(long)]
    pub tls_client_ca: Option<PathBuf>,
    /// Milliseconds a TLS client has to finish its handshake [default: 10000].
    #[arg(long)]
    pub tls_handshake_timeout_ms: Option<u64>,
    /// Speak TLS to backends, shards and the pub/sub target.
    #[arg(long)]
    pub backend_tls: bool,
    /// CA certificates (PEM) for the backends' certificates [default: the system trust store].
    #[arg(long)]
    pub backend_ca: Option<PathBuf>,
    /// Client certificate (PEM) respite presents to backends (mutual TLS).
    #[arg(long)]
    pub backend_cert: Option<PathBuf>,
    /// Private key of --backend-cert (PEM).
    #[arg(long)]
    pub backend_key: Option<PathBuf>,
    /// Name checked in every backend certificate [default: the host part of each address].
    #[arg(long)]
    pub backend_sni: Option<String>,
    /// Accept any backend certificate: no verification (development only).
    #[arg(long)]
    pub backend_tls_insecure: bool,
    /// Comma-separated backend addresses [default: 127.0.0.1:6379].
    #[arg(long, value_delimiter = ',')]
    pub backends: Option<Vec<String>>,
    /// Comma-separated shard addresses (masters and replicas) for SCAN, KEYS, DBSIZE...
    #[arg(long, value_delimiter = ',')]
    pub shards: Option<Vec<String>>,
    /// Pub/sub target [default: first healthy shard master, else first healthy backend].
    #[arg(long)]
    pub pubsub: Option<String>,
    /// The nutcracker config of the twemproxy backends, FILE[:POOL] (default: its first pool):
    /// commands twemproxy refuses then go to the shard master that owns their key.
    #[arg(long)]
    pub twemproxy_config: Option<String>,
    /// The backends are codis-proxies: follow their slot table (SLOTSMAPPING) and route what
    /// Codis refuses to the group master of its keys (the group masters are the shards unless
    /// --shards is given).
    #[arg(long)]
    pub codis: bool,
    /// Comma-separated seed nodes of a Redis Cluster: respite serves the whole cluster on its
    /// port (instead of --backends and --shards).
    #[arg(long, value_delimiter = ',')]
    pub cluster: Option<Vec<String>>,
    /// Connections of their own (transactions, blocking, pub/sub) per backend [default: 1024].
    #[arg(long)]
    pub max_session_connections: Option<usize>,
    /// Bytes queued for a subscriber over which it is disconnected [default: 33554432].
    #[arg(long)]
    pub pubsub_output_limit: Option<usize>,
    /// round-robin or random [default: round-robin].
    #[arg(long)]
    pub picker: Option<PickerKind>,
    /// Seed for the random picker.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Password clients must send with AUTH.
    #[arg(long)]
    pub password: Option<String>,
    /// Password respite sends to its backends.
    #[arg(long)]
    pub backend_password: Option<String>,
    /// User respite sends to its backends (with --backend-password).
    #[arg(long)]
    pub backend_user: Option<String>,
    /// Multiplexed connections per backend [default: 1].
    #[arg(long)]
    pub backend_connections: Option<usize>,
    /// Milliseconds between health probes [default: 1000].
    #[arg(long)]
    pub health_interval_ms: Option<u64>,
    /// Milliseconds a probe may take [default: 500].
    #[arg(long)]
    pub health_timeout_ms: Option<u64>,
    /// Consecutive probe failures that eject a backend [default: 3].
    #[arg(long)]
    pub fall: Option<u32>,
    /// Consecutive probe successes that re-admit a backend [default: 2].
    #[arg(long)]
    pub rise: Option<u32>,
    /// Milliseconds a request may wait for its backend [default: 5000].
    #[arg(long)]
    pub backend_timeout_ms: Option<u64>,
    /// Most clients at once; 0 = as many as the open-file limit allows (raised to the hard
    /// limit at start) [default: 0].
    #[arg(long)]
    pub maxclients: Option<usize>,
    /// Close clients idle this many seconds; 0 = never [default: 0].
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Bytes of queued replies over which a client is disconnected [default: 67108864].
    #[arg(long)]
    pub client_output_limit: Option<usize>,
    /// Requests a client may have waiting before respite stops reading it [default: 1024].
    #[arg(long)]
    pub client_max_pending: Option<usize>,
    /// Most arguments in one request [default: 1048576].
    #[arg(long)]
    pub max_args: Option<u64>,
    /// Largest bulk string in a request [default: 536870912].
    #[arg(long)]
    pub max_bulk_bytes: Option<u64>,
    /// Longest inline command [default: 65536].
    #[arg(long)]
    pub max_inline_bytes: Option<usize>,
    /// Milliseconds to finish in-flight requests on shutdown [default: 5000].
    #[arg(long)]
    pub shutdown_timeout_ms: Option<u64>,
    /// Retry read-only commands once on another backend when their connection breaks.
    #[arg(long)]
    pub retry_reads: bool,
    /// Event loops (threads) sharing the listen port via SO_REUSEPORT [default: 1].
    #[arg(long)]
    pub workers: Option<usize>,
    /// Serve Prometheus metrics on host:port at /metrics.
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// Microseconds over which a command enters the slow log [default: 10000].
    #[arg(long)]
    pub slowlog_micros: Option<u64>,
    /// Entries kept in the slow log [default: 128].
    #[arg(long)]
    pub slowlog_max_len: Option<usize>,
}

/// The TOML file: the same keys as the flags, with underscores.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    tls_listen: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    tls_handshake_timeout_ms: Option<u64>,
    backend_tls: Option<bool>,
    backend_ca: Option<PathBuf>,
    backend_cert: Option<PathBuf>,
    backend_key: Option<PathBuf>,
    backend_sni: Option<String>,
    backend_tls_insecure: Option<bool>,
    backends: Option<Vec<String>>,
    shards: Option<Vec<String>>,
    pubsub: Option<String>,
    twemproxy_config: Option<String>,
    codis: Option<bool>,
    cluster: Option<Vec<String>>,
    max_session_connections: Option<usize>,
    pubsub_output_limit: Option<usize>,
    picker: Option<PickerKind>,
    seed: Option<u64>,
    password: Option<String>,
    backend_password: Option<String>,
    backend_user: Option<String>,
    backend_connections: Option<usize>,
    health_interval_ms: Option<u64>,
    health_timeout_ms: Option<u64>,
    fall: Option<u32>,
    rise: Option<u32>,
    backend_timeout_ms: Option<u64>,
    maxclients: Option<usize>,
    timeout: Option<u64>,
    client_output_limit: Option<usize>,
    client_max_pending: Option<usize>,
    max_args: Option<u64>,
    max_bulk_bytes: Option<u64>,
    max_inline_bytes: Option<usize>,
    shutdown_timeout_ms: Option<u64>,
    slowlog_micros: Option<u64>,
    slowlog_max_len: Option<usize>,
    metrics_listen: Option<String>,
    workers: Option<usize>,
    retry_reads: Option<bool>,
}

impl Config {
    /// The configuration for `cli`, reading `cli.config` if given.
    pub fn from_cli(cli: &Cli) -> Result<Config, ConfigError> {
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        build(cli, file, cli.config.clone())
    }

    /// The default configuration with these backends (for tests and embedding).
    pub fn with_backends(backends: Vec<SocketAddr>) -> Config {
        let mut c = build(&Cli::default(), FileConfig::default(), None)
            .unwrap_or_else(|e| unreachable!("defaults are valid: {e}"));
        c.backends = backends;
        c
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| {
        let msg = e.message().to_string();
        ConfigError(format!("invalid config file {}: {msg}", path.display()))
    })
}

fn resolve(what: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| ConfigError(format!("invalid {what} address '{s}': expected host:port")))
}

fn positive<T: PartialOrd + Default + std::fmt::Display>(
    name: &str,
    v: T,
) -> Result<T, ConfigError> {
    if v > T::default() {
        Ok(v)
    } else {
        Err(ConfigError(format!(
            "{name} must be greater than 0 (got {v})"
        )))
    }
}

/// A setting from the flags, else the file, else `$default`.
macro_rules! pick {
    ($cli:ident, $file:ident, $field:ident, $default:expr) => {
        $cli.$field
            .clone()
            .or($file.$field.clone())
            .unwrap_or($default)
    };
}

/// Where respite listens and what it talks to.
struct Addresses {
    listen: Option<SocketAddr>,
    backends: Vec<SocketAddr>,
    shards: Vec<SocketAddr>,
    pubsub: Option<SocketAddr>,
    metrics_listen: Option<SocketAddr>,
    hostnames: Vec<(SocketAddr, String)>,
}

/// The host of `host:port` when it is a name rather than an IP address.
fn host_name(s: &str) -> Option<String> {
    let (host, _) = s.trim().rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.parse::<std::net::IpAddr>()
        .is_err()
        .then(|| host.to_string())
}

fn addresses(cli: &Cli, file: &FileConfig) -> Result<Addresses, ConfigError> {
    let listen = match pick!(cli, file, listen, "127.0.0.1:6380".to_string()).as_str() {
        "off" | "" => None,
        addr => Some(resolve("listen", addr)?),
    };
    let seeds = pick!(cli, file, cluster, Vec::new());
    if !seeds.is_empty() {
        let given = |c: &Option<Vec<String>>, f: &Option<Vec<String>>| c.is_some() || f.is_some();
        if given(&cli.backends, &file.backends) || given(&cli.shards, &file.shards) {
            return Err(ConfigError(
                "--cluster excludes --backends and --shards: the cluster's nodes are found from \
                 its seeds"
                    .into(),
            ));
        }
    }
    let backend_names = if seeds.is_empty() {
        pick!(cli, file, backends, vec!["127.0.0.1:6379".to_string()])
    } else {
        Vec::new()
    };
    if backend_names.is_empty() && seeds.is_empty() {
        return Err(ConfigError(
            "at least one backend is required (--backends host:port,...)".into(),
        ));
    }
    let mut hostnames = Vec::new();
    let mut resolve_all = |what, names: &[String]| {
        names
            .iter()
            .map(|b| {
                let addr = resolve(what, b.trim())?;
                if let Some(host) = host_name(b) {
                    hostnames.push((addr, host));
                }
                Ok(addr)
            })
            .collect::<Result<Vec<_>, ConfigError>>()
    };
    let backends = resolve_all("backend", &backend_names)?;
    let shards = if seeds.is_empty() {
        resolve_all("shard", &pick!(cli, file, shards, Vec::new()))?
    } else {
        resolve_all("cluster", &seeds)?
    };
    let pubsub_name = cli.pubsub.clone().or(file.pubsub.clone());
    let pubsub = resolve_all("pubsub", pubsub_name.as_slice())?.pop();
    if shards.len() > crate::fanout::MAX_SHARDS {
        return Err(ConfigError(format!(
            "at most {} shards are supported (got {})",
            crate::fanout::MAX_SHARDS,
            shards.len()
        )));
    }
    let metrics_listen = cli.metrics_listen.clone().or(file.metrics_listen.clone());
    Ok(Addresses {
        listen,
        backends,
        shards,
        pubsub,
        metrics_listen: metrics_listen
            .map(|a| resolve("metrics_listen", a.trim()))
            .transpose()?,
        hostnames,
    })
}

/// The TLS settings; the files they name are loaded once here, so that a bad one stops
/// respite at start with its reason.
fn tls(
    cli: &Cli,
    file: &FileConfig,
    listen: Option<SocketAddr>,
    hostnames: &[(SocketAddr, String)],
) -> Result<TlsSettings, ConfigError> {
    let path = |c: &Option<PathBuf>, f: &Option<PathBuf>| c.clone().or(f.clone());
    let tls_listen = cli.tls_listen.clone().or(file.tls_listen.clone());
    let s = TlsSettings {
        listen: tls_listen
            .map(|a| resolve("tls_listen", a.trim()))
            .transpose()?,
        cert: path(&cli.tls_cert, &file.tls_cert),
        key: path(&cli.tls_key, &file.tls_key),
        client_ca: path(&cli.tls_client_ca, &file.tls_client_ca),
        handshake_timeout: Duration::from_millis(positive(
            "tls_handshake_timeout_ms",
            pick!(cli, file, tls_handshake_timeout_ms, 10_000),
        )?),
        backend: cli.backend_tls || file.backend_tls.unwrap_or(false),
        backend_ca: path(&cli.backend_ca, &file.backend_ca),
        backend_cert: path(&cli.backend_cert, &file.backend_cert),
        backend_key: path(&cli.backend_key, &file.backend_key),
        backend_sni: cli.backend_sni.clone().or(file.backend_sni.clone()),
        backend_insecure: cli.backend_tls_insecure || file.backend_tls_insecure.unwrap_or(false),
    };
    let refuse = |why: &str| Err(ConfigError(why.into()));
    if listen.is_none() && s.listen.is_none() {
        return refuse("--listen off needs --tls-listen: clients must connect somewhere");
    }
    let server_files = s.cert.is_some() || s.key.is_some() || s.client_ca.is_some();
    if s.listen.is_none() && server_files {
        return refuse("--tls-cert, --tls-key and --tls-client-ca need --tls-listen");
    }
    if s.listen.is_some() && (s.cert.is_none() || s.key.is_none()) {
        return refuse("--tls-listen needs --tls-cert and --tls-key");
    }
    let backend_files = s.backend_ca.is_some() || s.backend_cert.is_some();
    let backend_options = backend_files || s.backend_sni.is_some() || s.backend_insecure;
    if !s.backend && (backend_options || s.backend_key.is_some()) {
        return refuse(
            "--backend-ca, --backend-cert, --backend-key, --backend-sni and \
             --backend-tls-insecure need --backend-tls",
        );
    }
    if s.backend_insecure && s.backend_ca.is_some() {
        return refuse("--backend-tls-insecure verifies nothing: drop it or --backend-ca");
    }
    if s.backend_cert.is_some() != s.backend_key.is_some() {
        return refuse("--backend-cert and --backend-key go together");
    }
    crate::tls::Tls::load(&s, hostnames).map_err(ConfigError)?;
    Ok(s)
}

fn limits(cli: &Cli, file: &FileConfig) -> Result<Limits, ConfigError> {
    Ok(Limits {
        max_args: positive("max_args", pick!(cli, file, max_args, 1024 * 1024))?,
        max_bulk_bytes: positive(
            "max_bulk_bytes",
            pick!(cli, file, max_bulk_bytes, 512 << 20),
        )?,
        max_inline_bytes: positive(
            "max_inline_bytes",
            pick!(cli, file, max_inline_bytes, 64 << 10),
        )?,
        unauthenticated: false,
    })
}

/// The backend credentials: (user, password), either absent.
type Credentials = (Option<String>, Option<String>);

fn backend_credentials(cli: &Cli, file: &FileConfig) -> Result<Credentials, ConfigError> {
    let password = pick!(cli, file, backend_password, String::new());
    let user = pick!(cli, file, backend_user, String::new());
    if !user.is_empty() && password.is_empty() {
        return Err(ConfigError("backend_user needs backend_password".into()));
    }
    let set = |s: String| Some(s).filter(|s| !s.is_empty());
    Ok((set(user), set(password)))
}

/// What places keys behind respite: the twemproxy pool, Codis's slot table, or a Redis
/// Cluster (no backends: the seeds are the shards); at most one.
struct KeyPlacement {
    twemproxy: Option<Pool>,
    codis: bool,
    cluster: bool,
}

fn key_placement(
    cli: &Cli,
    file: &FileConfig,
    backends: &[SocketAddr],
    shards: &[SocketAddr],
) -> Result<KeyPlacement, ConfigError> {
    let twemproxy = cli
        .twemproxy_config
        .clone()
        .or(file.twemproxy_config.clone());
    let twemproxy = twemproxy
        .map(|spec| Pool::load(&spec).map_err(ConfigError))
        .transpose()?;
    let codis = cli.codis || file.codis.unwrap_or(false);
    let cluster = backends.is_empty();
    let refuse = |why: &str| Err(ConfigError(why.into()));
    if cluster && (codis || twemproxy.is_some()) {
        return refuse(
            "--cluster excludes --codis and --twemproxy-config: the cluster places its keys",
        );
    }
    if codis && twemproxy.is_some() {
        return refuse(
            "--codis and --twemproxy-config exclude each other: the backends are one or the other",
        );
    }
    if twemproxy.is_some() && shards.is_empty() {
        return refuse(
            "--twemproxy-config needs --shards: the Redis servers of the pool, where respite sends \
             what twemproxy refuses",
        );
    }
    Ok(KeyPlacement {
        twemproxy,
        codis,
        cluster,
    })
}

fn build(cli: &Cli, file: FileConfig, config_file: Option<PathBuf>) -> Result<Config, ConfigError> {
    let file = &file;
    let Addresses {
        listen,
        backends,
        shards,
        pubsub,
        metrics_listen,
        hostnames,
    } = addresses(cli, file)?;
    let tls = tls(cli, file, listen, &hostnames)?;
    let backend_connections = positive(
        "backend_connections",
        pick!(cli, file, backend_connections, 1),
    )?;
    if backend_connections > 64 {
        return Err(ConfigError(format!(
            "backend_connections must be at most 64 (got {backend_connections})"
        )));
    }
    let (backend_user, backend_password) = backend_credentials(cli, file)?;
    let millis = |ms| Duration::from_millis(ms);
    let timeout = pick!(cli, file, timeout, 0);
    let KeyPlacement {
        twemproxy,
        codis,
        cluster,
    } = key_placement(cli, file, &backends, &shards)?;
    Ok(Config {
        listen,
        tls,
        hostnames,
        backends,
        shards,
        pubsub,
        twemproxy,
        codis,
        cluster,
        max_session_connections: positive(
            "max_session_connections",
            pick!(cli, file, max_session_connections, 1024),
        )?,
        pubsub_output_limit: positive(
            "pubsub_output_limit",
            pick!(cli, file, pubsub_output_limit, 32 << 20),
        )?,
        picker: pick!(cli, file, picker, PickerKind::RoundRobin),
        seed: cli.seed.or(file.seed),
        password: cli
            .password
            .clone()
            .or(file.password.clone())
            .filter(|p| !p.is_empty()),
        backend_password,
        backend_user,
        backend_connections,
        health_interval: millis(positive(
            "health_interval_ms",
            pick!(cli, file, health_interval_ms, 1000),
        )?),
        health_timeout: millis(positive(
            "health_timeout_ms",
            pick!(cli, file, health_timeout_ms, 500),
        )?),
        fall: positive("fall", pick!(cli, file, fall, 3))?,
        rise: positive("rise", pick!(cli, file, rise, 2))?,
        backend_timeout: millis(positive(
            "backend_timeout_ms",
            pick!(cli, file, backend_timeout_ms, 5000),
        )?),
        maxclients: pick!(cli, file, maxclients, 0),
        timeout: (timeout > 0).then(|| Duration::from_secs(timeout)),
        client_output_limit: positive(
            "client_output_limit",
            pick!(cli, file, client_output_limit, 64 << 20),
        )?,
        client_max_pending: positive(
            "client_max_pending",
            pick!(cli, file, client_max_pending, 1024),
        )?,
        limits: limits(cli, file)?,
        shutdown_timeout: millis(pick!(cli, file, shutdown_timeout_ms, 5000)),
        metrics_listen,
        workers: positive("workers", pick!(cli, file, workers, 1))?,
        retry_reads: cli.retry_reads || file.retry_reads.unwrap_or(false),
        slowlog_micros: pick!(cli, file, slowlog_micros, 10_000),
        slowlog_max_len: pick!(cli, file, slowlog_max_len, 128),
        config_file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::parse_from(std::iter::once("respite").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_front_the_local_redis() {
        let c = Config::from_cli(&cli(&[])).unwrap();
        assert_eq!(c.listen, Some("127.0.0.1:6380".parse().unwrap()));
        assert_eq!(c.backends, vec!["127.0.0.1:6379".parse().unwrap()]);
        assert_eq!((c.fall, c.rise, c.backend_connections), (3, 2, 1));
        assert_eq!(c.limits, Limits::default());
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.toml");
        std::fs::write(
            &path,
            "backends = [\"127.0.0.1:7001\", \"127.0.0.1:7002\"]\nfall = 5\npicker = \"random\"\n",
        )
        .unwrap();
        let c =
            Config::from_cli(&cli(&["--config", path.to_str().unwrap(), "--fall", "7"])).unwrap();
        assert_eq!(c.backends.len(), 2);
        assert_eq!(c.fall, 7);
        assert_eq!(c.picker, PickerKind::Random);
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        let err = |args: &[&str]| Config::from_cli(&cli(args)).unwrap_err().0;
        assert!(err(&["--backends", "nohost"]).contains("invalid backend address 'nohost'"));
        assert!(err(&["--fall", "0"]).contains("fall must be greater than 0"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.toml");
        std::fs::write(&path, "bogus = 1\n").unwrap();
        assert!(err(&["--config", path.to_str().unwrap()]).contains("unknown field"));
    }

    #[test]
    fn tls_settings_say_what_is_missing() {
        let err = |args: &[&str]| Config::from_cli(&cli(args)).unwrap_err().0;
        assert!(err(&["--listen", "off"]).contains("needs --tls-listen"));
        assert!(err(&["--tls-listen", "127.0.0.1:0"]).contains("needs --tls-cert and --tls-key"));
        assert!(err(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]).contains("need --tls-listen"));
        assert!(err(&["--backend-sni", "redis.example"]).contains("need --backend-tls"));
        let missing = [
            "--tls-listen",
            "127.0.0.1:0",
            "--tls-cert",
            "/nonexistent/c.pem",
        ];
        let missing = err(&[&missing[..], &["--tls-key", "/nonexistent/k.pem"]].concat());
        assert!(missing.contains("cannot read certificates from /nonexistent/c.pem"));
        // The system trust store is the default CA (a machine without one is told so).
        match Config::from_cli(&cli(&["--backends", "localhost:7000", "--backend-tls"])) {
            Ok(c) => {
                assert!(c.tls.backend && c.listen.is_some());
                assert_eq!(c.hostnames.len(), 1);
                assert_eq!(c.hostnames[0].1, "localhost");
            }
            Err(e) => assert!(e.0.contains("system trust store"), "{e}"),
        }
    }
}
