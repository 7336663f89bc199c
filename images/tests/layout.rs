//! Builder and layout reader together: reproducible digests, reading back
//! what was built, tags, and refusing tampered blobs.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;

use common::{BINARY_PATH, build_two_arch, inputs};
use flate2::read::GzDecoder;
use flotilla_images::build::{BuiltImage, ImageBuilder, LayerSource};
use flotilla_images::layout::{LayoutError, OciLayout};
use flotilla_images::platform::Arch;
use oci_spec::image::{Arch as OciArch, MediaType, Os};
use sha2::{Digest as _, Sha256};

/// Every digest a build produced, by name.
fn digests(image: &BuiltImage) -> BTreeMap<String, String> {
    let mut all = BTreeMap::from([("top".to_owned(), image.descriptor.digest().to_string())]);
    for platform in &image.platforms {
        let arch = platform.arch.oci_name();
        all.insert(format!("{arch} manifest"), platform.manifest.digest().to_string());
        all.insert(format!("{arch} config"), platform.config.digest().to_string());
        all.insert(format!("{arch} layer"), platform.layer.descriptor.digest().to_string());
        all.insert(format!("{arch} diff_id"), platform.layer.diff_id.to_string());
    }
    all
}

#[test]
fn two_builds_of_the_same_inputs_have_identical_digests_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = inputs(dir.path());
    let first = build_two_arch(&inputs, &dir.path().join("one"), "app:1");
    // Touch the inputs: mtimes on the build machine must not matter.
    let now = fs::File::options().append(true).open(&inputs.script).unwrap();
    now.set_modified(std::time::SystemTime::now()).unwrap();
    let second = build_two_arch(&inputs, &dir.path().join("two"), "app:1");

    assert_eq!(digests(&first), digests(&second));
    for file in ["index.json", "oci-layout"] {
        assert_eq!(
            fs::read(dir.path().join("one").join(file)).unwrap(),
            fs::read(dir.path().join("two").join(file)).unwrap(),
            "{file} differs"
        );
    }
    let blobs = |name: &str| {
        let mut names: Vec<_> = fs::read_dir(dir.path().join(name).join("blobs/sha256"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    assert_eq!(blobs("one"), blobs("two"));
    assert_eq!(blobs("one").len(), 7, "an index, and a manifest, config and layer per platform");
}

#[test]
fn creation_time_changes_every_digest_but_nothing_else_does() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = inputs(dir.path());
    let layout = OciLayout::open_or_create(dir.path().join("oci")).unwrap();
    let at_zero = common::two_arch_builder(&inputs, "app:1").build_into(&layout).unwrap();
    let later = common::two_arch_builder(&inputs, "app:1").with_created(1_700_000_000).build_into(&layout).unwrap();
    for (name, digest) in digests(&at_zero) {
        assert_ne!(digests(&later)[&name], digest, "{name} did not change with SOURCE_DATE_EPOCH");
    }
    let config = layout.resolve("app:1").unwrap().remove(0).config;
    assert_eq!(config.created().as_deref(), Some("2023-11-14T22:13:20Z"));
}

#[test]
fn reader_resolves_what_the_builder_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = inputs(dir.path());
    let built = build_two_arch(&inputs, &dir.path().join("oci"), "app:1");
    let layout = OciLayout::open(dir.path().join("oci")).unwrap();

    let tags = layout.tags().unwrap();
    assert_eq!(tags.keys().collect::<Vec<_>>(), ["app:1"]);
    assert_eq!(tags["app:1"].media_type(), &MediaType::ImageIndex);
    assert_eq!(tags["app:1"].digest(), built.descriptor.digest());

    let images = layout.resolve("app:1").unwrap();
    assert_eq!(images.len(), 2);
    for (image, (arch, binary)) in
        images.iter().zip([(Arch::Amd64, &inputs.amd64_binary), (Arch::Arm64, &inputs.arm64_binary)])
    {
        assert_eq!(image.platform.architecture(), &arch.to_oci());
        assert_eq!(image.platform.os(), &Os::Linux);
        assert_eq!(image.config.architecture(), &arch.to_oci());
        let run = image.config.config().as_ref().expect("run config");
        assert_eq!(run.entrypoint().as_deref(), Some(&[BINARY_PATH.to_owned(), "sh".to_owned()][..]));
        assert_eq!(run.working_dir().as_deref(), Some("/tmp"));
        assert_eq!(run.exposed_ports().as_deref(), Some(&["8080/tcp".to_owned()][..]));

        // One layer; its diff_id is the SHA-256 of the uncompressed tar,
        // which holds the binary and the script.
        let layers = image.manifest.layers();
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0].media_type(), &MediaType::ImageLayerGzip);
        let gz = layout.read_described(&layers[0]).unwrap();
        let mut tar = Vec::new();
        GzDecoder::new(&gz[..]).read_to_end(&mut tar).unwrap();
        let diff_id = format!("sha256:{}", hex::encode(Sha256::digest(&tar)));
        assert_eq!(image.config.rootfs().diff_ids(), &[diff_id]);

        let mut files = BTreeMap::new();
        for entry in tar::Archive::new(&tar[..]).entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            files.insert(path, (entry.header().mode().unwrap(), content));
        }
        let paths: Vec<&str> = files.keys().map(String::as_str).collect();
        assert_eq!(paths, ["bin/", "bin/busybox", "etc/", "etc/app/", "etc/app/start.sh"]);
        assert_eq!(files["bin/busybox"], (0o755, fs::read(binary).unwrap()));
        assert_eq!(files["etc/app/start.sh"].0, 0o750);
    }

    let arm64 = layout.resolve_platform("app:1", &Arch::Arm64.to_oci_platform()).unwrap();
    assert_eq!(arm64.descriptor.digest(), built.platforms[1].manifest.digest());
    let mut riscv = Arch::Arm64.to_oci_platform();
    riscv.set_architecture(OciArch::RISCV64);
    let error = layout.resolve_platform("app:1", &riscv).unwrap_err().to_string();
    assert!(error.contains("linux/amd64, linux/arm64"), "{error}");
}

