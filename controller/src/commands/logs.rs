//! `flotilla logs`: a replica's output, asked of its device.

use super::*;

/// `flotilla logs`: prints what the pod's device answers, then (with
/// `-f`) what was written since, every second.
pub fn logs(args: LogsArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let client = Client::new(&args.client.server, &args.client.token_file())?;
    let mut query = format!("limitBytes={}", args.limit_bytes);
    if let Some(tail) = args.tail {
        query.push_str(&format!("&tailLines={tail}"));
    }
    let (data, mut offset) = client.pod_log(&args.namespace, &args.name, &query)?;
    let mut out = std::io::stdout().lock();
    out.write_all(&data)?;
    out.flush()?;
    if !args.follow {
        return Ok(());
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
        let Some(from) = offset else {
            anyhow::bail!("the server gave no offset to follow from");
        };
        let (data, next) =
            client.pod_log(&args.namespace, &args.name, &format!("limitBytes={}&offset={from}", args.limit_bytes))?;
        out.write_all(&data)?;
        out.flush()?;
        offset = next;
    }
}
