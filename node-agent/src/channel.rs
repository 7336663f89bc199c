//! The agent's MQTT connection to the controller.
//!
//! One thread runs a single-threaded tokio runtime that owns the rumqttc
//! event loop; the agent's synchronous main loop publishes through the
//! client's non-blocking `try_publish` and receives desired documents over
//! a channel, so a slow or absent broker never stalls the containers.
//!
//! Every frame carries a MAC (HMAC-SHA256 with the enrolment key, cut to 16
//! bytes) and a sequence number the controller requires to increase. The
//! sequence is `epoch << 32 | counter`: the epoch is persisted and bumped
//! on every (re)connection, and the connection's Last Will ("offline")
//! takes the largest sequence of its epoch, so it is newer than everything
//! sent on that connection and older than everything after it.
//!
//! Log requests (`flotilla logs`) are answered on this thread: reading a
//! log file takes milliseconds and needs nothing from the main loop. So is
//! credential rotation ([`crate::rotation`]): new credentials change the
//! MAC key and the broker login, both held here.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use firmware_proto::mac::node_mac;
use firmware_proto::mqtt::{BrokerUrl, parse_broker_url};
use firmware_proto::{Message, MessageKind, Presence, encode_node_to_vec, peek_kind};
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Outgoing, Packet, QoS, SubscribeFilter};

use crate::enrolment::{Enrolment, Granted};
use crate::logs::LogService;
use crate::services::ServiceDirectory;

/// Largest packet accepted: the largest frame (a pod document) plus room
/// for the MQTT header.
const MAX_INCOMING: usize = firmware_proto::frame::MAX_ANY_FRAME_LEN + 1024;
/// Largest packet sent: a node frame plus room for the MQTT header.
const MAX_OUTGOING: usize = firmware_proto::frame::MAX_FRAME_LEN + 1024;
/// Frames from the controller waiting to be applied: a whole document's
/// config objects and the document fit, so none is dropped at connect.
const INCOMING_FRAMES: usize = firmware_proto::pod::LINUX_MAX_CONFIG_OBJECTS + 8;

/// Connection settings.
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    /// MQTT keep-alive; the broker declares the node gone (Last Will) after
    /// 1.5 times this without traffic.
    pub keep_alive: Duration,
    /// Where the sequence epoch is kept.
    pub epoch_file: PathBuf,
    /// The agent's data directory, where rotated credentials are saved
    /// (`enrolment.json`); `None`: kept in memory only.
    pub data_dir: Option<PathBuf>,
    /// After a connection, the first credential request goes out within
    /// this ([`crate::rotation::FIRST_ASK_WITHIN`] by default).
    pub first_credential_check_within: Duration,
}

/// Sequence numbers and MACs of this node's frames.
struct Signer {
    /// The MAC key and its generation: a rotation replaces them.
    key: Mutex<([u8; 32], u32)>,
    next: AtomicU64,
}

impl Signer {
    fn new(key: [u8; 32], generation: u32, next: u64) -> Self {
        Signer { key: Mutex::new((key, generation)), next: AtomicU64::new(next) }
    }

    fn key(&self) -> ([u8; 32], u32) {
        *self.key.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_key(&self, key: [u8; 32], generation: u32) {
        *self.key.lock().unwrap_or_else(|p| p.into_inner()) = (key, generation);
    }

    fn seal<M: Message>(&self, message: &M, seq: u64) -> Option<Vec<u8>> {
        let (key, _) = self.key();
        let frame = encode_node_to_vec(message, seq, |bytes| node_mac(&key, bytes));
        match frame {
            Ok(frame) => Some(frame),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a frame");
                None
            }
        }
    }

    fn next_seq(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }
}

/// A connected (or connecting) control channel.
pub struct Channel {
    client: AsyncClient,
    signer: Arc<Signer>,
    topics: Topics,
    desired: Receiver<Vec<u8>>,
    /// The registration, sealed afresh and resent (retained) on every
    /// connection.
    hello: Arc<Mutex<Option<firmware_proto::Hello>>>,
    /// Set when a connection came up: the main loop then sends full state.
    connected: Arc<std::sync::atomic::AtomicBool>,
    /// Set when the broker refused this node's current login (revoked, or
    /// its credentials expired while it was away).
    login_refused: Arc<AtomicBool>,
    /// Woken on a desired document or a new connection.
    wake: Arc<tokio::sync::Notify>,
    /// The connection's task, when it runs on a shared runtime.
    task: Option<tokio::task::AbortHandle>,
    /// Ends the connection's loop (a channel on a thread of its own).
    shutdown: Arc<tokio::sync::Notify>,
}

