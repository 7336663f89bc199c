//! The embedded broker's door: every device connects here, and only what
//! its login may do reaches rumqttd behind it.
//!
//! rumqttd checks a login and nothing after it: any enrolled device could
//! subscribe to `nodes/+/desired` and read the whole fleet's documents, and
//! one login could flood it. Its only other hook, tenant prefixes, needs a
//! client certificate per device and changes every topic. So the gate
//! speaks MQTT 3.1.1 in front of it (frames parsed with rumqttc's codec,
//! one task per connection, nothing buffered beyond one frame each way) and:
//!
//! - checks the login itself and forwards it to rumqttd, on a loopback
//!   port, under the gate's own password ([`broker`](super::broker)
//!   accepts nodes from nobody else);
//! - refuses a node's subscriptions outside its own topics (SUBACK failure)
//!   and drops its publishes outside them (acknowledged, as Mosquitto's
//!   ACL does, so a client does not resend them forever): [`NodeRules`];
//! - caps each login's messages and bytes per second and subscriptions per
//!   connection, and cuts a login that exceeds them off for a while;
//! - disconnects a node's connections at once when its credentials are
//!   removed (`flotilla node revoke`).
//!
//! Every refusal is counted and logged through [`Refusals`].

mod rules;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, PubAck, Publish, SubAck, Subscribe, SubscribeReasonCode,
};
use rumqttc::mqttbytes::{self, FixedHeader, QoS};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

pub use rules::NodeRules;

use super::Topics;
use super::credentials::{CONTROLLER_USER, Enrolment, LoginRefusal};
use super::refusals::{Refusal, RefusalCounter, Refusals};

/// How long a new connection has to send its CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A read buffer that grew past this for one large frame is given back.
const KEPT_BUFFER: usize = 64 << 10;

/// Largest CONNECT: a login, a client id and a Last Will fit well within.
/// Nothing larger is read from a peer that has not logged in.
const MAX_CONNECT: usize = 64 << 10;

/// Open connections one node login may hold at once.
const CONNECTIONS_PER_LOGIN: usize = 4;

/// How long a write to a device may wait for it to read: past it, the
/// device is gone or stalling and its connection is closed.
const DEVICE_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// What one login may send. The defaults are about ten times what an agent
/// sends when busy: a heartbeat every few minutes, a status and a few
/// events per container change, log lines when asked, and a burst of a
/// dozen messages at each connect.
#[derive(Debug, Clone, Copy)]
pub struct LoginLimits {
    /// Messages per second, sustained.
    pub messages_per_second: NonZeroU32,
    /// Bytes per second, sustained.
    pub bytes_per_second: NonZeroU32,
    /// How many seconds' worth of messages and bytes may come at once.
    pub burst_seconds: NonZeroU32,
    /// Subscription filters per connection (an agent uses five).
    pub max_subscriptions: usize,
    /// How long a login that went over a limit is refused.
    pub cut_off_for: Duration,
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits {
            messages_per_second: NonZeroU32::new(20).expect("nonzero"),
            bytes_per_second: NonZeroU32::new(256 << 10).expect("nonzero"),
            burst_seconds: NonZeroU32::new(10).expect("nonzero"),
            max_subscriptions: 32,
            cut_off_for: Duration::from_secs(60),
        }
    }
}

