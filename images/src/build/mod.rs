//! Builds an image from a static binary or a rootfs directory per
//! architecture and writes it into an OCI image layout.
//!
//! Per architecture: one gzip layer, one config (with the layer's
//! `diff_id`), one manifest. With more than one architecture an image
//! index lists the manifests with their platforms; the tag points at that
//! index, otherwise at the single manifest.
//!
//! ```text
//! index.json --tag--> image index --linux/amd64--> manifest --> config, layer
//!                                 \--linux/arm64--> manifest --> config, layer
//! ```
//!
//! Builds are reproducible: the only time in an image is the `created`
//! timestamp the caller passes (`SOURCE_DATE_EPOCH`, 0 by default), which
//! is also every file's mtime; the `layer` module does the rest.

mod elf;
mod layer;
mod tree;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat};
use oci_spec::image::{
    Config, Descriptor, HistoryBuilder, ImageConfiguration, ImageIndexBuilder, ImageManifestBuilder, MediaType, Os,
    RootFs, SCHEMA_VERSION,
};

pub use elf::{BinaryKind, inspect_binary};
pub use layer::{LayerBlob, write_layer};
pub use tree::{FileTree, Node, normalize_image_path};

use crate::layout::{LayoutError, OciLayout};
use crate::platform::Arch;

/// `PATH` for images that set none: Docker's default, so that commands
/// given without a path resolve the way they do elsewhere.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What went wrong building an image.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The image has no architecture to build for.
    #[error("no platform given: add a binary or a rootfs for amd64 and/or arm64")]
    NoPlatforms,
    /// Two inputs for one architecture.
    #[error("{0} is given more than once")]
    DuplicatePlatform(Arch),
    /// An input file or directory could not be read.
    #[error("{path}: {source}")]
    Source {
        /// The input.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A rootfs is not a directory.
    #[error("rootfs {0} is not a directory")]
    NotADirectory(PathBuf),
    /// A file to add is not a regular file.
    #[error("{0} is not a regular file")]
    NotAFile(PathBuf),
    /// A rootfs holds a device node, fifo or socket.
    #[error("{0}: only directories, regular files and symlinks can go into a layer")]
    UnsupportedFileType(PathBuf),
    /// A rootfs file name is not UTF-8.
    #[error("{0}: file names in images must be UTF-8")]
    NonUtf8Path(PathBuf),
    /// A path inside the image is malformed.
    #[error("invalid path in the image {path:?}: {reason}")]
    InvalidImagePath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A binary is not something a container can execute.
    #[error("{path} cannot be the image's binary: {reason}")]
    NotAnExecutable {
        /// The binary.
        path: PathBuf,
        /// Why not.
        reason: String,
    },
    /// A binary is built for another architecture than the one it is given for.
    #[error("{path} is a {found} binary but was given for {expected}")]
    WrongArchitecture {
        /// The binary.
        path: PathBuf,
        /// The architecture it was given for.
        expected: Arch,
        /// The architecture its ELF header names.
        found: String,
    },
    /// The creation time cannot be written as a date.
    #[error("creation time {0} (seconds since 1970) is out of range")]
    InvalidTimestamp(i64),
    /// Writing the layer's tar or gzip stream failed.
    #[error("writing the layer: {source}")]
    WriteLayer {
        /// The error.
        source: std::io::Error,
    },
    /// oci-spec refused to assemble a document.
    #[error("could not assemble the {kind}: {source}")]
    Assemble {
        /// The document type.
        kind: &'static str,
        /// oci-spec's error.
        source: oci_spec::OciSpecError,
    },
    /// Reading or writing the layout failed.
    #[error(transparent)]
    Layout(#[from] LayoutError),
}

/// Where one architecture's files come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerSource {
    /// A directory that becomes the image's root file system.
    Rootfs(PathBuf),
    /// A single (static) binary, placed at `image_path` with mode 0755.
    Binary {
        /// The binary on the build machine.
        source: PathBuf,
        /// Where it goes in the image, e.g. `/bin/hello-http`.
        image_path: String,
    },
}

