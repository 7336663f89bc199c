//! `flotilla image push` and `flotilla image ls`: the client side of the
//! registry built into `flotilla server` (or any other OCI registry).
//!
//! `push` copies an image from an OCI image layout (a directory with
//! `oci-layout`, `index.json` and `blobs/`, as umoci, skopeo or buildah
//! write it) the way the distribution spec expects: every blob first
//! (skipping those the registry already holds), then each platform's
//! manifest by digest, then the tagged manifest or index, so the registry
//! can check that everything a manifest references is there.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::cli::ClientArgs;
use crate::registry::manifest;
use crate::registry::names::{Digest, RepoName, Tag};

/// The annotation that names an image in a layout's `index.json`.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Options of `flotilla image push`.
#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// The image to push: an OCI layout directory and a tag of its index.json, `DIR:TAG`
    /// (`DIR` alone when the layout holds one image).
    pub source: String,
    /// Where to: `[HOST:PORT/]NAME[:TAG]`. Without a host, the registry of the server
    /// (--server); without a tag, the source's tag. The token is sent as credentials.
    pub destination: String,
    /// Server and token.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Options of `flotilla image ls`.
#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// Only this repository, `[HOST:PORT/]NAME` (default: every repository of the server's registry).
    pub repository: Option<String>,
    /// Server (its registry is listed; reads need no token).
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Pushes an image from a layout; prints its digest on stdout, progress on stderr.
pub fn run_push(args: PushArgs) -> anyhow::Result<()> {
    let (layout, source_tag) = parse_layout_ref(&args.source);
    let destination = ImageRef::parse(&args.destination)?;
    let tag = match (&destination.tag, source_tag) {
        (Some(tag), _) => tag.clone(),
        (None, Some(tag)) => tag.parse().with_context(|| format!("the source tag {tag:?} is not a valid tag"))?,
        (None, None) => bail!("name a tag: `{}:<tag>`", args.destination),
    };
    let tls = crate::tls::client_tls(Some(&args.client.ca_file()))?;
    let registry = RegistryClient::new(&destination.base_url(&args.client.server), load_token(&args.client), tls);
    let digest = push_layout(&layout, source_tag, &registry, &destination.name, &tag)?;
    println!("{digest}");
    Ok(())
}

/// Lists repositories, tags and the digest each tag points at.
pub fn run_ls(args: LsArgs) -> anyhow::Result<()> {
    let tls = crate::tls::client_tls(Some(&args.client.ca_file()))?;
    let (registry, repositories) = match &args.repository {
        Some(text) => {
            let image = ImageRef::parse(text)?;
            (RegistryClient::new(&image.base_url(&args.client.server), None, tls), vec![image.name])
        }
        None => {
            let registry = RegistryClient::new(&args.client.server, None, tls);
            let repositories = registry.catalog()?;
            (registry, repositories)
        }
    };
    let mut rows = vec![["REPOSITORY".to_owned(), "TAG".to_owned(), "DIGEST".to_owned()]];
    for repo in &repositories {
        for tag in registry.tags(repo)? {
            let digest = registry.manifest_digest(repo, &tag)?.unwrap_or_else(|| "<missing>".to_owned());
            rows.push([repo.to_string(), tag, digest]);
        }
    }
    let width = |column: usize| rows.iter().map(|row| row[column].len()).max().unwrap_or(0);
    let (repo_width, tag_width) = (width(0), width(1));
    for [repo, tag, digest] in &rows {
        println!("{repo:repo_width$}  {tag:tag_width$}  {digest}");
    }
    Ok(())
}

/// The API token if one is configured; pushes to a registry without auth
/// need none.
fn load_token(client: &ClientArgs) -> Option<String> {
    if let Ok(token) = std::env::var("FLOTILLA_TOKEN")
        && !token.trim().is_empty()
    {
        return Some(token.trim().to_owned());
    }
    let token = std::fs::read_to_string(client.token_file()).ok()?;
    Some(token.trim().to_owned()).filter(|t| !t.is_empty())
}

/// `DIR:TAG` or `DIR`. Tags hold a `:` themselves (`busybox:1.35`), so the
/// first split whose left side is an OCI layout wins; otherwise a `:`
/// followed by something with a `/` is part of the path.
fn parse_layout_ref(text: &str) -> (PathBuf, Option<&str>) {
    for (at, _) in text.match_indices(':') {
        let (dir, tag) = (&text[..at], &text[at + 1..]);
        if !tag.is_empty() && std::path::Path::new(dir).join("index.json").is_file() {
            return (PathBuf::from(dir), Some(tag));
        }
    }
    match text.rsplit_once(':') {
        Some((dir, tag)) if !tag.contains('/') && !dir.is_empty() => (PathBuf::from(dir), Some(tag)),
        _ => (PathBuf::from(text), None),
    }
}

