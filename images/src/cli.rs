//! `flotilla image build`: the command-line face of [`ImageBuilder`].
//!
//! The controller mounts [`BuildArgs`] as a subcommand; the
//! `flotilla-image` binary of this crate runs the same arguments on its own
//! so that build scripts need no controller.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;

use crate::build::{BuiltImage, ExtraFile, ImageBuilder, LayerSource, RunConfig};
use crate::layout::OciLayout;
use crate::platform::Arch;

/// Build an OCI image from a static binary or a rootfs per architecture
///
/// Writes one gzip layer, config and manifest per architecture into an
/// OCI image layout directory and, with more than one architecture, an
/// image index; the tag then names that index. Other tags in the layout
/// are kept; the same tag is replaced. The same inputs always give the
/// same digests (file times and the config's `created` come from
/// SOURCE_DATE_EPOCH, default 0).
///
/// Examples:
///
///   flotilla image build --tag hello-http:0.1 --port 8080 \
///       --binary amd64=target/x86_64-unknown-linux-musl/release/hello-http \
///       --binary arm64=target/aarch64-unknown-linux-musl/release/hello-http
///
///   flotilla image build --tag busybox:1.35 --cmd sh \
///       --rootfs amd64=rootfs-amd64 --rootfs arm64=rootfs-arm64
///
/// Inspect the result with `skopeo inspect oci:oci:hello-http:0.1`.
#[derive(Debug, Clone, Args)]
#[command(verbatim_doc_comment)]
pub struct BuildArgs {
    /// Tag to write the image under, NAME:VERSION (its ref.name in index.json).
    #[arg(long, short = 't', value_name = "NAME:VERSION")]
    pub tag: String,

    /// OCI image layout directory to write into; created if missing.
    #[arg(long, short = 'o', value_name = "DIR", default_value = "oci")]
    pub output: PathBuf,

    /// A static binary for one architecture (amd64, arm64; x86_64 and
    /// aarch64 also work). Repeat once per architecture.
    #[arg(long, value_name = "ARCH=FILE", value_parser = parse_arch_path)]
    pub binary: Vec<(Arch, PathBuf)>,

    /// A directory to use as the image's root file system for one
    /// architecture. Repeat once per architecture.
    #[arg(long, value_name = "ARCH=DIR", value_parser = parse_arch_path)]
    pub rootfs: Vec<(Arch, PathBuf)>,

    /// Where --binary goes in the image, mode 0755 (default: /bin/ and the binary's file name).
    #[arg(long, value_name = "/PATH")]
    pub path: Option<String>,

    /// Add a file to the image of every architecture, keeping its mode.
    #[arg(long = "file", value_name = "/PATH=FILE", value_parser = parse_image_file)]
    pub files: Vec<(String, PathBuf)>,

    /// One argument of the entrypoint; repeat for more (--entrypoint /bin/sh
    /// --entrypoint -c). With --binary it defaults to the binary's path.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub entrypoint: Vec<String>,

    /// One default argument (the command, without an entrypoint); repeat
    /// for more.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub cmd: Vec<String>,

    /// An environment variable; repeat for more. PATH defaults to the
    /// usual /usr/local/sbin:...:/bin.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<String>,

    /// Working directory of the process.
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<String>,

    /// A port the image listens on (tcp unless /udp is given); repeat for more.
    #[arg(long, value_name = "PORT[/tcp|/udp]", value_parser = parse_port)]
    pub port: Vec<String>,

    /// An image label; repeat for more.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_label)]
    pub label: Vec<(String, String)>,

    /// User (name or uid, optionally :group) the process runs as.
    #[arg(long, value_name = "USER[:GROUP]")]
    pub user: Option<String>,

    /// Signal that asks the process to stop. [default: SIGTERM]
    #[arg(long, value_name = "SIGNAL")]
    pub stop_signal: Option<String>,

    /// Creation time and file mtime, seconds since 1970 (reproducible builds).
    #[arg(long, env = "SOURCE_DATE_EPOCH", value_name = "SECONDS", default_value_t = 0)]
    pub source_date_epoch: i64,
}