/// A file added to every architecture's layer (a script, a config file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraFile {
    /// Where it goes in the image (absolute).
    pub image_path: String,
    /// The file on the build machine.
    pub source: PathBuf,
    /// Permission bits; `None` keeps the source file's.
    pub mode: Option<u32>,
}

/// How containers of the image run by default (the OCI config's `config`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunConfig {
    /// The executable and its first arguments.
    pub entrypoint: Vec<String>,
    /// Default arguments (or the command, without an entrypoint).
    pub cmd: Vec<String>,
    /// `KEY=VALUE` pairs. `PATH` gets [`DEFAULT_PATH`] unless set here.
    pub env: Vec<String>,
    /// Working directory of the process.
    pub working_dir: Option<String>,
    /// Ports the image listens on, `8080/tcp`.
    pub exposed_ports: Vec<String>,
    /// Image labels.
    pub labels: BTreeMap<String, String>,
    /// User (name or uid, optionally `:group`) the process runs as.
    pub user: Option<String>,
    /// Signal that asks the process to stop (`SIGTERM` if unset).
    pub stop_signal: Option<String>,
}

/// One architecture of a built image.
#[derive(Debug, Clone)]
pub struct BuiltPlatform {
    /// The architecture.
    pub arch: Arch,
    /// The image manifest's descriptor (with its platform).
    pub manifest: Descriptor,
    /// The image configuration's descriptor.
    pub config: Descriptor,
    /// The layer.
    pub layer: LayerBlob,
}

/// What [`ImageBuilder::build_into`] wrote.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// The tag it was written under.
    pub tag: String,
    /// What the tag points at: the image index, or the only manifest.
    pub descriptor: Descriptor,
    /// Each architecture, in the order given.
    pub platforms: Vec<BuiltPlatform>,
}

/// Builds one (possibly multi-architecture) image.
///
/// ```no_run
/// use flotilla_images::build::{ImageBuilder, LayerSource, RunConfig};
/// use flotilla_images::layout::OciLayout;
/// use flotilla_images::platform::Arch;
///
/// let layout = OciLayout::open_or_create("target/images/oci")?;
/// let binary = |path: &str| LayerSource::Binary {
///     source: path.into(),
///     image_path: "/bin/hello-http".into(),
/// };
/// let image = ImageBuilder::new("hello-http:0.1")
///     .with_platform(Arch::Amd64, binary("target/x86_64-unknown-linux-musl/release/hello-http"))
///     .with_platform(Arch::Arm64, binary("target/aarch64-unknown-linux-musl/release/hello-http"))
///     .with_run_config(RunConfig {
///         entrypoint: vec!["/bin/hello-http".into()],
///         exposed_ports: vec!["8080/tcp".into()],
///         ..RunConfig::default()
///     })
///     .build_into(&layout)?;
/// println!("{}", image.descriptor.digest());
/// # Ok::<(), flotilla_images::build::BuildError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    tag: String,
    platforms: Vec<(Arch, LayerSource)>,
    extra_files: Vec<ExtraFile>,
    run: RunConfig,
    created: i64,
}

impl ImageBuilder {
    /// An image to be written under `tag` (`name:version`).
    pub fn new(tag: impl Into<String>) -> Self {
        ImageBuilder {
            tag: tag.into(),
            platforms: Vec::new(),
            extra_files: Vec::new(),
            run: RunConfig::default(),
            created: 0,
        }
    }

    /// Adds an architecture and where its files come from.
    pub fn with_platform(mut self, arch: Arch, source: LayerSource) -> Self {
        self.platforms.push((arch, source));
        self
    }

    /// Adds a file to every architecture's layer; it replaces a rootfs file
    /// of the same path.
    pub fn with_file(mut self, file: ExtraFile) -> Self {
        self.extra_files.push(file);
        self
    }

