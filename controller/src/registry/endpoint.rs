//! Which endpoint a path under `/v2/` names.
//!
//! Repository names contain `/` (`library/busybox`), so no route pattern can
//! capture them: the path is matched from its end, where the spec puts the
//! fixed words (`manifests/<ref>`, `blobs/<digest>`, `blobs/uploads/<id>`,
//! `tags/list`), and everything before them is the name.

use uuid::Uuid;

use super::error::RegistryError;
use super::names::{Digest, Reference, RepoName};

/// An endpoint of the distribution API (plus our garbage collection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/_flotilla/gc`
    GarbageCollect,
    /// `/v2/<name>/tags/list`
    Tags(RepoName),
    /// `/v2/<name>/manifests/<reference>`
    Manifest(RepoName, Reference),
    /// `/v2/<name>/blobs/<digest>`
    Blob(RepoName, Digest),
    /// `/v2/<name>/blobs/uploads/`
    StartUpload(RepoName),
    /// `/v2/<name>/blobs/uploads/<uuid>`
    Upload(RepoName, Uuid),
}

impl Endpoint {
    /// Parses `path`, the part after `/v2/`.
    pub fn parse(path: &str) -> Result<Endpoint, RegistryError> {
        let not_found = || RegistryError::NotFound(path.to_owned());
        match path {
            "_catalog" => return Ok(Endpoint::Catalog),
            "_flotilla/gc" => return Ok(Endpoint::GarbageCollect),
            _ => {}
        }
        if let Some(name) = path.strip_suffix("/tags/list") {
            return Ok(Endpoint::Tags(name.parse()?));
        }
        if let Some(name) = path.strip_suffix("/blobs/uploads/").or_else(|| path.strip_suffix("/blobs/uploads")) {
            return Ok(Endpoint::StartUpload(name.parse()?));
        }
        let (rest, last) = path.rsplit_once('/').ok_or_else(not_found)?;
        let (rest, word) = rest.rsplit_once('/').ok_or_else(not_found)?;
        match word {
            "manifests" => Ok(Endpoint::Manifest(rest.parse()?, last.parse()?)),
            "blobs" => Ok(Endpoint::Blob(rest.parse()?, last.parse()?)),
            "uploads" => {
                let name = rest.strip_suffix("/blobs").ok_or_else(not_found)?;
                let id = last.parse().map_err(|_| RegistryError::UploadUnknown(last.to_owned()))?;
                Ok(Endpoint::Upload(name.parse()?, id))
            }
            _ => Err(not_found()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(name: &str) -> RepoName {
        name.parse().unwrap()
    }

    #[test]
    fn names_with_slashes_and_spec_words_are_matched_from_the_end() {
        let digest = Digest::of(b"x");
        let id = Uuid::new_v4();
        let cases = [
            ("_catalog", Endpoint::Catalog),
            ("_flotilla/gc", Endpoint::GarbageCollect),
            ("library/busybox/tags/list", Endpoint::Tags(repo("library/busybox"))),
            ("a/b/c/manifests/latest", Endpoint::Manifest(repo("a/b/c"), Reference::Tag("latest".parse().unwrap()))),
            (&format!("app/manifests/{digest}"), Endpoint::Manifest(repo("app"), Reference::Digest(digest))),
            // A repository may itself be called `.../manifests` or `.../blobs`.
            (
                "x/manifests/manifests/v1",
                Endpoint::Manifest(repo("x/manifests"), Reference::Tag("v1".parse().unwrap())),
            ),
            (&format!("x/blobs/blobs/{digest}"), Endpoint::Blob(repo("x/blobs"), digest)),
            ("x/tags/tags/list", Endpoint::Tags(repo("x/tags"))),
            ("app/blobs/uploads/", Endpoint::StartUpload(repo("app"))),
            ("app/blobs/uploads", Endpoint::StartUpload(repo("app"))),
            (&format!("my/app/blobs/uploads/{id}"), Endpoint::Upload(repo("my/app"), id)),
        ];
        for (path, expected) in cases {
            assert_eq!(Endpoint::parse(path).unwrap(), expected, "{path}");
        }
    }

    #[test]
    fn malformed_paths_are_errors_with_the_spec_code() {
        let code = |path: &str| Endpoint::parse(path).unwrap_err().code().1;
        assert_eq!(code("app/manifests/sha256:short"), "DIGEST_INVALID");
        assert_eq!(code("App/tags/list"), "NAME_INVALID");
        assert_eq!(code("../x/blobs/sha256:00"), "NAME_INVALID");
        assert_eq!(code("app/blobs/uploads/not-a-uuid"), "BLOB_UPLOAD_UNKNOWN");
        assert_eq!(code("app/whatever/x"), "NOT_FOUND");
        assert_eq!(code("app"), "NOT_FOUND");
    }
}
