//! The runtime helper: a single-threaded process that owns libcontainer.
//!
//! Why a separate process: see [`super`]. The agent starts it by exec'ing
//! its own binary (`flotilla-agent runtime-helper`): exec gives a fresh,
//! single-threaded process without `fork` from a threaded one, so no unsafe
//! code is needed. Requests and responses are postcard COBS frames (a zero
//! byte ends each) on the helper's stdin and stdout; its stderr is the
//! agent's log. When the helper dies, [`HelperRuntime`] starts a new one,
//! which finds the running containers again in libcontainer's state
//! directory (re-adoption); their processes are not touched.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde::{Deserialize, Serialize};

#[cfg(target_pointer_width = "64")]
use super::libcontainer::LibcontainerRuntime;
use super::{ContainerConfig, ContainerState, Runtime, RuntimeError};

/// Largest frame accepted in either direction.
const MAX_FRAME: usize = 1 << 20;

/// A call to the helper.
#[derive(Debug, Serialize, Deserialize)]
enum Request {
    Create(Box<ContainerConfig>),
    Start(String),
    Kill(String, i32),
    Delete(String, bool),
    State(String),
    List,
    Exec(String, Vec<String>, u64),
}

/// The helper's answer.
#[derive(Debug, Serialize, Deserialize)]
enum Response {
    Done,
    Started(i32),
    State(Option<ContainerState>),
    List(Vec<ContainerState>),
    Exited(Option<i32>),
    Failed(RuntimeError),
}

fn read_frame(reader: &mut impl BufRead) -> std::io::Result<Option<Vec<u8>>> {
    let mut frame = Vec::new();
    let read = (&mut *reader).take(MAX_FRAME as u64 + 1).read_until(0, &mut frame)?;
    if read == 0 {
        return Ok(None); // EOF: the other side is gone
    }
    if frame.last() != Some(&0) {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "frame too large or truncated"));
    }
    Ok(Some(frame))
}

fn write_frame<T: Serialize>(writer: &mut impl Write, value: &T) -> std::io::Result<()> {
    let bytes = postcard::to_stdvec_cobs(value).map_err(std::io::Error::other)?;
    writer.write_all(&bytes)?;
    writer.flush()
}

