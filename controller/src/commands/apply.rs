//! `flotilla apply`: manifests to the server (or checked here with `--dry-run=client`).

use super::*;

/// `flotilla apply`.
pub fn apply(args: ApplyArgs) -> anyhow::Result<()> {
    // Read once (stdin cannot be read twice), parse locally first: file
    // errors and warnings appear without a round trip, or without a server.
    let sources = manifest::read_all(&args.files)?;
    let mut parsed = manifest::Parsed::default();
    for (source, text) in &sources {
        let one = manifest::parse_str(source, text)?;
        parsed.objects.extend(one.objects);
        parsed.warnings.extend(one.warnings);
    }
    if args.strict {
        parsed = parsed.strict()?;
    }
    let response = if args.dry_run == Some(DryRun::Client) {
        let warnings = parsed.warnings.iter().map(ToString::to_string).collect();
        let results = parsed
            .objects
            .iter()
            .map(|o| ApplyResult {
                kind: o.kind,
                namespace: o.metadata.namespace.clone(),
                name: o.metadata.name.clone(),
                action: "checked".to_owned(),
            })
            .collect();
        ApplyResponse { warnings, results }
    } else {
        // The server checks again (it may be another version) and, for a
        // dry run, answers from the objects it stores without storing any.
        let dry_run = args.dry_run == Some(DryRun::Server);
        let documents = sources.into_iter().map(|(source, text)| SourceText { source, text }).collect();
        let request = ApplyRequest { documents, strict: args.strict, dry_run };
        let answer: anyhow::Result<ApplyResponse> = client_for(&args.client)
            .and_then(|client| client.send_json("POST", "/api/v1/apply", &request, "apply refused"));
        if dry_run {
            answer.context("the server dry run failed (`--dry-run=client` checks the files without a server)")?
        } else {
            answer?
        }
    };
    if args.output == Some(ApplyOutput::Json) {
        println!("{}", serde_json::to_string_pretty(&response)?);
        return wait_for(&args, &response);
    }
    let note = match args.dry_run {
        Some(DryRun::Server) => " (server dry run)",
        Some(DryRun::Client) => " (dry run)",
        None => "",
    };
    for warning in &response.warnings {
        eprintln!("warning: {warning}");
    }
    for result in &response.results {
        let key = ObjectKey::new(result.kind, &result.namespace, &result.name);
        println!("{} {}{note}", display_key(&key), result.action);
    }
    wait_for(&args, &response)
}

/// `--wait`: until the applied workloads are available.
fn wait_for(args: &ApplyArgs, response: &ApplyResponse) -> anyhow::Result<()> {
    if !args.wait {
        return Ok(());
    }
    let keys: Vec<ObjectKey> = response
        .results
        .iter()
        .filter(|r| wait::is_workload(r.kind))
        .map(|r| ObjectKey::new(r.kind, &r.namespace, &r.name))
        .collect();
    if keys.is_empty() {
        return Ok(());
    }
    wait::until_available(&client_for(&args.client)?, &keys, args.timeout)
}