/// An image name in a registry, `[HOST[:PORT]/]NAME[:TAG]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The registry host, if named.
    pub host: Option<String>,
    /// The repository.
    pub name: RepoName,
    /// The tag, if named.
    pub tag: Option<Tag>,
}

impl ImageRef {
    /// Parses with Docker's rule: the first component is a host when it has
    /// a `.` or a `:` or is `localhost` (split as the controller and the
    /// agent split references, [`firmware_proto::image`]).
    pub fn parse(text: &str) -> anyhow::Result<ImageRef> {
        let parts = firmware_proto::image::split_reference(text);
        anyhow::ensure!(parts.digest.is_none(), "{text}: name a tag, not a digest");
        let tag = parts.tag.map(str::parse::<Tag>).transpose()?;
        Ok(ImageRef { host: parts.registry.map(str::to_owned), name: parts.repository.parse()?, tag })
    }

    /// The registry's base URL: the server's URL when no host is named or
    /// the host is the server's, else `http://HOST` (another registry, over
    /// plain HTTP).
    pub fn base_url(&self, server: &str) -> String {
        let server = server.trim_end_matches('/');
        let server_host = server.split_once("://").map_or(server, |(_, host)| host);
        match &self.host {
            Some(host) if host != server_host => format!("http://{host}"),
            _ => server.to_owned(),
        }
    }
}

/// A blocking client of the distribution API.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    base: String,
    authorization: Option<String>,
    agent: ureq::Agent,
}

/// The `Accept` header for manifests: every kind we can store.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, \
                              application/vnd.docker.distribution.manifest.v2+json, \
                              application/vnd.docker.distribution.manifest.list.v2+json";

type HttpResponse = ureq::http::Response<ureq::Body>;

impl RegistryClient {
    /// A client of the registry at `base` (`http://host:port` or
    /// `https://host:port`, trusted as `tls` says), sending `token` as a
    /// bearer token when given.
    pub fn new(base: &str, token: Option<String>, tls: ureq::tls::TlsConfig) -> RegistryClient {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls)
            // No overall timeout: a large layer over a slow link takes long.
            .timeout_connect(Some(Duration::from_secs(10)))
            .build()
            .into();
        RegistryClient {
            base: base.trim_end_matches('/').to_owned(),
            authorization: token.map(|t| format!("Bearer {t}")),
            agent,
        }
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        }
    }

    fn with_auth<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.authorization {
            Some(value) => request.header("Authorization", value),
            None => request,
        }
    }

    fn unreachable(&self, e: ureq::Error) -> anyhow::Error {
        anyhow::anyhow!("cannot reach the registry at {}: {e}", self.base)
    }

    /// Whether `repo` holds the blob.
    pub fn has_blob(&self, repo: &RepoName, digest: &Digest) -> anyhow::Result<bool> {
        let request = self.with_auth(self.agent.head(self.url(&format!("/v2/{repo}/blobs/{digest}"))));
        let response = request.call().map_err(|e| self.unreachable(e))?;
        match response.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(failure(response, &format!("checking blob {digest}"))),
        }
    }

    /// Uploads a blob from a file: open a session, send it whole, finish
    /// with its digest (every registry supports this pair of requests).
    /// The bytes sent are counted on `line`.
    pub fn upload_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        file: &Path,
        line: &crate::progress::Line,
    ) -> anyhow::Result<()> {
        let what = format!("uploading blob {digest}");
        let start = self.with_auth(self.agent.post(self.url(&format!("/v2/{repo}/blobs/uploads/"))));
        let response = start.send_empty().map_err(|e| self.unreachable(e))?;
        let response = expect_status(response, 202, &what)?;
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .with_context(|| format!("{what}: the registry answered without a Location"))?;
        let separator = if location.contains('?') { '&' } else { '?' };
        let finish_url = self.url(&format!("{location}{separator}digest={digest}"));
        let content = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
        let size = content.metadata().with_context(|| format!("reading {}", file.display()))?.len();
        let mut counted = crate::progress::Counted { inner: content, line };
        let finish = self
            .with_auth(self.agent.put(finish_url))
            .header("Content-Type", "application/octet-stream")
            .header("Content-Length", size.to_string());
        let response = finish.send(ureq::SendBody::from_reader(&mut counted)).map_err(|e| self.unreachable(e))?;
        expect_status(response, 201, &what)?;
        Ok(())
    }

    /// Stores a manifest under a tag or digest.
    pub fn put_manifest(&self, repo: &RepoName, reference: &str, media_type: &str, bytes: &[u8]) -> anyhow::Result<()> {
        let request = self.with_auth(self.agent.put(self.url(&format!("/v2/{repo}/manifests/{reference}"))));
        let response = request.header("Content-Type", media_type).send(bytes).map_err(|e| self.unreachable(e))?;
        expect_status(response, 201, &format!("storing manifest {repo}:{reference}"))?;
        Ok(())
    }

    /// Every repository (`GET /v2/_catalog`).
    pub fn catalog(&self) -> anyhow::Result<Vec<RepoName>> {
        #[derive(Deserialize)]
        struct Catalog {
            repositories: Vec<String>,
        }
        let catalog: Catalog = self.get_json("/v2/_catalog", "listing repositories")?;
        // A foreign registry's catalog may hold names we could not push to;
        // listing them is still right.
        Ok(catalog.repositories.iter().filter_map(|name| name.parse().ok()).collect())
    }

    /// The tags of a repository.
    pub fn tags(&self, repo: &RepoName) -> anyhow::Result<Vec<String>> {
        #[derive(Deserialize)]
        struct TagList {
            tags: Option<Vec<String>>,
        }
        let list: TagList = self.get_json(&format!("/v2/{repo}/tags/list"), &format!("listing the tags of {repo}"))?;
        Ok(list.tags.unwrap_or_default())
    }

    /// The digest of the manifest a tag points at, `None` if there is none.
    pub fn manifest_digest(&self, repo: &RepoName, tag: &str) -> anyhow::Result<Option<String>> {
        let request =
            self.agent.head(self.url(&format!("/v2/{repo}/manifests/{tag}"))).header("Accept", MANIFEST_TYPES);
        let response = self.with_auth(request).call().map_err(|e| self.unreachable(e))?;
        match response.status().as_u16() {
            404 => Ok(None),
            200 => Ok(response.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(str::to_owned)),
            _ => Err(failure(response, &format!("reading {repo}:{tag}"))),
        }
    }

    fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str, what: &str) -> anyhow::Result<T> {
        let response = self.with_auth(self.agent.get(self.url(path))).call().map_err(|e| self.unreachable(e))?;
        let mut response = expect_status(response, 200, what)?;
        response.body_mut().read_json().with_context(|| format!("{what}: unreadable answer"))
    }
}