/// How the gate runs.
#[derive(Clone)]
pub struct GateSettings {
    /// Where devices connect.
    pub listen: SocketAddr,
    /// rumqttd's loopback listener.
    pub upstream: SocketAddr,
    /// The password rumqttd takes from the gate for a node's login.
    pub upstream_password: String,
    /// Topic prefix.
    pub prefix: String,
    /// Per-login limits.
    pub limits: LoginLimits,
    /// Connections at once; more are closed as they come.
    pub max_connections: usize,
    /// Largest MQTT packet, either way.
    pub max_packet: usize,
    /// MQTT over TLS on `listen` (`None`: plain TCP, `--plain`).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// The running gate.
#[derive(Clone)]
pub struct Gate {
    shared: Arc<Shared>,
}

struct Shared {
    settings: GateSettings,
    topics: Topics,
    enrolment: Enrolment,
    /// Rate buckets and open connections of each node login seen since
    /// start (bounded by the enrolled nodes: only they get this far).
    logins: Mutex<HashMap<String, Arc<Login>>>,
    refusals: Mutex<Refusals>,
    next_connection: AtomicU64,
}

/// One node login's state, shared by its connections.
struct Login {
    messages: DefaultDirectRateLimiter,
    bytes: DefaultDirectRateLimiter,
    /// The cancel switch of each open connection.
    connections: Mutex<HashMap<u64, CancellationToken>>,
    cut_off_until: Mutex<Option<Instant>>,
}

impl Login {
    fn new(limits: &LoginLimits, max_packet: usize) -> Self {
        let burst = |rate: NonZeroU32, floor: u32| {
            rate.checked_mul(limits.burst_seconds)
                .unwrap_or(NonZeroU32::MAX)
                .max(NonZeroU32::new(floor).unwrap_or(rate))
        };
        let messages = Quota::per_second(limits.messages_per_second).allow_burst(burst(limits.messages_per_second, 1));
        // The byte bucket holds at least one largest packet, or that packet
        // could never pass.
        let floor = u32::try_from(max_packet).unwrap_or(u32::MAX);
        let bytes = Quota::per_second(limits.bytes_per_second).allow_burst(burst(limits.bytes_per_second, floor));
        Login {
            messages: RateLimiter::direct(messages),
            bytes: RateLimiter::direct(bytes),
            connections: Mutex::new(HashMap::new()),
            cut_off_until: Mutex::new(None),
        }
    }