/// This node's topics.
#[derive(Debug, Clone)]
struct Topics {
    scheme: firmware_proto::mqtt::Topics,
    node: String,
}

impl Topics {
    fn leaf(&self, kind: MessageKind) -> String {
        self.scheme.node(&self.node, kind)
    }

    /// What to subscribe to for `kind`: config objects have one topic each,
    /// `config/{hex digest}`.
    fn filter(&self, kind: MessageKind) -> String {
        match kind {
            MessageKind::Config => format!("{}/+", self.leaf(kind)),
            _ => self.leaf(kind),
        }
    }

    /// Whether `topic` is this node's topic for `kind`.
    fn is_topic_of(&self, topic: &str, kind: MessageKind) -> bool {
        match kind {
            MessageKind::Config => topic
                .strip_prefix(self.leaf(kind).as_str())
                .and_then(|rest| rest.strip_prefix('/'))
                .is_some_and(|digest| digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit())),
            _ => topic == self.leaf(kind),
        }
    }

    /// The kind of a frame received on `topic`, read from the frame's own
    /// header: only a kind sent to nodes, and only on this node's topic for
    /// that kind. Anything else (garbage, a node's message, a frame on
    /// another kind's topic) is hostile or misrouted and refused here,
    /// before a handler sees it.
    fn received(&self, topic: &str, frame: &[u8]) -> Result<MessageKind, String> {
        let kind = peek_kind(frame).map_err(|e| format!("not a frame: {e}"))?;
        if kind.is_from_node() {
            return Err(format!("a {kind} message is one nodes send, not receive"));
        }
        if !self.is_topic_of(topic, kind) {
            return Err(format!("a {kind} message on a topic that is not this node's {kind} topic"));
        }
        Ok(kind)
    }
}

impl Channel {
    /// Starts connecting on a thread of its own (a single-threaded tokio
    /// runtime); returns at once.
    pub fn start(
        enrolment: &Enrolment,
        config: ChannelConfig,
        logs: LogService,
        services: Arc<ServiceDirectory>,
    ) -> anyhow::Result<Self> {
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the MQTT runtime")?;
        let (channel, connection) = Self::prepare(enrolment, config, logs, services)?;
        std::thread::Builder::new()
            .name("mqtt".into())
            .spawn(move || runtime.block_on(connection))
            .context("starting the MQTT thread")?;
        Ok(channel)
    }

    /// Starts connecting as a task on `runtime`, as the fleet simulator runs
    /// thousands of devices in one process; returns at once.
    /// [`Channel::close_abruptly`] ends the task.
    pub fn start_on(
        runtime: &tokio::runtime::Handle,
        enrolment: &Enrolment,
        config: ChannelConfig,
        logs: LogService,
        services: Arc<ServiceDirectory>,
    ) -> anyhow::Result<Self> {
        let (mut channel, connection) = Self::prepare(enrolment, config, logs, services)?;
        channel.task = Some(runtime.spawn(connection).abort_handle());
        Ok(channel)
    }