fn expect_status(response: HttpResponse, expected: u16, what: &str) -> anyhow::Result<HttpResponse> {
    if response.status().as_u16() == expected { Ok(response) } else { Err(failure(response, what)) }
}

/// An error naming the registry's error codes and messages.
fn failure(mut response: HttpResponse, what: &str) -> anyhow::Error {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<OciError>,
    }
    #[derive(Deserialize)]
    struct OciError {
        code: String,
        #[serde(default)]
        message: String,
    }
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().unwrap_or_default();
    let detail = match serde_json::from_str::<Errors>(&body) {
        Ok(errors) => errors.errors.iter().map(|e| format!("{}: {}", e.code, e.message)).collect::<Vec<_>>().join("; "),
        Err(_) => body.trim().to_owned(),
    };
    let hint = if status == 401 {
        "\n(pushing to the built-in registry needs the API token: --token-file or FLOTILLA_TOKEN)"
    } else {
        ""
    };
    anyhow::anyhow!("{what}: the registry answered {status}: {detail}{hint}")
}

/// Pushes the image `tag` of the layout at `layout` (the only one if
/// `None`) to `repo:dest_tag`. Returns the digest of the pushed manifest or index.
pub fn push_layout(
    layout: &Path,
    tag: Option<&str>,
    registry: &RegistryClient,
    repo: &RepoName,
    dest_tag: &Tag,
) -> anyhow::Result<Digest> {
    let index_path = layout.join("index.json");
    let index = oci_spec::image::ImageIndex::from_file(&index_path)
        .with_context(|| format!("reading {} (is {} an OCI image layout?)", index_path.display(), layout.display()))?;
    let named = |d: &&oci_spec::image::Descriptor| {
        d.annotations().as_ref().and_then(|a| a.get(REF_NAME)).map(String::as_str) == tag
    };
    let root =
        match tag {
            Some(tag) => index.manifests().iter().find(named).with_context(|| {
                format!("{} has no image tagged {tag:?} (annotation {REF_NAME})", index_path.display())
            })?,
            None => match index.manifests().as_slice() {
                [only] => only,
                _ => bail!("{} holds several images: name one with `DIR:TAG`", index_path.display()),
            },
        };
    let root_digest: Digest = root.digest().to_string().parse()?;
    let progress = crate::progress::Progress::new();
    let mut push = Push { layout, registry, repo, pushed: HashSet::new(), progress: &progress };
    push.manifest(&root_digest, Some(root.media_type().as_ref()), &dest_tag.to_string())?;
    eprintln!("pushed {repo}:{dest_tag} ({root_digest})");
    Ok(root_digest)
}