    /// Sets how containers run.
    pub fn with_run_config(mut self, run: RunConfig) -> Self {
        self.run = run;
        self
    }

    /// Sets the creation time (seconds since 1970), used for the config's
    /// `created` and every file's mtime. Default 0, for reproducible builds.
    pub fn with_created(mut self, seconds_since_epoch: i64) -> Self {
        self.created = seconds_since_epoch;
        self
    }

    /// Builds every architecture, writes the blobs and points the tag at
    /// the result (replacing what the tag pointed at before).
    pub fn build_into(&self, layout: &OciLayout) -> Result<BuiltImage, BuildError> {
        // Fail on bad input before writing any blob.
        if !crate::layout::is_valid_ref_name(&self.tag) {
            return Err(LayoutError::InvalidTag(self.tag.clone()).into());
        }
        if self.platforms.is_empty() {
            return Err(BuildError::NoPlatforms);
        }
        for (at, (arch, _)) in self.platforms.iter().enumerate() {
            if self.platforms[..at].iter().any(|(seen, _)| seen == arch) {
                return Err(BuildError::DuplicatePlatform(*arch));
            }
        }
        let stamp = Stamp::at(self.created)?;
        let run = self.oci_run_config();

        // Collect (and check) every platform's files before the first
        // blob is written, so a bad input leaves the layout untouched.
        let plans =
            self.platforms.iter().map(|(arch, source)| self.plan(*arch, source)).collect::<Result<Vec<_>, _>>()?;
        let platforms =
            plans.iter().map(|plan| write_platform(layout, plan, &stamp, &run)).collect::<Result<Vec<_>, _>>()?;

        let descriptor = match platforms.as_slice() {
            [only] => only.manifest.clone(),
            _ => {
                let index = ImageIndexBuilder::default()
                    .schema_version(SCHEMA_VERSION)
                    .media_type(MediaType::ImageIndex)
                    .manifests(platforms.iter().map(|p| p.manifest.clone()).collect::<Vec<_>>())
                    .build()
                    .map_err(|error| invalid_document("image index", error))?;
                layout.write_json_blob(MediaType::ImageIndex, &index)?
            }
        };
        layout.set_tag(&self.tag, &descriptor)?;
        tracing::info!(tag = %self.tag, digest = %descriptor.digest(), "image written");
        Ok(BuiltImage { tag: self.tag.clone(), descriptor, platforms })
    }

    /// Collects and checks the layer's files for one architecture.
    fn plan(&self, arch: Arch, source: &LayerSource) -> Result<PlatformPlan, BuildError> {
        let (mut tree, mut created_by) = match source {
            LayerSource::Rootfs(dir) => (FileTree::from_rootfs(dir)?, "flotilla-image: rootfs".to_owned()),
            LayerSource::Binary { source, image_path } => {
                check_binary(source, arch)?;
                let mut tree = FileTree::default();
                tree.add_file(image_path, source, Some(0o755))?;
                (tree, format!("flotilla-image: binary {image_path}"))
            }
        };
        for file in &self.extra_files {
            tree.add_file(&file.image_path, &file.source, file.mode)?;
            created_by.push_str(&format!(", file {}", file.image_path));
        }
        Ok(PlatformPlan { arch, tree, created_by })
    }

    /// The OCI `config` object: empty lists are left out, `PATH` defaulted.
    fn oci_run_config(&self) -> Config {
        let run = &self.run;
        let non_empty = |list: &Vec<String>| (!list.is_empty()).then(|| list.clone());
        let mut env = run.env.clone();
        if !env.iter().any(|pair| pair.starts_with("PATH=")) {
            env.insert(0, DEFAULT_PATH.to_owned());
        }
        let labels: HashMap<String, String> = run.labels.clone().into_iter().collect();
        let mut config = Config::default();
        config.set_entrypoint(non_empty(&run.entrypoint));
        config.set_cmd(non_empty(&run.cmd));
        config.set_env(Some(env));
        config.set_working_dir(run.working_dir.clone());
        config.set_exposed_ports(non_empty(&run.exposed_ports));
        config.set_labels((!labels.is_empty()).then_some(labels));
        config.set_user(run.user.clone());
        config.set_stop_signal(run.stop_signal.clone());
        config
    }
}