#[test]
fn single_platform_tag_points_straight_at_its_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = inputs(dir.path());
    let layout = OciLayout::open_or_create(dir.path().join("oci")).unwrap();
    let built = ImageBuilder::new("app:arm64")
        .with_platform(
            Arch::Arm64,
            LayerSource::Binary { source: inputs.arm64_binary.clone(), image_path: BINARY_PATH.into() },
        )
        .build_into(&layout)
        .unwrap();
    let tagged = layout.tag("app:arm64").unwrap();
    assert_eq!(tagged.media_type(), &MediaType::ImageManifest);
    assert_eq!(tagged.digest(), built.platforms[0].manifest.digest());
    assert_eq!(tagged.platform().as_ref().map(|p| p.architecture()), Some(&OciArch::ARM64));
    let images = layout.resolve("app:arm64").unwrap();
    assert_eq!(images.len(), 1);
    // Without --entrypoint the CLI sets the binary; the library leaves it empty.
    assert_eq!(images[0].config.config().as_ref().and_then(|c| c.entrypoint().clone()), None);
}

#[test]
fn tags_accumulate_and_rebuilding_a_tag_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = inputs(dir.path());
    let layout_dir = dir.path().join("oci");
    build_two_arch(&inputs, &layout_dir, "first:1");
    let old = build_two_arch(&inputs, &layout_dir, "second:1");
    fs::write(&inputs.script, "#!/bin/busybox sh\necho changed\n").unwrap();
    let new = build_two_arch(&inputs, &layout_dir, "second:1");
    assert_ne!(old.descriptor.digest(), new.descriptor.digest());

    let layout = OciLayout::open(&layout_dir).unwrap();
    let tags = layout.tags().unwrap();
    assert_eq!(tags.keys().collect::<Vec<_>>(), ["first:1", "second:1"]);
    assert_eq!(tags["second:1"].digest(), new.descriptor.digest());
    assert_eq!(layout.index().unwrap().manifests().len(), 2, "no stale entry for second:1");
}

#[test]
fn tampered_blobs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = inputs(dir.path());
    let built = build_two_arch(&inputs, &dir.path().join("oci"), "app:1");
    let layout = OciLayout::open(dir.path().join("oci")).unwrap();
    assert!(layout.resolve("app:1").is_ok());

    // Same size, one byte flipped: only the digest can tell.
    let config = &built.platforms[1].config;
    let path = layout.blob_path(config.digest()).unwrap();
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x01;
    fs::write(&path, &bytes).unwrap();

    let error = layout.resolve("app:1").unwrap_err();
    assert!(matches!(error, LayoutError::DigestMismatch { .. }), "{error}");
    assert!(error.to_string().contains(config.digest().digest()), "{error}");
    let error = layout.read_blob(config.digest()).unwrap_err();
    assert!(matches!(error, LayoutError::DigestMismatch { .. }), "{error}");
    // The other platform is untouched and still reads.
    assert!(layout.resolve_platform("app:1", &Arch::Amd64.to_oci_platform()).is_ok());
}

#[test]
fn wrong_architecture_binary_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = inputs(dir.path());
    let layout = OciLayout::open_or_create(dir.path().join("oci")).unwrap();
    let binary =
        |source: &std::path::PathBuf| LayerSource::Binary { source: source.clone(), image_path: BINARY_PATH.into() };
    // amd64 is fine; the arm64 slot gets the amd64 binary too.
    let error = ImageBuilder::new("app:1")
        .with_platform(Arch::Amd64, binary(&inputs.amd64_binary))
        .with_platform(Arch::Arm64, binary(&inputs.amd64_binary))
        .build_into(&layout)
        .unwrap_err()
        .to_string();
    assert!(error.contains("linux/amd64 binary but was given for linux/arm64"), "{error}");
    assert!(layout.tags().unwrap().is_empty());
    let blobs = fs::read_dir(dir.path().join("oci/blobs/sha256")).unwrap().count();
    assert_eq!(blobs, 0, "no blob of the valid amd64 platform either");
}