/// One push in progress.
struct Push<'a> {
    layout: &'a Path,
    registry: &'a RegistryClient,
    repo: &'a RepoName,
    /// Blobs and manifests already handled (layers are shared between platforms).
    pushed: HashSet<Digest>,
    /// A bar per blob on a terminal, a line per blob otherwise.
    progress: &'a crate::progress::Progress,
}

impl Push<'_> {
    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.layout.join("blobs/sha256").join(digest.hex())
    }

    /// Pushes what a manifest references, then the manifest under `reference`.
    fn manifest(&mut self, digest: &Digest, media_type: Option<&str>, reference: &str) -> anyhow::Result<()> {
        let path = self.blob_path(digest);
        let bytes = std::fs::read(&path).with_context(|| format!("reading manifest {}", path.display()))?;
        anyhow::ensure!(
            Digest::of(&bytes) == *digest,
            "{} does not hash to its name: the layout is damaged",
            path.display()
        );
        let parsed =
            manifest::parse(&bytes, media_type).with_context(|| format!("reading manifest {}", path.display()))?;
        for blob in &parsed.blobs {
            self.blob(blob)?;
        }
        for child in &parsed.children {
            if self.pushed.insert(child.digest) {
                self.manifest(&child.digest, None, &child.digest.to_string())?;
            }
        }
        self.registry.put_manifest(self.repo, reference, &parsed.media_type, &bytes)?;
        self.progress.say(&format!("  manifest {digest}: stored"));
        Ok(())
    }

    fn blob(&mut self, digest: &Digest) -> anyhow::Result<()> {
        if !self.pushed.insert(*digest) {
            return Ok(());
        }
        let path = self.blob_path(digest);
        let size = std::fs::metadata(&path).with_context(|| format!("reading blob {}", path.display()))?.len();
        let mib = size as f64 / (1 << 20) as f64;
        if self.registry.has_blob(self.repo, digest)? {
            self.progress.say(&format!("  blob {digest} ({mib:.1} MiB): already there"));
            return Ok(());
        }
        let started = Instant::now();
        let hex = digest.hex();
        let mut line = self.progress.bytes(&format!("  blob {}", hex.get(..12).unwrap_or_default()), size);
        self.registry.upload_blob(self.repo, digest, &path, &line)?;
        let rate = mib / started.elapsed().as_secs_f64().max(1e-6);
        match self.progress.is_live() {
            true => line.finish(&format!("pushed at {rate:.0} MiB/s")),
            false => eprintln!("  blob {digest} ({mib:.1} MiB): pushed at {rate:.0} MiB/s"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_refs_split_host_name_and_tag_like_docker() {
        let parsed = ImageRef::parse("127.0.0.1:7440/test/img:v1").unwrap();
        assert_eq!(parsed.host.as_deref(), Some("127.0.0.1:7440"));
        assert_eq!(parsed.name.as_str(), "test/img");
        assert_eq!(parsed.tag.as_ref().map(Tag::as_str), Some("v1"));
        assert_eq!(parsed.base_url("http://server:1"), "http://127.0.0.1:7440");
        assert_eq!(parsed.base_url("https://127.0.0.1:7440/"), "https://127.0.0.1:7440", "the server's own, over TLS");

        let local = ImageRef::parse("library/busybox").unwrap();
        assert_eq!((local.host, local.tag), (None, None));
        assert_eq!(local.name.as_str(), "library/busybox");
        assert_eq!(ImageRef::parse("localhost/app:1").unwrap().host.as_deref(), Some("localhost"));
        assert_eq!(
            ImageRef::parse("app").unwrap().base_url("http://127.0.0.1:7440/"),
            "http://127.0.0.1:7440",
            "without a host, the server's registry"
        );
        assert!(ImageRef::parse("Upper/case").is_err());
        assert!(ImageRef::parse("app:-bad").is_err());
        assert!(ImageRef::parse("app@sha256:abcd").is_err(), "a digest is no destination");
    }

    #[test]
    fn layout_refs_keep_colons_inside_the_path() {
        assert_eq!(parse_layout_ref("out/layout:v1"), (PathBuf::from("out/layout"), Some("v1")));
        assert_eq!(parse_layout_ref("out/layout"), (PathBuf::from("out/layout"), None));
        assert_eq!(parse_layout_ref("/tmp/a:b/layout"), (PathBuf::from("/tmp/a:b/layout"), None));
    }
}