/// One architecture's files, collected and checked, not yet written.
#[derive(Debug)]
struct PlatformPlan {
    arch: Arch,
    tree: FileTree,
    /// How the layer was made, for the config's history: image paths only,
    /// so the text (and the digest) is the same on every build machine.
    created_by: String,
}

/// The one time an image records: the config's `created` and every
/// file's mtime.
#[derive(Debug)]
struct Stamp {
    /// RFC 3339, for the config and its history.
    created: String,
    /// Seconds since 1970, for tar headers.
    mtime: u64,
}

impl Stamp {
    fn at(seconds_since_epoch: i64) -> Result<Self, BuildError> {
        let out_of_range = || BuildError::InvalidTimestamp(seconds_since_epoch);
        let created = DateTime::from_timestamp(seconds_since_epoch, 0)
            .ok_or_else(out_of_range)?
            .to_rfc3339_opts(SecondsFormat::Secs, true);
        let mtime = u64::try_from(seconds_since_epoch).map_err(|_| out_of_range())?;
        Ok(Stamp { created, mtime })
    }
}

/// Writes one architecture's layer, config and manifest.
fn write_platform(
    layout: &OciLayout,
    plan: &PlatformPlan,
    stamp: &Stamp,
    run: &Config,
) -> Result<BuiltPlatform, BuildError> {
    let arch = plan.arch;
    let layer = write_layer(layout, &plan.tree, stamp.mtime)?;
    tracing::debug!(%arch, digest = %layer.descriptor.digest(), "layer written");

    let history = HistoryBuilder::default()
        .created(stamp.created.clone())
        .created_by(plan.created_by.clone())
        .build()
        .map_err(|error| invalid_document("history", error))?;
    let mut rootfs = RootFs::default();
    rootfs.set_diff_ids(vec![layer.diff_id.to_string()]);
    let mut config = ImageConfiguration::default();
    config.set_created(Some(stamp.created.clone()));
    config.set_os(Os::Linux);
    config.set_architecture(arch.to_oci());
    config.set_config(Some(run.clone()));
    config.set_rootfs(rootfs);
    config.set_history(Some(vec![history]));
    let config = layout.write_json_blob(MediaType::ImageConfig, &config)?;

    let manifest = ImageManifestBuilder::default()
        .schema_version(SCHEMA_VERSION)
        .media_type(MediaType::ImageManifest)
        .config(config.clone())
        .layers(vec![layer.descriptor.clone()])
        .build()
        .map_err(|error| invalid_document("image manifest", error))?;
    let mut manifest = layout.write_json_blob(MediaType::ImageManifest, &manifest)?;
    manifest.set_platform(Some(arch.to_oci_platform()));
    Ok(BuiltPlatform { arch, manifest, config, layer })
}

/// Checks a `--binary` input: right architecture, and a warning if it is
/// dynamically linked (the image holds no loader or libc for it).
fn check_binary(path: &Path, arch: Arch) -> Result<(), BuildError> {
    if let BinaryKind::Elf { dynamic: true } = inspect_binary(path, arch)? {
        tracing::warn!(
            binary = %path.display(),
            "binary is dynamically linked; the image has no loader or libc, so it will not start \
             unless they are added (build it for a *-linux-musl target)"
        );
    }
    Ok(())
}

/// An oci-spec builder refused a document (a required field unset: a bug
/// here, reported rather than panicking).
fn invalid_document(kind: &'static str, source: oci_spec::OciSpecError) -> BuildError {
    BuildError::Assemble { kind, source }
}