impl BuildArgs {
    /// Turns the arguments into a builder, checking what clap cannot.
    pub fn to_builder(&self) -> anyhow::Result<ImageBuilder> {
        if self.binary.is_empty() && self.rootfs.is_empty() {
            bail!("nothing to build: give --binary ARCH=FILE or --rootfs ARCH=DIR (once per architecture)");
        }
        if self.path.is_some() && self.binary.is_empty() {
            bail!("--path places a --binary, but no --binary is given");
        }
        let mut builder = ImageBuilder::new(&self.tag).with_created(self.source_date_epoch);
        let mut binary_path = None;
        for (arch, source) in &self.binary {
            let image_path = match &self.path {
                Some(path) => path.clone(),
                None => default_binary_path(source)?,
            };
            binary_path.get_or_insert_with(|| image_path.clone());
            builder = builder.with_platform(*arch, LayerSource::Binary { source: source.clone(), image_path });
        }
        for (arch, dir) in &self.rootfs {
            builder = builder.with_platform(*arch, LayerSource::Rootfs(dir.clone()));
        }
        for (image_path, source) in &self.files {
            builder =
                builder.with_file(ExtraFile { image_path: image_path.clone(), source: source.clone(), mode: None });
        }
        let entrypoint = match (&binary_path, self.entrypoint.is_empty()) {
            (Some(path), true) => vec![path.clone()],
            _ => self.entrypoint.clone(),
        };
        Ok(builder.with_run_config(RunConfig {
            entrypoint,
            cmd: self.cmd.clone(),
            env: self.env.clone(),
            working_dir: self.workdir.clone(),
            exposed_ports: self.port.clone(),
            labels: self.label.iter().cloned().collect::<BTreeMap<_, _>>(),
            user: self.user.clone(),
            stop_signal: self.stop_signal.clone(),
        }))
    }
}

/// Runs `flotilla image build`: builds, writes and prints the digests.
pub fn run_build(args: &BuildArgs) -> anyhow::Result<()> {
    let builder = args.to_builder()?;
    let layout = OciLayout::open_or_create(&args.output)
        .with_context(|| format!("opening the image layout {}", args.output.display()))?;
    let image = builder.build_into(&layout).with_context(|| format!("building {}", args.tag))?;
    print!("{}", summary(&image, &args.output));
    Ok(())
}

/// What a build prints: the tag's digest, then one line per architecture.
pub fn summary(image: &BuiltImage, output: &std::path::Path) -> String {
    let kind = match image.platforms.len() {
        1 => "manifest".to_owned(),
        n => format!("index of {n} platforms"),
    };
    let mut text = format!("{} -> {}: {} {}\n", image.tag, output.display(), kind, image.descriptor.digest());
    for platform in &image.platforms {
        text.push_str(&format!(
            "  {:<12} manifest {}  layer {} gzip ({} tar)\n",
            platform.arch.to_string(),
            platform.manifest.digest(),
            human_size(platform.layer.descriptor.size()),
            human_size(platform.layer.tar_size),
        ));
    }
    text
}

/// Bytes as B, KiB or MiB with one decimal.
fn human_size(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    let value = bytes as f64;
    if value < KIB {
        format!("{bytes} B")
    } else if value < KIB * KIB {
        format!("{:.1} KiB", value / KIB)
    } else {
        format!("{:.1} MiB", value / KIB / KIB)
    }
}

/// `/bin/<file name>` of a binary.
fn default_binary_path(source: &std::path::Path) -> anyhow::Result<String> {
    let name = source
        .file_name()
        .and_then(|name| name.to_str())
        .with_context(|| format!("{} has no usable file name; give --path", source.display()))?;
    Ok(format!("/bin/{name}"))
}

/// Splits `left=right` at the first `=`, both sides non-empty.
fn split_pair<'a>(value: &'a str, form: &str) -> Result<(&'a str, &'a str), String> {
    match value.split_once('=') {
        Some((left, right)) if !left.is_empty() && !right.is_empty() => Ok((left, right)),
        _ => Err(format!("expected {form}, got {value:?}")),
    }
}

/// Parses `ARCH=PATH`.
fn parse_arch_path(value: &str) -> Result<(Arch, PathBuf), String> {
    let (arch, path) = split_pair(value, "ARCH=PATH (e.g. arm64=target/aarch64-unknown-linux-musl/release/app)")?;
    let arch = arch.parse::<Arch>().map_err(|error| error.to_string())?;
    Ok((arch, PathBuf::from(path)))
}

