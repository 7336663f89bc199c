//! A Jepsen-style checker for the API under failures (issue 20): clients
//! apply, delete and read ConfigMaps through whichever controller answers
//! while the chaos runs; every operation goes into a history with its
//! outcome, and afterwards [`check`] holds the history against what the
//! store has:
//!
//! - every acknowledged write or delete is there (or was overwritten by a
//!   later operation of the same key);
//! - no value appears that no client sent;
//! - a reader never sees resourceVersions go backwards on one controller,
//!   and reads its own acknowledged writes there.
//!
//! Each key belongs to one client, whose operations on it are sequential,
//! so a key's operations are totally ordered by that client: the state a
//! key ends in must be the effect of its last acknowledged operation, or of
//! a later one whose outcome is unknown (it may have landed).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

/// The namespace the clients write in.
pub const NAMESPACE: &str = "jepsen";

/// What an operation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Apply `value`.
    Write(u64),
    /// Delete the key.
    Delete,
    /// Read: the value (`None`: not found) and the resourceVersion seen.
    Read(Option<u64>, u64),
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged (2xx; for a delete, also 404: it is gone).
    Ok,
    /// Refused without effect (a 4xx other than a conflict would be a bug;
    /// 503 "not ready" means nothing was done).
    Failed,
    /// No answer: it may or may not have landed.
    Unknown,
}

/// One operation of the history.
#[derive(Debug, Clone)]
pub struct Operation {
    /// Which client.
    pub client: usize,
    /// Which controller it went to.
    pub controller: usize,
    /// The key (a ConfigMap's name).
    pub key: String,
    /// What it did.
    pub action: Action,
    /// How it ended.
    pub outcome: Outcome,
}

/// The clients and the history they write.
pub struct Clients {
    stop: Arc<AtomicBool>,
    history: Arc<Mutex<Vec<Operation>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// A controller as the clients reach it: its URL and API token.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `http://host:port`.
    pub url: String,
    /// Bearer token.
    pub token: String,
}

impl Clients {
    /// Starts `clients` threads, each owning `keys` keys, sending
    /// operations to the endpoints (moving to the next one when one does
    /// not answer) until stopped.
    pub fn start(endpoints: Vec<Endpoint>, clients: usize, keys: usize) -> Clients {
        let stop = Arc::new(AtomicBool::new(false));
        let history = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|client| {
                let (stop, history, endpoints) = (stop.clone(), history.clone(), endpoints.clone());
                std::thread::spawn(move || run_client(client, keys, &endpoints, &stop, &history))
            })
            .collect();
        Clients { stop, history, threads }
    }

    /// Stops the clients and returns the history.
    pub fn stop(self) -> Vec<Operation> {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            let _ = thread.join();
        }
        std::mem::take(&mut *self.history.lock().unwrap())
    }
}

fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