fn decode<T: for<'de> Deserialize<'de>>(mut frame: Vec<u8>) -> std::io::Result<T> {
    postcard::from_bytes_cobs(&mut frame).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Without libcontainer (32-bit builds) the helper refuses to start.
#[cfg(not(target_pointer_width = "64"))]
pub fn serve(_state_dir: &Path, _bundles_dir: &Path) -> anyhow::Result<()> {
    anyhow::bail!(
        "not supported yet: running containers on 32-bit targets (libcontainer 0.7 does not build for them); \
         use an aarch64 build of the agent"
    )
}

/// The helper's main loop: serve requests until stdin closes.
#[cfg(target_pointer_width = "64")]
pub fn serve(state_dir: &Path, bundles_dir: &Path) -> anyhow::Result<()> {
    let mut runtime = LibcontainerRuntime::new(state_dir, bundles_dir)?;
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let stdout = std::io::stdout();
    let mut output = stdout.lock();
    tracing::debug!(state_dir = %state_dir.display(), "runtime helper ready");
    while let Some(frame) = read_frame(&mut input)? {
        let response = match decode::<Request>(frame) {
            Err(e) => Response::Failed(RuntimeError::Helper(format!("unreadable request: {e}"))),
            Ok(request) => {
                let result = match request {
                    Request::Create(config) => runtime.create(&config).map(|()| Response::Done),
                    Request::Start(id) => runtime.start(&id).map(Response::Started),
                    Request::Kill(id, signal) => runtime.kill(&id, signal).map(|()| Response::Done),
                    Request::Delete(id, force) => runtime.delete(&id, force).map(|()| Response::Done),
                    Request::State(id) => runtime.state(&id).map(Response::State),
                    Request::List => runtime.list().map(Response::List),
                    Request::Exec(id, args, timeout_ms) => runtime.exec(&id, &args, timeout_ms).map(Response::Exited),
                };
                result.unwrap_or_else(Response::Failed)
            }
        };
        write_frame(&mut output, &response)?;
    }
    tracing::debug!("agent closed the pipe; runtime helper exits (containers keep running)");
    Ok(())
}

struct Connection {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

/// [`Runtime`] for the async agent: forwards every call to the helper
/// process, restarting it when it died.
pub struct HelperRuntime {
    program: PathBuf,
    args: Vec<String>,
    connection: Option<Connection>,
    /// How many times a helper was started (for logs and tests).
    pub starts: u32,
}

impl HelperRuntime {
    /// A runtime whose helper is `program runtime-helper --state-dir S --bundles-dir B`.
    pub fn new(program: &Path, state_dir: &Path, bundles_dir: &Path) -> Self {
        HelperRuntime {
            program: program.to_owned(),
            args: vec![
                "runtime-helper".into(),
                "--state-dir".into(),
                state_dir.display().to_string(),
                "--bundles-dir".into(),
                bundles_dir.display().to_string(),
            ],
            connection: None,
            starts: 0,
        }
    }

    /// The helper's pid, if one runs.
    pub fn helper_pid(&self) -> Option<u32> {
        self.connection.as_ref().map(|c| c.child.id())
    }

    fn connect(&mut self) -> Result<&mut Connection, RuntimeError> {
        if let Some(connection) = &mut self.connection
            && connection.child.try_wait().ok().flatten().is_none()
        {
            return Ok(self.connection.as_mut().expect("checked above"));
        }
        if let Some(mut old) = self.connection.take() {
            let status = old.child.wait().ok();
            tracing::warn!(?status, "runtime helper died; starting a new one (containers are re-adopted)");
        }
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .env(super::CGROUP_PARENT_ENV, super::cgroup_parent())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| RuntimeError::Helper(format!("starting {}: {e}", self.program.display())))?;
        self.starts += 1;
        let input = child.stdin.take().ok_or_else(|| RuntimeError::Helper("no stdin pipe".into()))?;
        let output = BufReader::new(child.stdout.take().ok_or_else(|| RuntimeError::Helper("no stdout pipe".into()))?);
        Ok(self.connection.insert(Connection { child, input, output }))
    }

    fn exchange(&mut self, request: &Request) -> Result<Response, RuntimeError> {
        let connection = self.connect()?;
        let io = |e: std::io::Error| RuntimeError::Helper(e.to_string());
        write_frame(&mut connection.input, request).map_err(io)?;
        let frame = read_frame(&mut connection.output)
            .map_err(io)?
            .ok_or_else(|| RuntimeError::Helper("helper exited".into()))?;
        decode(frame).map_err(io)
    }

    fn call(&mut self, request: Request) -> Result<Response, RuntimeError> {
        match self.exchange(&request) {
            Ok(Response::Failed(e)) => Err(e),
            Ok(response) => Ok(response),
            Err(first) => {
                // The helper died (or the pipe broke): one retry on a fresh
                // helper. Callers treat AlreadyExists/NotFound as done, so a
                // request that had been carried out is harmless to repeat.
                tracing::warn!(error = %first, "runtime helper call failed; retrying on a new helper");
                if let Some(mut old) = self.connection.take() {
                    let _ = old.child.kill();
                    let _ = old.child.wait();
                }
                match self.exchange(&request)? {
                    Response::Failed(e) => Err(e),
                    response => Ok(response),
                }
            }
        }
    }
}

fn unexpected(response: Response) -> RuntimeError {
    RuntimeError::Helper(format!("unexpected answer {response:?}"))
}

impl Runtime for HelperRuntime {
    fn create(&mut self, config: &ContainerConfig) -> Result<(), RuntimeError> {
        match self.call(Request::Create(Box::new(config.clone())))? {
            Response::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    fn start(&mut self, id: &str) -> Result<i32, RuntimeError> {
        match self.call(Request::Start(id.to_owned()))? {
            Response::Started(pid) => Ok(pid),
            other => Err(unexpected(other)),
        }
    }

    fn kill(&mut self, id: &str, signal: i32) -> Result<(), RuntimeError> {
        match self.call(Request::Kill(id.to_owned(), signal))? {
            Response::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    fn delete(&mut self, id: &str, force: bool) -> Result<(), RuntimeError> {
        match self.call(Request::Delete(id.to_owned(), force))? {
            Response::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    fn state(&mut self, id: &str) -> Result<Option<ContainerState>, RuntimeError> {
        match self.call(Request::State(id.to_owned()))? {
            Response::State(state) => Ok(state),
            other => Err(unexpected(other)),
        }
    }

    fn list(&mut self) -> Result<Vec<ContainerState>, RuntimeError> {
        match self.call(Request::List)? {
            Response::List(states) => Ok(states),
            other => Err(unexpected(other)),
        }
    }

    fn exec(&mut self, id: &str, args: &[String], timeout_ms: u64) -> Result<Option<i32>, RuntimeError> {
        match self.call(Request::Exec(id.to_owned(), args.to_vec(), timeout_ms))? {
            Response::Exited(code) => Ok(code),
            other => Err(unexpected(other)),
        }
    }
}

impl Drop for HelperRuntime {
    fn drop(&mut self) {
        // Closing stdin ends the helper; containers keep running.
        if let Some(mut connection) = self.connection.take() {
            drop(connection.input);
            let _ = connection.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_oversized_or_garbage_input_is_an_error() {
        let mut buffer = Vec::new();
        write_frame(&mut buffer, &Request::Kill("web".into(), 15)).unwrap();
        let frame = read_frame(&mut &buffer[..]).unwrap().unwrap();
        assert!(matches!(decode::<Request>(frame).unwrap(), Request::Kill(id, 15) if id == "web"));
        assert!(read_frame(&mut &b""[..]).unwrap().is_none());
        let huge = vec![1u8; MAX_FRAME + 10];
        assert!(read_frame(&mut &huge[..]).is_err());
        assert!(decode::<Request>(vec![0x55, 0x01, 0x00]).is_err());
    }
}
