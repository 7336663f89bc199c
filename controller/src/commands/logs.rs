//! `flotilla logs`: a replica's output, asked of its device.

use super::*;

/// `flotilla logs`: prints what the pod's device answers, then (with
/// `-f`) what was written since, every second.
pub fn logs(args: LogsArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let client = Client::from_args(&args.client)?;
    let container = match &args.container {
        // Container names are DNS labels: nothing in one needs escaping.
        Some(name) if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') => {
            anyhow::bail!("{name:?} is not a container name (lowercase letters, digits and '-')")
        }
        Some(name) => format!("&container={name}"),
        None => String::new(),
    };
    let mut query = format!("limitBytes={}{container}", args.limit_bytes);
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
        let query = format!("limitBytes={}&offset={from}{container}", args.limit_bytes);
        let (data, next) = client.pod_log(&args.namespace, &args.name, &query)?;
        out.write_all(&data)?;
        out.flush()?;
        offset = next;
    }
}
