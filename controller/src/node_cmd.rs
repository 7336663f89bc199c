//! `flotilla node token create|ls|revoke` and `flotilla node revoke`: join
//! tokens and enrolled names (the routes are in [`crate::fleet::enrol_api`]).

use std::io::Write as _;

use crate::cli::{ClientArgs, NodeArgs, NodeCommand, NodeTokenCommand, TokenCreateArgs};
use crate::client::Client;
use crate::fleet::credentials::TokenInfo;
use crate::fleet::enrol_api::{ResetResponse, TokenList, TokenRequest, TokenResponse};

/// Runs one `flotilla node` subcommand.
pub fn run(args: NodeArgs) -> anyhow::Result<()> {
    match args.command {
        NodeCommand::Token(token) => match token.command {
            NodeTokenCommand::Create(create) => create_token(create),
            NodeTokenCommand::Ls(ls) => {
                let list: TokenList = connect(&ls.client)?.get_json("/api/v1/node-tokens", "listing join tokens")?;
                if ls.output.is_some() {
                    println!("{}", serde_json::to_string_pretty(&list)?);
                } else {
                    std::io::stdout().write_all(token_table(&list.items).as_bytes())?;
                }
                Ok(())
            }
            NodeTokenCommand::Revoke(revoke) => {
                let path = format!("/api/v1/node-tokens/{}", crate::client::encode_query(&revoke.id));
                let info: TokenInfo = connect(&revoke.client)?.delete_json(&path, "revoking a join token")?;
                println!("join token {} revoked ({}/{} uses spent)", info.id, info.used, info.uses);
                Ok(())
            }
        },
        NodeCommand::Revoke(reset) => {
            let path = format!("/api/v1/node-credentials/{}", crate::client::encode_query(&reset.name));
            let answer: ResetResponse =
                connect(&reset.client)?.delete_json(&path, &format!("revoking node {}", reset.name))?;
            println!(
                "node {} revoked: its credentials are gone, its connections closed, its replicas move; the name may enrol again",
                answer.node_name
            );
            Ok(())
        }
    }
}

fn connect(client: &ClientArgs) -> anyhow::Result<Client> {
    Client::from_args(client)
}

/// Prints the secret alone on stdout (for scripts), the how-to on stderr.
fn create_token(args: TokenCreateArgs) -> anyhow::Result<()> {
    let request = TokenRequest {
        ttl_seconds: Some(args.expires.as_secs()),
        uses: Some(args.uses),
        labels: args.labels.into_iter().collect(),
    };
    let answer: TokenResponse =
        connect(&args.client)?.send_json("POST", "/api/v1/node-tokens", &request, "creating a join token")?;
    println!("{}", answer.token);
    let uses = match answer.info.uses {
        1 => "one-time join token".to_owned(),
        n => format!("join token for {n} devices"),
    };
    eprintln!(
        "{uses} {}, valid {} (until {}){}; on each device run:\n  flotilla-agent run --join {} --token {}{}",
        answer.info.id,
        humantime::format_duration(std::time::Duration::from_secs(answer.ttl_seconds)),
        answer.info.expires,
        match labels_text(&answer.info) {
            labels if labels == "<none>" => String::new(),
            labels => format!(", labels {labels}"),
        },
        args.client.server,
        answer.token,
        answer.ca_sha256.map(|pin| format!(" --ca-sha256 {pin}")).unwrap_or_default(),
    );
    Ok(())
}

fn labels_text(info: &TokenInfo) -> String {
    if info.labels.is_empty() {
        return "<none>".into();
    }
    info.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// The `node token ls` table.
fn token_table(tokens: &[TokenInfo]) -> String {
    let mut rows = vec![["ID", "USES", "EXPIRES", "LABELS", "STATE"].map(str::to_owned)];
    for token in tokens {
        rows.push([
            token.id.clone(),
            format!("{}/{}", token.used, token.uses),
            token.expires.clone(),
            labels_text(token),
            token.state.to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..5).map(|c| rows.iter().map(|row| row[c].len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, width)| format!("{cell:width$}")).collect();
        out += cells.join("   ").trim_end();
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::credentials::TokenState;

    #[test]
    fn the_token_table_shows_spent_uses_labels_and_state() {
        let token = TokenInfo {
            id: "0a1b2c3d".into(),
            uses: 3,
            used: 2,
            expires: "2030-01-01T00:00:00Z".into(),
            created: "2029-12-31T00:00:00Z".into(),
            labels: [("site".to_owned(), "berlin".to_owned())].into(),
            state: TokenState::UsedUp,
        };
        let text = token_table(&[token]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("ID") && lines[0].contains("USES") && lines[0].ends_with("STATE"), "{text}");
        let cells: Vec<&str> = lines[1].split("   ").map(str::trim).filter(|c| !c.is_empty()).collect();
        assert_eq!(cells, ["0a1b2c3d", "2/3", "2030-01-01T00:00:00Z", "site=berlin", "used up"]);
    }
}
