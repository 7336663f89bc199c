//! Tag names: the OCI image layout's `org.opencontainers.image.ref.name`.

/// Whether `name` follows the OCI image layout grammar for
/// `org.opencontainers.image.ref.name`:
///
/// ```text
/// ref       ::= component ("/" component)*
/// component ::= alphanum (separator alphanum)*
/// alphanum  ::= [A-Za-z0-9]+
/// separator ::= [-._:@+] | "--"
/// ```
pub fn is_valid_ref_name(name: &str) -> bool {
    name.split('/').all(is_valid_ref_component)
}

/// One `/`-separated component of a ref name.
fn is_valid_ref_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let mut at = 0;
    loop {
        // alphanum+
        let start = at;
        while at < bytes.len() && bytes[at].is_ascii_alphanumeric() {
            at += 1;
        }
        if at == start {
            return false;
        }
        if at == bytes.len() {
            return true;
        }
        // separator: one of -._:@+ or exactly "--"
        match bytes[at] {
            b'-' if bytes.get(at + 1) == Some(&b'-') => at += 2,
            b'-' | b'.' | b'_' | b':' | b'@' | b'+' => at += 1,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_names_follow_the_oci_grammar() {
        for good in ["busybox:1.35", "hello-http:0.1", "latest", "a/b:c", "x--y", "v1.0+build@2"] {
            assert!(is_valid_ref_name(good), "{good}");
        }
        for bad in ["", ":1", "a:", "a/", "/a", "a//b", "a---b", "a b", "a:-b", "ünï"] {
            assert!(!is_valid_ref_name(bad), "{bad}");
        }
    }
}