    /// Whether one more packet of `len` bytes is within the limits.
    fn admit(&self, len: usize) -> bool {
        let bytes = NonZeroU32::new(u32::try_from(len).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        self.messages.check().is_ok() && matches!(self.bytes.check_n(bytes), Ok(Ok(())))
    }

    fn cut_off(&self, until: Instant) {
        *lock(&self.cut_off_until) = Some(until);
        self.disconnect_all();
    }

    fn is_cut_off(&self, now: Instant) -> bool {
        lock(&self.cut_off_until).is_some_and(|until| now < until)
    }

    fn disconnect_all(&self) {
        for token in lock(&self.connections).values() {
            token.cancel();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Who is on a connection.
enum Peer {
    /// The controller's own login: everything, no limits.
    Controller,
    /// An enrolled node.
    Node { name: String, rules: NodeRules, login: Arc<Login>, connection: u64 },
}

impl Gate {
    /// Binds `settings.listen` and serves it on the current runtime.
    pub async fn start(settings: GateSettings, enrolment: Enrolment, counter: RefusalCounter) -> anyhow::Result<Gate> {
        let listener = TcpListener::bind(settings.listen).await.with_context(|| {
            format!(
                "the embedded MQTT broker cannot listen on {} (is another broker running? use --mqtt-listen or --mqtt-url)",
                settings.listen
            )
        })?;
        let gate = Gate {
            shared: Arc::new(Shared {
                topics: Topics::new(&settings.prefix),
                settings,
                enrolment: enrolment.clone(),
                logins: Mutex::new(HashMap::new()),
                refusals: Mutex::new(Refusals::with_counter(counter)),
                next_connection: AtomicU64::new(0),
            }),
        };
        tokio::spawn(gate.clone().accept(listener));
        let mut removed = enrolment.watch_removed();
        let shared = gate.shared.clone();
        tokio::spawn(async move {
            loop {
                match removed.recv().await {
                    Ok(node) => shared.forget(&node),
                    // Missed some: check every open login against the enrolment.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        let logins: Vec<String> = lock(&shared.logins).keys().cloned().collect();
                        for node in logins.iter().filter(|node| shared.enrolment.node(node).is_none()) {
                            shared.forget(node);
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        Ok(gate)
    }

    async fn accept(self, listener: TcpListener) {
        let slots = Arc::new(Semaphore::new(self.shared.settings.max_connections));
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, mostly: wait instead of spinning.
                    tracing::warn!(error = %e, "MQTT accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                self.shared.refuse(&Refusal::anonymous("connections", "too many connections: closed"), "", 0);
                continue;
            };
            let shared = self.shared.clone();
            tokio::spawn(async move {
                if let Err(e) = shared.serve(stream).await {
                    tracing::debug!(%peer, error = %format!("{e:#}"), "MQTT connection closed");
                }
                drop(slot);
            });
        }
    }
}

/// A device connection's halves, over TCP or TLS.
type DeviceRx = Box<dyn AsyncRead + Send + Unpin>;
type DeviceTx = Box<dyn AsyncWrite + Send + Unpin>;

/// What the device-bound half is asked to do by the broker-bound half.
enum ToDevice {
    /// Write this packet (an acknowledgement the gate answers itself).
    Packet(Bytes),
    /// The SUBACK for `pkid` comes for the allowed filters only: put the
    /// refused ones back in, as failures, where `allowed` is false.
    Patch { pkid: u16, allowed: Vec<bool> },
}

impl Shared {
    fn refuse(&self, refusal: &Refusal, topic: &str, bytes: usize) {
        lock(&self.refusals).record(refusal, topic, bytes, Instant::now());
    }

    /// A node's credentials are gone: close its connections now.
    fn forget(&self, node: &str) {
        if let Some(login) = lock(&self.logins).remove(node) {
            tracing::info!(node, "node credentials removed: closing its MQTT connections");
            login.disconnect_all();
        }
    }

    fn login(&self, node: &str) -> Arc<Login> {
        lock(&self.logins)
            .entry(node.to_owned())
            .or_insert_with(|| Arc::new(Login::new(&self.settings.limits, self.settings.max_packet)))
            .clone()
    }

    async fn serve(self: Arc<Self>, stream: TcpStream) -> anyhow::Result<()> {
        stream.set_nodelay(true).ok();
        let (mut device_rx, mut device_tx): (DeviceRx, DeviceTx) = match &self.settings.tls {
            Some(acceptor) => {
                let tls = tokio::time::timeout(crate::tls::HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                    .await
                    .context("no TLS handshake in time")?
                    .context("TLS handshake")?;
                let (rx, tx) = tokio::io::split(tls);
                (Box::new(rx), Box::new(tx))
            }
            None => {
                let (rx, tx) = stream.into_split();
                (Box::new(rx), Box::new(tx))
            }
        };
        let mut from_device = BytesMut::with_capacity(1024);
        let (header, frame) =
            tokio::time::timeout(CONNECT_TIMEOUT, next_frame(&mut device_rx, &mut from_device, MAX_CONNECT))
                .await
                .context("no CONNECT in time")??
                .context("closed before CONNECT")?;
        anyhow::ensure!(frame[0] >> 4 == 1, "the first packet is not a CONNECT");
        let mut connect = match Connect::read(header, frame) {
            Ok(connect) => connect,
            Err(e) => {
                // MQTT 5, mostly: only 3.1.1 is served.
                write_packet(&mut device_tx, |b| {
                    ConnAck::new(ConnectReturnCode::RefusedProtocolVersion, false).write(b)
                })
                .await
                .ok();
                return Err(anyhow::anyhow!("bad CONNECT: {e:?}"));
            }
        };
        let peer = match self.admit(&mut connect) {
            Ok(peer) => peer,
            Err(code) => {
                write_packet(&mut device_tx, |b| ConnAck::new(code, false).write(b)).await.ok();
                // Over TLS: close_notify after the refusal, so the device
                // reads the CONNACK rather than a lost connection.
                device_tx.shutdown().await.ok();
                return Ok(());
            }
        };
        // Registered before any wait, then checked again: a revocation
        // between the login check and here closes this connection too.
        let cancel = CancellationToken::new();
        if let Peer::Node { name, login, connection, .. } = &peer {
            lock(&login.connections).insert(*connection, cancel.clone());
            let current = lock(&self.logins).get(name).is_some_and(|l| Arc::ptr_eq(l, login));
            if !current || self.enrolment.node(name).is_none() {
                cancel.cancel();
            }
        }
        let result = tokio::select! {
            r = self.relay(&peer, &connect, device_rx, from_device, device_tx) => r,
            () = cancel.cancelled() => Ok(()),
        };
        if let Peer::Node { login, connection, .. } = &peer {
            lock(&login.connections).remove(connection);
        }
        result
    }

    /// Connects to rumqttd as the device and relays both ways.
    async fn relay(
        &self,
        peer: &Peer,
        connect: &Connect,
        mut device_rx: DeviceRx,
        from_device: BytesMut,
        mut device_tx: DeviceTx,
    ) -> anyhow::Result<()> {
        let upstream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(self.settings.upstream))
            .await
            .context("the broker does not answer")?
            .context("connecting to the broker")?;
        upstream.set_nodelay(true).ok();
        let (mut broker_rx, mut broker_tx) = upstream.into_split();
        write_packet(&mut broker_tx, |b| connect.write(b)).await.context("forwarding CONNECT")?;
        let (to_device, asked) = mpsc::channel(64);
        tokio::select! {
            r = self.device_to_broker(peer, &mut device_rx, from_device, &mut broker_tx, &to_device) => r,
            r = self.broker_to_device(&mut broker_rx, &mut device_tx, asked) => r,
        }
    }

    /// Checks a CONNECT and rewrites a node's password to the gate's.
    fn admit(&self, connect: &mut Connect) -> Result<Peer, ConnectReturnCode> {
        let Some(login) = connect.login.as_mut() else {
            self.refuse(&Refusal::anonymous("login", "a CONNECT without a user name"), "", 0);
            return Err(ConnectReturnCode::NotAuthorized);
        };
        if let Err(refused) = self.enrolment.broker_login(&connect.client_id, &login.username, &login.password) {
            let refusal = match &refused {
                LoginRefusal::Expired { node, .. } => Refusal::of(node, "expired", refused.to_string()),
                LoginRefusal::Refused { .. } => Refusal::anonymous("login", refused.to_string()),
            };
            self.refuse(&refusal, "", 0);
            return Err(ConnectReturnCode::BadUserNamePassword);
        }
        if login.username == CONTROLLER_USER {
            return Ok(Peer::Controller);
        }
        let name = login.username.clone();
        let rules = NodeRules::new(&self.topics, &name);
        if let Some(will) = &connect.last_will
            && !rules.may_publish(&will.topic)
        {
            let refusal = Refusal::of(&name, "topic", "a Last Will on a topic the node may not publish to");
            self.refuse(&refusal, &will.topic, 0);
            return Err(ConnectReturnCode::NotAuthorized);
        }
        let state = self.login(&name);
        if state.is_cut_off(Instant::now()) {
            self.refuse(&Refusal::of(&name, "cut-off", "a login cut off for going over its limits"), "", 0);
            return Err(ConnectReturnCode::NotAuthorized);
        }
        if lock(&state.connections).len() >= CONNECTIONS_PER_LOGIN {
            let detail = format!("over {CONNECTIONS_PER_LOGIN} connections at once");
            self.refuse(&Refusal::of(&name, "connections", detail), "", 0);
            return Err(ConnectReturnCode::ServiceUnavailable);
        }
        login.password.clone_from(&self.settings.upstream_password);
        let connection = self.next_connection.fetch_add(1, Ordering::Relaxed);
        Ok(Peer::Node { name, rules, login: state, connection })
    }

    async fn device_to_broker(
        &self,
        peer: &Peer,
        device: &mut DeviceRx,
        mut buffer: BytesMut,
        broker: &mut tokio::net::tcp::OwnedWriteHalf,
        to_device: &mpsc::Sender<ToDevice>,
    ) -> anyhow::Result<()> {
        let mut subscriptions = 0usize;
        while let Some((header, frame)) = next_frame(device, &mut buffer, self.settings.max_packet).await? {
            let Peer::Node { name, rules, login, .. } = peer else {
                broker.write_all(&frame).await?;
                continue;
            };
            if !login.admit(frame.len()) {
                let limits = &self.settings.limits;
                let detail = format!(
                    "over {} messages or {} bytes a second: connections closed, login refused for {}",
                    limits.messages_per_second,
                    limits.bytes_per_second,
                    humantime::format_duration(limits.cut_off_for)
                );
                self.refuse(&Refusal::of(name, "rate", detail), "", frame.len());
                login.cut_off(Instant::now() + limits.cut_off_for);
                return Ok(());
            }
            match frame[0] >> 4 {
                // PUBLISH
                3 => {
                    let len = frame.len();
                    let publish =
                        Publish::read(header, frame.clone()).map_err(|e| anyhow::anyhow!("bad PUBLISH: {e:?}"))?;
                    if rules.may_publish(&publish.topic) {
                        broker.write_all(&frame).await?;
                        continue;
                    }
                    self.refuse(
                        &Refusal::of(name, "topic", "a publish on a topic the node may not publish to: dropped"),
                        &publish.topic,
                        len,
                    );
                    let ack = match publish.qos {
                        QoS::AtMostOnce => continue,
                        QoS::AtLeastOnce => encode(|b| PubAck::new(publish.pkid).write(b))?,
                        // Its PUBREL would reach the broker for a packet it never saw.
                        QoS::ExactlyOnce => anyhow::bail!("a refused QoS 2 publish"),
                    };
                    to_device.send(ToDevice::Packet(ack)).await?;
                }
                // SUBSCRIBE
                8 => {
                    let subscribe =
                        Subscribe::read(header, frame.clone()).map_err(|e| anyhow::anyhow!("bad SUBSCRIBE: {e:?}"))?;
                    subscriptions += subscribe.filters.len();
                    if subscriptions > self.settings.limits.max_subscriptions {
                        let detail = format!("over {} subscriptions", self.settings.limits.max_subscriptions);
                        self.refuse(&Refusal::of(name, "subscriptions", detail), "", frame.len());
                        return Ok(());
                    }
                    let allowed: Vec<bool> = subscribe.filters.iter().map(|f| rules.may_subscribe(&f.path)).collect();
                    for filter in subscribe.filters.iter().filter(|f| !rules.may_subscribe(&f.path)) {
                        let refusal = Refusal::of(name, "subscribe", "a subscription outside the node's own topics");
                        self.refuse(&refusal, &filter.path, 0);
                    }
                    if allowed.iter().all(|a| *a) {
                        broker.write_all(&frame).await?;
                    } else if allowed.iter().all(|a| !a) {
                        let codes = vec![SubscribeReasonCode::Failure; allowed.len()];
                        let ack = encode(|b| SubAck::new(subscribe.pkid, codes).write(b))?;
                        to_device.send(ToDevice::Packet(ack)).await?;
                    } else {
                        let mut kept = Subscribe::new_many(std::iter::empty());
                        kept.pkid = subscribe.pkid;
                        kept.filters =
                            subscribe.filters.into_iter().zip(&allowed).filter(|(_, a)| **a).map(|(f, _)| f).collect();
                        to_device.send(ToDevice::Patch { pkid: kept.pkid, allowed }).await?;
                        broker.write_all(&encode(|b| kept.write(b))?).await?;
                    }
                }
                // A second CONNECT is a protocol error.
                1 => anyhow::bail!("a second CONNECT"),
                // DISCONNECT: pass it on (so no Last Will) and end.
                14 => {
                    broker.write_all(&frame).await?;
                    return Ok(());
                }
                _ => broker.write_all(&frame).await?,
            }
            if buffer.is_empty() && buffer.capacity() > KEPT_BUFFER {
                buffer = BytesMut::with_capacity(1024);
            }
        }
        Ok(())
    }

    async fn broker_to_device(
        &self,
        broker: &mut tokio::net::tcp::OwnedReadHalf,
        device: &mut DeviceTx,
        mut asked: mpsc::Receiver<ToDevice>,
    ) -> anyhow::Result<()> {
        let mut buffer = BytesMut::with_capacity(1024);
        let mut patches: HashMap<u16, Vec<bool>> = HashMap::new();
        loop {
            tokio::select! {
                biased;
                request = asked.recv() => match request {
                    Some(ToDevice::Packet(bytes)) => write_device(device, &bytes).await?,
                    Some(ToDevice::Patch { pkid, allowed }) => {
                        patches.insert(pkid, allowed);
                    }
                    None => return Ok(()),
                },
                frame = next_frame(broker, &mut buffer, self.settings.max_packet) => {
                    let Some((header, frame)) = frame? else { return Ok(()) };
                    // SUBACK: a patch asked for is queued before its SUBSCRIBE
                    // was sent, so it is in the channel by now.
                    if frame[0] >> 4 == 9 {
                        while let Ok(request) = asked.try_recv() {
                            match request {
                                ToDevice::Packet(bytes) => write_device(device, &bytes).await?,
                                ToDevice::Patch { pkid, allowed } => {
                                    patches.insert(pkid, allowed);
                                }
                            }
                        }
                        let ack = SubAck::read(header, frame.clone()).map_err(|e| anyhow::anyhow!("bad SUBACK: {e:?}"))?;
                        if let Some(allowed) = patches.remove(&ack.pkid) {
                            let mut codes = ack.return_codes.into_iter();
                            let merged = allowed
                                .iter()
                                .map(|a| if *a { codes.next().unwrap_or(SubscribeReasonCode::Failure) } else { SubscribeReasonCode::Failure })
                                .collect();
                            write_device(device, &encode(|b| SubAck::new(ack.pkid, merged).write(b))?).await?;
                            continue;
                        }
                    }
                    write_device(device, &frame).await?;
                    if buffer.is_empty() && buffer.capacity() > KEPT_BUFFER {
                        buffer = BytesMut::with_capacity(1024);
                    }
                }
            }
        }
    }
}

/// Writes to a device, which must read within [`DEVICE_WRITE_TIMEOUT`].
async fn write_device(device: &mut (impl AsyncWrite + Unpin), bytes: &[u8]) -> anyhow::Result<()> {
    tokio::time::timeout(DEVICE_WRITE_TIMEOUT, device.write_all(bytes))
        .await
        .context("the device stopped reading")?
        .context("writing to the device")
}

/// The next whole MQTT packet from `stream`, reading into `buffer` as
/// needed: its fixed header and its bytes. `None` at a clean end.
async fn next_frame(
    stream: &mut (impl AsyncRead + Unpin),
    buffer: &mut BytesMut,
    max_packet: usize,
) -> anyhow::Result<Option<(FixedHeader, Bytes)>> {
    loop {
        match mqttbytes::check(buffer.iter(), max_packet) {
            Ok(header) => return Ok(Some((header, buffer.split_to(header.frame_length()).freeze()))),
            Err(mqttbytes::Error::InsufficientBytes(more)) => {
                // What a header announces is not reserved up front: the
                // buffer grows as bytes really come.
                buffer.reserve(more.min(KEPT_BUFFER));
                if stream.read_buf(buffer).await? == 0 {
                    anyhow::ensure!(buffer.is_empty(), "closed in the middle of a packet");
                    return Ok(None);
                }
            }
            Err(e) => anyhow::bail!("not an MQTT packet: {e:?}"),
        }
    }
}

fn encode(write: impl FnOnce(&mut BytesMut) -> Result<usize, mqttbytes::Error>) -> anyhow::Result<Bytes> {
    let mut buffer = BytesMut::new();
    write(&mut buffer).map_err(|e| anyhow::anyhow!("encoding a packet: {e:?}"))?;
    Ok(buffer.freeze())
}

async fn write_packet(
    stream: &mut (impl AsyncWrite + Unpin),
    write: impl FnOnce(&mut BytesMut) -> Result<usize, mqttbytes::Error>,
) -> anyhow::Result<()> {
    stream.write_all(&encode(write)?).await?;
    // A TLS stream holds what it encrypted until flushed.
    stream.flush().await?;
    Ok(())
}
