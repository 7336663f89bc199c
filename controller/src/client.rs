//! The CLI's HTTP client for the controller API (ureq: blocking, small).

use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{ErrorBody, ObjectList};
use crate::manifest::Kind;
use crate::object::{ApiObject, ObjectKey, resource_of};
use crate::store::WatchEvent;

/// Where the server is and how to authenticate.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: String,
    token_source: String,
    agent: ureq::Agent,
    streaming: ureq::Agent,
}

/// Answers bigger than this are refused (a list of 100k objects fits).
const BODY_LIMIT: u64 = 1 << 30;

impl Client {
    /// A client as the command line says: `--server`, `--token-file`, `--ca-file`.
    pub fn from_args(args: &crate::cli::ClientArgs) -> anyhow::Result<Client> {
        Client::new(&args.server, &args.token_file(), crate::tls::client_tls(Some(&args.ca_file()))?)
    }

    /// A client for `server`, with the token from `$FLOTILLA_TOKEN` or
    /// `token_file`, trusting what `tls` says for `https://`.
    pub fn new(server: &str, token_file: &PathBuf, tls: ureq::tls::TlsConfig) -> anyhow::Result<Client> {
        let (token, token_source) = match std::env::var("FLOTILLA_TOKEN") {
            Ok(token) if !token.trim().is_empty() => (token.trim().to_owned(), "$FLOTILLA_TOKEN".to_owned()),
            _ => {
                let token = std::fs::read_to_string(token_file).with_context(|| {
                    format!(
                        "reading the API token from {} (the server writes it to its data directory on first start; \
                         pass --token-file, or set FLOTILLA_TOKEN)",
                        token_file.display()
                    )
                })?;
                (token.trim().to_owned(), token_file.display().to_string())
            }
        };
        let build = |timeout: Option<Duration>| -> ureq::Agent {
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(timeout)
                .tls_config(tls.clone())
                .build()
                .into()
        };
        Ok(Client {
            base: server.trim_end_matches('/').to_owned(),
            token,
            token_source,
            agent: build(Some(Duration::from_secs(60))),
            streaming: build(None),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn unreachable(&self, e: ureq::Error) -> anyhow::Error {
        anyhow::anyhow!(
            "cannot reach the Flotilla server at {}: {e}\n(is `flotilla server` running? point at it with --server \
             or FLOTILLA_SERVER)",
            self.base
        )
    }

    fn check(&self, mut response: ureq::http::Response<ureq::Body>, what: &str) -> anyhow::Result<ureq::Body> {
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(response.into_body());
        }
        let body = response.body_mut().read_to_string().unwrap_or_default();
        let message = serde_json::from_str::<ErrorBody>(&body).map(|e| e.error).unwrap_or(body);
        match status {
            401 => bail!("the server refused the token from {}: {message}", self.token_source),
            404 => bail!("{message}"),
            409 => bail!("{what}: {message}"),
            _ => bail!("{what}: the server answered {status}: {message}"),
        }
    }

    /// GET and decode JSON.
    pub fn get_json<T: DeserializeOwned>(&self, path: &str, what: &str) -> anyhow::Result<T> {
        let response = self
            .agent
            .get(self.url(path))
            .header("Authorization", format!("Bearer {}", self.token))
            .call()
            .map_err(|e| self.unreachable(e))?;
        let mut body = self.check(response, what)?;
        body.with_config().limit(BODY_LIMIT).read_json().with_context(|| format!("{what}: unreadable answer"))
    }

    /// GET a pod's container output: the bytes and the offset a follow-up
    /// continues at.
    pub fn pod_log(&self, namespace: &str, name: &str, query: &str) -> anyhow::Result<(Vec<u8>, Option<u64>)> {
        let path = format!("/api/v1/namespaces/{namespace}/pods/{name}/log?{query}");
        let response = self
            .agent
            .get(self.url(&path))
            .header("Authorization", format!("Bearer {}", self.token))
            .call()
            .map_err(|e| self.unreachable(e))?;
        let offset = response
            .headers()
            .get(crate::fleet::logs::OFFSET_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let mut body = self.check(response, &format!("logs of {name}"))?;
        let data = body.with_config().limit(BODY_LIMIT).read_to_vec().context("reading the log output")?;
        Ok((data, offset))
    }

    /// Sends JSON with a method and decodes the JSON answer.
    pub fn send_json<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: &B,
        what: &str,
    ) -> anyhow::Result<T> {
        let url = self.url(path);
        let auth = format!("Bearer {}", self.token);
        let response = match method {
            "POST" => self.agent.post(url).header("Authorization", auth).send_json(body),
            "PUT" => self.agent.put(url).header("Authorization", auth).send_json(body),
            _ => bail!("unsupported method {method}"),
        }
        .map_err(|e| self.unreachable(e))?;
        let mut body = self.check(response, what)?;
        body.with_config().limit(BODY_LIMIT).read_json().with_context(|| format!("{what}: unreadable answer"))
    }

    /// DELETE a path and decode the JSON answer.
    pub fn delete_json<T: DeserializeOwned>(&self, path: &str, what: &str) -> anyhow::Result<T> {
        let response = self
            .agent
            .delete(self.url(path))
            .header("Authorization", format!("Bearer {}", self.token))
            .call()
            .map_err(|e| self.unreachable(e))?;
        let mut body = self.check(response, what)?;
        body.read_json().with_context(|| format!("{what}: unreadable answer"))
    }

    /// DELETE one object.
    pub fn delete(&self, key: &ObjectKey) -> anyhow::Result<ApiObject> {
        let response = self
            .agent
            .delete(self.url(&crate::api::object_path(key)))
            .header("Authorization", format!("Bearer {}", self.token))
            .call()
            .map_err(|e| self.unreachable(e))?;
        let mut body = self.check(response, &format!("deleting {key}"))?;
        Ok(body.read_json()?)
    }

    /// One object.
    pub fn get(&self, key: &ObjectKey) -> anyhow::Result<ApiObject> {
        self.get_json(&crate::api::object_path(key), &format!("getting {key}"))
    }

    fn list_path(kind: Kind, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if kind.is_namespaced() => format!("/api/v1/namespaces/{ns}/{}", resource_of(kind)),
            _ => format!("/api/v1/{}", resource_of(kind)),
        }
    }

    /// Objects of a kind (`namespace: None` = all namespaces).
    pub fn list(&self, kind: Kind, namespace: Option<&str>, selector: &str) -> anyhow::Result<ObjectList> {
        let path = format!("{}?labelSelector={}", Self::list_path(kind, namespace), encode_query(selector));
        self.get_json(&path, &format!("listing {}", resource_of(kind)))
    }

    /// The table `flotilla get` prints, rendered by the server.
    pub fn table(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        selector: &str,
        wide: bool,
    ) -> anyhow::Result<crate::commands::table::TableList> {
        let path = format!(
            "{}?as=table&wide={wide}&labelSelector={}",
            Self::list_path(kind, namespace),
            encode_query(selector)
        );
        self.get_json(&path, &format!("listing {}", resource_of(kind)))
    }

    /// Calls `on_event` for every change after `resource_version` until it
    /// returns false or the server ends the stream.
    pub fn watch(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        selector: &str,
        resource_version: &str,
        mut on_event: impl FnMut(WatchEvent) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let path = format!(
            "{}?watch=true&resourceVersion={resource_version}&labelSelector={}",
            Self::list_path(kind, namespace),
            encode_query(selector)
        );
        let response = self
            .streaming
            .get(self.url(&path))
            .header("Authorization", format!("Bearer {}", self.token))
            .call()
            .map_err(|e| self.unreachable(e))?;
        let body = self.check(response, &format!("watching {}", resource_of(kind)))?;
        let reader = std::io::BufReader::new(body.into_reader());
        for line in reader.lines() {
            let line = line.context("the watch stream broke")?;
            if line.trim().is_empty() {
                continue;
            }
            let value: serde_json::Value = serde_json::from_str(&line).context("unreadable watch event")?;
            if value.get("type").and_then(|t| t.as_str()) == Some("ERROR") {
                bail!("watch ended by the server: {}", value["object"]["message"]);
            }
            if !on_event(serde_json::from_value(value).context("unreadable watch event")?)? {
                break;
            }
        }
        Ok(())
    }
}

/// Percent-encodes a query value (or a path segment).
pub fn encode_query(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
