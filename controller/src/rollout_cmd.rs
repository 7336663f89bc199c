//! `flotilla rollout status|history|undo|pause|resume|restart`, kubectl's
//! verbs over a Deployment's rollout (see [`crate::controllers::deployment`]).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::cli::{ClientArgs, RolloutArgs, RolloutCommand};
use crate::client::Client;
use crate::commands::wait;
use crate::controllers::deployment::{COMPLETE, FAILED};
use crate::manifest::Kind;
use crate::manifest::types::DeploymentSpec;
use crate::object::{ApiObject, ObjectKey, now_rfc3339};
use crate::progress::Progress;
use crate::status::DeploymentStatus;

/// Template annotation `rollout restart` sets: a new template, so a new
/// revision of the same containers (also how a failed revision is retried).
pub const RESTARTED_AT_ANNOTATION: &str = "flotilla.io/restartedAt";

/// Runs one `flotilla rollout` subcommand.
pub fn run(args: RolloutArgs) -> anyhow::Result<()> {
    match args.command {
        RolloutCommand::Status { target, timeout, client } => status(&connect(&client)?, &target, timeout),
        RolloutCommand::History { target, client } => history(&connect(&client)?, &target),
        RolloutCommand::Undo { target, to_revision, client } => undo(&connect(&client)?, &target, to_revision),
        RolloutCommand::Pause { target, client } => set_paused(&connect(&client)?, &target, true),
        RolloutCommand::Resume { target, client } => set_paused(&connect(&client)?, &target, false),
        RolloutCommand::Restart { target, client } => restart(&connect(&client)?, &target),
    }
}

fn connect(client: &ClientArgs) -> anyhow::Result<Client> {
    Client::from_args(client)
}

/// `deployment/web`, `deploy/web` or `web` -> the Deployment's key.
fn key_of(target: &crate::cli::RolloutTarget) -> anyhow::Result<ObjectKey> {
    let name = match target.name.split_once('/') {
        Some(("deployment" | "deployments" | "deploy", name)) => name,
        Some((kind, _)) => {
            bail!("{kind:?}: rollouts are supported for deployments only (not supported yet for {kind})")
        }
        None => target.name.as_str(),
    };
    Ok(ObjectKey::new(Kind::Deployment, &target.namespace, name))
}

fn fetch(client: &Client, target: &crate::cli::RolloutTarget) -> anyhow::Result<(ObjectKey, ApiObject)> {
    let key = key_of(target)?;
    let object = client.get(&key)?;
    Ok((key, object))
}

/// Follows the rollout until it completes (exit 0) or fails (an error
/// saying why): a bar of updated available replicas on a terminal, a line
/// per change otherwise.
fn status(client: &Client, target: &crate::cli::RolloutTarget, timeout: Option<Duration>) -> anyhow::Result<()> {
    let started = Instant::now();
    let key = key_of(target)?;
    let progress = Progress::new();
    let mut line = progress.counter(&wait::label(&key), 0);
    let mut last_line = String::new();
    loop {
        let object = client.get(&key)?;
        let now = wait::readiness(&object);
        match &now.state {
            wait::State::Failed(why) => {
                line.finish(&now.text);
                bail!("deployment {:?} {why}", key.name);
            }
            wait::State::Done => {
                line.set(now.done, now.of, "");
                line.finish(&now.text);
                println!("deployment {:?} {}", key.name, now.text);
                return Ok(());
            }
            wait::State::Waiting if progress.is_live() => line.set(now.done, now.of, &now.text),
            wait::State::Waiting => {
                let text = format!(
                    "Waiting for deployment {:?} rollout to finish: {}/{} {}...",
                    key.name, now.done, now.of, now.text
                );
                if text != last_line {
                    println!("{text}");
                    last_line = text;
                }
            }
        }
        if let Some(timeout) = timeout
            && started.elapsed() > timeout
        {
            bail!("timed out after {} waiting for the rollout", humantime::format_duration(timeout));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn history(client: &Client, target: &crate::cli::RolloutTarget) -> anyhow::Result<()> {
    let (key, object) = fetch(client, target)?;
    let status: DeploymentStatus = object.status();
    let mut out = format!("deployment {:?}\n", key.name);
    let _ = writeln!(out, "{:<9} {:<5} {:<12} {:<40} {:<21} REASON", "REVISION", "HASH", "STATE", "IMAGES", "CREATED");
    for revision in &status.history {
        let images: Vec<&str> = revision.template.spec.containers.iter().map(|c| c.image.as_str()).collect();
        let current = if revision.revision == status.revision { " (current)" } else { "" };
        let _ = writeln!(
            out,
            "{:<9} {:<5} {:<12} {:<40} {:<21} {}",
            revision.revision,
            revision.hash,
            format!("{}{current}", revision.state),
            images.join(","),
            revision.created_at.split('.').next().unwrap_or_default(),
            if revision.reason.is_empty() { "-" } else { &revision.reason },
        );
    }
    print!("{out}");
    Ok(())
}

/// Writes a revision's template back into the spec (kubectl's undo): the
/// previous complete revision by default.
fn undo(client: &Client, target: &crate::cli::RolloutTarget, to_revision: Option<u64>) -> anyhow::Result<()> {
    let (key, mut object) = fetch(client, target)?;
    let status: DeploymentStatus = object.status();
    let chosen =
        match to_revision {
            Some(number) => status.history.iter().find(|r| r.revision == number).with_context(|| {
                format!("deployment {:?} has no revision {number} (see `rollout history`)", key.name)
            })?,
            None => status
                .history
                .iter()
                .filter(|r| r.revision != status.revision && r.state == COMPLETE)
                .max_by_key(|r| r.revision)
                .with_context(|| format!("deployment {:?} has no earlier complete revision to go back to", key.name))?,
        };
    if chosen.state == FAILED {
        bail!(
            "revision {} failed ({}); change its template or run `flotilla rollout restart` to try it again",
            chosen.revision,
            chosen.reason
        );
    }
    let mut spec = spec_of(&object)?;
    spec.template = chosen.template.clone();
    object.set_spec(spec);
    put(client, &key, &object)?;
    println!("deployment {:?} rolled back to revision {}", key.name, chosen.revision);
    Ok(())
}

fn set_paused(client: &Client, target: &crate::cli::RolloutTarget, paused: bool) -> anyhow::Result<()> {
    let (key, mut object) = fetch(client, target)?;
    let mut spec = spec_of(&object)?;
    spec.paused = paused;
    object.set_spec(spec);
    put(client, &key, &object)?;
    println!("deployment {:?} {}", key.name, if paused { "paused" } else { "resumed" });
    Ok(())
}

fn restart(client: &Client, target: &crate::cli::RolloutTarget) -> anyhow::Result<()> {
    let (key, mut object) = fetch(client, target)?;
    let mut spec = spec_of(&object)?;
    spec.template.metadata.annotations.insert(RESTARTED_AT_ANNOTATION.into(), now_rfc3339());
    object.set_spec(spec);
    put(client, &key, &object)?;
    println!("deployment {:?} restarted (a new revision rolls out)", key.name);
    Ok(())
}

fn spec_of(object: &ApiObject) -> anyhow::Result<DeploymentSpec> {
    object.spec().context("the deployment has no spec of a Deployment's shape")
}

fn put(client: &Client, key: &ObjectKey, object: &ApiObject) -> anyhow::Result<()> {
    let _: ApiObject = client.send_json(
        "PUT",
        &crate::api::object_path(key),
        object,
        &format!("updating deployment {:?}", key.name),
    )?;
    Ok(())
}