    /// The channel and the future that runs its connection until dropped.
    fn prepare(
        enrolment: &Enrolment,
        config: ChannelConfig,
        logs: LogService,
        services: Arc<ServiceDirectory>,
    ) -> anyhow::Result<(Self, impl std::future::Future<Output = ()> + Send + 'static)> {
        // One broker, or the brokers of a cluster in order: the next is
        // tried when the one in use is lost.
        let mut brokers = Vec::new();
        for url in firmware_proto::mqtt::broker_list(&enrolment.mqtt_url) {
            let BrokerUrl { host, port, tls } = parse_broker_url(url).map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
            let transport = match tls {
                true => {
                    let config = enrolment.tls_config()?.with_context(|| {
                        format!(
                            "{url}: the broker speaks TLS but the enrolment holds no fleet CA; enrol this device again"
                        )
                    })?;
                    rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(config))
                }
                false => rumqttc::Transport::tcp(),
            };
            brokers.push((host.to_owned(), port, transport));
        }
        anyhow::ensure!(!brokers.is_empty(), "the enrolment names no broker ({:?})", enrolment.mqtt_url);
        let first = first_broker(&enrolment.node_name, brokers.len());
        let (host, port, transport) = brokers[first].clone();
        let topics = Topics {
            scheme: firmware_proto::mqtt::Topics::new(&enrolment.topic_prefix),
            node: enrolment.node_name.clone(),
        };
        let epoch = read_epoch(&config.epoch_file);
        // Credentials a rotation granted and no connection used yet are
        // tried first (see `crate::rotation`).
        let mut held = enrolment.clone();
        let mut trying: Option<Granted> =
            held.next.clone().filter(|granted| crate::enrolment::hex32(&granted.mac_key).is_some());
        let signer = Arc::new(Signer::new(held.mac_key_bytes()?, held.generation, epoch << 32 | 1));
        let controller_key = ed25519_dalek::VerifyingKey::from_bytes(&held.controller_key_bytes()?)
            .map_err(|e| anyhow::anyhow!("the pinned controller key is not an Ed25519 key: {e}"))?;
        let verify = crate::run::verifier(controller_key);
        let node_id = firmware_proto::NodeId::new(&held.node_name).map_err(|e| anyhow::anyhow!("node id: {e}"))?;
        let store = crate::rotation::Store { data_dir: config.data_dir.clone() };
        let asking = Arc::new(crate::rotation::Asking::default());
        let mut options = MqttOptions::new(enrolment.node_name.clone(), host.clone(), port);
        options.set_keep_alive(config.keep_alive);
        use_credentials(&mut options, &signer, &held, trying.as_ref());
        options.set_max_packet_size(MAX_INCOMING, MAX_OUTGOING);
        options.set_clean_session(true);
        options.set_transport(transport);
        let (client, mut event_loop) = AsyncClient::new(options, 64);
        let (desired_tx, desired) = std::sync::mpsc::sync_channel::<Vec<u8>>(INCOMING_FRAMES);
        let hello: Arc<Mutex<Option<firmware_proto::Hello>>> = Arc::default();
        let connected = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let login_refused = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(tokio::sync::Notify::new());
        let shutdown = Arc::new(tokio::sync::Notify::new());
        let channel = Channel {
            client: client.clone(),
            signer: signer.clone(),
            topics: topics.clone(),
            desired,
            hello: hello.clone(),
            connected: connected.clone(),
            login_refused: login_refused.clone(),
            wake: wake.clone(),
            task: None,
            shutdown: shutdown.clone(),
        };
        let mut broker = format!("{host}:{port}");
        let connection = async move {
            let mut epoch = epoch;
            let mut failures = 0u32;
            let mut using = first;
            // Subscriptions refused in a row: a broker that never takes them
            // (NATS refuses topics with '.') is not asked every 100 ms.
            let mut refusals = 0u32;
            // A DISCONNECT of ours, to log in again with new credentials.
            let mut switching = false;
            // `connection << 1`, plus 1 once a desired document came on it.
            let answered = Arc::new(AtomicU64::new(0));
            let mut connection = 0u64;
            // The first connection's epoch and will.
            epoch = next_epoch(&config.epoch_file, epoch);
            arm(&mut event_loop.mqtt_options, &signer, &topics, epoch);
            loop {
                // Cancelling a poll may lose its packet: only at shutdown.
                let polled = tokio::select! {
                    polled = event_loop.poll() => polled,
                    () = shutdown.notified() => return,
                };
                match polled {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        failures = 0;
                        login_refused.store(false, Ordering::Release);
                        tracing::info!(%broker, node = topics.node, "connected to the controller's broker");
                        if let Some(granted) = trying.take() {
                            // The grant said when to ask next: that stands.
                            let generation = granted.generation;
                            match held.promote(granted) {
                                Ok(()) => {
                                    store.save(&held);
                                    tracing::info!(node = topics.node, generation, "now using rotated credentials");
                                }
                                Err(e) => tracing::error!(error = %e, "cannot take the rotated credentials"),
                            }
                        } else {
                            asking.after(crate::rotation::jitter(config.first_credential_check_within));
                        }
                        on_connect(&client, &signer, &topics, &hello);
                        connection += 1;
                        answered.store(connection << 1, Ordering::Release);
                        tokio::spawn(announce_until_answered(
                            client.clone(),
                            signer.clone(),
                            topics.clone(),
                            hello.clone(),
                            answered.clone(),
                            connection,
                        ));
                        tokio::spawn(ask_for_credentials(
                            client.clone(),
                            signer.clone(),
                            topics.clone(),
                            asking.clone(),
                            answered.clone(),
                            connection,
                        ));
                        connected.store(true, Ordering::Release);
                        wake.notify_one();
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        // Dispatched on the kind in the frame's header,
                        // which must match the topic it came on.
                        match topics.received(&publish.topic, &publish.payload) {
                            Ok(MessageKind::Desired | MessageKind::Pods) => {
                                answered.store(connection << 1 | 1, Ordering::Release);
                                deliver(&desired_tx, publish.payload.to_vec());
                                wake.notify_one();
                            }
                            Ok(MessageKind::Config) => {
                                deliver(&desired_tx, publish.payload.to_vec());
                                wake.notify_one();
                            }
                            // A config object's retained message cleared:
                            // the agent drops objects no document names.
                            Err(_) if publish.payload.is_empty() => {}
                            Ok(MessageKind::Services) => {
                                if let Err(reason) = services.apply(&publish.payload) {
                                    tracing::warn!(reason, "service table refused");
                                }
                            }
                            Ok(MessageKind::LogRequest) => {
                                answer_logs(&logs, &publish.payload, &client, &signer, &topics);
                            }
                            Ok(MessageKind::Credentials) => {
                                match crate::rotation::read_grant(&publish.payload, &verify, &node_id, &held) {
                                    Ok(crate::rotation::Answer::AskAgain(after)) => asking.after(after),
                                    Ok(crate::rotation::Answer::Switch(granted, after)) => {
                                        asking.after(after);
                                        // Kept before used: a restart from here
                                        // tries them, and falls back if refused.
                                        held.next = Some(granted.clone());
                                        if !store.save(&held) {
                                            held.next = None;
                                            continue;
                                        }
                                        tracing::info!(
                                            node = topics.node,
                                            generation = granted.generation,
                                            "new credentials granted; logging in again with them"
                                        );
                                        use_credentials(&mut event_loop.mqtt_options, &signer, &held, Some(&granted));
                                        trying = Some(granted);
                                        switching = true;
                                        if let Err(e) = client.try_disconnect() {
                                            tracing::warn!(error = %e, "cannot queue the DISCONNECT; the new login waits for the next reconnection");
                                        }
                                    }
                                    Err(reason) => tracing::warn!(reason, "credential grant refused"),
                                }
                            }
                            Ok(kind) => tracing::warn!(%kind, "no handler for this kind of message; ignored"),
                            Err(reason) => {
                                let bytes = publish.payload.len();
                                tracing::warn!(topic = publish.topic, bytes, reason, "message refused");
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(ack)))
                        if ack.return_codes.contains(&rumqttc::SubscribeReasonCode::Failure) =>
                    {
                        // A clustered broker refuses subscriptions while it
                        // recovers (NATS electing a JetStream leader): a
                        // connection without them would wait for documents
                        // for ever. Connect again, which subscribes again.
                        refusals += 1;
                        tracing::warn!(%broker, node = topics.node, refusals, "the broker refused a subscription; connecting again");
                        let _ = client.try_disconnect();
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => refusals = 0,
                    Ok(Event::Outgoing(Outgoing::Disconnect)) if switching => {
                        // Our own DISCONNECT: log in again at once with the
                        // new credentials (no Last Will was published).
                        switching = false;
                        event_loop.clean();
                        epoch = next_epoch(&config.epoch_file, epoch);
                        arm(&mut event_loop.mqtt_options, &signer, &topics, epoch);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        failures += 1;
                        switching = false;
                        let refused = matches!(e, rumqttc::ConnectionError::ConnectionRefused(_));
                        if let (true, Some(granted)) = (refused, trying.take()) {
                            // Still valid at the controller until the new
                            // ones are used: back to them, and ask again later.
                            tracing::warn!(
                                node = topics.node,
                                generation = granted.generation,
                                "the broker refused the rotated credentials; back to the current ones"
                            );
                            held.next = None;
                            store.save(&held);
                            use_credentials(&mut event_loop.mqtt_options, &signer, &held, None);
                        } else if refused {
                            login_refused.store(true, Ordering::Release);
                        }
                        // Each broker of a cluster once at once, then backing off.
                        let delay = match failures as usize <= brokers.len() {
                            true if brokers.len() > 1 => Duration::from_millis(100),
                            _ => backoff(failures.saturating_sub(brokers.len() as u32 - 1)),
                        };
                        let delay = if refusals > 0 { delay.max(backoff(refusals)) } else { delay };
                        let retry_in_ms = delay.as_millis() as u64;
                        if let rumqttc::ConnectionError::ConnectionRefused(code) = &e {
                            // Retried all the same: a cut-off ends, and a
                            // broker's password file may be reloaded late.
                            tracing::error!(%broker, node = topics.node, ?code, retry_in_ms, "the broker refused this node's login: if the node was revoked, or offline past its credentials' lifetime, enrol it again (run with --join and a fresh token); workloads keep running");
                        } else if let rumqttc::ConnectionError::Tls(tls) = &e {
                            let error = crate::tls::explain(tls);
                            tracing::error!(%broker, node = topics.node, error, retry_in_ms, "TLS with the controller's broker failed; workloads keep running");
                        } else {
                            tracing::warn!(%broker, node = topics.node, error = %e, retry_in_ms, "control channel down; workloads keep running");
                        }
                        if brokers.len() > 1 {
                            using = (using + 1) % brokers.len();
                            let (host, port, transport) = &brokers[using];
                            event_loop.mqtt_options =
                                moved_to(&event_loop.mqtt_options, host, *port, transport.clone());
                            broker = format!("{host}:{port}");
                            tracing::info!(%broker, node = topics.node, "trying the next broker of the cluster");
                        }
                        // The broker published (or will publish) this
                        // connection's will: the next one is a new epoch.
                        epoch = next_epoch(&config.epoch_file, epoch);
                        arm(&mut event_loop.mqtt_options, &signer, &topics, epoch);
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        };
        Ok((channel, connection))
    }

    /// Waits until a desired document arrived or a connection came up
    /// (then [`Channel::wait_desired`] with a zero timeout and
    /// [`Channel::take_connected`] say which): the async form of waiting,
    /// for a device loop that is a task.
    pub fn changed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let wake = self.wake.clone();
        async move { wake.notified().await }
    }

    /// Ends the connection as a power cut would: the socket closes without
    /// an MQTT DISCONNECT, so the broker publishes the Last Will. Only for a
    /// channel started with [`Channel::start_on`] (the fleet simulator's
    /// node-loss scenarios).
    pub fn close_abruptly(&self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }

    /// The connection's task when it runs on a shared runtime: aborting it
    /// is [`Channel::close_abruptly`] from outside.
    pub fn connection_task(&self) -> Option<tokio::task::AbortHandle> {
        self.task.clone()
    }

    /// Desired documents received, waiting up to `timeout` for the first
    /// (the newest last): a document is applied as soon as it arrives.
    pub fn wait_desired(&self, timeout: Duration) -> Vec<Vec<u8>> {
        let mut frames: Vec<Vec<u8>> = self.desired.recv_timeout(timeout).into_iter().collect();
        frames.extend(self.desired.try_iter());
        frames
    }

    /// Whether the broker refused this node's login on the last attempt
    /// (revoked, or credentials expired): enrolling again is the way back.
    pub fn login_refused(&self) -> bool {
        self.login_refused.load(Ordering::Acquire)
    }

    /// Whether a connection came up since the last call: the caller then
    /// sends its full state (level-triggered, nothing is lost across a
    /// broker restart).
    pub fn take_connected(&self) -> bool {
        self.connected.swap(false, Ordering::AcqRel)
    }

    /// Sets the registration message, published (retained) on every
    /// connection.
    pub fn set_hello(&self, hello: firmware_proto::Hello) {
        *self.hello.lock().unwrap_or_else(|p| p.into_inner()) = Some(hello);
    }

    /// Sends a heartbeat. QoS 0: it carries full state and the next one
    /// replaces a lost one, so it costs no PUBACK on a paid link.
    pub fn send_status(&self, status: firmware_proto::Status) {
        self.send(&status, QoS::AtMostOnce);
    }

    /// Sends an event (QoS 1).
    pub fn send_event(&self, event: firmware_proto::Event) {
        self.send(&event, QoS::AtLeastOnce);
    }

    /// Seals a message and publishes it (not retained) on its kind's topic.
    fn send<M: Message>(&self, message: &M, qos: QoS) {
        let Some(frame) = self.signer.seal(message, self.signer.next_seq()) else { return };
        let kind = M::KIND;
        if let Err(e) = self.client.try_publish(self.topics.leaf(kind), qos, false, frame) {
            tracing::debug!(leaf = %kind, error = %e, "not sent (channel down or busy); full state is resent on reconnect");
        }
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        self.close_abruptly();
        self.shutdown.notify_one();
    }
}

/// Answers a log request. The chunks are queued from a task of their own:
/// an answer can outnumber the client's request queue, which only drains
/// while the event loop is polled.
fn answer_logs(logs: &LogService, frame: &[u8], client: &AsyncClient, signer: &Arc<Signer>, topics: &Topics) {
    let chunks = match logs.answer(frame) {
        Ok(chunks) => chunks,
        Err(reason) => {
            tracing::warn!(reason, "log request refused");
            return;
        }
    };
    let (client, signer, topic) = (client.clone(), signer.clone(), topics.leaf(firmware_proto::LogChunk::KIND));
    tokio::spawn(async move {
        for chunk in chunks {
            let Some(frame) = signer.seal(&chunk, signer.next_seq()) else { return };
            if let Err(e) = client.publish(topic.as_str(), QoS::AtLeastOnce, false, frame).await {
                tracing::debug!(error = %e, "log answer cut short: the channel closed");
                return;
            }
        }
    });
}

fn deliver(desired: &SyncSender<Vec<u8>>, frame: Vec<u8>) {
    if desired.try_send(frame).is_err() {
        tracing::warn!(
            "desired documents arrive faster than they are applied; the retained latest comes again on reconnect"
        );
    }
}

/// On every ConnAck: subscribe again (rumqttc does not replay
/// subscriptions) and publish presence and registration (retained).
///
/// One SUBSCRIBE, at QoS 0: the session is clean, so QoS 1 would redeliver
/// nothing across connections that QoS 0 loses; what the controller keeps
/// for a node is retained and comes again with every subscription; what is
/// not (log requests, credential grants) is lost with a dropped connection
/// under QoS 1 as well, and the device asks for credentials again. On NATS each QoS 1 subscription is a JetStream consumer made
/// through the cluster: 6 per device, and a third of 1,000 devices moving
/// after a server loss timed those out for minutes.
fn on_connect(client: &AsyncClient, signer: &Signer, topics: &Topics, hello: &Mutex<Option<firmware_proto::Hello>>) {
    let filters = MessageKind::TO_NODE.iter().map(|kind| SubscribeFilter::new(topics.filter(*kind), QoS::AtMostOnce));
    if let Err(e) = client.try_subscribe_many(filters) {
        tracing::warn!(error = %e, "cannot queue the subscriptions");
    }
    announce(client, signer, topics, hello);
}

/// Publishes registration and presence (retained).
fn announce(client: &AsyncClient, signer: &Signer, topics: &Topics, hello: &Mutex<Option<firmware_proto::Hello>>) {
    let hello = hello.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some(frame) = hello.and_then(|h| signer.seal(&h, signer.next_seq())) {
        let _ = client.try_publish(topics.leaf(firmware_proto::Hello::KIND), QoS::AtLeastOnce, true, frame);
    }
    if let Some(frame) = signer.seal(&Presence::Online, signer.next_seq()) {
        let _ = client.try_publish(topics.leaf(Presence::KIND), QoS::AtLeastOnce, true, frame);
    }
}

/// Until the controller answers a connection's registration with a
/// desired document (it publishes one, retained, for every registered
/// node), announces again after 5 s, then 10 s, ... up to 5 minutes. At 200
/// simulated devices the embedded broker lost one device's first hello and
/// presence in three runs, and a node nobody registered would wait forever.
async fn announce_until_answered(
    client: AsyncClient,
    signer: Arc<Signer>,
    topics: Topics,
    hello: Arc<Mutex<Option<firmware_proto::Hello>>>,
    answered: Arc<AtomicU64>,
    connection: u64,
) {
    let mut wait = Duration::from_secs(5);
    loop {
        tokio::time::sleep(wait).await;
        // Answered, a newer connection announces for itself, or the
        // connection loop is gone.
        if answered.load(Ordering::Acquire) != connection << 1 || Arc::strong_count(&answered) == 1 {
            return;
        }
        tracing::info!(node = topics.node, waited_s = wait.as_secs(), "no desired document yet; announcing again");
        announce(&client, &signer, &topics, &hello);
        wait = (wait * 2).min(Duration::from_secs(300));
    }
}

/// Logs in with `granted`, or with `held`'s current credentials, from the
/// next connection on; frames are MAC'd with their key from now on.
fn use_credentials(options: &mut MqttOptions, signer: &Signer, held: &Enrolment, granted: Option<&Granted>) {
    let key = match granted {
        Some(granted) => crate::enrolment::hex32(&granted.mac_key).map(|key| (key, granted.generation)),
        None => held.mac_key_bytes().ok().map(|key| (key, held.generation)),
    };
    let Some((key, generation)) = key else {
        return tracing::error!("unreadable MAC key; credentials unchanged");
    };
    let password = granted.map_or(&held.mqtt_password, |granted| &granted.mqtt_password);
    options.set_credentials(held.mqtt_username.clone(), password.clone());
    signer.set_key(key, generation);
}

/// Sends a credential request whenever one is due ([`crate::rotation`]),
/// for as long as connection `connection` is the live one.
async fn ask_for_credentials(
    client: AsyncClient,
    signer: Arc<Signer>,
    topics: Topics,
    asking: Arc<crate::rotation::Asking>,
    live: Arc<AtomicU64>,
    connection: u64,
) {
    loop {
        asking.wait().await;
        if live.load(Ordering::Acquire) >> 1 != connection || Arc::strong_count(&live) == 1 {
            return;
        }
        // Sent again if nobody answers; an answer moves this.
        asking.after(crate::rotation::UNANSWERED);
        let (_, generation) = signer.key();
        let request = firmware_proto::CredentialRequest { generation };
        let Some(frame) = signer.seal(&request, signer.next_seq()) else { continue };
        let topic = topics.leaf(firmware_proto::CredentialRequest::KIND);
        if let Err(e) = client.try_publish(topic, QoS::AtLeastOnce, false, frame) {
            tracing::debug!(error = %e, "credential request not sent; asked again later");
        }
    }
}

/// Which broker of a cluster's list a device uses first: spread by its
/// name (FNV-1a, stable across builds), so the loss of one server moves a
/// share of the fleet, not all of it (all on the first, 1,000 devices
/// moving at once to NATS 2.9 had not all reconnected in 4 minutes).
pub fn first_broker(node: &str, brokers: usize) -> usize {
    let hash = node.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    (hash % brokers.max(1) as u64) as usize
}

/// Sets the next connection's Last Will (sequence: the top of `epoch`) and
/// moves the counter to the start of `epoch`.
/// `old`'s options (client id, login, keep-alive, limits) for another broker
/// of the same cluster; the will is armed afresh by the caller.
fn moved_to(old: &MqttOptions, host: &str, port: u16, transport: rumqttc::Transport) -> MqttOptions {
    let mut options = MqttOptions::new(old.client_id(), host, port);
    options.set_keep_alive(old.keep_alive());
    if let Some(login) = old.credentials() {
        options.set_credentials(login.username, login.password);
    }
    options.set_max_packet_size(MAX_INCOMING, MAX_OUTGOING);
    options.set_clean_session(old.clean_session());
    options.set_transport(transport);
    options
}

fn arm(options: &mut MqttOptions, signer: &Signer, topics: &Topics, epoch: u64) {
    signer.next.store(epoch << 32 | 1, Ordering::Relaxed);
    if let Some(will) = signer.seal(&Presence::Offline, epoch << 32 | 0xFFFF_FFFF) {
        options.set_last_will(LastWill::new(topics.leaf(Presence::KIND), will, QoS::AtLeastOnce, true));
    }
}

fn read_epoch(path: &std::path::Path) -> u64 {
    std::fs::read_to_string(path).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0)
}

/// Persists and returns the epoch after `current`. If it cannot be
/// persisted the agent still moves on (in memory); a restart would then
/// reuse sequence numbers and the controller drops those messages until
/// the counter passes them, which is logged there.
fn next_epoch(path: &std::path::Path, current: u64) -> u64 {
    let next = current.max(read_epoch(path)) + 1;
    if let Err(e) = crate::persist::write_atomic(path, next.to_string().as_bytes()) {
        tracing::warn!(path = %path.display(), error = %e, "cannot persist the sequence epoch");
    }
    next
}

/// Back-off with jitter: 100 ms doubling to 30 s.
fn backoff(failures: u32) -> Duration {
    let base = 100u64.saturating_mul(1 << failures.min(9)).min(30_000);
    let mut noise = [0u8; 2];
    let _ = getrandom::fill(&mut noise);
    Duration::from_millis(base / 2 + u64::from(u16::from_le_bytes(noise)) % (base / 2 + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_increase_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("epoch");
        assert_eq!(next_epoch(&path, 0), 1);
        assert_eq!(next_epoch(&path, 1), 2);
        // A restart reads the stored one and moves past it.
        assert_eq!(next_epoch(&path, read_epoch(&path)), 3);
    }

    #[test]
    fn devices_spread_over_a_cluster_and_keep_their_broker() {
        assert_eq!(first_broker("anything", 1), 0);
        assert_eq!(first_broker("anything", 0), 0);
        let mut counts = [0usize; 3];
        for i in 0..3000 {
            counts[first_broker(&format!("sensor-{i:05}"), 3)] += 1;
        }
        // About a third each, and the same answer every time (stable hash).
        assert!(counts.iter().all(|&n| (800..1200).contains(&n)), "{counts:?}");
        assert_eq!(first_broker("line-7-press", 3), first_broker("line-7-press", 3));
        assert_eq!(first_broker("line-7-press", 3), 1, "FNV-1a changed: devices would move brokers on upgrade");
    }

    #[test]
    fn the_will_outranks_its_connection_and_not_the_next() {
        let signer = Signer::new([1; 32], 0, 0);
        let topics = Topics { scheme: firmware_proto::mqtt::Topics::new("p"), node: "n".into() };
        let mut options = MqttOptions::new("n", "h", 1);
        arm(&mut options, &signer, &topics, 5);
        let first = signer.next_seq();
        assert_eq!(first, 5 << 32 | 1);
        let will = options.last_will().expect("will set");
        let decoded = firmware_proto::decode_node_frame(&will.message).unwrap();
        assert!(decoded.frame.seq > first);
        arm(&mut options, &signer, &topics, 6);
        assert!(signer.next_seq() > decoded.frame.seq);
    }

    #[test]
    fn a_frame_counts_only_on_the_topic_of_its_own_kind() {
        use firmware_proto::{Bytes, LogRequest, ServiceTable, encode_signed_to_vec, samples};
        let topics = Topics { scheme: firmware_proto::mqtt::Topics::new("p"), node: "n".into() };
        let desired = encode_signed_to_vec(&samples::desired(1).as_state(), |_| Bytes([0; 64])).unwrap();
        let table = encode_signed_to_vec(&samples::service_table(), |_| Bytes([0; 64])).unwrap();
        let request = encode_signed_to_vec(&samples::log_request(), |_| Bytes([0; 64])).unwrap();
        assert_eq!(topics.received("p/nodes/n/desired", &desired), Ok(MessageKind::Desired));
        assert_eq!(topics.received("p/nodes/n/services", &table), Ok(ServiceTable::KIND));
        assert_eq!(topics.received("p/nodes/n/logreq", &request), Ok(LogRequest::KIND));
        // A valid frame on another kind's topic, or another node's.
        let misrouted = topics.received("p/nodes/n/services", &desired).unwrap_err();
        assert!(misrouted.contains("desired message"), "{misrouted}");
        assert!(topics.received("p/nodes/other/desired", &desired).is_err());
        // A node's own kind of message, and garbage.
        let status = encode_node_to_vec(&samples::status(1), 1, |_| Bytes([0; 16])).unwrap();
        assert!(topics.received("p/nodes/n/status", &status).unwrap_err().contains("nodes send"));
        assert!(topics.received("p/nodes/n/desired", b"").unwrap_err().contains("not a frame"));
        assert!(topics.received("p/nodes/n/desired", &[1, 99]).unwrap_err().contains("not a frame"));
        // Pod documents and config objects, each on its own topics.
        let pods = encode_signed_to_vec(&samples::pod_document(1, Bytes([0; 32])), |_| Bytes([0; 64])).unwrap();
        assert_eq!(topics.received("p/nodes/n/pods", &pods), Ok(MessageKind::Pods));
        let blob = encode_signed_to_vec(&samples::config_blob(), |_| Bytes([0; 64])).unwrap();
        let digest = "ab".repeat(32);
        assert_eq!(topics.received(&format!("p/nodes/n/config/{digest}"), &blob), Ok(MessageKind::Config));
        assert!(topics.received("p/nodes/n/config", &blob).is_err());
        assert!(topics.received("p/nodes/n/config/x/y", &blob).is_err());
        assert!(topics.received(&format!("p/nodes/other/config/{digest}"), &blob).is_err());
        assert_eq!(topics.filter(MessageKind::Config), "p/nodes/n/config/+");
    }
}