fn run_client(client: usize, keys: usize, endpoints: &[Endpoint], stop: &AtomicBool, history: &Mutex<Vec<Operation>>) {
    let http = http();
    let mut at = client % endpoints.len();
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let key = format!("c{client}-k{}", n as usize % keys);
        // Mostly writes, some deletes, a read after each.
        let action = if n.is_multiple_of(5) { Action::Delete } else { Action::Write(n * 100 + client as u64) };
        let endpoint = &endpoints[at];
        let outcome = send(&http, endpoint, &key, &action);
        history.lock().unwrap().push(Operation { client, controller: at, key: key.clone(), action, outcome });
        if outcome != Outcome::Ok {
            at = (at + 1) % endpoints.len();
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        if let Some((value, version)) = read(&http, endpoint, &key) {
            let read = Action::Read(value, version);
            history.lock().unwrap().push(Operation { client, controller: at, key, action: read, outcome: Outcome::Ok });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn send(http: &ureq::Agent, endpoint: &Endpoint, key: &str, action: &Action) -> Outcome {
    let bearer = format!("Bearer {}", endpoint.token);
    let answer = match action {
        Action::Write(value) => {
            let text = format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {key}, namespace: {NAMESPACE}}}\ndata: {{v: \"{value}\"}}\n"
            );
            let body = json!({ "documents": [{ "source": "jepsen.yaml", "text": text }] });
            http.post(format!("{}/api/v1/apply", endpoint.url)).header("Authorization", &bearer).send_json(&body)
        }
        Action::Delete => http
            .delete(format!("{}/api/v1/namespaces/{NAMESPACE}/configmaps/{key}", endpoint.url))
            .header("Authorization", &bearer)
            .call(),
        Action::Read(..) => unreachable!("reads go through `read`"),
    };
    match answer.map(|r| r.status().as_u16()) {
        Ok(200..=299) => Outcome::Ok,
        Ok(404) if *action == Action::Delete => Outcome::Ok,
        // Refused before anything was done (not ready, bad request).
        Ok(400..=499) | Ok(503) => Outcome::Failed,
        // A 500 may come after the write was sent to etcd.
        Ok(_) | Err(_) => Outcome::Unknown,
    }
}

fn read(http: &ureq::Agent, endpoint: &Endpoint, key: &str) -> Option<(Option<u64>, u64)> {
    let mut answer = http
        .get(format!("{}/api/v1/namespaces/{NAMESPACE}/configmaps/{key}", endpoint.url))
        .header("Authorization", format!("Bearer {}", endpoint.token))
        .call()
        .ok()?;
    match answer.status().as_u16() {
        200 => {
            let object: Value = answer.body_mut().read_json().ok()?;
            let value = object["data"]["v"].as_str()?.parse().ok()?;
            let version = object["metadata"]["resourceVersion"].as_str()?.parse().ok()?;
            Some((Some(value), version))
        }
        // Not found carries no version; the list's would do, but a missing
        // key's read is checked for its value only.
        404 => Some((None, 0)),
        _ => None,
    }
}

/// What the check found.
#[derive(Debug, Default)]
pub struct Report {
    /// Operations in the history.
    pub operations: usize,
    /// Acknowledged writes and deletes.
    pub acknowledged: usize,
    /// Writes and deletes whose outcome is unknown.
    pub unknown: usize,
    /// Reads.
    pub reads: usize,
    /// What is wrong; empty when the history holds.
    pub violations: Vec<String>,
}

/// Holds `history` against `stored` (key -> value of every ConfigMap in
/// [`NAMESPACE`] now).
pub fn check(history: &[Operation], stored: &BTreeMap<String, u64>) -> Report {
    let mut report = Report { operations: history.len(), ..Report::default() };
    let mut per_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    let mut sent: std::collections::HashSet<u64> = Default::default();
    for operation in history {
        match &operation.action {
            Action::Read(..) => report.reads += 1,
            action => {
                if let Action::Write(value) = action {
                    sent.insert(*value);
                }
                match operation.outcome {
                    Outcome::Ok => report.acknowledged += 1,
                    Outcome::Unknown => report.unknown += 1,
                    Outcome::Failed => {}
                }
                per_key.entry(&operation.key).or_default().push(operation);
            }
        }
    }
    // Durability: the key's state is what its last acknowledged operation
    // left, or what a later operation that may have landed left.
    for (key, operations) in &per_key {
        let last_ok = operations.iter().rposition(|o| o.outcome == Outcome::Ok);
        let mut allowed: Vec<Option<u64>> = Vec::new();
        match last_ok {
            Some(i) => allowed.push(effect(operations[i])),
            None => allowed.push(None),
        }
        for later in &operations[last_ok.map_or(0, |i| i + 1)..] {
            if later.outcome == Outcome::Unknown {
                allowed.push(effect(later));
            }
        }
        let now = stored.get(*key).copied();
        if !allowed.contains(&now) {
            report.violations.push(format!(
                "{key} holds {now:?}; its last acknowledged operation and the later unanswered ones allow only {allowed:?}"
            ));
        }
    }
    for (key, value) in stored {
        if !sent.contains(value) {
            report.violations.push(format!("{key} holds {value}, which no client sent"));
        }
    }
    // Readers: per client and controller, versions never go backwards, and
    // a read after an acknowledged write there sees it (ops of one key are
    // the client's own, in order).
    let mut last_version: BTreeMap<(usize, usize), u64> = BTreeMap::new();
    let mut last_acked: BTreeMap<(usize, &str), (usize, Option<u64>)> = BTreeMap::new();
    for operation in history {
        match (&operation.action, operation.outcome) {
            (Action::Read(value, version), _) => {
                if value.is_some() {
                    let seen = last_version.entry((operation.client, operation.controller)).or_insert(0);
                    if *version < *seen {
                        report.violations.push(format!(
                            "client {} read version {version} from controller {} after version {seen}",
                            operation.client, operation.controller
                        ));
                    }
                    *seen = (*seen).max(*version);
                }
                if let Some((controller, expected)) = last_acked.get(&(operation.client, operation.key.as_str()))
                    && *controller == operation.controller
                    && expected != value
                {
                    report.violations.push(format!(
                        "client {} read {value:?} for {} from controller {controller} right after it acknowledged {expected:?}",
                        operation.client, operation.key
                    ));
                }
            }
            (_, Outcome::Ok) => {
                last_acked
                    .insert((operation.client, operation.key.as_str()), (operation.controller, effect(operation)));
            }
            // The key's state is unknown until its next acknowledged op.
            (_, _) => {
                last_acked.remove(&(operation.client, operation.key.as_str()));
            }
        }
    }
    report
}

fn effect(operation: &Operation) -> Option<u64> {
    match operation.action {
        Action::Write(value) => Some(value),
        Action::Delete | Action::Read(..) => None,
    }
}

/// Every ConfigMap in [`NAMESPACE`] and its value, as `endpoint` lists them.
pub fn stored(endpoint: &Endpoint) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut answer = http()
        .get(format!("{}/api/v1/namespaces/{NAMESPACE}/configmaps", endpoint.url))
        .header("Authorization", format!("Bearer {}", endpoint.token))
        .call()?;
    anyhow::ensure!(answer.status() == 200, "listing: {}", answer.status());
    let list: Value = answer.body_mut().with_config().limit(1 << 30).read_json()?;
    let mut out = BTreeMap::new();
    for item in list["items"].as_array().into_iter().flatten() {
        let name = item["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let value = item["data"]["v"].as_str().and_then(|v| v.parse().ok()).unwrap_or(u64::MAX);
        out.insert(name, value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: usize, key: &str, action: Action, outcome: Outcome) -> Operation {
        Operation { client, controller: 0, key: key.into(), action, outcome }
    }

    #[test]
    fn a_history_that_holds_passes() {
        let history = vec![
            op(0, "a", Action::Write(1), Outcome::Ok),
            op(0, "a", Action::Read(Some(1), 10), Outcome::Ok),
            op(0, "a", Action::Write(2), Outcome::Unknown),
            op(0, "b", Action::Write(3), Outcome::Ok),
            op(0, "b", Action::Delete, Outcome::Ok),
            op(0, "c", Action::Write(4), Outcome::Failed),
        ];
        // a: 1 (the unanswered 2 did not land) or 2 (it did); b gone; c never.
        for a in [1, 2] {
            let report = check(&history, &BTreeMap::from([("a".to_owned(), a)]));
            assert!(report.violations.is_empty(), "{:?}", report.violations);
        }
    }

    #[test]
    fn a_lost_acknowledged_write_is_found() {
        let history = vec![op(0, "a", Action::Write(1), Outcome::Ok), op(0, "a", Action::Write(2), Outcome::Ok)];
        let report = check(&history, &BTreeMap::from([("a".to_owned(), 1)]));
        assert_eq!(report.violations.len(), 1, "{:?}", report.violations);
        assert!(check(&history, &BTreeMap::new()).violations[0].contains("holds None"));
    }

    #[test]
    fn a_deleted_key_that_comes_back_and_a_value_nobody_sent_are_found() {
        let history = vec![op(0, "a", Action::Write(1), Outcome::Ok), op(0, "a", Action::Delete, Outcome::Ok)];
        assert_eq!(check(&history, &BTreeMap::from([("a".to_owned(), 1)])).violations.len(), 1);
        let report = check(&[], &BTreeMap::from([("z".to_owned(), 9)]));
        assert!(report.violations.iter().any(|v| v.contains("no client sent")), "{:?}", report.violations);
    }

    #[test]
    fn versions_going_backwards_and_a_stale_own_read_are_found() {
        let history = vec![
            op(0, "a", Action::Write(1), Outcome::Ok),
            op(0, "a", Action::Read(Some(1), 20), Outcome::Ok),
            op(0, "a", Action::Write(2), Outcome::Ok),
            op(0, "a", Action::Read(Some(1), 15), Outcome::Ok),
        ];
        let report = check(&history, &BTreeMap::from([("a".to_owned(), 2)]));
        assert_eq!(report.violations.len(), 2, "{:?}", report.violations);
    }
}