/// Parses `/PATH=FILE`.
fn parse_image_file(value: &str) -> Result<(String, PathBuf), String> {
    let (image_path, file) = split_pair(value, "/PATH=FILE (e.g. /etc/app.conf=app.conf)")?;
    crate::build::normalize_image_path(image_path).map_err(|error| error.to_string())?;
    Ok((image_path.to_owned(), PathBuf::from(file)))
}

/// Checks `KEY=VALUE` (the value may be empty, as in `FOO=`).
fn parse_env(value: &str) -> Result<String, String> {
    match value.split_once('=') {
        Some((key, _)) if !key.is_empty() => Ok(value.to_owned()),
        _ => Err(format!("expected KEY=VALUE, got {value:?}")),
    }
}

/// Parses a label `KEY=VALUE`.
fn parse_label(value: &str) -> Result<(String, String), String> {
    let (key, label) = value
        .split_once('=')
        .filter(|(key, _)| !key.is_empty())
        .ok_or_else(|| format!("expected KEY=VALUE, got {value:?}"))?;
    Ok((key.to_owned(), label.to_owned()))
}

/// Normalises `8080`, `8080/tcp` or `53/udp` to the OCI `PORT/PROTO` form.
fn parse_port(value: &str) -> Result<String, String> {
    let (port, protocol) = value.split_once('/').unwrap_or((value, "tcp"));
    let port: u16 = port
        .parse()
        .ok()
        .filter(|port| *port != 0)
        .ok_or_else(|| format!("{value:?}: the port must be a number from 1 to 65535"))?;
    match protocol {
        "tcp" | "udp" | "sctp" => Ok(format!("{port}/{protocol}")),
        _ => Err(format!("{value:?}: the protocol must be tcp, udp or sctp")),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// Parses `flotilla-image` style arguments.
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        build: BuildArgs,
    }

    fn parse(args: &[&str]) -> Result<BuildArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("flotilla-image").chain(args.iter().copied())).map(|cli| cli.build)
    }

    #[test]
    fn parses_a_two_arch_binary_build() {
        let args = parse(&[
            "--tag",
            "hello:1",
            "--binary",
            "amd64=/a/hello",
            "--binary",
            "aarch64=/b/hello",
            "--port",
            "8080",
            "--env",
            "A=1",
            "--label",
            "k=v",
            "--cmd",
            "-v",
        ])
        .unwrap();
        assert_eq!(args.binary, [(Arch::Amd64, "/a/hello".into()), (Arch::Arm64, "/b/hello".into())]);
        assert_eq!(args.port, ["8080/tcp"]);
        assert_eq!(args.cmd, ["-v"]);
        assert_eq!(args.output, PathBuf::from("oci"));
        assert!(args.to_builder().is_ok());
    }

    #[test]
    fn rejects_malformed_values_with_the_expected_form() {
        let error = parse(&["--tag", "x:1", "--binary", "arm/hello"]).unwrap_err().to_string();
        assert!(error.contains("ARCH=PATH"), "{error}");
        let error = parse(&["--tag", "x:1", "--binary", "riscv64=/x"]).unwrap_err().to_string();
        assert!(error.contains("unknown platform"), "{error}");
        let error = parse(&["--tag", "x:1", "--port", "http"]).unwrap_err().to_string();
        assert!(error.contains("1 to 65535"), "{error}");
        let error = parse(&["--tag", "x:1", "--file", "etc/x=y"]).unwrap_err().to_string();
        assert!(error.contains("absolute"), "{error}");
    }

    #[test]
    fn needs_an_input_and_path_needs_a_binary() {
        let error = parse(&["--tag", "x:1"]).unwrap().to_builder().unwrap_err().to_string();
        assert!(error.contains("nothing to build"), "{error}");
        let args = parse(&["--tag", "x:1", "--rootfs", "amd64=/r", "--path", "/bin/x"]).unwrap();
        assert!(args.to_builder().unwrap_err().to_string().contains("--path"));
    }

    #[test]
    fn ports_are_normalised() {
        assert_eq!(parse_port("53/udp").unwrap(), "53/udp");
        assert_eq!(parse_port("8080").unwrap(), "8080/tcp");
        assert!(parse_port("0").is_err());
        assert!(parse_port("80/http").is_err());
    }

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(3 << 20), "3.0 MiB");
    }
}
