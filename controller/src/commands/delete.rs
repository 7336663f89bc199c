//! `flotilla delete`: by name or by the manifests that made them.

use super::*;

/// `flotilla delete`.
pub fn delete(args: DeleteArgs) -> anyhow::Result<()> {
    let client = client_for(&args.client)?;
    let keys: Vec<ObjectKey> = if !args.files.is_empty() {
        let parsed = manifest::load(&args.files)?;
        parsed.objects.iter().map(|o| ObjectKey::new(o.kind, &o.metadata.namespace, &o.metadata.name)).collect()
    } else {
        let resource = args.resource.as_deref().unwrap_or_default();
        let kind = kind_arg(resource)?;
        anyhow::ensure!(!args.names.is_empty(), "name the {} to delete", resource_of(kind));
        args.names.iter().map(|n| ObjectKey::new(kind, &args.namespace, n)).collect()
    };
    let mut failed = 0;
    for key in keys {
        match client.delete(&key) {
            Ok(object) if object.is_retired() && key.kind == Kind::PersistentVolumeClaim => println!(
                "{} deleting: replicas still mount it; it and its data go once they are gone",
                display_key(&key)
            ),
            Ok(_) => println!("{} deleted", display_key(&key)),
            Err(e) => {
                eprintln!("error: {e:#}");
                failed += 1;
            }
        }
    }
    anyhow::ensure!(failed == 0, "{failed} object(s) not deleted");
    Ok(())
}
